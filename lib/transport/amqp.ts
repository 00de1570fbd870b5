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
 * frames, is given up by the broker. A lost connection is dialled again for
 * up to `brokerReconnectMs`, and every path built on it again (see AmqpLink).
 */
import { createHash } from 'node:crypto'
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
  type DriverLease,
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
  return { tasks: `${p}tasks`, driver: `${p}driver`, agent: (id: string) => `${p}agent.${id}`, lease: `${p}driver-lease` }
}

/** Backoff between attempts to dial a lost connection again: 50 ms, doubling, at most 1 s. */
function backoff(attempt: number): number {
  return Math.min(1000, 50 * 2 ** Math.min(attempt - 1, 5))
}

/** What builds on the link's connection, and builds again on a new one after a loss. */
interface Reopens {
  reopen(): Promise<void>
}

async function dial(href: string, role: string): Promise<ChannelModel> {
  return connect(href, { noDelay: true, timeout: 5000, clientProperties: { connection_name: `actor-cluster ${role}` } })
}

/**
 * amqplib words a broker's refusal of the virtual host as the frame it got
 * ("Expected ConnectionOpenOk; got <ConnectionClose …>"): say what was refused.
 */
function explainOpen(u: URL, err: unknown): unknown {
  if (!(err instanceof Error) || !/Expected ConnectionOpenOk/.test(err.message)) return err
  const vhost = u.pathname.length > 1 ? decodeURIComponent(u.pathname.slice(1)) : '/'
  const user = u.username ? decodeURIComponent(u.username) : 'guest'
  return new Error(`the broker refused virtual host "${vhost}": it does not exist, or user "${user}" may not use it (${err.message})`, { cause: err })
}

/**
 * The RabbitMQ connection of one process and its channels. amqplib does not
 * reconnect: when the connection is lost, this link dials again (with
 * backoff) and every path on it builds its channels again — declaring its
 * queues, consuming again, publishing again what the broker had not
 * confirmed. A broker gone longer than `reconnectMs` is a failure, reported
 * once, naming the URL.
 */
export class AmqpLink implements BrokerLink {
  private closing = false
  private gaveUp = false
  private failure: Error | undefined
  /** A connection is lost and being dialled again. */
  private down = false
  private outage: NodeJS.Timeout | undefined
  private lastError: Error | undefined
  private readonly ours = new WeakSet<Channel>()
  private readonly users: Reopens[] = []
  private readonly abandoned: ((err: Error) => void)[] = []
  private conn!: ChannelModel

  private constructor(
    readonly url: string,
    private readonly href: string,
    private readonly role: string,
    private readonly reconnectMs: number,
    conn: ChannelModel,
    private readonly onFailure: (err: Error) => void,
  ) {
    this.attach(conn)
  }

  private attach(conn: ChannelModel): void {
    this.conn = conn
    conn.on('error', (err: Error) => (this.lastError = err))
    conn.on('close', (err?: Error) => {
      if (this.conn === conn) this.connectionLost(err)
    })
  }

  static async connect(url: string, role: string, reconnectMs: number, onFailure: (err: Error) => void): Promise<AmqpLink> {
    const u = new URL(url)
    if (!u.searchParams.has('heartbeat')) u.searchParams.set('heartbeat', String(HEARTBEAT_S))
    let conn: ChannelModel
    try {
      conn = await dial(u.href, role)
    } catch (err) {
      throw unreachable('RabbitMQ', url, role, explainOpen(u, err))
    }
    return new AmqpLink(url, u.href, role, reconnectMs, conn, onFailure)
  }

  /** `user` builds again on every new connection, in the order users registered. */
  reopens(user: Reopens): void {
    this.users.push(user)
  }

  /** Called once if the link fails for good, with its error (to settle what waits for a broker that will not come back). */
  onAbandon(f: (err: Error) => void): void {
    this.abandoned.push(f)
  }

  /** The link failed for good (or closed): nothing will reach the broker any more. */
  get gone(): Error | undefined {
    return this.failure ?? (this.closing ? new TransportError(`${this.role}: the RabbitMQ link is closed`) : undefined)
  }

  /** True while the connection is lost and being dialled again (within the limit). */
  get reconnecting(): boolean {
    return this.down && !this.gaveUp && !this.closing
  }

  private connectionLost(err: Error | undefined): void {
    if (this.closing || this.gaveUp || this.down) return
    if (err) this.lastError = err
    if (this.reconnectMs === 0) {
      this.giveUp(lost('RabbitMQ', this.url, this.role, err ?? this.lastError))
      return
    }
    this.down = true
    this.outage = setTimeout(() => {
      const why = new Error(`gone for more than ${this.reconnectMs} ms (brokerReconnectMs)${this.lastError ? `; last error: ${this.lastError.message}` : ''}`)
      this.giveUp(lost('RabbitMQ', this.url, this.role, why))
    }, this.reconnectMs)
    void this.redial()
  }

  /** Dials until a new connection carries every path again, or the link gives up or closes. */
  private async redial(): Promise<void> {
    for (let attempt = 1; !this.closing && !this.gaveUp; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, backoff(attempt)))
      if (this.closing || this.gaveUp) return
      let conn: ChannelModel
      try {
        conn = await dial(this.href, this.role)
      } catch (err) {
        this.lastError = err instanceof Error ? err : new Error(safeString(err))
        continue
      }
      let closed = false
      conn.on('close', () => (closed = true))
      if (this.closing || this.gaveUp) {
        await conn.close().catch(() => {})
        return
      }
      this.attach(conn)
      try {
        for (const user of this.users) await user.reopen()
      } catch (err) {
        this.lastError = err instanceof Error ? err : new Error(safeString(err))
        closed = true
        dropConnection(conn)
      }
      if (closed) continue
      this.down = false
      clearTimeout(this.outage)
      return
    }
  }

  private giveUp(err: Error): void {
    if (this.gaveUp || this.closing) return
    this.gaveUp = true
    this.failure = err
    clearTimeout(this.outage)
    this.onFailure(err)
    for (const f of this.abandoned) f(err)
  }

  private watch<C extends Channel>(ch: C): C {
    const conn = this.conn
    ch.on('error', (err: Error) => (this.lastError = err))
    ch.on('close', () => {
      // A lost connection closes its channels first: let the connection's own report (or its redial) come first.
      setImmediate(() => {
        if (!this.closing && !this.ours.has(ch) && !this.down && !this.gaveUp && conn === this.conn) this.fail('a channel closed', this.lastError)
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

  /** A channel whose closing by the broker is the caller's business, not a failure of the link (a refused declare). */
  async looseChannel(): Promise<Channel> {
    const ch = await this.conn.createChannel()
    ch.on('error', () => {})
    return ch
  }

  /** Closes a channel on purpose. */
  async closeChannel(ch: Channel | undefined): Promise<void> {
    if (!ch) return
    this.ours.add(ch)
    await ch.close().catch(() => {})
  }

  fail(what: string, err: unknown): void {
    const why = err instanceof Error ? err.message : err === undefined ? 'no reason given' : safeString(err)
    this.giveUp(new TransportError(`${this.role}: RabbitMQ at ${maskUrl(this.url)} failed: ${what}: ${why}`, { cause: err, code: 'ERR_BROKER_LOST' }))
  }

  get closed(): boolean {
    return this.closing
  }

  async close(): Promise<void> {
    if (this.closing) return
    this.closing = true
    clearTimeout(this.outage)
    await this.conn.close().catch(() => {})
  }

  destroy(): void {
    this.closing = true
    clearTimeout(this.outage)
    dropConnection(this.conn)
  }
}

/** amqplib has no public way to drop a connection without the closing handshake: destroy its socket. */
function dropConnection(conn: ChannelModel): void {
  const stream = (conn.connection as unknown as { stream?: { destroy?: () => void } }).stream
  stream?.destroy?.()
}

interface Outgoing {
  readonly queue: string
  readonly frame: Buffer
  readonly done: Promise<void>
  resolve(): void
  reject(err: Error): void
  /** The channel of the latest attempt: a confirm from an earlier one is not an answer. */
  ch: ConfirmChannel | undefined
}

/**
 * Publishes persistent messages on a confirm channel and keeps each until the
 * broker confirms it. While the connection is lost, messages wait; on a new
 * connection every unconfirmed message is published again, in order (the
 * broker may then hold one twice: at-least-once).
 */
class Publisher implements Reopens {
  private ch: ConfirmChannel | undefined
  /** The channel is open and everything unconfirmed was put on it. */
  private ready = false
  private readonly unconfirmed = new Set<Outgoing>()

  /** `declare` runs on each new channel before anything is published on it (the queues it publishes to). */
  constructor(
    private readonly link: AmqpLink,
    private readonly declare: (ch: ConfirmChannel) => Promise<void> = async () => {},
  ) {
    link.reopens(this)
    link.onAbandon((err) => {
      for (const o of this.unconfirmed) o.reject(err)
      this.unconfirmed.clear()
    })
  }

  get channel(): ConfirmChannel | undefined {
    return this.ch
  }

  async open(): Promise<void> {
    await this.reopen()
  }

  async reopen(): Promise<void> {
    const ch = await this.link.confirmChannel()
    ch.on('close', () => {
      if (this.ch === ch) this.ready = false
    })
    await this.declare(ch)
    this.ch = ch
    for (const o of this.unconfirmed) this.put(o)
    this.ready = true
  }

  /** Resolves once the broker confirmed the message; rejects if it refused it, or if the link failed for good. */
  send(queue: string, frame: Buffer): Promise<void> {
    let resolve!: () => void
    let reject!: (err: Error) => void
    const done = new Promise<void>((res, rej) => {
      resolve = res
      reject = rej
    })
    const gone = this.link.gone
    if (gone) {
      reject(gone)
      return done
    }
    const o: Outgoing = { queue, frame, done, resolve, reject, ch: undefined }
    this.unconfirmed.add(o)
    if (this.ready) this.put(o)
    return done
  }

  private put(o: Outgoing): void {
    const ch = this.ch!
    o.ch = ch
    try {
      ch.sendToQueue(o.queue, o.frame, PERSISTENT, (err: unknown) => {
        if (o.ch !== ch || !this.unconfirmed.has(o)) return
        // 'channel closed': the connection went; the message is published again on the next one.
        if (err && !(err instanceof Error && err.message === 'message nacked')) return
        this.unconfirmed.delete(o)
        if (err) o.reject(new Error('the broker refused the message (nack)'))
        else o.resolve()
      })
    } catch {
      // The channel is closed: published again once the connection is back.
    }
  }

  /** Resolves once every message sent so far is confirmed, refused, or abandoned. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.unconfirmed].map((o) => o.done))
  }

  async close(): Promise<void> {
    await this.link.closeChannel(this.ch)
  }
}

/**
 * The driver's hold on its cluster id: a queue declared exclusive to its
 * connection. Another connection's declare is refused (405 RESOURCE_LOCKED);
 * the broker deletes the queue when the connection that holds it goes, so a
 * driver that dies frees it. Taken again on a new connection after a loss.
 */
export class AmqpDriverLease implements DriverLease, Reopens {
  private readonly queue: string
  private ch: Channel | undefined
  private held = false

  constructor(
    private readonly link: AmqpLink,
    private readonly ns: Namespace,
  ) {
    this.queue = names(ns).lease
    link.reopens(this)
  }

  async take(): Promise<boolean> {
    const ch = await this.link.looseChannel()
    try {
      await ch.assertQueue(this.queue, { exclusive: true, durable: false })
    } catch (err) {
      if ((err as { code?: unknown }).code === 405) return false
      throw err
    }
    this.ch = ch
    this.held = true
    return true
  }

  async reopen(): Promise<void> {
    if (this.held && !(await this.take())) throw new Error(`another driver took cluster id ${this.ns.clusterId}`)
  }

  async release(): Promise<void> {
    if (!this.held) return
    this.held = false
    await this.ch?.deleteQueue(this.queue).catch(() => {})
    await this.link.closeChannel(this.ch)
  }
}

/** The driver's end of the RabbitMQ task queue. */
export class AmqpDriverTasks implements DriverTaskPath {
  private readonly q: ReturnType<typeof names>
  private readonly out: Publisher
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly link: AmqpLink,
    ns: Namespace,
  ) {
    this.q = names(ns)
    this.out = new Publisher(link, (ch) => this.declare(ch))
  }

  private async declare(ch: ConfirmChannel): Promise<void> {
    await ch.assertQueue(this.q.tasks, QUEUE)
  }

  async open(): Promise<void> {
    await this.out.open()
    // Frames of a crashed run under the same id must not run in this one.
    await this.out.channel!.purgeQueue(this.q.tasks)
    // Redeclaring counts as use: the queue does not expire while its driver lives, agents or not.
    this.timer = setInterval(() => {
      const ch = this.out.channel
      if (this.link.reconnecting || !ch) return
      this.declare(ch).catch((err: unknown) => {
        if (!this.link.reconnecting) this.link.fail('redeclaring the task queue', err)
      })
    }, QUEUE_TTL_MS / 4)
    this.timer.unref()
  }

  publish(frame: Buffer): void {
    this.out.send(this.q.tasks, frame).catch((err: unknown) => {
      if (!this.link.closed) this.link.fail('publishing a task frame', err)
    })
  }

  reclaim(): void {
    // Nothing to do: RabbitMQ requeues the unacked frames of a consumer whose channel or connection dies.
  }

  async close(): Promise<void> {
    clearInterval(this.timer)
    const ch = this.out.channel
    if (!ch) return
    await this.out.settled()
    await ch.deleteQueue(this.q.tasks).catch(() => {})
    await this.out.close()
  }
}

/** A task frame an agent took: the message, and the channel it came on (an ack on any other would be wrong). */
interface AmqpDelivery {
  msg: ConsumeMessage
  ch: Channel
  /** Set once its channel died with it unacknowledged: the broker requeued it, and it may come back to us. */
  orphan?: { key: string; answered: boolean; generation: number }
}

function contentKey(content: Buffer): string {
  return createHash('sha256').update(content).digest('base64')
}

/**
 * An agent's end of the RabbitMQ task queue: manual acks, channel prefetch in
 * frames. When the connection is lost, the broker requeues the frames the
 * agent held unacknowledged; their delivery tags mean nothing on the next
 * channel. Such a frame that comes back to this agent (redelivered, same
 * content) is matched to the one it holds: not run again, and acknowledged on
 * the new channel once answered — or at once, if it was answered meanwhile.
 */
export class AmqpAgentTasks implements AgentTaskPath {
  private readonly q: ReturnType<typeof names>
  private ch: Channel | undefined
  private live = false
  private onTask: ((frame: Buffer, delivery: Delivery, redelivered: boolean) => void) | undefined
  private tag: string | undefined
  private want = 0
  private applied = 0
  private chain: Promise<void> = Promise.resolve()
  private closed = false
  private generation = 0
  /** Deliveries taken on the current channel and not yet acknowledged or released. */
  private readonly held = new Set<AmqpDelivery>()
  /** Deliveries of an earlier channel, by content, awaiting their redelivery. */
  private readonly orphans = new Map<string, AmqpDelivery>()

  constructor(
    private readonly link: AmqpLink,
    ns: Namespace,
  ) {
    this.q = names(ns)
    link.reopens(this)
  }

  async open(onTask: (frame: Buffer, delivery: Delivery, redelivered: boolean) => void): Promise<void> {
    this.onTask = onTask
    await this.newChannel()
  }

  private async newChannel(): Promise<void> {
    const ch = await this.link.channel()
    ch.on('close', () => {
      if (this.ch === ch) this.live = false
    })
    await ch.assertQueue(this.q.tasks, QUEUE)
    this.ch = ch
    this.live = true
    this.tag = undefined
    this.applied = 0
  }

  /** A new connection: what was held becomes orphans, a new channel consumes again at the wanted prefetch. */
  reopen(): Promise<void> {
    this.generation++
    for (const d of this.held) this.orphan(d)
    this.held.clear()
    for (const [key, d] of this.orphans) if (d.orphan!.generation < this.generation - 1) this.orphans.delete(key)
    const next = this.chain.then(async () => {
      if (this.closed) return
      await this.newChannel()
      await this.apply()
    })
    this.chain = next.catch(() => {})
    return next
  }

  private orphan(d: AmqpDelivery): void {
    d.orphan = { key: contentKey(d.msg.content), answered: false, generation: this.generation }
    this.orphans.set(d.orphan.key, d)
  }

  setPrefetch(frames: number): Promise<void> {
    this.want = frames
    this.chain = this.chain
      .then(() => this.apply())
      .catch((err: unknown) => {
        // A channel lost with its connection: the next one applies the wanted prefetch.
        if (!this.closed && !this.link.closed && !this.link.reconnecting && this.live) this.link.fail('consuming the task queue', err)
      })
    return this.chain
  }

  /** Brings the consumer in line with the wanted prefetch: cancel at 0, (re)consume otherwise. */
  private async apply(): Promise<void> {
    const ch = this.ch!
    if (this.closed || !this.live) return
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
          if (msg === null) {
            if (this.ch === ch) this.tag = undefined
          } else this.take(ch, msg)
        },
        { noAck: false },
      )
      this.tag = consumerTag
    }
  }

  private take(ch: Channel, msg: ConsumeMessage): void {
    if (msg.fields.redelivered && this.orphans.size > 0) {
      const key = contentKey(msg.content)
      const o = this.orphans.get(key)
      if (o) {
        this.orphans.delete(key)
        if (o.orphan!.answered) {
          // Answered while its channel was gone: its results are out, it leaves the queue now.
          ch.ack(msg)
          return
        }
        // Still running here: the agent's handle now stands for this delivery.
        o.msg = msg
        o.ch = ch
        o.orphan = undefined
        this.held.add(o)
        return
      }
    }
    const d: AmqpDelivery = { msg, ch }
    this.held.add(d)
    // RabbitMQ marks a message it delivered before (nacked, or its consumer's channel died).
    this.onTask!(msg.content, d, msg.fields.redelivered)
  }

  async ack(deliveries: Delivery[]): Promise<void> {
    for (const x of deliveries) {
      const d = x as AmqpDelivery
      if (d.orphan) {
        d.orphan.answered = true
        continue
      }
      this.held.delete(d)
      if (d.ch === this.ch && this.live) d.ch.ack(d.msg)
      else {
        // Its channel is gone: the broker requeued the frame; answered, it is acknowledged if it comes back.
        this.orphan(d)
        d.orphan!.answered = true
      }
    }
  }

  async release(deliveries: Delivery[]): Promise<void> {
    for (const x of deliveries) {
      const d = x as AmqpDelivery
      if (d.orphan) {
        // Requeued by the broker already: whoever it comes to runs it.
        this.orphans.delete(d.orphan.key)
        continue
      }
      this.held.delete(d)
      if (d.ch === this.ch && this.live) d.ch.nack(d.msg, false, true)
    }
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
  private readonly out: Publisher
  private onMessage: ((frame: Buffer) => void) | undefined

  constructor(
    private readonly link: AmqpLink,
    ns: Namespace,
  ) {
    this.q = names(ns)
    this.out = new Publisher(link)
    link.reopens({
      reopen: async () => {
        await this.openInbox()
        if (this.onMessage) await this.consume(this.onMessage)
      },
    })
  }

  private async openInbox(): Promise<void> {
    this.inCh = await this.link.channel()
    await this.inCh.assertQueue(this.q.driver, QUEUE)
    await this.inCh.prefetch(INBOX_PREFETCH)
  }

  async open(): Promise<void> {
    await this.openInbox()
    await this.inCh!.purgeQueue(this.q.driver)
    await this.out.open()
  }

  start(onMessage: (frame: Buffer) => void): void {
    this.onMessage = onMessage
    this.consume(onMessage).catch((err: unknown) => this.link.fail('consuming the driver inbox', err))
  }

  private async consume(onMessage: (frame: Buffer) => void): Promise<void> {
    const ch = this.inCh!
    await ch.consume(
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
    )
  }

  send(agentId: string, frame: Buffer): void {
    this.out.send(this.q.agent(agentId), frame).catch((err: unknown) => {
      if (!this.link.closed) this.link.fail('publishing to an agent', err)
    })
  }

  forget(): void {
    // Nothing to do: an agent's inbox expires once it has no consumer, and a live agent still needs it.
  }

  async close(): Promise<void> {
    await this.out.settled()
    await this.inCh?.deleteQueue(this.q.driver).catch(() => {})
    await Promise.all([this.link.closeChannel(this.inCh), this.out.close()])
  }
}

/** An agent's inbox, and its confirmed sends to the driver's. */
export class AmqpAgentMessages implements AgentMessagePath {
  private readonly q: ReturnType<typeof names>
  private readonly inbox: string
  private inCh: Channel | undefined
  private readonly out: Publisher
  private onMessage: ((frame: Buffer) => void) | undefined
  private closed = false

  constructor(
    private readonly link: AmqpLink,
    ns: Namespace,
    agentId: string,
  ) {
    this.q = names(ns)
    this.inbox = this.q.agent(agentId)
    this.out = new Publisher(link)
    link.reopens({
      reopen: async () => {
        this.inCh = await this.link.channel()
        await this.inCh.assertQueue(this.inbox, QUEUE)
        if (this.onMessage) this.consume()
      },
    })
  }

  async open(): Promise<void> {
    this.inCh = await this.link.channel()
    await this.inCh.assertQueue(this.inbox, QUEUE)
    await this.inCh.purgeQueue(this.inbox)
    await this.out.open()
  }

  start(onMessage: (frame: Buffer) => void): void {
    this.onMessage = onMessage
    this.consume()
  }

  private consume(): void {
    const ch = this.inCh!
    const onMessage = this.onMessage!
    ch.assertQueue(this.inbox, QUEUE)
      .then(() =>
        ch.consume(
          this.inbox,
          (msg) => {
            if (msg === null) {
              // Someone deleted our inbox: declare it again and go on listening.
              if (!this.closed && ch === this.inCh) this.consume()
              return
            }
            onMessage(msg.content)
            ch.ack(msg)
          },
          { noAck: false },
        ),
      )
      .catch((err: unknown) => {
        if (!this.closed && !this.link.closed && !this.link.reconnecting && ch === this.inCh) this.link.fail('consuming the agent inbox', err)
      })
  }

  send(frame: Buffer): Promise<void> {
    return this.out.send(this.q.driver, frame)
  }

  async close(): Promise<void> {
    this.closed = true
    await this.out.settled()
    await this.inCh?.deleteQueue(this.inbox).catch(() => {})
    await Promise.all([this.link.closeChannel(this.inCh), this.out.close()])
  }
}
