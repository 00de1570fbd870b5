import { EventEmitter } from 'node:events'
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import { Piscina } from 'piscina'
import { resolveAgentOptions, type AgentOptions, type ResolvedAgentOptions } from '../options.js'
import { loadCatalog } from '../tasks-module.js'
import { ClusterError, InvalidArgumentError, OutOfMemoryError, ProtocolError, TaskTimeoutError, WorkerCrashedError, toWireError } from '../errors.js'
import { decode, encode, header, parseFlatBody, parseHeader, type Header } from '../protocol/codec.js'
import { ActorOp, MsgType, Status, type HelloInfo } from '../protocol/messages.js'
import { createAgentTransport } from '../transport/resolve.js'
import { resolveAgentCurve } from '../transport/curve.js'
import type { AgentTransport, Delivery, Parts } from '../transport/transport.js'
import { ActorHosts } from '../actors/host.js'
import type { HostReply, HostRequest } from '../actors/host-worker.js'
import type { PoolBatch, PoolResult } from './worker.js'
import { Deque } from '../util/deque.js'
import { VERSION } from '../version.js'
import { createPiscina, type AgentPool } from './pool.js'

export type AgentState = 'connecting' | 'ready' | 'leaving' | 'closed'

export interface AgentEvents {
  'driver:joined': [nodeId: string]
  'driver:lost': [reason: string]
  rejected: [reason: string]
  /** The driver refused the security handshake (CURVE keys); the agent keeps retrying. */
  'auth:failed': [message: string]
  /** The transport failed for good (a broker connection was lost); the agent closes. */
  'transport:error': [err: Error]
}

export interface AgentStats {
  tasksDone: number
  badFrames: number
  batches: number
  window: number
  /** Pool batches whose worker thread died (crash, out of memory, timeout). */
  threadsLost: number
  /** Times the pool's threads were replaced by maxTasksPerThread or recycleHeapMb. */
  recycles: number
}

/** What an agent is doing now (`agent.activity()`). */
export interface AgentActivity {
  state: AgentState
  /** Batches running on the pool, at most one per thread. */
  busy: number
  /** Tasks received and not yet started. */
  queued: number
  /** Milliseconds since the driver was last heard; undefined before any driver. */
  driverAgeMs: number | undefined
}

interface QueuedFrame {
  body: Uint8Array
  count: number
  /** Run alone, under this limit: the thread is replaced if it runs over. */
  timeoutMs: number | undefined
  /** Run alone: split out of a batch whose thread died, to find the task that killed it. */
  solo: boolean
  /** Brokered designs: the broker's handles, acknowledged once the frame's results are out. */
  deliveries: Delivery[] | undefined
  /** A frame split out of a failed batch: its share of the original frames' acknowledgement. */
  split: SplitGroup | undefined
}

/** The frames of a batch whose thread died, split into single tasks: acked once every piece is answered. */
interface SplitGroup {
  remaining: number
  deliveries: Delivery[]
}

/** Tasks per thread the credit window may grow to. */
const MAX_PER_THREAD = 4096
/** Tasks per thread before the agent has measured any. */
const START_PER_THREAD = 2

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
  readonly stats: AgentStats = { tasksDone: 0, badFrames: 0, batches: 0, window: 0, threadsLost: 0, recycles: 0 }
  private readonly transport: AgentTransport
  private pool: Pick<Piscina<PoolBatch, PoolResult>, 'run'>
  /** The shared pool this agent runs on; undefined when it owns its pool (and recycles and stops it). */
  private readonly shared: AgentPool | undefined
  private tasksSinceRecycle = 0
  private readonly retiring = new Set<Promise<void>>()
  private hosts: ActorHosts
  private readonly hello: HelloInfo
  private _state: AgentState = 'connecting'
  /** The session of the driver that welcomed us; batches carry it so a later driver never gets their results. */
  private session: string | undefined
  /** Changes each time the agent starts looking for a driver: tells a repeated Hello from a new registration. */
  private registration = randomBytes(4).toString('hex')
  private lastDriverSeen = 0
  private readonly queue = new Deque<QueuedFrame>()
  private queued = 0
  private inflight = 0
  private busyTasks = 0
  private perTaskMs: number | undefined
  private window: number
  private sentWindow = -1
  private actorReplies: unknown[] = []
  private repliesScheduled = false
  private readonly timers: NodeJS.Timeout[] = []
  private readonly readyWaiters: { resolve(): void; reject(e: Error): void }[] = []
  private drained: (() => void) | undefined
  private closing: Promise<void> | undefined
  /** Tasks per frame received lately: turns the window (in tasks) into a prefetch (in frames) for brokered designs. */
  private tasksPerFrame = 1

  private constructor(options: ResolvedAgentOptions, id: string, transport: AgentTransport, tasks: string[], actors: string[], shared: AgentPool | undefined) {
    super()
    this.options = options
    this.id = id
    this.transport = transport
    this.window = options.threads * START_PER_THREAD
    this.hello = {
      agentId: this.id,
      threads: options.threads,
      pid: process.pid,
      host: hostname(),
      version: VERSION,
      tasks,
      actors,
      window: this.window,
    }
    this.shared = shared
    this.pool = shared ?? this.newPool()
    this.hosts = this.newHosts()
  }

  /**
   * Loads the tasks module (failing with a TasksModuleError if it does not),
   * starts the pool and connects. Resolves before the driver answers; use
   * {@link waitUntilReady} to wait for registration. With `pool`, task
   * batches run on that shared {@link AgentPool} (many agents in one process)
   * and `threads` is what this agent announces.
   */
  static async start(options: AgentOptions & { pool?: AgentPool }): Promise<Agent> {
    const resolved = resolveAgentOptions(options)
    const shared = options.pool
    if (shared !== undefined && shared.tasks !== resolved.tasks) {
      throw new InvalidArgumentError(`options.pool runs the tasks module ${shared.tasks}, not ${resolved.tasks}`)
    }
    const curve = resolved.curve ? resolveAgentCurve(resolved.curve) : undefined
    const catalog = await loadCatalog(resolved.tasks, `agent ${hostname()}`)
    const id = resolved.id ?? `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`
    // The transport reports handshake failures before the agent exists: route them once it does.
    let agentRef: Agent | undefined
    const transport = await createAgentTransport({ ...resolved, identity: id, curve, onHandshakeError: (m) => agentRef?.emit('auth:failed', m) })
    const agent = new Agent(resolved, id, transport, [...catalog.functions.keys()], [...catalog.classes.keys()], shared)
    agentRef = agent
    try {
      await agent.run()
    } catch (err) {
      await agent.close()
      throw err
    }
    return agent
  }

  get state(): AgentState {
    return this._state
  }

  /** What the agent is doing now, for monitoring (`cluster agent --status-file`). */
  activity(): AgentActivity {
    return {
      state: this._state,
      busy: Math.min(this.inflight, this.options.threads),
      queued: this.queued,
      driverAgeMs: this.lastDriverSeen === 0 ? undefined : Date.now() - this.lastDriverSeen,
    }
  }

  /** Resolves once a driver has welcomed this agent; rejects if it was rejected or closed. */
  waitUntilReady(): Promise<void> {
    if (this._state === 'ready') return Promise.resolve()
    if (this._state === 'closed') return Promise.reject(new ClusterError('ERR_CLUSTER_CLOSED', 'agent is closed'))
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }))
  }

  private newPool(): Piscina<PoolBatch, PoolResult> {
    return createPiscina(this.options.tasks, this.options.threads, this.options.threadMemoryMb)
  }

  /**
   * Replaces every pool thread: new batches go to a fresh pool while the old
   * one finishes what it runs, then stops. Piscina cannot retire one chosen
   * thread, so a leaking tasks module is contained by retiring them all.
   */
  private recyclePool(): void {
    // A shared pool belongs to its owner, who decides when its threads are replaced.
    if (this.shared) return
    this.stats.recycles++
    this.tasksSinceRecycle = 0
    const old = this.pool as Piscina<PoolBatch, PoolResult>
    this.pool = this.newPool()
    const done = old.close().catch(() => old.destroy())
    this.retiring.add(done)
    void done.finally(() => this.retiring.delete(done))
  }

  private newHosts(): ActorHosts {
    return new ActorHosts(this.options.tasks, this.options.threads, (r) => this.onActorReply(r))
  }

  private async run(): Promise<void> {
    await this.transport.connect()
    this.transport.start(
      (parts: Parts, delivery?: Delivery) => this.onMessage(parts, delivery),
      (err: Error) => this.onTransportFailure(err),
    )
    this.sendHello()
    const helloEvery = Math.min(1000, this.options.heartbeatMs)
    let unanswered = 0
    this.timers.push(
      setInterval(() => {
        if (this._state !== 'connecting') {
          unanswered = 0
          return
        }
        // Five Hellos without an answer: dial again, in case the connection is stuck (see ZmqAgentTransport.redial).
        if (++unanswered % 5 === 0 && this.transport.kind === 'routed') this.transport.redial()
        this.sendHello()
      }, helloEvery),
      setInterval(() => this.tick(), this.options.heartbeatMs),
    )
    for (const t of this.timers) t.unref()
  }

  private sendHello(): void {
    this.transport.send([header(MsgType.Hello, { ...this.hello, window: this.window, registration: this.registration })])
  }

  private tick(): void {
    if (this._state !== 'ready') return
    if (Date.now() - this.lastDriverSeen > this.options.driverTimeoutMs) {
      this.forgetDriver(`no word from the driver for ${this.options.driverTimeoutMs} ms`)
      return
    }
    this.transport.send([
      header(MsgType.Heartbeat, { busy: Math.min(this.inflight, this.options.threads), done: this.stats.tasksDone, queued: this.queued }),
    ])
  }

  private onMessage(parts: Parts, delivery?: Delivery): void {
    let h: Header
    try {
      h = parseHeader(parts[0])
    } catch {
      this.stats.badFrames++
      // Never run, never to come back: off the queue.
      if (delivery !== undefined) this.ack([delivery])
      return
    }
    this.lastDriverSeen = Date.now()
    try {
      switch (h.type) {
        case MsgType.Welcome:
          if (this._state === 'connecting') {
            this._state = 'ready'
            this.session = h.info.session
            this.sentWindow = -1
            this.sendCredit()
            // Brokered designs: frames taken while no driver was known wait in the queue.
            this.pump()
            for (const w of this.readyWaiters.splice(0)) w.resolve()
            this.emit('driver:joined', h.info.nodeId)
          }
          return
        case MsgType.Reject:
          this.emit('rejected', h.reason)
          for (const w of this.readyWaiters.splice(0)) w.reject(new ProtocolError(`driver rejected agent ${this.id}: ${h.reason}`))
          void this.close()
          return
        case MsgType.Tasks:
          if (!parts[1]) throw new ProtocolError('task frame without a body')
          this.queue.push({
            body: parts[1],
            count: h.count,
            timeoutMs: h.timeoutMs,
            solo: h.timeoutMs !== undefined,
            deliveries: delivery === undefined ? undefined : [delivery],
            split: undefined,
          })
          this.queued += h.count
          if (delivery !== undefined) this.tasksPerFrame = this.tasksPerFrame * 0.8 + Math.max(1, h.count) * 0.2
          this.pump()
          return
        case MsgType.Actor:
          this.onActorFrame(parts[1], h.count)
          return
        case MsgType.DriverBye:
          if (this._state === 'ready') this.forgetDriver('the driver closed')
          return
        case MsgType.Heartbeat:
          return
        default:
          throw new ProtocolError(`unexpected frame type ${h.type} from the driver`)
      }
    } catch {
      this.stats.badFrames++
      if (delivery !== undefined) this.ack([delivery])
    }
  }

  /** The driver is gone: its tasks are its own to requeue; wait for the next one. */
  private forgetDriver(reason: string): void {
    this._state = 'connecting'
    this.session = undefined
    this.registration = randomBytes(4).toString('hex')
    if (this.transport.kind === 'shared-queue') this.transport.setWindow(0)
    this.releaseQueued()
    this.queued = 0
    void this.hosts.close()
    this.hosts = this.newHosts()
    this.emit('driver:lost', reason)
    this.sendHello()
  }

  private pump(): void {
    const threads = this.options.threads
    while (this.inflight < threads * 2 && this.queue.length > 0 && this._state === 'ready') {
      const target = Math.min(this.options.maxPoolBatch, Math.max(1, Math.ceil(this.queued / threads)))
      const first = this.queue.shift()!
      const frames = [first]
      let n = first.count
      // Timed and isolated frames run alone; others are grouped up to about one thread's share.
      if (!first.solo) {
        while (this.queue.length > 0 && !this.queue.peek()!.solo && n + this.queue.peek()!.count <= target) {
          const f = this.queue.shift()!
          frames.push(f)
          n += f.count
        }
      }
      const bodies = frames.map((f) => f.body)
      this.queued -= n
      this.inflight++
      this.busyTasks += n
      const driver = this.session
      const pool = this.pool
      const signal = first.timeoutMs === undefined ? undefined : AbortSignal.timeout(first.timeoutMs)
      pool.run({ bodies }, signal ? { signal } : {}).then(
        (r) => this.onBatchDone(driver, r, n, frames),
        (err: Error) => this.onBatchFailed(driver, frames, n, err, first.timeoutMs),
      )
    }
  }

  /**
   * Brokered designs: the frames of a finished batch leave the broker's queue
   * (after their results were sent); pieces of a split batch count down to
   * the acknowledgement of the frames they came from.
   */
  private acknowledge(frames: QueuedFrame[]): void {
    const done = finished(frames)
    if (done.length > 0) this.ack(done)
  }

  private onBatchDone(driver: string | undefined, r: PoolResult, n: number, frames: QueuedFrame[]): void {
    this.batchSettled(n)
    this.stats.tasksDone += r.count
    this.stats.badFrames += r.bad
    this.stats.batches++
    // Results for a driver that has since gone would only confuse the next one.
    if (driver !== undefined && driver === this.session) {
      this.transport.send([header(MsgType.Results, r.count), r.results])
    }
    this.acknowledge(frames)
    if (r.count > 0) this.adaptWindow(r.elapsedMs / r.count)
    this.tasksSinceRecycle += r.count
    const { maxTasksPerThread, recycleHeapMb, threads } = this.options
    if ((maxTasksPerThread > 0 && this.tasksSinceRecycle >= maxTasksPerThread * threads) || (recycleHeapMb > 0 && r.heapMb > recycleHeapMb)) {
      this.recyclePool()
    }
    this.pump()
  }

  /**
   * The thread running a batch died or was stopped. With several tasks in the
   * batch we cannot tell which one did it: run each alone, at the front of
   * the queue. A task that fails alone is reported, with the cause, for the
   * driver to retry on its infrastructure budget or give up.
   */
  private onBatchFailed(driver: string | undefined, frames: QueuedFrame[], n: number, err: Error, timeoutMs: number | undefined): void {
    this.batchSettled(n)
    this.stats.threadsLost++
    const items: unknown[] = []
    for (const { body } of frames) {
      try {
        const decoded = decode(body)
        if (Array.isArray(decoded) && decoded.length % 3 === 0) items.push(...decoded)
        else this.stats.badFrames++
      } catch {
        this.stats.badFrames++
      }
    }
    const stale = driver === undefined || driver !== this.session
    if (!stale && items.length > 3) {
      // The original frames are acknowledged once every piece is answered.
      const group: SplitGroup = { remaining: items.length / 3, deliveries: finished(frames) }
      for (let i = items.length - 3; i >= 0; i -= 3) {
        this.queue.unshift({ body: encode(items.slice(i, i + 3)), count: 1, timeoutMs: undefined, solo: true, deliveries: undefined, split: group })
      }
      this.queued += items.length / 3
      this.pump()
      return
    }
    if (!stale && items.length === 3) {
      const name = String(items[1])
      const code = (err as { code?: unknown }).code
      const cause =
        timeoutMs !== undefined && err.name === 'AbortError'
          ? new TaskTimeoutError(`task "${name}" ran longer than its timeout of ${timeoutMs} ms; its thread was stopped and replaced`)
          : code === 'ERR_WORKER_OUT_OF_MEMORY'
            ? new OutOfMemoryError(`task "${name}" ran its worker thread out of memory: ${err.message}`, { cause: err })
            : new WorkerCrashedError(`task "${name}" crashed its worker thread: ${err.message}`, { cause: err })
      this.transport.send([header(MsgType.Results, 1), encode([items[0], Status.Failed, toWireError(cause)])])
    }
    this.acknowledge(frames)
    this.pump()
  }

  /** Brokered designs: these deliveries leave the shared queue. */
  private ack(deliveries: Delivery[]): void {
    if (this.transport.kind === 'shared-queue') this.transport.ack(deliveries)
  }

  private batchSettled(n: number): void {
    this.inflight--
    this.busyTasks -= n
    if (this.inflight === 0) this.drained?.()
  }

  /**
   * Credit: ask for about `targetQueueMs` of work per thread, from the measured
   * time per task, so fast tasks stream in deep pipelines and slow ones are not
   * hoarded by one node.
   */
  private adaptWindow(msPerTask: number): void {
    this.perTaskMs = this.perTaskMs === undefined ? msPerTask : this.perTaskMs * 0.7 + msPerTask * 0.3
    const perThread = Math.max(START_PER_THREAD, Math.min(MAX_PER_THREAD, Math.round(this.options.targetQueueMs / Math.max(this.perTaskMs, 1e-6))))
    this.window = perThread * this.options.threads
    this.stats.window = this.window
    if (this.sentWindow <= 0 || Math.abs(this.window - this.sentWindow) / this.sentWindow > 0.25) this.sendCredit()
  }

  private sendCredit(): void {
    const w = this._state === 'leaving' ? 0 : this.window
    this.sentWindow = w
    this.transport.send([header(MsgType.Credit, w)])
    // Brokered designs take frames from a shared queue: the window in frames, plus one per thread for frames
    // whose results are on their way to the broker (acked only then).
    if (this.transport.kind === 'shared-queue') this.transport.setWindow(w === 0 ? 0 : Math.ceil(w / this.tasksPerFrame) + this.options.threads)
  }

  /** Brokered designs: frames taken and not started go back to the shared queue. */
  private releaseQueued(): void {
    const deliveries = finished(this.queue.clear())
    if (deliveries.length > 0 && this.transport.kind === 'shared-queue') this.transport.release(deliveries)
  }

  /** The transport failed for good (its broker went away): say so and close; the broker or the driver requeues what this agent held. */
  private onTransportFailure(err: Error): void {
    if (this.closing) return
    this.emit('transport:error', err)
    for (const w of this.readyWaiters.splice(0)) w.reject(err)
    void this.close()
  }

  private onActorFrame(body: Uint8Array | undefined, count: number): void {
    const items = parseFlatBody(body, 5, count)
    for (let i = 0; i < items.length; i += 5) {
      const id = items[i]
      const op = items[i + 1]
      const actorId = items[i + 2]
      const name = items[i + 3]
      const args = items[i + 4]
      if (
        !Number.isSafeInteger(id) || (op !== ActorOp.Spawn && op !== ActorOp.Call && op !== ActorOp.Stop) ||
        typeof actorId !== 'string' || typeof name !== 'string' || !Array.isArray(args)
      ) {
        this.stats.badFrames++
        continue
      }
      this.hosts.handle({ id: id as number, op, actorId, name, args } satisfies HostRequest)
    }
  }

  private onActorReply(r: HostReply): void {
    if (this._state !== 'ready' && this._state !== 'leaving') return
    this.actorReplies.push(r.id, r.status, r.value)
    if (!this.repliesScheduled) {
      this.repliesScheduled = true
      process.nextTick(() => {
        this.repliesScheduled = false
        const out = this.actorReplies
        this.actorReplies = []
        this.transport.send([header(MsgType.ActorResults, out.length / 3), encode(out)])
      })
    }
  }

  /**
   * Leaves cleanly: asks for no more work, finishes the batches running, hands
   * the queued tasks back to the driver, then stops the pool and the sockets.
   * Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown()
    return this.closing
  }

  private async shutdown(): Promise<void> {
    const wasReady = this._state === 'ready'
    this._state = 'leaving'
    if (wasReady) this.sendCredit()
    if (this.inflight > 0) await new Promise<void>((resolve) => (this.drained = resolve))
    if (wasReady && this.transport.kind === 'shared-queue') {
      // The results and acks of the batches just finished go first, then the frames not started go back.
      await this.transport.flush()
      this.releaseQueued()
      this.transport.send([header(MsgType.Leave, [])])
    } else if (wasReady) {
      const returned: number[] = []
      for (const f of this.queue.clear()) {
        try {
          const items = decode(f.body) as unknown[]
          for (let i = 0; i < items.length; i += 3) if (Number.isSafeInteger(items[i])) returned.push(items[i] as number)
        } catch {
          this.stats.badFrames++
        }
      }
      this.transport.send([header(MsgType.Leave, returned)])
    }
    this._state = 'closed'
    for (const t of this.timers) clearInterval(t)
    for (const w of this.readyWaiters.splice(0)) w.reject(new ClusterError('ERR_CLUSTER_CLOSED', `agent ${this.id} closed before a driver welcomed it`))
    await this.hosts.close()
    if (!this.shared) await (this.pool as Piscina<PoolBatch, PoolResult>).destroy()
    await Promise.all(this.retiring)
    await this.transport.close()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

/**
 * The broker deliveries that come due as `frames` leave the agent (answered,
 * split further, or handed back): each frame's own, and those of a split
 * batch once its last piece is gone.
 */
function finished(frames: Iterable<QueuedFrame>): Delivery[] {
  const due: Delivery[] = []
  for (const f of frames) {
    if (f.deliveries) due.push(...f.deliveries)
    if (f.split && --f.split.remaining === 0) due.push(...f.split.deliveries)
  }
  return due
}
