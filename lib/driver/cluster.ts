import { EventEmitter } from 'node:events'
import { randomBytes } from 'node:crypto'
import { Agent } from '../agent/agent.js'
import {
  ActorLostError,
  ActorStoppedError,
  ClusterClosedError,
  InvalidArgumentError,
  SerializationError,
  TransportError,
  UnknownActorError,
  UnknownTaskError,
  fromWire,
  rebuildError,
} from '../errors.js'
import { isLoopbackEndpoint, resolveClusterOptions, type ClusterOptions, type ResolvedClusterOptions } from '../options.js'
import { encode, findUnserializable, header, parseFlatBody, parseHeader, VersionMismatch, type Header } from '../protocol/codec.js'
import { ActorOp, MsgType, Status, type HelloInfo } from '../protocol/messages.js'
import { loadCatalog, type Catalog } from '../tasks-module.js'
import { ZmqDriverTransport } from '../transport/zmq.js'
import type { DriverTransport, Parts, TransportStats } from '../transport/transport.js'
import { Deque } from '../util/deque.js'
import { ClusterMonitor, type ClusterSnapshot } from '../monitor/monitor.js'
import type { ClusterMetrics } from '../monitor/metrics.js'
import type { Dashboard } from '../monitor/dashboard.js'
import { createLogger, logClusterEvents, type Logger } from '../monitor/log.js'
import { monitorEnvDefaults } from '../monitor/options.js'
import type { Progress, ProgressState } from '../monitor/progress.js'
import { makeActorRef, makeTasksProxy, type ActorRef, type TasksProxy } from './proxies.js'

/** Options of one `map`. */
export interface MapOptions {
  /** Yield results in input order (default true) or as they complete. */
  ordered?: boolean
  /** Most inputs taken from the iterable and not yet yielded. Default 16384. */
  concurrency?: number
  /**
   * Report progress: `true` draws a bar with rate and ETA on stderr (plain
   * periodic lines when stderr is not a terminal); a function is called with
   * each update instead. Default false.
   */
  progress?: boolean | ((state: ProgressState) => void)
  /** Number of inputs, for the progress bar's ETA when `inputs` has no `length` or `size`. */
  total?: number
}

/** What `cluster.actors()` reports of one live actor. */
export interface ActorInfo {
  id: string
  className: string
  /** The node that hosts it. */
  node: string
}

/** A task that failed, as `task:failed` reports it. */
export interface TaskFailedEvent {
  id: number
  name: string
  /** The node that ran it; undefined when it failed before reaching one. */
  node: string | undefined
  error: Error
}

/** A task sent again, as `task:retried` reports it. */
export interface TaskRetriedEvent {
  id: number
  name: string
  /** The node it was taken from. */
  node: string
  reason: string
}

/** What `cluster.nodes()` reports of one agent. */
export interface NodeInfo {
  id: string
  host: string
  pid: number
  threads: number
  version: string
  state: 'up' | 'leaving'
  local: boolean
  /** Tasks the node asked to hold at once (its credit window). */
  window: number
  /** Tasks sent to the node and not yet answered. */
  inFlight: number
  tasksDone: number
  busyThreads: number
  actors: number
  heartbeatAgeMs: number
}

export interface ClusterStats {
  tasksSubmitted: number
  tasksSucceeded: number
  tasksFailed: number
  queued: number
  inFlight: number
  requeued: number
  duplicatesDropped: number
  badFrames: number
  nodes: number
  transport: TransportStats
}

/**
 * The events of a cluster: `cluster.on('task:failed', (t) => ...)`.
 * Listeners run synchronously inside the driver; they must not throw.
 */
export interface ClusterEvents {
  'node:joined': [node: NodeInfo]
  'node:left': [node: NodeInfo]
  'node:lost': [node: NodeInfo, reason: string]
  'task:failed': [task: TaskFailedEvent]
  'task:retried': [task: TaskRetriedEvent]
  'actor:spawned': [actor: ActorInfo]
  'actor:stopped': [actor: ActorInfo]
}

const DEFAULT_MAP_CONCURRENCY = 16_384
const MAX_AUTO_BATCH = 1024
/** 'auto' batching aims for frames of about this many bytes. */
const TARGET_FRAME_BYTES = 256 * 1024
/** Room left in a frame for the header and framing. */
const FRAME_HEADROOM = 4096
const LOCAL_AGENT_START_MS = 30_000

interface NodeState {
  readonly peer: string
  readonly info: HelloInfo
  readonly tasks: ReadonlySet<string>
  readonly actorClasses: ReadonlySet<string>
  readonly local: boolean
  state: 'up' | 'leaving'
  window: number
  inFlight: number
  tasksDone: number
  busy: number
  actors: number
  lastSeen: number
  readonly actorQueue: Entry[]
}

interface ActorRecord {
  readonly id: string
  readonly className: string
  node: NodeState
  state: 'running' | 'stopped' | 'lost'
}

interface Entry {
  readonly id: number
  readonly name: string
  readonly args: unknown[]
  resolve: (value: unknown) => void
  reject: (err: Error) => void
  node: NodeState | undefined
  settled: boolean
  readonly actor: ActorRecord | undefined
  readonly op: ActorOp
  /** Timed for the latency histogram (see TaskStats.sample). */
  readonly sampled: boolean
}

/**
 * The driver: the handle your program holds on a cluster. It binds the
 * socket agents connect to, keeps the ledger of every task, batches work onto
 * the wire under each agent's credit, and settles each task's promise once.
 *
 * ```ts
 * await using cluster = await Cluster.start({ tasks: new URL('./tasks.js', import.meta.url) })
 * const t = cluster.tasks<typeof import('./tasks.js')>()
 * await t.add(1, 2) // 3
 * for await (const r of cluster.map('add', [[1, 2], [3, 4]])) console.log(r)
 * const counter = await cluster.spawn<Counter>('Counter')
 * await counter.inc(5)
 * ```
 */
export class Cluster extends EventEmitter<ClusterEvents> {
  readonly options: ResolvedClusterOptions
  private readonly transport: DriverTransport
  private readonly localAddress: string | undefined
  private readonly catalog: Catalog | undefined
  private readonly nodesByPeer = new Map<string, NodeState>()
  private readonly ledger = new Map<number, Entry>()
  private readonly pending = new Deque<Entry>()
  private readonly waitingSpawns: (() => void)[] = []
  private readonly localAgents: Agent[] = []
  private readonly localIds = new Set<string>()
  private readonly byeSent = new Map<string, number>()
  private nextId = 1
  private actorSeq = 0
  private flushScheduled = false
  private readonly flushBound = () => this.flush()
  private bytesPerTask = 16
  private timer: NodeJS.Timeout | undefined
  private lastTick = Date.now()
  private closing: Promise<void> | undefined
  private readonly counters = { tasksSubmitted: 0, tasksSucceeded: 0, tasksFailed: 0, requeued: 0, duplicatesDropped: 0, badFrames: 0 }
  private readonly actorsById = new Map<string, ActorRecord>()
  private readonly monitor: ClusterMonitor
  private metrics: ClusterMetrics | undefined
  private dashboard: Dashboard | undefined
  private readonly logger: Logger | undefined

  private constructor(options: ResolvedClusterOptions, catalog: Catalog | undefined) {
    super()
    this.options = options
    this.catalog = catalog
    this.localAddress =
      options.localAgents > 0 && options.localTransport === 'inproc' ? `inproc://actor-cluster-${process.pid}-${randomBytes(6).toString('hex')}` : undefined
    this.transport = new ZmqDriverTransport({ listen: options.listen, inproc: this.localAddress, maxFrameBytes: options.maxFrameBytes })
    const cluster = this
    this.monitor = new ClusterMonitor({
      get address() {
        return cluster.address
      },
      transportName: 'zmq',
      heartbeatMs: options.heartbeatMs,
      stats: () => this.stats(),
      nodes: () => this.nodes(),
      actors: () => this.actors(),
    })
    this.logger = options.logger ?? (options.logLevel === 'silent' ? undefined : createLogger(options.logLevel))
    if (this.logger) logClusterEvents(this, this.logger)
  }

  /**
   * Starts a driver. With no options but `tasks`, it also starts one local
   * agent on loopback (threads = cores) that goes through the same sockets and
   * frames as a remote one. With `localAgents: 0` it waits for agents started
   * with `cluster agent --connect <cluster.address>`.
   */
  static async start(options: ClusterOptions = {}): Promise<Cluster> {
    const resolved = resolveClusterOptions(monitorEnvDefaults(options))
    if (!resolved.insecure && !isLoopbackEndpoint(resolved.listen)) {
      throw new TransportError(
        `refusing to listen on ${resolved.listen} without authentication: only loopback addresses may be used unless insecure: true (--insecure) is given`,
        { code: 'ERR_INSECURE_BIND' },
      )
    }
    const catalog = resolved.tasks === undefined ? undefined : await loadCatalog(resolved.tasks, 'the driver')
    const cluster = new Cluster(resolved, catalog)
    await cluster.transport.bind()
    cluster.transport.start((peer, parts) => cluster.onMessage(peer, parts))
    cluster.timer = setInterval(() => cluster.tick(), resolved.heartbeatMs)
    cluster.timer.unref()
    cluster.monitor.start()
    try {
      // Before the local agents: a dashboard port in use fails the start before anything else runs.
      if (resolved.dashboard) {
        // The HTTP framework and prom-client load only for a cluster that serves them.
        const metrics = await cluster.metricsRegistry()
        const { Dashboard } = await import('../monitor/dashboard.js')
        cluster.dashboard = await Dashboard.start({ snapshot: () => cluster.snapshot(), metrics }, resolved.dashboard)
        cluster.logger?.info({ url: cluster.dashboard.url }, 'dashboard listening')
      }
      await cluster.startLocalAgents()
    } catch (err) {
      await cluster.close()
      throw err
    }
    return cluster
  }

  private async startLocalAgents(): Promise<void> {
    const { localAgents, tasks, threads, heartbeatMs, nodeTimeoutMs, maxFrameBytes } = this.options
    if (localAgents === 0 || tasks === undefined) return
    for (let i = 0; i < localAgents; i++) {
      const agent = await Agent.start({ connect: this.localAddress ?? this.address, tasks, threads, heartbeatMs, driverTimeoutMs: nodeTimeoutMs, maxFrameBytes })
      this.localAgents.push(agent)
      this.localIds.add(agent.id)
    }
    let timeout: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.all(this.localAgents.map((a) => a.waitUntilReady())),
      new Promise((_, reject) => {
        timeout = setTimeout(
          () => reject(new TransportError(`local agents did not register with ${this.address} within ${LOCAL_AGENT_START_MS} ms`)),
          LOCAL_AGENT_START_MS,
        )
      }),
    ]).finally(() => clearTimeout(timeout))
  }

  /** The address agents connect to (`cluster agent --connect <address>`). */
  get address(): string {
    return this.transport.address
  }

  /** The agents currently serving this driver. */
  nodes(): NodeInfo[] {
    return [...this.nodesByPeer.values()].map((n) => this.nodeInfo(n))
  }

  stats(): ClusterStats {
    let inFlight = 0
    for (const n of this.nodesByPeer.values()) inFlight += n.inFlight
    return { ...this.counters, queued: this.pending.length, inFlight, nodes: this.nodesByPeer.size, transport: { ...this.transport.stats } }
  }

  /** The live actors. */
  actors(): ActorInfo[] {
    const list: ActorInfo[] = []
    for (const rec of this.actorsById.values()) {
      if (rec.state !== 'running' || this.nodesByPeer.get(rec.node.peer) !== rec.node) this.actorsById.delete(rec.id)
      else list.push({ id: rec.id, className: rec.className, node: rec.node.info.agentId })
    }
    return list
  }

  /**
   * Everything known about the cluster now — nodes, tasks by state and name,
   * throughput history, latency percentiles, recent failures, actors,
   * transport counters. The dashboard, `/metrics` and `/api/stats` all read
   * this one function.
   */
  snapshot(): ClusterSnapshot {
    const snap = this.monitor.snapshot()
    if (this.dashboard) snap.dashboard = this.dashboard.stats()
    return snap
  }

  /** The Prometheus text of `/metrics`, also available without the dashboard. */
  async metricsText(): Promise<string> {
    return (await this.metricsRegistry()).text()
  }

  private async metricsRegistry(): Promise<ClusterMetrics> {
    if (!this.metrics) {
      const { ClusterMetrics } = await import('../monitor/metrics.js')
      this.metrics ??= new ClusterMetrics({ snapshot: () => this.snapshot(), latency: this.monitor.tasks.latency })
    }
    return this.metrics
  }

  /** Where the dashboard is (`http://127.0.0.1:8265/`), when it was started. */
  get dashboardUrl(): string | undefined {
    return this.dashboard?.url
  }

  // --- tasks -------------------------------------------------------------------

  /** Runs one task on some node; resolves to its return value. */
  call<R = unknown>(name: string, ...args: unknown[]): Promise<R> {
    return this.submit(name, args) as Promise<R>
  }

  /** A typed proxy: `cluster.tasks<typeof import('./tasks.js')>().add(1, 2)`. */
  tasks<M extends object>(): TasksProxy<M> {
    return makeTasksProxy<M>((name, args) => this.submit(name, args))
  }

  private taskNames(): ReadonlySet<string> | undefined {
    if (this.catalog) return new Set(this.catalog.functions.keys())
    if (this.nodesByPeer.size === 0) return undefined
    const names = new Set<string>()
    for (const n of this.nodesByPeer.values()) for (const t of n.tasks) names.add(t)
    return names
  }

  private hasTask(name: string): boolean | undefined {
    if (this.catalog) return this.catalog.functions.has(name)
    if (this.nodesByPeer.size === 0) return undefined
    for (const n of this.nodesByPeer.values()) if (n.tasks.has(name)) return true
    return false
  }

  private submit(name: string, args: unknown[]): Promise<unknown> {
    if (this.closing) return Promise.reject(new ClusterClosedError('the cluster is closed'))
    if (typeof name !== 'string') return Promise.reject(new InvalidArgumentError(`task name must be a string, got ${typeof name}`))
    if (this.hasTask(name) === false) return Promise.reject(UnknownTaskError.of(name, [...(this.taskNames() ?? [])]))
    const bad = findUnserializable(args, 'args')
    if (bad) return Promise.reject(new SerializationError(`cannot send task "${name}": ${bad}; msgpack cannot carry it`))
    this.counters.tasksSubmitted++
    return new Promise((resolve, reject) => {
      const id = this.nextId++
      const sampled = this.monitor.tasks.sample(id, this.ledger.size === 0)
      const entry: Entry = { id, name, args, resolve, reject, node: undefined, settled: false, actor: undefined, op: ActorOp.Call, sampled }
      this.ledger.set(entry.id, entry)
      this.pending.push(entry)
      this.scheduleFlush()
    })
  }

  /**
   * Runs `name` once per element of `inputs` (each element is the argument
   * list; a non-array element is the single argument) and yields the results.
   * Inputs are pulled lazily: at most `concurrency` are taken and not yet
   * yielded, so an endless generator runs in bounded memory. A task that
   * throws makes the iteration throw at that result.
   */
  async *map<R = unknown>(
    name: string,
    inputs: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions = {},
  ): AsyncGenerator<R, void, undefined> {
    const ordered = options.ordered ?? true
    const concurrency = options.concurrency ?? DEFAULT_MAP_CONCURRENCY
    if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
      throw new InvalidArgumentError(`options.concurrency must be a positive integer, got ${String(options.concurrency)}`)
    }
    if (typeof name !== 'string') throw new InvalidArgumentError(`task name must be a string, got ${typeof name}`)
    if (this.hasTask(name) === false) throw UnknownTaskError.of(name, [...(this.taskNames() ?? [])])
    const isAsync = inputs != null && typeof (inputs as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function'
    if (!isAsync && (inputs == null || typeof (inputs as Iterable<unknown>)[Symbol.iterator] !== 'function')) {
      throw new InvalidArgumentError('map inputs must be an iterable or async iterable of argument lists')
    }
    const source = isAsync
      ? (inputs as AsyncIterable<unknown>)[Symbol.asyncIterator]()
      : (inputs as Iterable<unknown>)[Symbol.iterator]()
    const progress = options.progress ? await this.mapProgress(name, inputs, options, () => yielded) : undefined

    type Outcome = { ok: boolean; value: unknown }
    const inOrder = new Map<number, Outcome>()
    const asDone = new Deque<Outcome>()
    let taken = 0
    let yielded = 0
    let exhausted = false
    let wake: (() => void) | undefined
    const store = (seq: number, o: Outcome) => {
      if (ordered) inOrder.set(seq, o)
      else asDone.push(o)
      if (wake) {
        const w = wake
        wake = undefined
        w()
      }
    }
    const next = (): Outcome | undefined => {
      if (!ordered) return asDone.shift()
      const o = inOrder.get(yielded)
      if (o) inOrder.delete(yielded)
      return o
    }
    try {
      for (;;) {
        while (!exhausted && taken - yielded < concurrency) {
          const r = isAsync ? await (source as AsyncIterator<unknown>).next() : (source as Iterator<unknown>).next()
          if (r.done) {
            exhausted = true
            break
          }
          const seq = taken++
          const args = Array.isArray(r.value) ? r.value : [r.value]
          this.submit(name, args).then(
            (value) => store(seq, { ok: true, value }),
            (value: unknown) => store(seq, { ok: false, value }),
          )
        }
        for (let o = next(); o !== undefined; o = next()) {
          yielded++
          if (!o.ok) throw o.value
          yield o.value as R
        }
        if (exhausted && yielded === taken) return
        if (!exhausted && taken - yielded < concurrency) continue
        await new Promise<void>((resolve) => (wake = resolve))
      }
    } finally {
      progress?.stop()
      if (!exhausted) await source.return?.()
    }
  }

  private async mapProgress(name: string, inputs: unknown, options: MapOptions, read: () => number): Promise<Progress> {
    const { Progress } = await import('../monitor/progress.js')
    const known = options.total ?? ((inputs as { length?: unknown }).length ?? (inputs as { size?: unknown }).size)
    const total = typeof known === 'number' ? known : undefined
    const onUpdate = typeof options.progress === 'function' ? options.progress : undefined
    return new Progress(read, { label: name, total, mode: onUpdate ? 'off' : 'auto', onUpdate, intervalMs: onUpdate ? 250 : undefined })
  }

  // --- actors ------------------------------------------------------------------

  /**
   * Places one instance of an exported class on one node's actor thread and
   * returns a typed reference. Each method call is a message; an actor runs
   * its messages one at a time, in the order they were sent.
   */
  async spawn<T extends object>(className: string, ...args: unknown[]): Promise<ActorRef<T>> {
    if (this.closing) throw new ClusterClosedError('the cluster is closed')
    if (typeof className !== 'string') throw new InvalidArgumentError(`actor class name must be a string, got ${typeof className}`)
    const known = this.actorClassNames()
    if (known && !known.has(className)) throw UnknownActorError.of(className, [...known])
    const bad = findUnserializable(args, 'args')
    if (bad) throw new SerializationError(`cannot spawn actor "${className}": ${bad}; msgpack cannot carry it`)
    let node = this.pickActorNode()
    while (!node) {
      await new Promise<void>((resolve) => this.waitingSpawns.push(resolve))
      if (this.closing) throw new ClusterClosedError('the cluster is closed')
      node = this.pickActorNode()
    }
    const rec: ActorRecord = { id: `${className}-${++this.actorSeq}-${randomBytes(3).toString('hex')}`, className, node, state: 'running' }
    node.actors++
    try {
      await this.actorOp(rec, ActorOp.Spawn, className, args)
    } catch (err) {
      rec.state = 'lost'
      node.actors--
      throw err
    }
    this.actorsById.set(rec.id, rec)
    this.emit('actor:spawned', { id: rec.id, className, node: node.info.agentId })
    return makeActorRef<T>(rec.id, () => rec.node.info.agentId, (method, margs) => this.actorOp(rec, ActorOp.Call, method, margs), async () => {
      if (rec.state !== 'running') return
      await this.actorOp(rec, ActorOp.Stop, 'stop', [])
      rec.state = 'stopped'
      rec.node.actors--
      this.actorsById.delete(rec.id)
      this.emit('actor:stopped', { id: rec.id, className, node: rec.node.info.agentId })
    })
  }

  private actorClassNames(): ReadonlySet<string> | undefined {
    if (this.catalog) return new Set(this.catalog.classes.keys())
    if (this.nodesByPeer.size === 0) return undefined
    const names = new Set<string>()
    for (const n of this.nodesByPeer.values()) for (const c of n.actorClasses) names.add(c)
    return names
  }

  private pickActorNode(): NodeState | undefined {
    let best: NodeState | undefined
    for (const n of this.nodesByPeer.values()) {
      if (n.state === 'up' && (!best || n.actors / n.info.threads < best.actors / best.info.threads)) best = n
    }
    return best
  }

  private actorOp(rec: ActorRecord, op: ActorOp, name: string, args: unknown[]): Promise<unknown> {
    if (this.closing) return Promise.reject(new ClusterClosedError('the cluster is closed'))
    if (rec.state === 'stopped') return Promise.reject(new ActorStoppedError(`actor ${rec.id} was stopped`))
    if (rec.state === 'lost' || !this.nodesByPeer.has(rec.node.peer)) {
      return Promise.reject(new ActorLostError(`actor ${rec.id} was lost with its node ${rec.node.info.agentId}`))
    }
    if (op === ActorOp.Call) {
      const bad = findUnserializable(args, 'args')
      if (bad) return Promise.reject(new SerializationError(`cannot call ${rec.className}.${name}: ${bad}; msgpack cannot carry it`))
    }
    return new Promise((resolve, reject) => {
      const entry: Entry = { id: this.nextId++, name, args, resolve, reject, node: rec.node, settled: false, actor: rec, op, sampled: false }
      this.ledger.set(entry.id, entry)
      rec.node.actorQueue.push(entry)
      this.scheduleFlush()
    })
  }

  // --- the wire ----------------------------------------------------------------

  private scheduleFlush(): void {
    if (!this.flushScheduled) {
      this.flushScheduled = true
      process.nextTick(this.flushBound)
    }
  }

  private batchMax(): number {
    if (this.options.batch !== 'auto') return this.options.batch
    return Math.max(1, Math.min(MAX_AUTO_BATCH, Math.floor(TARGET_FRAME_BYTES / this.bytesPerTask)))
  }

  /**
   * Hands queued tasks to nodes with free credit, in proportion to it. A
   * frame never holds more than one thread's share of a node's window, so an
   * agent can keep all its threads busy without splitting frames.
   */
  private flush(): void {
    this.flushScheduled = false
    if (this.closing) return
    for (const node of this.nodesByPeer.values()) if (node.actorQueue.length > 0) this.sendActorOps(node)
    if (this.pending.length === 0) return
    const ready: NodeState[] = []
    let totalFree = 0
    for (const node of this.nodesByPeer.values()) {
      const free = node.window - node.inFlight
      if (node.state === 'up' && free > 0) {
        ready.push(node)
        totalFree += free
      }
    }
    if (ready.length === 0) return
    const want = this.pending.length
    const batchMax = this.batchMax()
    for (const node of ready) {
      const free = node.window - node.inFlight
      let quota = Math.min(free, Math.ceil((want * free) / totalFree))
      const frameCap = Math.max(1, Math.min(batchMax, Math.ceil(node.window / node.info.threads)))
      while (quota > 0 && this.pending.length > 0) {
        const chunk: Entry[] = []
        const n = Math.min(quota, frameCap)
        while (chunk.length < n && this.pending.length > 0) {
          const e = this.pending.shift()!
          if (!e.settled) chunk.push(e)
        }
        if (chunk.length === 0) break
        quota -= chunk.length
        this.sendTasks(node, chunk)
      }
    }
  }

  private sendTasks(node: NodeState, chunk: Entry[]): void {
    const flat = new Array<unknown>(chunk.length * 3)
    for (let i = 0; i < chunk.length; i++) {
      const e = chunk[i]!
      flat[i * 3] = e.id
      flat[i * 3 + 1] = e.name
      flat[i * 3 + 2] = e.args
    }
    let body: Buffer
    try {
      body = encode(flat)
    } catch {
      this.sendEncodable(node, chunk)
      return
    }
    if (body.length > this.options.maxFrameBytes - FRAME_HEADROOM) {
      if (chunk.length === 1) {
        const e = chunk[0]!
        this.fail(e, new SerializationError(`arguments of task "${e.name}" encode to ${body.length} bytes, over maxFrameBytes (${this.options.maxFrameBytes})`))
        return
      }
      const half = chunk.length >> 1
      this.sendTasks(node, chunk.slice(0, half))
      this.sendTasks(node, chunk.slice(half))
      return
    }
    for (const e of chunk) e.node = node
    node.inFlight += chunk.length
    this.bytesPerTask = this.bytesPerTask * 0.8 + (body.length / chunk.length) * 0.2
    this.transport.send(node.peer, [header(MsgType.Tasks, chunk.length), body])
  }

  /** A batch failed to encode: find the tasks that cannot be carried, fail them, send the rest. */
  private sendEncodable(node: NodeState, chunk: Entry[]): void {
    const ok: Entry[] = []
    for (const e of chunk) {
      try {
        encode(e.args)
        ok.push(e)
      } catch (err) {
        this.fail(e, new SerializationError(`cannot send task "${e.name}": ${(err as Error).message}`, { cause: err }))
      }
    }
    if (ok.length > 0 && ok.length < chunk.length) this.sendTasks(node, ok)
  }

  private sendActorOps(node: NodeState): void {
    const ops = node.actorQueue.splice(0)
    const flat: unknown[] = []
    for (const e of ops) flat.push(e.id, e.op, e.actor!.id, e.name, e.args)
    let body: Buffer
    try {
      body = encode(flat)
    } catch (err) {
      for (const e of ops) this.fail(e, new SerializationError(`cannot send actor message: ${(err as Error).message}`, { cause: err }))
      return
    }
    this.transport.send(node.peer, [header(MsgType.Actor, ops.length), body])
  }

  private fail(e: Entry, err: Error): void {
    if (e.settled) return
    e.settled = true
    this.ledger.delete(e.id)
    if (!e.actor) {
      this.counters.tasksFailed++
      this.taskFailed(e, err, e.node, performance.now())
    }
    e.reject(err)
  }

  private taskFailed(e: Entry, error: Error, node: NodeState | undefined, now: number): void {
    const nodeId = node?.info.agentId
    this.monitor.tasks.failed(e.id, e.name, nodeId, error, e.sampled, now)
    this.emit('task:failed', { id: e.id, name: e.name, node: nodeId, error })
  }

  private onMessage(peer: string, parts: Parts): void {
    let h: Header
    try {
      h = parseHeader(parts[0])
    } catch (err) {
      this.counters.badFrames++
      if (err instanceof VersionMismatch && err.type === MsgType.Hello) {
        this.transport.send(peer, [header(MsgType.Reject, `protocol version mismatch: ${err.message}`)])
      }
      return
    }
    if (h.type === MsgType.Hello) {
      this.onHello(peer, h.info)
      return
    }
    const node = this.nodesByPeer.get(peer)
    if (!node) {
      // An agent from before a restart or a loss: tell it to introduce itself again.
      const last = this.byeSent.get(peer) ?? 0
      if (Date.now() - last > 1000) {
        if (this.byeSent.size > 10_000) this.byeSent.clear()
        this.byeSent.set(peer, Date.now())
        this.transport.send(peer, [header(MsgType.DriverBye)])
      }
      return
    }
    node.lastSeen = Date.now()
    switch (h.type) {
      case MsgType.Results:
        node.inFlight = Math.max(0, node.inFlight - h.count)
        node.tasksDone += h.count
        this.onResults(node, parts[1], h.count)
        this.scheduleFlush()
        return
      case MsgType.ActorResults:
        this.onResults(node, parts[1], h.count)
        return
      case MsgType.Credit:
        node.window = h.window
        this.scheduleFlush()
        return
      case MsgType.Heartbeat:
        if (h.load) node.busy = h.load.busy
        return
      case MsgType.Leave:
        this.removeNode(node, 'left')
        return
      default:
        this.counters.badFrames++
    }
  }

  private onHello(peer: string, info: HelloInfo): void {
    if (info.agentId !== peer) {
      this.counters.badFrames++
      this.transport.send(peer, [header(MsgType.Reject, `agent id ${info.agentId} does not match its socket identity`)])
      return
    }
    const old = this.nodesByPeer.get(peer)
    if (old) this.removeNode(old, 'lost', 'it registered again (it had lost this driver)')
    const node: NodeState = {
      peer,
      info,
      tasks: new Set(info.tasks),
      actorClasses: new Set(info.actors),
      local: this.localIds.has(info.agentId),
      state: 'up',
      window: info.window,
      inFlight: 0,
      tasksDone: 0,
      busy: 0,
      actors: 0,
      lastSeen: Date.now(),
      actorQueue: [],
    }
    this.nodesByPeer.set(peer, node)
    this.transport.send(peer, [header(MsgType.Welcome, { nodeId: info.agentId, heartbeatMs: this.options.heartbeatMs })])
    this.emit('node:joined', this.nodeInfo(node))
    for (const wake of this.waitingSpawns.splice(0)) wake()
    this.scheduleFlush()
  }

  private onResults(node: NodeState, body: Uint8Array | undefined, count: number): void {
    let items: unknown[]
    try {
      items = parseFlatBody(body, 3, count)
    } catch {
      this.counters.badFrames++
      return
    }
    const now = performance.now()
    for (let i = 0; i < items.length; i += 3) {
      const e = this.ledger.get(items[i] as number)
      if (!e) {
        this.counters.duplicatesDropped++
        continue
      }
      this.ledger.delete(e.id)
      e.settled = true
      const status = items[i + 1]
      if (status === Status.Ok) {
        if (!e.actor) {
          this.counters.tasksSucceeded++
          this.monitor.tasks.succeeded(e.id, e.name, e.sampled, now)
        }
        e.resolve(items[i + 2])
      } else {
        const err = rebuildError(e.name, fromWire(items[i + 2]), status !== Status.Threw, node.info.agentId)
        if (!e.actor) {
          this.counters.tasksFailed++
          this.taskFailed(e, err, node, now)
        }
        e.reject(err)
      }
    }
  }

  private tick(): void {
    const now = Date.now()
    const late = now - this.lastTick > 2 * this.options.heartbeatMs
    this.lastTick = now
    for (const node of [...this.nodesByPeer.values()]) {
      // After a stall of our own event loop the agents' heartbeats are still unread: no verdicts then.
      if (late) node.lastSeen = now
      else if (now - node.lastSeen > this.options.nodeTimeoutMs) {
        this.removeNode(node, 'lost', `no heartbeat for ${now - node.lastSeen} ms`)
        continue
      }
      this.transport.send(node.peer, [header(MsgType.Heartbeat)])
    }
  }

  /** Takes a node out; every task it held goes back to the queue, its actors are lost. */
  private removeNode(node: NodeState, how: 'left' | 'lost', reason: string = how): void {
    if (this.nodesByPeer.get(node.peer) !== node) return
    this.nodesByPeer.delete(node.peer)
    node.actorQueue.length = 0
    const requeue: Entry[] = []
    for (const e of this.ledger.values()) {
      if (e.node !== node) continue
      if (e.actor) {
        e.actor.state = 'lost'
        this.fail(e, new ActorLostError(`actor ${e.actor.id} was lost with its node ${node.info.agentId} (${reason})`))
      } else {
        e.node = undefined
        requeue.push(e)
      }
    }
    for (let i = requeue.length - 1; i >= 0; i--) this.pending.unshift(requeue[i]!)
    this.counters.requeued += requeue.length
    const announce = this.listenerCount('task:retried') > 0
    for (const e of requeue) {
      this.monitor.tasks.retried(e.name)
      if (announce) this.emit('task:retried', { id: e.id, name: e.name, node: node.info.agentId, reason })
    }
    const info = this.nodeInfo(node)
    if (how === 'left') this.emit('node:left', info)
    else this.emit('node:lost', info, reason)
    this.scheduleFlush()
  }

  private nodeInfo(n: NodeState): NodeInfo {
    return {
      id: n.info.agentId,
      host: n.info.host,
      pid: n.info.pid,
      threads: n.info.threads,
      version: n.info.version,
      state: n.state,
      local: n.local,
      window: n.window,
      inFlight: n.inFlight,
      tasksDone: n.tasksDone,
      busyThreads: n.busy,
      actors: n.actors,
      heartbeatAgeMs: Date.now() - n.lastSeen,
    }
  }

  // --- lifecycle ---------------------------------------------------------------

  /**
   * Stops everything this cluster started: local agents, timers and sockets.
   * Tasks still pending reject with a ClusterClosedError; remote agents are
   * told to wait for the next driver. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown()
    return this.closing
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.timer)
    this.monitor.stop()
    await this.dashboard?.close()
    const closed = new ClusterClosedError('the cluster was closed before the task settled')
    for (const e of this.ledger.values()) this.fail(e, closed)
    this.pending.clear()
    for (const wake of this.waitingSpawns.splice(0)) wake()
    await Promise.all(this.localAgents.map((a) => a.close()))
    for (const node of this.nodesByPeer.values()) {
      if (!node.local) this.transport.send(node.peer, [header(MsgType.DriverBye)])
    }
    this.nodesByPeer.clear()
    await this.transport.close()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}
