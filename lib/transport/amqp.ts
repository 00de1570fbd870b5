/**
 * RabbitMQ for the brokered designs (loaded only when one is chosen).
 *
 * Queues of one cluster, all durable, with persistent messages and an
 * `x-expires` so the queues of a crashed run are deleted once unused:
 * - `ac.<id>.tasks` — the shared task queue. The driver publishes on a
 *   confirm channel; each agent consumes it with manual acks, and its channel
 *   prefetch (in frames) is its flow control. A frame is acked only after its
 *   results were confirmed by the broker; RabbitMQ requeues the unacked frames
 *   of an agent whose connection dies.
 * - `ac.<id>.driver` — the driver's inbox; `ac.<id>.agent.<agent>` — each agent's.
 *
 * One connection per process, with Nagle's algorithm off (amqplib leaves it
 * on: with small messages and prefetch that costs ~40 ms per round trip), and
 * AMQP heartbeats so that a frozen peer's connection, and with it its unacked
 * frames, is given up by the broker.
 */
import type * as Amqplib from 'amqplib'
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage } from 'amqplib'
import { loadOptional } from './optional.js'
// An optional peer dependency: loaded here, with an install hint if it is missing.
const { connect } = await loadOptional<typeof Amqplib>('amqplib')
import { TransportError, safeString } from '../errors.js'
import {
  lost,
  QUEUE_TTL_MS,
  unreachable,
  type AgentMessagePath,
  type AgentTaskPath,
  type BrokerLink,
  type DriverMessagePath,
  type DriverTaskPath,
  type Namespace,
} from './paths.js'
import { maskUrl } from './options.js'
import type { Delivery } from './transport.js'

/** AMQP heartbeat in seconds, unless the URL says otherwise. */
const HEARTBEAT_S = 5
/** Unacked messages the driver's inbox consumer may hold. */
const INBOX_PREFETCH = 512

const QUEUE = { durable: true, arguments: { 'x-expires': QUEUE_TTL_MS } } as const
const PERSISTENT = { persistent: true } as const

function names(ns: Namespace) {
  const p = `ac.${ns.clusterId}.`
  return { tasks: `${p}tasks`, driver: `${p}driver`, agent: (id: string) => `${p}agent.${id}` }
}

/** The RabbitMQ connection of one process and its channels. No silent reconnects: a loss is reported once, naming the URL. */
export class AmqpLink implements BrokerLink {
  private closing = false
  private lastError: Error | undefined
  private readonly ours = new WeakSet<Channel>()

  private constructor(
    readonly url: string,
    private readonly role: string,
    readonly conn: ChannelModel,
    private readonly onFailure: (err: Error) => void,
  ) {
    conn.on('error', (err: Error) => (this.lastError = err))
    conn.on('close', (err?: Error) => {
      if (!this.closing) onFailure(lost('RabbitMQ', url, role, err ?? this.lastError))
    })
  }

  static async connect(url: string, role: string, onFailure: (err: Error) => void): Promise<AmqpLink> {
    const u = new URL(url)
    if (!u.searchParams.has('heartbeat')) u.searchParams.set('heartbeat', String(HEARTBEAT_S))
    let conn: ChannelModel
    try {
      conn = await connect(u.href, { noDelay: true, timeout: 5000, clientProperties: { connection_name: `actor-cluster ${role}` } })
    } catch (err) {
      throw unreachable('RabbitMQ', url, role, err)
    }
    return new AmqpLink(url, role, conn, onFailure)
  }

  private watch<C extends Channel>(ch: C): C {
    ch.on('error', (err: Error) => (this.lastError = err))
    ch.on('close', () => {
      // A lost connection closes its channels first: let the connection's own report, which says so, come first.
      setImmediate(() => {
        if (!this.closing && !this.ours.has(ch)) this.fail('a channel closed', this.lastError)
      })
    })
    return ch
  }

  async channel(): Promise<Channel> {
    return this.watch(await this.conn.createChannel())
  }

  async confirmChannel(): Promise<ConfirmChannel> {
    return this.watch(await this.conn.createConfirmChannel())
  }

  /** Closes a channel on purpose. */
  async closeChannel(ch: Channel | undefined): Promise<void> {
    if (!ch) return
    this.ours.add(ch)
    await ch.close().catch(() => {})
  }

  fail(what: string, err: unknown): void {
    const why = err instanceof Error ? err.message : err === undefined ? 'no reason given' : safeString(err)
    this.onFailure(new TransportError(`${this.role}: RabbitMQ at ${maskUrl(this.url)} failed: ${what}: ${why}`, { cause: err, code: 'ERR_BROKER_LOST' }))
  }

  get closed(): boolean {
    return this.closing
  }

  async close(): Promise<void> {
    if (this.closing) return
    this.closing = true
    await this.conn.close().catch(() => {})
  }

  destroy(): void {
    this.closing = true
    // amqplib has no public way to drop a connection without the closing handshake: destroy its socket.
    const stream = (this.conn.connection as unknown as { stream?: { destroy?: () => void } }).stream
    stream?.destroy?.()
  }
}

/** Publishes on a confirm channel; resolves when the broker confirmed, rejects if it refused. */
function publish(ch: ConfirmChannel, queue: string, frame: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    try {
      ch.sendToQueue(queue, frame, PERSISTENT, (err: unknown) => (err ? reject(err instanceof Error ? err : new Error(safeString(err))) : resolve()))
    } catch (err) {
      reject(err instanceof Error ? err : new Error(safeString(err)))
    }
  })
}

/** The driver's end of the RabbitMQ task queue. */
export class AmqpDriverTasks implements DriverTaskPath {
  private readonly q: ReturnType<typeof names>
  private ch: ConfirmChannel | undefined
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly link: AmqpLink,
    ns: Namespace,
  ) {
    this.q = names(ns)
  }

  async open(): Promise<void> {
    const ch = (this.ch = await this.link.confirmChannel())
    await ch.assertQueue(this.q.tasks, QUEUE)
    // Frames of a crashed run under the same id must not run in this one.
    await ch.purgeQueue(this.q.tasks)
    // Redeclaring counts as use: the queue does not expire while its driver lives, agents or not.
    this.timer = setInterval(() => {
      ch.assertQueue(this.q.tasks, QUEUE).catch((err: unknown) => this.link.fail('redeclaring the task queue', err))
    }, QUEUE_TTL_MS / 4)
    this.timer.unref()
  }

  publish(frame: Buffer): void {
    publish(this.ch!, this.q.tasks, frame).catch((err: unknown) => {
      if (!this.link.closed) this.link.fail('publishing a task frame', err)
    })
  }

  reclaim(): void {
    // Nothing to do: RabbitMQ requeues the unacked frames of a consumer whose channel or connection dies.
  }

  async close(): Promise<void> {
    clearInterval(this.timer)
    const ch = this.ch
    if (!ch) return
    await ch.waitForConfirms().catch(() => {})
    await ch.deleteQueue(this.q.tasks).catch(() => {})
    await this.link.closeChannel(ch)
  }
}

/** An agent's end of the RabbitMQ task queue: manual acks, channel prefetch in frames. */
export class AmqpAgentTasks implements AgentTaskPath {
  private readonly q: ReturnType<typeof names>
  private ch: Channel | undefined
  private onTask: ((frame: Buffer, delivery: Delivery, redelivered: boolean) => void) | undefined
  private tag: string | undefined
  private want = 0
  private applied = 0
  private chain: Promise<void> = Promise.resolve()
  private closed = false

  constructor(
    private readonly link: AmqpLink,
    ns: Namespace,
  ) {
    this.q = names(ns)
  }

  async open(onTask: (frame: Buffer, delivery: Delivery, redelivered: boolean) => void): Promise<void> {
    this.onTask = onTask
    this.ch = await this.link.channel()
    await this.ch.assertQueue(this.q.tasks, QUEUE)
  }

  setPrefetch(frames: number): Promise<void> {
    this.want = frames
    this.chain = this.chain
      .then(() => this.apply())
      .catch((err: unknown) => {
        if (!this.closed && !this.link.closed) this.link.fail('consuming the task queue', err)
      })
    return this.chain
  }

  /** Brings the consumer in line with the wanted prefetch: cancel at 0, (re)consume otherwise. */
  private async apply(): Promise<void> {
    const ch = this.ch!
    if (this.closed) return
    if (this.want === 0) {
      if (this.tag !== undefined) {
        const tag = this.tag
        this.tag = undefined
        await ch.cancel(tag)
      }
      return
    }
    // A per-channel limit (global) can change while the consumer runs.
    if (this.want !== this.applied) {
      await ch.prefetch(this.want, true)
      this.applied = this.want
    }
    if (this.tag === undefined) {
      // The queue may be new (the driver restarted under the same id): declare it again.
      await ch.assertQueue(this.q.tasks, QUEUE)
      const { consumerTag } = await ch.consume(
        this.q.tasks,
        (msg: ConsumeMessage | null) => {
          // null: the broker cancelled us (the queue was deleted with its driver); consume again on the next credit.
          if (msg === null) this.tag = undefined
          // RabbitMQ marks a message it delivered before (nacked, or its consumer's channel died).
          else this.onTask!(msg.content, msg, msg.fields.redelivered)
        },
        { noAck: false },
      )
      this.tag = consumerTag
    }
  }

  async ack(deliveries: Delivery[]): Promise<void> {
    for (const d of deliveries) this.ch!.ack(d as ConsumeMessage)
  }

  async release(deliveries: Delivery[]): Promise<void> {
    for (const d of deliveries) this.ch!.nack(d as ConsumeMessage, false, true)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.chain
    // Closing the channel requeues every frame it has not acked.
    await this.link.closeChannel(this.ch)
  }
}

/** The driver's inbox and its sends to the agents' inboxes. */
export class AmqpDriverMessages implements DriverMessagePath {
  private readonly q: ReturnType<typeof names>
  private inCh: Channel | undefined
  private outCh: ConfirmChannel | undefined

  constructor(
    private readonly link: AmqpLink,
    ns: Namespace,
  ) {
    this.q = names(ns)
  }

  async open(): Promise<void> {
    this.inCh = await this.link.channel()
    await this.inCh.assertQueue(this.q.driver, QUEUE)
    await this.inCh.purgeQueue(this.q.driver)
    await this.inCh.prefetch(INBOX_PREFETCH)
    this.outCh = await this.link.confirmChannel()
  }

  start(onMessage: (frame: Buffer) => void): void {
    const ch = this.inCh!
    ch.consume(
      this.q.driver,
      (msg) => {
        if (msg === null) {
          if (!this.link.closed) this.link.fail('the driver inbox', new Error('the broker cancelled the consumer (was the queue deleted?)'))
          return
        }
        onMessage(msg.content)
        ch.ack(msg)
      },
      { noAck: false },
    ).catch((err: unknown) => this.link.fail('consuming the driver inbox', err))
  }

  send(agentId: string, frame: Buffer): void {
    publish(this.outCh!, this.q.agent(agentId), frame).catch((err: unknown) => {
      if (!this.link.closed) this.link.fail('publishing to an agent', err)
    })
  }

  forget(): void {
    // Nothing to do: an agent's inbox expires once it has no consumer, and a live agent still needs it.
  }

  async close(): Promise<void> {
    await this.outCh?.waitForConfirms().catch(() => {})
    await this.inCh?.deleteQueue(this.q.driver).catch(() => {})
    await Promise.all([this.link.closeChannel(this.inCh), this.link.closeChannel(this.outCh)])
  }
}

/** An agent's inbox, and its confirmed sends to the driver's. */
export class AmqpAgentMessages implements AgentMessagePath {
  private readonly q: ReturnType<typeof names>
  private readonly inbox: string
  private inCh: Channel | undefined
  private outCh: ConfirmChannel | undefined
  private closed = false

  constructor(
    private readonly link: AmqpLink,
    ns: Namespace,
    agentId: string,
  ) {
    this.q = names(ns)
    this.inbox = this.q.agent(agentId)
  }

  async open(): Promise<void> {
    this.inCh = await this.link.channel()
    await this.inCh.assertQueue(this.inbox, QUEUE)
    await this.inCh.purgeQueue(this.inbox)
    this.outCh = await this.link.confirmChannel()
  }

  start(onMessage: (frame: Buffer) => void): void {
    const consume = (): void => {
      const ch = this.inCh!
      ch.assertQueue(this.inbox, QUEUE)
        .then(() =>
          ch.consume(
            this.inbox,
            (msg) => {
              if (msg === null) {
                // Someone deleted our inbox: declare it again and go on listening.
                if (!this.closed) consume()
                return
              }
              onMessage(msg.content)
              ch.ack(msg)
            },
            { noAck: false },
          ),
        )
        .catch((err: unknown) => {
          if (!this.closed && !this.link.closed) this.link.fail('consuming the agent inbox', err)
        })
    }
    consume()
  }

  send(frame: Buffer): Promise<void> {
    return publish(this.outCh!, this.q.driver, frame)
  }

  async close(): Promise<void> {
    this.closed = true
    await this.outCh?.waitForConfirms().catch(() => {})
    await this.inCh?.deleteQueue(this.inbox).catch(() => {})
    await Promise.all([this.link.closeChannel(this.inCh), this.link.closeChannel(this.outCh)])
  }
}
