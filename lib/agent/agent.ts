import { EventEmitter } from 'node:events'
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import { debuglog } from 'node:util'
import { resolveAgentOptions, type AgentOptions, type ResolvedAgentOptions } from '../options.js'
import { loadCatalog } from '../tasks-module.js'
import { InvalidArgumentError, ProtocolError } from '../errors.js'
import { header, messageShapeProblem, parseHeader, type Header } from '../protocol/codec.js'
import { MsgType } from '../protocol/messages.js'
import { createAgentTransport, isMemoryAddress } from '../transport/resolve.js'
import { resolveAgentCurve } from '../transport/curve.js'
import { findLocalKeys } from '../transport/local-keys.js'
import { agentBrokerKey } from '../transport/broker-secret.js'
import { isBrokered } from '../transport/options.js'
import { isLoopbackEndpoint } from '../validate.js'
import { notAnOptionsObject } from '../util/known-keys.js'
import type { AgentTransport, Delivery, Parts, SharedQueueAgentTransport } from '../transport/transport.js'
import { ActorFraming } from '../actors/framing.js'
import { closeSteps } from '../util/close.js'
import { VERSION } from '../version.js'
import { Credit } from './credit.js'
import { OwnedPool, borrowPool, type AgentPool, type WorkerPool } from './pool.js'
import { Runner } from './runner.js'
import { Links } from './links.js'
import { SharedCache } from './shared-cache.js'
import { SharedFetches } from './shared-fetch.js'
import { Session, type AgentState } from './session.js'
import type { AgentActivity, AgentEvents, AgentStats } from './types.js'

export type { AgentState } from './session.js'
export type { AgentActivity, AgentEvents, AgentStats } from './types.js'

/** How long `close()` waits for the running batches before it stops them. */
const CLOSE_TIMEOUT_MS = 10_000
/** Limit of every other step of `close()`: the Leave (a flush to the broker), stopping threads, closing the transport. */
const CLOSE_STEP_MS = 5_000

/** Requests a thread sends up before its turn ends, when the driver is reached in memory (a thread context's `sendAhead`). */
const SEND_AHEAD = 16

const debug = debuglog('actor-cluster')

/** A task frame taken from the shared queue, with what came with it. */
interface UnclaimedFrame {
  body: Uint8Array
  h: Extract<Header, { type: typeof MsgType.Tasks }>
  delivery: Delivery
  redelivered: boolean
}

/**
 * A node of the cluster: connects to a driver, takes task frames into a
 * piscina pool, hosts actors, and sends results back. Started by
 * `cluster agent`, or inside the driver's process for the embedded default.
 *
 * ```ts
 * const agent = await Agent.start({ connect: 'tcp://127.0.0.1:7100', tasks: './tasks.js' })
 * await agent.waitUntilReady()
 * // ...
 * await agent.close()   // finishes running tasks, hands queued ones back
 * ```
 */
export class Agent extends EventEmitter<AgentEvents> {
  readonly id: string
  readonly options: ResolvedAgentOptions
  readonly stats: AgentStats = {
    tasksDone: 0,
    badFrames: 0,
    batches: 0,
    window: 0,
    threadsLost: 0,
    recycles: 0,
    sharedValues: 0,
    sharedBytes: 0,
    sharedPuts: 0,
    sharedRefused: 0,
  }
  private readonly transport: AgentTransport
  private readonly session: Session
  private readonly credit: Credit
  private readonly pool: WorkerPool
  private readonly runner: Runner
  /** The actor host threads and their messages. */
  private readonly actors: ActorFraming
  /** Shared inputs the driver put on this node. */
  private readonly shared: SharedCache
  /** Brokered designs: frames waiting for shared values fetched from the driver. */
  private readonly fetches: SharedFetches
  /** The threads' links: their requests to the driver, its replies, results of tasks that seceded. */
  private readonly links: Links
  private creditScheduled = false
  /**
   * Brokered designs: frames taken while the driver is silent, neither run nor
   * announced until the agent knows which driver it serves (see {@link taken}).
   */
  private unclaimed: UnclaimedFrame[] = []
  private closing: Promise<void> | undefined

  private constructor(options: ResolvedAgentOptions, id: string, transport: AgentTransport, tasks: string[], actors: string[], shared: AgentPool | undefined) {
    super()
    this.options = options
    this.id = id
    this.transport = transport
    const send = (parts: Parts) => transport.send(parts)
    this.credit = new Credit(options.threads, options.targetQueueMs)
    this.shared = new SharedCache(this.stats, { nodeId: id, sharedCacheBytes: options.sharedCacheBytes })
    this.fetches = new SharedFetches(this.shared, {
      send,
      run: (f) => this.runner.push(f.body, f.count, f.timeoutMs, f.delivery, f.taken),
      answer: (parts, delivery) => {
        if (parts !== undefined && this.session.ready && !this.session.silent) send(parts)
        if (delivery !== undefined) this.acked([delivery])
      },
      registration: () => this.session.registration,
      nodeId: id,
      badFrame: () => this.stats.badFrames++,
    })
    this.session = new Session(
      transport,
      {
        agentId: id,
        threads: options.threads,
        pid: process.pid,
        host: hostname(),
        version: VERSION,
        tasks,
        actors,
        sharedCacheBytes: options.sharedCacheBytes,
        maxFrameBytes: options.maxFrameBytes,
      },
      options,
      {
        window: () => this.credit.window,
        heartbeat: () => ({ busy: this.busy(), done: this.stats.tasksDone, queued: this.runner.queued }),
        joined: (nodeId) => this.onJoined(nodeId),
        silent: (reason) => this.onSilent(reason),
        resumed: (nodeId) => this.onResumed(nodeId),
        lost: (reason, announced) => this.onLost(reason, announced),
      },
    )
    this.links = new Links({
      send,
      route: (thread, body, count) => this.actors.route(thread, body, count),
      session: () => ({ driver: this.session.id, registration: this.session.registration }),
      secededChanged: (total) => this.onSeceded(total),
      options: { threads: options.threads, maxFrameBytes: options.maxFrameBytes, transport: options.transport },
      // In memory the driver and this agent work on a thread's first requests while it makes the rest; through a socket
      // each extra frame costs more than that overlap gains (cross-node ping-pong: 1.24x in memory, 0.9x over TCP with CURVE).
      sendAhead: isMemoryAddress(options.connect) ? SEND_AHEAD : 0,
    })
    const { threads, threadMemoryMb, maxTasksPerThread, recycleHeapMb } = options
    this.pool = shared
      ? borrowPool(shared)
      : new OwnedPool({
          tasks: options.tasks,
          threads,
          threadMemoryMb,
          maxTasksPerThread,
          recycleHeapMb,
          onRecycle: () => this.stats.recycles++,
          holding: () => this.links.seceded > 0,
        })
    this.pool.watch({ started: (t) => this.links.open(t), gone: (t) => this.links.close(t) })
    this.runner = new Runner(this.pool, this.session, this.stats, {
      threads: options.threads,
      maxPoolBatch: options.maxPoolBatch,
      send,
      measured: (elapsedMs, count) => this.onMeasured(elapsedMs, count),
      // Brokered designs: the broker's deliveries; on ZeroMQ too, the tokens of frames that pinned shared values.
      broker: { ack: (deliveries) => this.acked(deliveries) },
      shared: () => this.shared.table(),
      context: () => this.links.info,
      seceded: (thread, ids, driver, registration, timeout) => this.links.secededIn(thread, ids, { driver, registration }, timeout),
    })
    this.actors = new ActorFraming({
      tasks: options.tasks,
      maxThreads: options.threads,
      send,
      shared: () => this.shared.table(),
      lacking: (hash, what) => this.shared.lacking(hash, what),
      links: this.links,
      replies: () => (this.session.state === 'ready' || this.session.state === 'leaving' ? 'send' : this.session.ready ? 'hold' : 'drop'),
    })
  }

  /**
   * Loads the tasks module (failing with a TasksModuleError if it does not),
   * starts the pool and connects. Resolves before the driver answers; use
   * {@link waitUntilReady} to wait for registration. With `pool`, task
   * batches run on that shared {@link AgentPool} (many agents in one process)
   * and `threads` is what this agent announces.
   */
  static async start(options: AgentOptions & { pool?: AgentPool }): Promise<Agent> {
    const notObject = notAnOptionsObject('options', options)
    if (notObject) throw notObject
    const { pool: shared, ...rest } = options
    const resolved = resolveAgentOptions(rest)
    if (shared !== undefined && shared.tasks !== resolved.tasks) {
      throw new InvalidArgumentError(`options.pool runs the tasks module ${shared.tasks}, not ${resolved.tasks}`)
    }
    // No keys given, a driver on a loopback port of this machine: the keys it made for its agents, if it made any.
    const local = !resolved.curve && resolved.transport === 'zmq' && /^(tcp|ipc):/.test(resolved.connect) && isLoopbackEndpoint(resolved.connect)
    const findKeys = local ? () => findLocalKeys(resolved.connect) : undefined
    const curve = resolved.curve ? resolveAgentCurve(resolved.curve) : findKeys?.()
    const brokerKey = isBrokered(resolved.transport) && !resolved.insecure ? agentBrokerKey(resolved) : undefined
    const catalog = await loadCatalog(resolved.tasks, `agent ${hostname()}`)
    const id = resolved.id ?? `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`
    // The transport reports handshake failures before the agent exists: route them once it does.
    const route: { agent?: Agent } = {}
    const transport = await createAgentTransport({
      ...resolved,
      identity: id,
      curve,
      findKeys,
      brokerKey,
      onHandshakeError: (m) => route.agent?.emit('auth:failed', m),
    })
    const agent = new Agent(resolved, id, transport, [...catalog.functions.keys()], [...catalog.classes.keys()], shared)
    route.agent = agent
    try {
      await agent.transport.connect()
      agent.transport.start(
        (parts: Parts, delivery?: Delivery, redelivered?: boolean) => agent.onMessage(parts, delivery, redelivered === true),
        (err: Error) => agent.onTransportFailure(err),
      )
      agent.session.start()
    } catch (err) {
      await agent.close()
      throw err
    }
    return agent
  }

  get state(): AgentState {
    return this.session.state
  }

  /** What the agent is doing now, for monitoring (`cluster agent --status-file`). */
  activity(): AgentActivity {
    return { state: this.session.state, busy: this.busy(), queued: this.runner.queued, driverAgeMs: this.session.driverAgeMs }
  }

  /** Resolves once a driver has welcomed this agent; rejects if it was rejected or closed. */
  waitUntilReady(): Promise<void> {
    return this.session.waitUntilReady()
  }

  private busy(): number {
    return Math.min(this.runner.batchesRunning, this.options.threads)
  }

  private onMessage(parts: Parts, delivery?: Delivery, redelivered = false): void {
    let h: Header
    try {
      // Too many parts, or too many bytes in all: nothing a driver sends.
      const problem = messageShapeProblem(parts, this.options.maxFrameBytes)
      if (problem !== undefined) {
        this.tooLarge(parts)
        throw new ProtocolError(`message of ${problem}`)
      }
      h = parseHeader(parts[0])
    } catch {
      this.stats.badFrames++
      // Never run, never to come back: off the queue.
      if (delivery !== undefined) this.runner.discard(delivery)
      return
    }
    this.session.heard()
    // Frames from a driver (a connection looped back to the agent itself would bring its own Hellos and Credits).
    if (this.transport.kind === 'routed' && (h.type === MsgType.Welcome || h.type === MsgType.Heartbeat || h.type === MsgType.Tasks)) {
      this.transport.driverHeard()
    }
    try {
      switch (h.type) {
        case MsgType.Welcome:
          this.session.welcome(h.info.session, h.info.nodeId)
          return
        case MsgType.Reject:
          this.emit('rejected', h.reason)
          this.session.fail(new ProtocolError(`driver rejected agent ${this.id}: ${h.reason}`))
          void this.close()
          return
        case MsgType.Tasks:
          if (!parts[1]) throw new ProtocolError('task frame without a body')
          if (delivery !== undefined && this.transport.kind === 'shared-queue') this.taken(this.transport, parts[1], h, delivery, redelivered)
          // ZeroMQ: a frame that carries shared values runs once the node holds them (it fetches any it lacks); its token unpins them once answered.
          else if (h.shared !== undefined) this.fetches.taken({ body: parts[1], count: h.count, timeoutMs: h.timeoutMs, delivery: {} }, h.shared)
          else this.runner.push(parts[1], h.count, h.timeoutMs)
          return
        case MsgType.Actor:
          this.stats.badFrames += this.actors.receive(parts[1], h.count)
          return
        case MsgType.Put: {
          const refused = this.shared.put(h.hash, h.kind, h.size, parts[1])
          if (refused === undefined) {
            this.fetches.arrived(h.hash)
            return
          }
          // Not stored: the frames waiting for it fail (a frame that comes later asks for it again).
          debug('agent %s refused a Put: %s', this.id, refused)
          this.fetches.unavailable(h.hash, 'ERR_SHARED_TOO_LARGE', refused)
          return
        }
        case MsgType.Drop:
          this.shared.drop(h.hashes)
          return
        case MsgType.Unavailable:
          this.fetches.unavailable(h.hash, h.code, h.message)
          return
        case MsgType.Reply:
          if (!parts[1] || !this.links.reply(h.thread, parts[1], h.count)) throw new ProtocolError('reply for no thread of this agent')
          return
        case MsgType.DriverBye:
          this.session.bye()
          return
        case MsgType.Heartbeat:
          return
        default:
          throw new ProtocolError(`unexpected frame type ${h.type} from the driver`)
      }
    } catch {
      this.stats.badFrames++
      if (delivery !== undefined) this.runner.discard(delivery)
    }
  }

  /**
   * Brokered designs: a frame from the shared queue. The driver is told (Taken)
   * before any of it runs — it starts only once the broker holds that word —
   * so a loss of this agent is charged to the tasks it took, and the driver,
   * not the broker, sends them again. A redelivery may have run, or be
   * running, elsewhere: it is acknowledged unrun, and the driver sends again
   * what no one took. With no driver to tell, the frame goes back to the queue.
   *
   * While the driver is silent the agent takes nothing more, but a take already
   * waiting on the broker may still bring a frame, and it may be the next
   * driver's, published before the agent read that driver's Welcome. Run for
   * the silent driver, it would be dropped with that driver's work at the
   * Welcome, while the next driver, told it was taken, waited for it forever.
   * So it waits, unrun and unannounced: taken as usual if the silent driver
   * answers again, given back (marked as redelivered, so that whichever driver
   * published it hears it dropped and sends it again) if another one does.
   */
  private taken(
    transport: SharedQueueAgentTransport,
    body: Uint8Array,
    h: Extract<Header, { type: typeof MsgType.Tasks }>,
    delivery: Delivery,
    redelivered: boolean,
  ): void {
    if (h.frameId === undefined) throw new ProtocolError('task frame from the shared queue without a frame number')
    if (!this.session.ready) {
      transport.release([delivery])
      return
    }
    if (this.session.silent) {
      this.unclaimed.push({ body, h, delivery, redelivered })
      return
    }
    transport.send([header(MsgType.Taken, h.frameId, redelivered)])
    if (redelivered) {
      // Acknowledged once the broker holds the Taken above (acks wait for the messages sent before them).
      transport.ack([delivery])
      return
    }
    this.credit.frameTaken(h.count)
    if (h.shared === undefined) this.runner.push(body, h.count, h.timeoutMs, delivery, transport.sent())
    else this.fetches.taken({ body, count: h.count, timeoutMs: h.timeoutMs, delivery, taken: transport.sent() }, h.shared)
  }

  /** These frames were answered, or given back unrun: on the brokered designs they leave the shared queue; their shared values are unpinned. */
  private acked(deliveries: Delivery[]): void {
    if (this.transport.kind === 'shared-queue') this.transport.ack(deliveries)
    this.fetches.acked(deliveries)
  }

  /**
   * A message over `maxFrameBytes`: if it is a Put (a driver that does not
   * know this agent's limit), the frames waiting for that value fail,
   * naming the limit, rather than wait for it forever.
   */
  private tooLarge(parts: Parts): void {
    let h: Header
    try {
      h = parseHeader(parts[0])
    } catch {
      return
    }
    if (h.type === MsgType.Put) {
      const why = `shared value ${h.hash} of ${h.size} bytes exceeds the maxFrameBytes of node ${this.id} (${this.options.maxFrameBytes})`
      this.fetches.unavailable(h.hash, 'ERR_SHARED_TOO_LARGE', this.shared.refused(h.hash, why))
    }
  }

  /** Tasks that seceded changed in number: the window announced follows, once per tick. */
  private onSeceded(total: number): void {
    this.credit.seceded = total
    if (this.creditScheduled) return
    this.creditScheduled = true
    process.nextTick(() => {
      this.creditScheduled = false
      if (this.session.ready && !this.session.silent) this.sendCredit()
    })
  }

  private onJoined(nodeId: string): void {
    this.links.joined(nodeId)
    // A new registration: the driver's record of this node starts empty, so does the cache.
    this.fetches.reset()
    this.credit.reset()
    this.sendCredit()
    this.emit('driver:joined', nodeId)
  }

  /** The driver went silent: take no more work from a broker; keep what is held, and its results, for when it answers. */
  private onSilent(reason: string): void {
    if (this.transport.kind === 'shared-queue') this.transport.setWindow(0)
    this.emit('driver:lost', reason)
  }

  /** The silent driver answered (it was only busy): the held results go, and work goes on. */
  private onResumed(nodeId: string): void {
    this.sendCredit()
    this.runner.resume()
    if (this.transport.kind === 'shared-queue') {
      for (const f of this.unclaimed.splice(0)) this.taken(this.transport, f.body, f.h, f.delivery, f.redelivered)
    }
    this.actors.flush()
    this.emit('driver:joined', nodeId)
  }

  /** The driver is gone: its tasks are its own to requeue, its actors are gone. */
  private onLost(reason: string, announced: boolean): void {
    if (this.transport.kind === 'shared-queue') this.transport.setWindow(0)
    this.runner.release()
    this.giveBackUnclaimed()
    this.actors.reset()
    this.fetches.reset()
    if (!announced) this.emit('driver:lost', reason)
  }

  private onMeasured(elapsedMs: number, count: number): void {
    if (count <= 0) return
    const announce = this.credit.measured(elapsedMs, count)
    this.stats.window = this.credit.window
    if (announce) this.sendCredit()
  }

  /** Tells the driver the window (0 while leaving); brokered designs also take frames from the shared queue by it. */
  private sendCredit(): void {
    const { window, prefetch } = this.credit.announce(this.session.state === 'leaving')
    this.transport.send([header(MsgType.Credit, window)])
    if (this.transport.kind === 'shared-queue') this.transport.setWindow(prefetch)
  }

  /** The transport failed for good (its broker went away): say so and close; the broker or the driver requeues what this agent held. */
  private onTransportFailure(err: Error): void {
    if (this.closing) return
    this.emit('transport:error', err)
    this.session.fail(err)
    void this.close()
  }

  /**
   * Leaves cleanly: asks for no more work, finishes the batches running, hands
   * the queued tasks back to the driver, then stops the pool and the sockets.
   * Batches still running after `timeoutMs` (default {@link CLOSE_TIMEOUT_MS})
   * are stopped with their threads; the driver runs them again elsewhere.
   * Idempotent; never rejects.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.closing ??= this.shutdown(options.timeoutMs ?? CLOSE_TIMEOUT_MS)
    return this.closing
  }

  private async shutdown(timeoutMs: number): Promise<void> {
    const wasReady = this.session.leave()
    const problems = await closeSteps(
      [
        // Graceful: no more work, the running batches finish and answer, the queued frames go back.
        { name: 'ask for no more work', run: () => (wasReady ? this.sendCredit() : undefined) },
        { name: 'finish the running batches', run: () => this.runner.drained(), timeoutMs },
        { name: 'leave', run: () => (wasReady ? this.leave() : undefined) },
        // Forced: whatever still runs is stopped.
        { name: 'stop the session', run: () => this.stopSession() },
        { name: 'stop the actor threads', run: () => this.actors.close() },
        { name: "close the threads' links", run: () => this.links.closeAll() },
        { name: 'stop the pool', run: () => this.pool.close() },
        { name: 'close the transport', run: () => this.transport.close() },
        { name: 'free the shared values', run: () => this.shared.clear() },
      ],
      CLOSE_STEP_MS,
    )
    for (const p of problems) debug('agent %s close: %s: %s', this.id, p.step, p.error.message)
  }

  /** Hands the queued tasks back and says Leave (the driver requeues whatever the agent still held). */
  private async leave(): Promise<void> {
    if (this.transport.kind === 'shared-queue') {
      // The results and acks of the batches just finished go first, then the frames not started go back.
      await this.transport.flush()
    }
    this.runner.release()
    this.fetches.reset()
    this.transport.send([header(MsgType.Leave, [])])
  }

  private stopSession(): void {
    this.runner.stop()
    this.giveBackUnclaimed()
    this.session.close()
  }

  /** Frames taken while the driver was silent go back to the queue, marked as redelivered: no driver knows this agent took them. */
  private giveBackUnclaimed(): void {
    const frames = this.unclaimed
    this.unclaimed = []
    if (frames.length > 0 && this.transport.kind === 'shared-queue') this.transport.release(frames.map((f) => f.delivery))
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}
