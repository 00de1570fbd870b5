import { EventEmitter } from 'node:events'
import { randomBytes, randomInt } from 'node:crypto'
import { Agent } from '../agent/agent.js'
import {
  ActorLostError,
  ActorStoppedError,
  ClusterClosedError,
  InvalidArgumentError,
  NodeLostError,
  SerializationError,
  TaskCancelledError,
  TransportError,
  UnknownActorError,
  UnknownTaskError,
  fromWire,
  rebuildError,
} from '../errors.js'
import { isLoopbackEndpoint, type ClusterOptions, type ResolvedClusterOptions } from '../options.js'
import { encode, findUnserializable, header, parseFlatBody, parseHeader, VersionMismatch, type Header } from '../protocol/codec.js'
import { ActorOp, MsgType, Status, type HelloInfo } from '../protocol/messages.js'
import { loadCatalog, type Catalog } from '../tasks-module.js'
import { resolveClusterSettings } from '../settings.js'
import { createDriverTransport } from '../transport/resolve.js'
import { isBrokered } from '../transport/options.js'
import { newKeyPair, registerZapDomain, resolveDriverCurve, unregisterZapDomain, type DriverCurve, type KeyPair } from '../transport/curve.js'
import type { DriverTransport, Parts, TransportStats } from '../transport/transport.js'
import { Deque } from '../util/deque.js'
import { makeActorRef, makeTasksProxy, type ActorRef, type TasksProxy } from './proxies.js'
import { resolvePolicy, resolveRestart, type Policy, type SpawnOptions, type TaskOptions } from './policy.js'
import { ClusterMonitor, type ClusterSnapshot } from '../monitor/monitor.js'
import type { ClusterMetrics } from '../monitor/metrics.js'
import type { Dashboard } from '../monitor/dashboard.js'
import { createLogger, logClusterEvents, type Logger } from '../monitor/log.js'
import type { Progress, ProgressState } from '../monitor/progress.js'

/** Options of one `map`: ordering and concurrency, plus every per-task option. */
export interface MapOptions extends TaskOptions {
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

/** What `cluster.liveActors()` reports of one live actor. */
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
  tasksCancelled: number
  /** Tasks sent again: after a node was lost or left, a worker crashed, or (with `retries`) the task failed. */
  tasksRetried: number
  queued: number
  inFlight: number
  requeued: number
  /** Results for tasks already settled: duplicates after a redelivery, or answers to cancelled tasks. */
  lateResultsDropped: number
  nodesLost: number
  badFrames: number
  /** Connections refused by CURVE authentication (unlisted or wrong agent keys). */
  authDenied: number
  nodes: number
  transport: TransportStats
}

/** A task the cluster is about to send again. */
export interface RetryInfo {
  id: number
  name: string
  /** The task's arguments. */
  args: readonly unknown[]
  /** Why: the error of the failed attempt. */
  cause: Error
  /** Retries so far, this one included. */
  attempt: number
}

export interface ClusterEvents {
  'node:joined': [node: NodeInfo]
  'node:left': [node: NodeInfo]
  'node:lost': [node: NodeInfo, reason: string]
  'task:retried': [info: RetryInfo]
  'task:failed': [info: TaskFailedEvent]
  'actor:spawned': [actor: ActorInfo]
  'actor:stopped': [actor: ActorInfo]
  'actor:restarted': [info: ActorInfo]
  /** The transport failed for good (a broker connection was lost): pending tasks rejected with `err`, the cluster closes. */
  'transport:error': [err: Error]
}

/** The calls of a cluster under given options: `cluster.with({ timeoutMs: 500 }).call(...)`. */
export interface ClusterView {
  call<R = unknown>(name: string, ...args: unknown[]): Promise<R>
  tasks<M extends object>(): TasksProxy<M>
  map<R = unknown>(name: string, inputs: Iterable<unknown> | AsyncIterable<unknown>, options?: MapOptions): AsyncGenerator<R, void, undefined>
  spawn<T extends object>(className: string, ...args: unknown[]): Promise<ActorRef<T>>
}

const INFRA_CODES = new Set(['ERR_WORKER_CRASHED', 'ERR_OUT_OF_MEMORY'])

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
  readonly args: unknown[]
  readonly restart: boolean
  node: NodeState
  state: 'running' | 'restarting' | 'stopped' | 'lost'
  /** While restarting: resolves when the actor runs again (rejects if it cannot). */
  ready: Promise<void> | undefined
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
  /** Options shared by the tasks of one call site or map; undefined for plain calls. */
  readonly policy: Policy | undefined
  /** Retries spent on user failures (threw, timed out). */
  tries: number
  /** Retries spent on infrastructure failures (crash, out of memory, node lost). */
  crashes: number
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
  private readonly curve: DriverCurve | undefined
  private readonly zapDomain: string | undefined
  private readonly localKey: KeyPair | undefined
  private authDenied: { denied: number } | undefined
  private readonly catalog: Catalog | undefined
  private readonly nodesByPeer = new Map<string, NodeState>()
  private readonly ledger = new Map<number, Entry>()
  private readonly pending = new Deque<Entry>()
  private readonly waitingSpawns: (() => void)[] = []
  private readonly localAgents: Agent[] = []
  private readonly localIds = new Set<string>()
  private readonly byeSent = new Map<string, number>()
  /** Random per instance: told to agents in Welcome, so results meant for an earlier driver are dropped. */
  private readonly session = randomBytes(8).toString('hex')
  // Ids start at a random point: a stray result of an earlier driver on the same address cannot match one of ours.
  private nextId = randomInt(1, 2 ** 31)
  private actorSeq = 0
  private flushScheduled = false
  private readonly flushBound = () => this.flush()
  private bytesPerTask = 16
  private timer: NodeJS.Timeout | undefined
  private lastTick = Date.now()
  private closing: Promise<void> | undefined
  private readonly actors = new Map<string, ActorRecord>()
  /** Brokered designs: stands for the shared task queue, whose `inFlight` counts tasks published and not yet settled. */
  private readonly broker: NodeState | undefined
  private readonly clusterId: string
  private readonly counters = {
    tasksSubmitted: 0,
    tasksSucceeded: 0,
    tasksFailed: 0,
    tasksCancelled: 0,
    tasksRetried: 0,
    requeued: 0,
    lateResultsDropped: 0,
    nodesLost: 0,
    badFrames: 0,
  }
  private readonly monitor: ClusterMonitor
  private metrics: ClusterMetrics | undefined
  private dashboard: Dashboard | undefined
  private readonly logger: Logger | undefined

  private constructor(
    options: ResolvedClusterOptions,
    catalog: Catalog | undefined,
    transport: DriverTransport,
    clusterId: string,
    local: { address: string | undefined; curve: DriverCurve | undefined; zapDomain: string | undefined; key: KeyPair | undefined },
  ) {
    super()
    this.options = options
    this.catalog = catalog
    this.transport = transport
    this.clusterId = clusterId
    this.localAddress = local.address
    this.curve = local.curve
    this.zapDomain = local.zapDomain
    this.localKey = local.key
    if (transport.sharedTasks) this.broker = sharedQueueNode()
    const cluster = this
    this.monitor = new ClusterMonitor({
      get address() {
        return cluster.address
      },
      transportName: options.transport,
      heartbeatMs: options.heartbeatMs,
      stats: () => this.stats(),
      nodes: () => this.nodes(),
      actors: () => this.liveActors(),
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
    const resolved = await resolveClusterSettings(options)
    if (resolved.transport === 'zmq' && !resolved.insecure && !resolved.curve && !isLoopbackEndpoint(resolved.listen)) {
      throw new TransportError(
        `refusing to listen on ${resolved.listen} without authentication: give curve keys (cluster keys), or insecure: true (--insecure) to allow any peer; loopback addresses need neither`,
        { code: 'ERR_INSECURE_BIND' },
      )
    }
    const zmqDesign = resolved.transport === 'zmq'
    const curve = resolved.curve && zmqDesign ? resolveDriverCurve(resolved.curve) : undefined
    const catalog = resolved.tasks === undefined ? undefined : await loadCatalog(resolved.tasks, 'the driver')
    const clusterId = resolved.clusterId ?? randomBytes(8).toString('hex')
    const local = {
      address: zmqDesign && resolved.localAgents > 0 && resolved.localTransport === 'inproc' ? `inproc://actor-cluster-${process.pid}-${randomBytes(6).toString('hex')}` : undefined,
      curve,
      zapDomain: curve ? `actor-cluster-${process.pid}-${randomBytes(6).toString('hex')}` : undefined,
      // Local agents get a key pair of their own, accepted by this driver alone.
      key: curve && resolved.localAgents > 0 ? newKeyPair() : undefined,
    }
    const transport = await createDriverTransport({
      ...resolved,
      clusterId,
      inproc: local.address,
      curve: curve && local.zapDomain ? { server: curve.server, zapDomain: local.zapDomain } : undefined,
    })
    const cluster = new Cluster(resolved, catalog, transport, clusterId, local)
    let authDenied: { denied: number } | undefined
    try {
      if (curve && local.zapDomain) authDenied = await registerZapDomain(local.zapDomain, local.key ? [...curve.authorizedAgents, local.key.publicKey] : curve.authorizedAgents)
      cluster.authDenied = authDenied
      await cluster.transport.bind()
    } catch (err) {
      if (local.zapDomain) await unregisterZapDomain(local.zapDomain)
      await cluster.transport.close()
      throw err
    }
    cluster.transport.start(
      (peer, parts) => cluster.onMessage(peer, parts),
      (err) => cluster.onTransportFailure(err),
    )
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
    const { localAgents, tasks, threads, heartbeatMs, nodeTimeoutMs, maxFrameBytes, localAgentOptions, transport, redisUrl, amqpUrl } = this.options
    if (localAgents === 0 || tasks === undefined) return
    for (let i = 0; i < localAgents; i++) {
      const via = isBrokered(transport) ? { transport, redisUrl, amqpUrl, clusterId: this.clusterId } : { connect: this.localAddress ?? this.address }
      const agent = await Agent.start({
        ...localAgentOptions,
        ...via,
        tasks,
        threads,
        heartbeatMs,
        driverTimeoutMs: nodeTimeoutMs,
        maxFrameBytes,
        curve: this.curve && this.localKey ? { serverPublicKey: this.curve.server.publicKey, agentKey: this.localKey } : undefined,
      })
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

  /** The address agents connect to (`cluster agent --connect <address>`); for brokered designs, the broker URLs (passwords masked). */
  get address(): string {
    return this.transport.address
  }

  /** The namespace of this cluster's queues on the brokers: agents of a brokered design join with `--cluster-id <id>`. */
  get id(): string {
    return this.clusterId
  }

  /** The agents currently serving this driver. */
  nodes(): NodeInfo[] {
    return [...this.nodesByPeer.values()].map((n) => this.nodeInfo(n))
  }

  stats(): ClusterStats {
    let inFlight = 0
    for (const n of this.nodesByPeer.values()) inFlight += n.inFlight
    if (this.broker) inFlight += this.broker.inFlight
    let queued = 0
    for (const e of this.pending) if (!e.settled) queued++
    return {
      ...this.counters,
      authDenied: this.authDenied?.denied ?? 0,
      queued,
      inFlight,
      nodes: this.nodesByPeer.size,
      transport: { ...this.transport.stats },
    }
  }

  /** The live actors. */
  liveActors(): ActorInfo[] {
    const list: ActorInfo[] = []
    for (const rec of this.actors.values()) {
      if (rec.state === 'running' && this.nodesByPeer.get(rec.node.peer) === rec.node) list.push({ id: rec.id, className: rec.className, node: rec.node.info.agentId })
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
    return this.submit(name, args, undefined) as Promise<R>
  }

  /** A typed proxy: `cluster.tasks<typeof import('./tasks.js')>().add(1, 2)`. */
  tasks<M extends object>(): TasksProxy<M> {
    return makeTasksProxy<M>((name, args) => this.submit(name, args, undefined))
  }

  /**
   * The same calls under options: a timeout, a signal, retries, or (for
   * `spawn`) a restart policy.
   *
   * ```ts
   * await cluster.with({ timeoutMs: 5_000, retries: 2 }).call('simulate', p)
   * const ac = new AbortController()
   * for await (const r of cluster.map('simulate', grid, { signal: ac.signal })) { ... }
   * const c = await cluster.with({ restart: 'always' }).spawn<Counter>('Counter')
   * ```
   */
  with(options: TaskOptions & SpawnOptions): ClusterView {
    const policy = resolvePolicy(options, this.options.maxRetries)
    const restart = resolveRestart(options)
    // One listener per view, not per call: on abort, the view's unsettled tasks are withdrawn.
    const { signal } = policy
    signal?.addEventListener(
      'abort',
      () => this.withdrawAll(policy, () => new TaskCancelledError('the task was cancelled', { cause: signal.reason })),
      { once: true },
    )
    return {
      call: <R>(name: string, ...args: unknown[]) => this.submit(name, args, policy) as Promise<R>,
      tasks: <M extends object>() => makeTasksProxy<M>((name, args) => this.submit(name, args, policy)),
      map: <R>(name: string, inputs: Iterable<unknown> | AsyncIterable<unknown>, mapOptions: MapOptions = {}) =>
        this.map<R>(name, inputs, { ...options, ...mapOptions }),
      spawn: <T extends object>(className: string, ...args: unknown[]) => this.spawnActor<T>(className, args, restart),
    }
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

  private submit(name: string, args: unknown[], policy: Policy | undefined): Promise<unknown> {
    return new Promise((resolve, reject) => this.enqueue(name, args, policy, resolve, reject))
  }

  /** Withdraws every unsettled task submitted under `policy` (one view, or one map). */
  private withdrawAll(policy: Policy, err: () => Error): void {
    for (const e of this.ledger.values()) if (e.policy === policy) this.withdraw(e, err())
  }

  /** Checks a task and queues it; on a bad task calls `reject` at once and returns undefined. */
  private enqueue(
    name: string,
    args: unknown[],
    policy: Policy | undefined,
    resolve: (value: unknown) => void,
    reject: (err: Error) => void,
  ): Entry | undefined {
    let err: Error | undefined
    if (this.closing) err = new ClusterClosedError('the cluster is closed')
    else if (typeof name !== 'string') err = new InvalidArgumentError(`task name must be a string, got ${typeof name}`)
    else if (this.hasTask(name) === false) err = UnknownTaskError.of(name, [...(this.taskNames() ?? [])])
    else if (policy?.signal?.aborted) err = new TaskCancelledError(`task "${name}" was cancelled before it was sent`, { cause: policy.signal.reason })
    else {
      const bad = findUnserializable(args, 'args')
      if (bad) err = new SerializationError(`cannot send task "${name}": ${bad}; msgpack cannot carry it`)
    }
    if (err) {
      reject(err)
      return undefined
    }
    this.counters.tasksSubmitted++
    const id = this.monitor.tasks.assignId(this.nextId, this.ledger.size === 0)
    this.nextId = id + 1
    const entry: Entry = {
      id, name, args, resolve, reject, node: undefined, settled: false, actor: undefined, op: ActorOp.Call,
      policy, tries: 0, crashes: 0,
    }
    this.ledger.set(entry.id, entry)
    this.pending.push(entry)
    this.scheduleFlush()
    return entry
  }

  /** Settles a task as cancelled; a copy still running somewhere is abandoned (its result will be dropped). */
  private withdraw(e: Entry, err: Error): void {
    if (e.settled) return
    this.counters.tasksCancelled++
    this.settle(e)
    e.reject(err)
  }

  /** Marks an entry settled and forgets it; the caller resolves or rejects it. */
  private settle(e: Entry): void {
    e.settled = true
    this.ledger.delete(e.id)
    this.unplace(e)
  }

  /** The entry leaves the node or shared queue that held it (brokered designs count what they published). */
  private unplace(e: Entry): void {
    if (e.node !== undefined && e.node === this.broker) this.broker.inFlight--
    e.node = undefined
  }

  /** Sends a task again after a failed attempt, if its budget allows. */
  private retry(e: Entry, cause: Error, infra: boolean): boolean {
    const limit = infra ? (e.policy?.maxRetries ?? this.options.maxRetries) : (e.policy?.retries ?? 0)
    const used = infra ? e.crashes : e.tries
    if (used >= limit || this.closing) return false
    if (infra) e.crashes++
    else e.tries++
    this.unplace(e)
    this.pending.push(e)
    this.counters.tasksRetried++
    this.monitor.tasks.retried(e.name)
    if (this.listenerCount('task:retried') > 0) this.emit('task:retried', { id: e.id, name: e.name, args: e.args, cause, attempt: e.crashes + e.tries })
    this.scheduleFlush()
    return true
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
    const { signal } = options
    // One policy object per map: it also tells this map's tasks apart in the ledger.
    const policy = resolvePolicy({ ...options, signal: undefined }, this.options.maxRetries)
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new InvalidArgumentError('options.signal must be an AbortSignal')
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
    const nudge = () => {
      if (wake) {
        const w = wake
        wake = undefined
        w()
      }
    }
    const store = (seq: number, o: Outcome) => {
      if (ordered) inOrder.set(seq, o)
      else asDone.push(o)
      nudge()
    }
    const next = (): Outcome | undefined => {
      if (!ordered) return asDone.shift()
      const o = inOrder.get(yielded)
      if (o) inOrder.delete(yielded)
      return o
    }
    const cancelled = () => new TaskCancelledError(`map of "${name}" was cancelled after ${yielded} of ${taken} results`, { cause: signal?.reason })
    signal?.addEventListener('abort', nudge)
    try {
      for (;;) {
        if (signal?.aborted) throw cancelled()
        while (!exhausted && taken - yielded < concurrency) {
          const r = isAsync ? await (source as AsyncIterator<unknown>).next() : (source as Iterator<unknown>).next()
          if (r.done) {
            exhausted = true
            break
          }
          const seq = taken++
          const args = Array.isArray(r.value) ? r.value : [r.value]
          this.enqueue(
            name,
            args,
            policy,
            (value) => store(seq, { ok: true, value }),
            (value: unknown) => store(seq, { ok: false, value }),
          )
          if (signal?.aborted) throw cancelled()
        }
        for (let o = next(); o !== undefined; o = next()) {
          yielded++
          if (!o.ok) throw o.value
          yield o.value as R
          if (signal?.aborted) throw cancelled()
        }
        if (exhausted && yielded === taken) return
        if (!exhausted && taken - yielded < concurrency) continue
        await new Promise<void>((resolve) => (wake = resolve))
      }
    } finally {
      progress?.stop()
      signal?.removeEventListener('abort', nudge)
      // Whatever this map still has queued or running is withdrawn: an early
      // break, a failure or a cancellation leaves no work behind.
      if (yielded < taken) {
        const err = cancelled()
        this.withdrawAll(policy, () => err)
      }
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
  spawn<T extends object>(className: string, ...args: unknown[]): Promise<ActorRef<T>> {
    return this.spawnActor<T>(className, args, false)
  }

  private async spawnActor<T extends object>(className: string, args: unknown[], restart: boolean): Promise<ActorRef<T>> {
    if (this.closing) throw new ClusterClosedError('the cluster is closed')
    if (typeof className !== 'string') throw new InvalidArgumentError(`actor class name must be a string, got ${typeof className}`)
    const known = this.actorClassNames()
    if (known && !known.has(className)) throw UnknownActorError.of(className, [...known])
    const bad = findUnserializable(args, 'args')
    if (bad) throw new SerializationError(`cannot spawn actor "${className}": ${bad}; msgpack cannot carry it`)
    const node = await this.actorNode()
    const rec: ActorRecord = {
      id: `${className}-${++this.actorSeq}-${randomBytes(3).toString('hex')}`,
      className,
      args,
      restart,
      node,
      state: 'running',
      ready: undefined,
    }
    node.actors++
    try {
      await this.actorOp(rec, ActorOp.Spawn, className, args)
    } catch (err) {
      rec.state = 'lost'
      rec.node.actors--
      throw err
    }
    this.actors.set(rec.id, rec)
    this.emit('actor:spawned', { id: rec.id, className, node: node.info.agentId })
    return makeActorRef<T>(rec.id, () => rec.node.info.agentId, (method, margs) => this.actorOp(rec, ActorOp.Call, method, margs), async () => {
      if (rec.state === 'stopped' || rec.state === 'lost') return
      if (rec.ready) await rec.ready.catch(() => {})
      this.actors.delete(rec.id)
      if (rec.state !== 'running') return
      await this.actorOp(rec, ActorOp.Stop, 'stop', [])
      rec.state = 'stopped'
      rec.node.actors--
      this.emit('actor:stopped', { id: rec.id, className, node: rec.node.info.agentId })
    })
  }

  /** The node with the fewest actors per thread; waits for one to join if there is none. */
  private async actorNode(): Promise<NodeState> {
    let node = this.pickActorNode()
    while (!node) {
      await new Promise<void>((resolve) => this.waitingSpawns.push(resolve))
      if (this.closing) throw new ClusterClosedError('the cluster is closed')
      node = this.pickActorNode()
    }
    return node
  }

  /** Recreates a restartable actor whose node was lost, on another node, from its constructor arguments. */
  private restartActor(rec: ActorRecord): void {
    rec.state = 'restarting'
    rec.ready = (async () => {
      for (;;) {
        const node = await this.actorNode()
        rec.node = node
        node.actors++
        try {
          rec.state = 'running'
          await this.actorOp(rec, ActorOp.Spawn, rec.className, rec.args)
          rec.ready = undefined
          this.emit('actor:restarted', { id: rec.id, className: rec.className, node: node.info.agentId })
          return
        } catch (err) {
          node.actors--
          // Lost again while starting: try the next node; anything else is final.
          if (!(err instanceof ActorLostError) || this.closing) {
            rec.state = 'lost'
            rec.ready = undefined
            throw err
          }
          rec.state = 'restarting'
        }
      }
    })()
    rec.ready.catch(() => {})
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
    if (rec.state === 'restarting' && rec.ready && op !== ActorOp.Spawn) return rec.ready.then(() => this.actorOp(rec, op, name, args))
    if (rec.state === 'lost' || !this.nodesByPeer.has(rec.node.peer)) {
      return Promise.reject(new ActorLostError(`actor ${rec.id} was lost with its node ${rec.node.info.agentId}`))
    }
    if (op === ActorOp.Call) {
      const bad = findUnserializable(args, 'args')
      if (bad) return Promise.reject(new SerializationError(`cannot call ${rec.className}.${name}: ${bad}; msgpack cannot carry it`))
    }
    return new Promise((resolve, reject) => {
      const entry: Entry = {
        id: this.nextId++, name, args, resolve, reject, node: rec.node, settled: false, actor: rec, op,
        policy: undefined, tries: 0, crashes: 0,
      }
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
    if (this.broker) {
      this.flushShared(this.broker)
      return
    }
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
      // At most one thread's share per frame, so every thread of the node gets a frame of its own.
      const frameCap = Math.max(1, Math.min(batchMax, Math.ceil(Math.min(node.window, quota) / node.info.threads)))
      while (quota > 0 && this.pending.length > 0) {
        const chunk: Entry[] = []
        const n = Math.min(quota, frameCap)
        while (chunk.length < n && this.pending.length > 0) {
          const e = this.pending.shift()!
          if (e.settled) continue
          const timeoutMs = e.policy?.timeoutMs
          if (timeoutMs === undefined) {
            chunk.push(e)
          } else {
            // A task under a timeout travels alone: the agent stops its thread if it overruns.
            quota--
            this.sendTasks(node, [e], timeoutMs)
          }
        }
        if (chunk.length === 0) continue
        quota -= chunk.length
        this.sendTasks(node, chunk, undefined)
      }
    }
  }

  /**
   * Brokered designs: the broker hands frames to whichever agent has room, so
   * the driver only bounds what it has published and not seen settled (twice
   * the agents' windows together), and sizes frames to one thread's share of
   * the average window, as for ZeroMQ.
   */
  private flushShared(broker: NodeState): void {
    let windows = 0
    let threads = 0
    for (const node of this.nodesByPeer.values()) {
      if (node.state !== 'up') continue
      windows += node.window
      threads += node.info.threads
    }
    if (windows === 0) return
    const cap = 2 * windows
    const frameCap = Math.max(1, Math.min(this.batchMax(), Math.ceil(windows / threads)))
    while (broker.inFlight < cap && this.pending.length > 0) {
      const n = Math.min(frameCap, cap - broker.inFlight)
      const chunk: Entry[] = []
      while (chunk.length < n && this.pending.length > 0) {
        const e = this.pending.shift()!
        if (e.settled) continue
        const timeoutMs = e.policy?.timeoutMs
        if (timeoutMs === undefined) chunk.push(e)
        else this.sendTasks(broker, [e], timeoutMs)
      }
      if (chunk.length > 0) this.sendTasks(broker, chunk, undefined)
    }
  }

  private sendTasks(node: NodeState, chunk: Entry[], timeoutMs: number | undefined): void {
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
      this.sendTasks(node, chunk.slice(0, half), timeoutMs)
      this.sendTasks(node, chunk.slice(half), timeoutMs)
      return
    }
    for (const e of chunk) e.node = node
    node.inFlight += chunk.length
    this.bytesPerTask = this.bytesPerTask * 0.8 + (body.length / chunk.length) * 0.2
    const head = timeoutMs === undefined ? header(MsgType.Tasks, chunk.length) : header(MsgType.Tasks, chunk.length, timeoutMs)
    if (node === this.broker) this.transport.publishTasks!([head, body])
    else this.transport.send(node.peer, [head, body])
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
    if (ok.length > 0 && ok.length < chunk.length) this.sendTasks(node, ok, chunk[0]!.policy?.timeoutMs)
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

  private fail(e: Entry, err: Error, node: NodeState | undefined = e.node): void {
    if (e.settled) return
    this.settle(e)
    if (!e.actor) {
      this.counters.tasksFailed++
      const nodeId = node === undefined || node === this.broker ? undefined : node.info.agentId
      this.monitor.tasks.failed(e.id, e.name, nodeId, err, performance.now())
      if (this.listenerCount('task:failed') > 0) this.emit('task:failed', { id: e.id, name: e.name, node: nodeId, error: err })
    }
    e.reject(err)
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
      // A peer that never said Hello, or an agent from before a restart or a loss:
      // drop its frame, and tell it to introduce itself again.
      this.counters.badFrames++
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
    // A Hello sent again before our Welcome reached the agent (a busy agent process): welcome it again, change nothing.
    if (old && info.registration !== undefined && old.info.registration === info.registration) {
      old.lastSeen = Date.now()
      this.transport.send(peer, [header(MsgType.Welcome, { nodeId: info.agentId, heartbeatMs: this.options.heartbeatMs, session: this.session })])
      return
    }
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
    this.transport.send(peer, [header(MsgType.Welcome, { nodeId: info.agentId, heartbeatMs: this.options.heartbeatMs, session: this.session })])
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
        this.counters.lateResultsDropped++
        continue
      }
      const status = items[i + 1]
      if (status === Status.Ok) {
        this.settle(e)
        if (!e.actor) {
          this.counters.tasksSucceeded++
          this.monitor.tasks.succeeded(e.id, e.name, now)
        }
        e.resolve(items[i + 2])
        continue
      }
      const wire = fromWire(items[i + 2])
      const runtime = status !== Status.Threw
      const err = rebuildError(e.name, wire, runtime, node.info.agentId)
      // Infrastructure failures retry on their own budget; a task that threw or overran only if asked.
      const infra = runtime && wire.code !== undefined && INFRA_CODES.has(wire.code)
      const retriable = infra || !runtime || wire.code === 'ERR_TIMEOUT'
      if (e.actor || !retriable || !this.retry(e, err, infra)) this.fail(e, err, node)
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
    // Brokered designs: what the agent took from the shared queue goes back there.
    this.transport.peerGone?.(node.peer)
    node.actorQueue.length = 0
    const requeue: Entry[] = []
    if (how === 'lost') this.counters.nodesLost++
    for (const e of this.ledger.values()) {
      if (e.node !== node) continue
      if (e.actor) {
        this.fail(e, new ActorLostError(`actor ${e.actor.id} was lost with its node ${node.info.agentId} (${reason}); the message may or may not have run`))
      } else if (how === 'lost' && e.crashes >= (e.policy?.maxRetries ?? this.options.maxRetries)) {
        this.fail(e, new NodeLostError(`task "${e.name}" was on node ${node.info.agentId} when it was lost (${reason}), after ${e.crashes} earlier infrastructure failures`))
      } else {
        e.node = undefined
        requeue.push(e)
        if (how === 'lost') {
          e.crashes++
          this.monitor.tasks.retried(e.name)
          if (this.listenerCount('task:retried') > 0) {
            this.emit('task:retried', { id: e.id, name: e.name, args: e.args, cause: new NodeLostError(`node ${node.info.agentId} was lost (${reason})`), attempt: e.crashes + e.tries })
          }
        }
      }
    }
    for (let i = requeue.length - 1; i >= 0; i--) this.pending.unshift(requeue[i]!)
    this.counters.requeued += requeue.length
    if (how === 'lost') this.counters.tasksRetried += requeue.length
    for (const rec of this.actors.values()) {
      if (rec.node !== node || rec.state !== 'running') continue
      if (rec.restart && !this.closing) {
        this.restartActor(rec)
      } else {
        rec.state = 'lost'
        this.actors.delete(rec.id)
      }
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

  /** The transport failed for good: every pending task rejects with its error (naming the broker and the cause), then the cluster closes. */
  private onTransportFailure(err: Error): void {
    if (this.closing) return
    for (const e of this.ledger.values()) this.fail(e, err)
    this.pending.clear()
    this.emit('transport:error', err)
    void this.close()
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
    if (this.zapDomain) await unregisterZapDomain(this.zapDomain)
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

/** The stand-in node for the shared task queue of a brokered design (never listed among the nodes). */
function sharedQueueNode(): NodeState {
  return {
    peer: '',
    info: { agentId: 'shared-queue', threads: 1, pid: 0, host: '', version: '', tasks: [], actors: [], window: 0 },
    tasks: new Set(),
    actorClasses: new Set(),
    local: false,
    state: 'up',
    window: 0,
    inFlight: 0,
    tasksDone: 0,
    busy: 0,
    actors: 0,
    lastSeen: 0,
    actorQueue: [],
  }
}
