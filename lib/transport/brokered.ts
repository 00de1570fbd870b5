/**
 * The brokered designs, as a composition of two seams:
 *
 * - a **task path**: one shared, durable queue of task frames per cluster.
 *   The driver publishes; every agent takes frames while it has room (prefetch
 *   for RabbitMQ, pop-only-when-idle for Redis) and acknowledges a frame only
 *   after its results are with the broker. A frame taken by an agent that dies
 *   goes back to the queue marked as redelivered (RabbitMQ: unacked messages
 *   are requeued when the channel dies; Redis: the driver moves the lost
 *   agent's processing list back). Which agent took which frame the agent
 *   tells the driver on the message path (a Taken frame), so the driver, not
 *   the broker, decides what runs again after a loss.
 * - a **message path**: results and control frames (hello, welcome, credit,
 *   heartbeats, actor messages) through one inbox for the driver and one per agent.
 *
 * `redis` is Redis for both, `amqp` RabbitMQ for both, and `amqp+redis`
 * RabbitMQ for tasks and Redis for messages: the same classes, composed.
 */
import { TransportError } from '../errors.js'
import { FrameAuth, packParts, unpackParts, type FrameDirection } from './frames.js'
import { maskUrl, usesAmqp, usesRedis, type TransportKind } from './options.js'
import type { CloseStep } from '../util/close.js'
import { TransportBase, type TransportLifecycleOptions } from './base.js'
import { partsBytes, type Delivery, type SharedQueueAgentTransport, type SharedQueueDriverTransport, type Parts, type TransportFailure } from './transport.js'
import {
  holdClusterId,
  type AgentMessagePath,
  type AgentTaskPath,
  type DriverLease,
  type DriverMessagePath,
  type DriverTaskPath,
  type Namespace,
} from './paths.js'
import type { RedisLink } from './redis.js'
import type { AmqpLink } from './amqp.js'

export interface BrokeredOptions extends TransportLifecycleOptions {
  transport: TransportKind
  redisUrl: string
  amqpUrl: string
  clusterId: string
  /** How long a broker may be gone (its connections dialled again) before the transport fails; 0: at once. */
  reconnectMs: number
  /** The cluster's secret: every message carries an HMAC keyed by it, and one without the right one is dropped. Undefined: none (insecure). */
  secret: Buffer | undefined
}

/**
 * The framing of one direction: packs and, with a secret, tags a message
 * (`seal`); checks the tag and unpacks (`open`: undefined when the tag is
 * missing or wrong, a ProtocolError when the rest is malformed).
 */
class Framing {
  private readonly auth: FrameAuth | undefined

  constructor(o: BrokeredOptions, direction: FrameDirection) {
    this.auth = o.secret ? new FrameAuth(o.secret, o.clusterId, direction) : undefined
  }

  seal(parts: readonly Uint8Array[], to?: string): Buffer {
    return this.auth ? this.auth.seal(parts, to) : packParts(parts)
  }

  open(message: Uint8Array, to?: string): Parts | undefined {
    const body = this.auth ? this.auth.open(message, to) : message
    return body === undefined ? undefined : unpackParts(body)
  }
}

/** The broker connections of one process, and the one failure report they may make. */
class Links {
  redis: RedisLink | undefined
  amqp: AmqpLink | undefined
  private onFailure: TransportFailure | undefined
  private failure: Error | undefined

  /** Reports the first failure once, to whoever listens now or later. */
  failed(err: Error): void {
    if (this.failure) return
    this.failure = err
    this.onFailure?.(err)
  }

  /** True while a broker connection is lost and being dialled again (within the limit). */
  get reconnecting(): boolean {
    return (this.redis?.reconnecting ?? false) || (this.amqp?.reconnecting ?? false)
  }

  listen(f: TransportFailure): void {
    this.onFailure = f
    if (this.failure) f(this.failure)
  }

  async close(): Promise<void> {
    await Promise.all([this.redis?.close(), this.amqp?.close()])
  }

  /** Drops every connection at once (the forced step of a close). */
  destroy(): void {
    this.redis?.destroy()
    this.amqp?.destroy()
  }
}

/** Connects to the brokers of a design; a failure names the (masked) URL and the cause. */
async function openLinks(o: BrokeredOptions, role: string): Promise<Links> {
  const links = new Links()
  try {
    if (usesAmqp(o.transport)) {
      const { AmqpLink } = await import('./amqp.js')
      links.amqp = await AmqpLink.connect(o.amqpUrl, role, o.reconnectMs, (err) => links.failed(err))
    }
    if (usesRedis(o.transport)) {
      const { RedisLink } = await import('./redis.js')
      links.redis = await RedisLink.connect(o.redisUrl, role, o.reconnectMs, (err) => links.failed(err))
    }
  } catch (err) {
    await links.close()
    throw err
  }
  return links
}

function describe(o: BrokeredOptions): string {
  if (o.transport === 'redis') return maskUrl(o.redisUrl)
  if (o.transport === 'amqp') return maskUrl(o.amqpUrl)
  return `${maskUrl(o.amqpUrl)} + ${maskUrl(o.redisUrl)}`
}

/** The driver's hold on its cluster id on each broker of its design (see DriverLease). */
async function driverLeases(o: BrokeredOptions, links: Links): Promise<{ lease: DriverLease; kind: string; url: string }[]> {
  const ns: Namespace = { clusterId: o.clusterId }
  const leases: { lease: DriverLease; kind: string; url: string }[] = []
  if (links.amqp) {
    const { AmqpDriverLease } = await import('./amqp.js')
    leases.push({ lease: new AmqpDriverLease(links.amqp, ns), kind: 'RabbitMQ', url: o.amqpUrl })
  }
  if (links.redis) {
    const { RedisDriverLease } = await import('./redis.js')
    leases.push({ lease: new RedisDriverLease(links.redis, ns), kind: 'Redis', url: o.redisUrl })
  }
  return leases
}

async function driverPaths(o: BrokeredOptions, links: Links): Promise<[DriverTaskPath, DriverMessagePath]> {
  const ns: Namespace = { clusterId: o.clusterId }
  let tasks: DriverTaskPath
  if (links.amqp) {
    const { AmqpDriverTasks } = await import('./amqp.js')
    tasks = new AmqpDriverTasks(links.amqp, ns)
  } else {
    const { RedisDriverTasks } = await import('./redis.js')
    tasks = new RedisDriverTasks(links.redis!, ns)
  }
  let messages: DriverMessagePath
  if (links.redis) {
    const { RedisDriverMessages } = await import('./redis.js')
    messages = new RedisDriverMessages(links.redis, ns)
  } else {
    const { AmqpDriverMessages } = await import('./amqp.js')
    messages = new AmqpDriverMessages(links.amqp!, ns)
  }
  return [tasks, messages]
}

async function agentPaths(o: BrokeredOptions, links: Links, agentId: string): Promise<[AgentTaskPath, AgentMessagePath]> {
  const ns: Namespace = { clusterId: o.clusterId }
  let tasks: AgentTaskPath
  if (links.amqp) {
    const { AmqpAgentTasks } = await import('./amqp.js')
    tasks = new AmqpAgentTasks(links.amqp, ns)
  } else {
    const { RedisAgentTasks } = await import('./redis.js')
    tasks = new RedisAgentTasks(links.redis!, ns, agentId)
  }
  let messages: AgentMessagePath
  if (links.redis) {
    const { RedisAgentMessages } = await import('./redis.js')
    messages = new RedisAgentMessages(links.redis, ns, agentId)
  } else {
    const { AmqpAgentMessages } = await import('./amqp.js')
    messages = new AmqpAgentMessages(links.amqp!, ns, agentId)
  }
  return [tasks, messages]
}

/** The driver's side of a brokered design. */
export class BrokeredDriverTransport extends TransportBase implements SharedQueueDriverTransport {
  readonly kind = 'shared-queue'
  readonly address: string
  private links: Links | undefined
  private leases: DriverLease[] = []
  private tasks: DriverTaskPath | undefined
  private messages: DriverMessagePath | undefined
  private readonly taskFrames: Framing
  private readonly toAgent: Framing
  private readonly fromAgent: Framing

  constructor(private readonly options: BrokeredOptions) {
    super(options)
    this.address = describe(options)
    this.taskFrames = new Framing(options, 'task')
    this.toAgent = new Framing(options, 'to-agent')
    this.fromAgent = new Framing(options, 'to-driver')
  }

  async bind(): Promise<void> {
    const links = (this.links = await openLinks(this.options, 'driver'))
    try {
      // Before anything is emptied: a live driver's queues under this id are its own.
      const leases = await driverLeases(this.options, links)
      this.leases = leases.map((l) => l.lease)
      await holdClusterId(leases, this.options.clusterId, () => this.closed)
      ;[this.tasks, this.messages] = await driverPaths(this.options, links)
      await this.tasks.open()
      await this.messages.open()
      if (this.closed) throw new TransportError('brokered transport closed while binding')
    } catch (err) {
      await this.releaseLeases().catch(() => {})
      await links.close()
      throw err
    }
  }

  private async releaseLeases(): Promise<void> {
    await Promise.all(this.leases.map((l) => l.release()))
  }

  send(peer: string, parts: Parts): void {
    if (!this.messages || !this.countOut(parts)) return
    this.messages.send(peer, this.toAgent.seal(parts, peer))
  }

  publishTasks(parts: Parts): void {
    if (!this.tasks || !this.countOut(parts)) return
    this.tasks.publish(this.taskFrames.seal(parts))
  }

  get reconnecting(): boolean {
    return !this.closed && (this.links?.reconnecting ?? false)
  }

  peerGone(peer: string): void {
    if (this.closed) return
    this.tasks?.reclaim(peer)
    this.messages?.forget(peer)
  }

  start(onMessage: (peer: string, parts: Parts) => void, onFailure?: TransportFailure): void {
    if (!this.links || !this.messages) throw new TransportError('brokered transport started before bind()')
    this.links.listen((err) => {
      if (!this.closed) onFailure?.(err)
    })
    this.messages.start((frame) => {
      let parts: Parts | undefined
      try {
        parts = this.fromAgent.open(frame)
      } catch {
        parts = undefined
      }
      if (parts === undefined) {
        // Malformed, or not from a holder of the secret: an empty message, counted as a bad frame by the driver, like any other.
        if (this.countIn(frame.byteLength)) onMessage('', [])
        return
      }
      // The sender's id is the brokered envelope, not part of the message: it is not counted.
      const peer = parts.shift()
      if (!this.countIn(partsBytes(parts))) return
      onMessage(peer ? Buffer.from(peer.buffer, peer.byteOffset, peer.byteLength).toString('utf8') : '', parts)
    })
  }

  protected gracefulSteps(): CloseStep[] {
    return [
      { name: 'message path', run: () => this.messages?.close() },
      { name: 'task path', run: () => this.tasks?.close() },
      { name: 'cluster id', run: () => this.releaseLeases() },
      { name: 'broker connections', run: () => this.links?.close() },
    ]
  }

  protected override forcedSteps(): CloseStep[] {
    return [{ name: 'dropping broker connections', run: () => this.links?.destroy() }]
  }
}

/** An agent's side of a brokered design. */
export class BrokeredAgentTransport extends TransportBase implements SharedQueueAgentTransport {
  readonly kind = 'shared-queue'
  private links: Links | undefined
  private tasks: AgentTaskPath | undefined
  private messages: AgentMessagePath | undefined
  private readonly idPart: Buffer
  private onMessage: ((parts: Parts, delivery?: Delivery, redelivered?: boolean) => void) | undefined
  private lastSend: Promise<void> = Promise.resolve()
  private pending = new Set<Promise<void>>()
  private readonly taskFrames: Framing
  private readonly fromDriver: Framing
  private readonly toDriver: Framing

  constructor(
    private readonly options: BrokeredOptions,
    private readonly agentId: string,
  ) {
    super(options)
    this.idPart = Buffer.from(agentId, 'utf8')
    this.taskFrames = new Framing(options, 'task')
    this.fromDriver = new Framing(options, 'to-agent')
    this.toDriver = new Framing(options, 'to-driver')
  }

  async connect(): Promise<void> {
    const links = (this.links = await openLinks(this.options, `agent ${this.agentId}`))
    try {
      ;[this.tasks, this.messages] = await agentPaths(this.options, links, this.agentId)
      await this.messages.open()
      await this.tasks.open((frame, delivery, redelivered) => this.deliver(frame, this.taskFrames, '', delivery, redelivered))
      if (this.closed) throw new TransportError('brokered transport closed while connecting')
    } catch (err) {
      await links.close()
      throw err
    }
  }

  private deliver(frame: Buffer, framing: Framing, to: string, delivery?: Delivery, redelivered?: boolean): void {
    let parts: Parts | undefined
    try {
      parts = framing.open(frame, to)
    } catch {
      parts = undefined
    }
    if (parts === undefined) {
      // Malformed, or not from a holder of the secret: never run. Taken off the queue (it would come back forever) and counted.
      if (delivery !== undefined) void this.track(this.tasks!.ack([delivery]))
      if (this.countIn(frame.byteLength)) this.onMessage?.([])
      return
    }
    // Closing: a task frame taken now is given back when the task path closes.
    if (this.countIn(partsBytes(parts))) this.onMessage?.(parts, delivery, redelivered)
  }

  start(onMessage: (parts: Parts, delivery?: Delivery, redelivered?: boolean) => void, onFailure?: TransportFailure): void {
    if (!this.links || !this.messages) throw new TransportError('brokered transport started before connect()')
    this.onMessage = onMessage
    this.links.listen((err) => {
      if (!this.closed) onFailure?.(err)
    })
    this.messages.start((frame) => this.deliver(frame, this.fromDriver, this.agentId))
  }

  send(parts: Parts): void {
    if (!this.messages || !this.countOut(parts)) return
    this.lastSend = this.track(this.messages.send(this.toDriver.seal([this.idPart, ...parts])))
  }

  setWindow(frames: number): void {
    if (!this.closed && this.tasks) void this.track(this.tasks.setPrefetch(frames))
  }

  ack(deliveries: Delivery[]): void {
    if (deliveries.length === 0 || !this.tasks) return
    const tasks = this.tasks
    // Only once the results that answer these frames are with the broker.
    void this.track(this.lastSend.then(() => tasks.ack(deliveries)))
  }

  release(deliveries: Delivery[]): void {
    if (deliveries.length > 0 && this.tasks) void this.track(this.tasks.release(deliveries))
  }

  sent(): Promise<void> {
    return this.lastSend
  }

  async flush(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending])
  }

  /** Keeps an operation until it settles; its failure is the link's to report, not an unhandled rejection. */
  private track(p: Promise<void>): Promise<void> {
    const t = p.catch((err: unknown) => {
      if (!this.closed) this.links?.failed(err instanceof Error ? err : new Error(String(err)))
    })
    this.pending.add(t)
    void t.finally(() => this.pending.delete(t))
    return t
  }

  protected gracefulSteps(): CloseStep[] {
    return [
      { name: 'flush', run: () => this.flush() },
      // Gives back every frame taken and not acknowledged.
      { name: 'task path', run: () => this.tasks?.close() },
      { name: 'message path', run: () => this.messages?.close() },
      { name: 'broker connections', run: () => this.links?.close() },
    ]
  }

  protected override forcedSteps(): CloseStep[] {
    return [{ name: 'dropping broker connections', run: () => this.links?.destroy() }]
  }
}
