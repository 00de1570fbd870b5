import { EventEmitter } from 'node:events'
import { randomBytes } from 'node:crypto'
import type { Agent } from '../agent/agent.js'
import { ClusterClosedError, InvalidArgumentError, SharedValueError, TaskCancelledError } from '../errors.js'
import type { ClusterOptions, ResolvedClusterOptions } from '../options.js'
import { ActorOp } from '../protocol/messages.js'
import { unregisterZapDomain } from '../transport/curve.js'
import { unpublishLocalKeys } from '../transport/local-keys.js'
import type { DriverTransport, Parts } from '../transport/transport.js'
import type { ClusterSnapshot } from '../monitor/monitor.js'
import { closeSteps, type CloseStep } from '../util/close.js'
import { Actors, SpawnGroup } from './actors.js'
import { dispatch } from './inbound.js'
import { Requests } from './requests.js'
import { setActorRefResolver, type ActorRefResolver } from '../protocol/actor-ref.js'
import { carriedOf, setSharedResolver, type SharedResolver } from '../protocol/shared-ref.js'
import { Ledger, type ActorTarget, type ResultSink, type Settle, type TaskEntry } from './ledger.js'
import { runMap } from './map.js'
import { MAP_KEYS, MAP_REDUCE_KEYS, REDUCE_KEYS, VIEW_KEYS, spawnOptionOnTask, taskOptionOnSpawn } from './option-keys.js'
import { checkKnownKeys, notAnOptionsObject, unknownKey } from '../util/known-keys.js'
import { SharedValues, type SharedUser } from './shared.js'
import type { SharedRef } from '../protocol/shared-ref.js'
import { runReduce } from './reduce.js'
import { Membership, type ClusterNode } from './membership.js'
import { KnownNames } from './names.js'
import { Observability } from './observe.js'
import { makeTasksProxy } from './proxies.js'
import { CreditScheduler, SharedQueueScheduler } from './scheduler.js'
import { keyVerifier, setUpDriver, startLocalAgents, waitForRemoteNodes, type DriverSetup } from './start.js'
import { resolveMapOptions, resolveSpawnOptions, resolveTaskOptions, SPAWN_DEFAULTS, type ResolvedTaskOptions } from './task-options.js'
import type {
  ActorInfo,
  ActorRef,
  ClusterEvents,
  ClusterStats,
  ClusterView,
  MapOptions,
  MapReduceOptions,
  NodeInfo,
  ReduceOptions,
  SpawnOptions,
  TaskOptions,
  TasksProxy,
} from './types.js'

/** Spread views of threads whose groups the driver keeps (a view older than that starts a fresh group). */
const THREAD_GROUPS = 10_000

/** How long each step of `close()` may take before the next one runs anyway. */
const CLOSE_STEP_MS = 15_000

/**
 * One executor for every call's promise, so that no closure is made per
 * call: it hands the resolve function over through `kept`, read at once by
 * the caller (Node 20 has no Promise.withResolvers; this measured cheaper
 * than a deferred object, or keeping reject too).
 */
let kept: ((value: unknown) => void) | undefined
const keepResolve = (resolve: (value: unknown) => void): void => {
  kept = resolve
}

/**
 * The driver: the handle your program holds on a cluster. It binds the
 * socket agents connect to, keeps the ledger of every task, batches work onto
 * the wire under each agent's credit, and settles each task's promise once.
 * The work is done by its rooms: the ledger (settlement, retry budgets), a
 * scheduler (credit or shared queue), membership (hello, heartbeats, loss),
 * actors, and the map engine.
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
  private readonly setup: DriverSetup
  private readonly transport: DriverTransport
  private readonly ledger: Ledger
  private readonly scheduler: CreditScheduler | SharedQueueScheduler
  private readonly membership: Membership
  private readonly actors: Actors
  private readonly names: KnownNames
  private readonly observe: Observability
  private readonly shared: SharedValues
  private readonly requests: Requests
  /** The spawn groups of threads' spread views, by node and view (oldest first). */
  private readonly threadGroups = new Map<string, SpawnGroup>()
  /** How values from the network decode here: references as the driver's own, handles as handles on its values. */
  private readonly refResolver: ActorRefResolver
  private readonly sharedResolver: SharedResolver
  private readonly localAgents: Agent[] = []
  private readonly localIds = new Set<string>()
  private badFrames = 0
  private readonly frameCounts = { results: 0 }
  private flushScheduled = false
  /** ZeroMQ: tasks set aside during a flush for a node that can hold the shared values they carry. */
  private readonly elsewhere: TaskEntry[] = []
  private readonly setAsideBy = new Set<ClusterNode>()
  private readonly flushBound = () => this.flush()
  private timer: NodeJS.Timeout | undefined
  private closing: Promise<void> | undefined

  /**
   * Listeners are the user's code: one that throws must not break the step
   * of the driver that emitted (a task would be left unsettled). Its error is
   * thrown again on its own, an uncaught exception as from any emitter.
   */
  override emit<K extends keyof ClusterEvents>(event: K, ...args: ClusterEvents[K]): boolean {
    try {
      return (super.emit as (event: unknown, ...args: unknown[]) => boolean)(event, ...args)
    } catch (err) {
      process.nextTick(() => {
        throw err
      })
      return true
    }
  }

  private constructor(setup: DriverSetup) {
    super()
    const { options, transport } = setup
    this.setup = setup
    this.options = options
    this.transport = transport
    this.observe = new Observability(this, options)
    this.ledger = new Ledger(this.observe.ledgerHooks(), options.maxRetries)
    const fail = (e: TaskEntry, err: Error) => this.ledger.fail(e, err)
    // Frames that carry shared-value handles: the values the node lacks go first.
    const sendFrame = (peer: string, parts: Parts, refs?: readonly SharedRef[]) => {
      this.shared.beforeSend(peer, refs)
      transport.send(peer, parts)
    }
    this.scheduler =
      transport.kind === 'shared-queue'
        ? new SharedQueueScheduler(this.ledger, options, (_queue, parts) => transport.publishTasks(parts), fail)
        : new CreditScheduler(
            this.ledger,
            options,
            (node, parts, refs) => sendFrame(node.peer, parts, refs),
            fail,
            undefined,
            (node, chunk, refs) => this.failUnfit(node, chunk, refs),
          )
    this.membership = new Membership(
      // Random per instance: told to agents in Welcome, so results meant for an earlier driver are dropped.
      {
        heartbeatMs: options.heartbeatMs,
        nodeTimeoutMs: options.nodeTimeoutMs,
        session: randomBytes(8).toString('hex'),
        localIds: this.localIds,
        verifyKey: keyVerifier(setup),
      },
      {
        send: (peer, parts) => transport.send(peer, parts),
        joined: (node) => this.nodeJoined(node),
        removed: (node, how, reason) => this.nodeRemoved(node, how, reason),
        badFrame: () => this.badFrames++,
      },
    )
    this.shared = new SharedValues({
      send: (peer, parts) => transport.send(peer, parts),
      node: (peer) => this.membership.get(peer),
      nodes: () => this.membership,
      unsettled: () => this.sharedUsers(this.ledger.unsettled()),
      heldBy: (holder) => this.sharedUsers(this.ledger.entriesHeldBy(holder)),
      maxFrameBytes: options.maxFrameBytes,
      routed: transport.kind !== 'shared-queue',
    })
    this.names = new KnownNames(setup.catalog, this.membership)
    this.actors = new Actors({
      ledger: this.ledger,
      membership: this.membership,
      send: sendFrame,
      unfit: (node, entries, refs) => this.failUnfit(node, entries, refs),
      scheduleFlush: () => this.scheduleFlush(),
      classNames: () => this.names.actorClasses(),
      closed: () => this.closing !== undefined,
      spawned: (info) => this.emit('actor:spawned', info),
      stopped: (info) => this.emit('actor:stopped', info),
      restarted: (info) => this.emit('actor:restarted', info),
      toldFailed: (info) => this.emit('actor:error', info),
      lost: (info, error) => this.emit('actor:lost', info, error),
      childFailed: (info) => this.emit('actor:child-failed', info),
    })
    this.requests = new Requests({
      call: (name, args, o) => this.submit(name, args, o),
      taskOptions: (o, node) => {
        // First: a spread view's wire options carry its group key, which is no option of a call.
        const spawnOnly = spawnOptionOnTask(o)
        if (spawnOnly) throw spawnOnly
        checkKnownKeys('context.with options', o, VIEW_KEYS)
        return resolveTaskOptions(o, this.options.maxRetries, node)
      },
      withdrawAskedBy: (node, err) => this.ledger.withdrawSubmittedBy(node, err),
      spawn: (node, className, args, o) => this.spawnFor(node, className, args, o),
      lookup: (name) => this.actors.lookup(name),
      put: (value) => this.put(value),
      ask: (id, method, args) => this.actors.ask(id, method, args),
      tell: (id, method, args) => this.actors.tell(id, method, args),
      stop: (id, force) => this.actors.refOf(id, undefined).stop({ force }),
      toldFailed: (id, method, error) => this.actors.toldFailedInNode(id, method, error),
      isMember: (node) => this.membership.has(node),
      send: (peer, parts) => transport.send(peer, parts),
      scheduleFlush: () => this.scheduleFlush(),
    })
    this.refResolver = (id, name) => this.actors.refOf(id, name)
    this.sharedResolver = (hash, size) => this.shared.borrow(hash, size)
  }

  /** A spawn asked for by a thread: its options as `with` takes them, the spawning actor as its parent, its spread view's group. */
  private spawnFor(node: ClusterNode, className: string, args: unknown[], o: Record<string, unknown> | undefined): Promise<ActorRef<object>> {
    if (o === undefined) return this.actors.spawn(className, args, SPAWN_DEFAULTS)
    const { parent, group, ...rest } = o
    checkKnownKeys('context.with options', rest, VIEW_KEYS)
    const taskOnly = taskOptionOnSpawn(rest)
    if (taskOnly) throw taskOnly
    if (parent !== undefined && typeof parent !== 'string') throw new InvalidArgumentError('malformed request: options.parent is not a string')
    if (group !== undefined && (typeof group !== 'string' || group.length > 64))
      throw new InvalidArgumentError('malformed request: options.group is not a string of at most 64 characters')
    const resolved = resolveSpawnOptions(rest)
    return this.actors.spawn(
      className,
      args,
      parent === undefined ? resolved : { ...resolved, parent },
      group === undefined ? undefined : this.threadGroup(node, group),
    )
  }

  /** The spawn group of a thread's spread view (kept for the latest {@link THREAD_GROUPS} views, and while the node is a member). */
  private threadGroup(node: ClusterNode, key: string): SpawnGroup {
    const id = `${node.peer}\n${key}`
    let group = this.threadGroups.get(id)
    if (!group) {
      this.threadGroups.set(id, (group = new SpawnGroup()))
      if (this.threadGroups.size > THREAD_GROUPS) this.threadGroups.delete(this.threadGroups.keys().next().value!)
    }
    return group
  }

  /** Runs `run` (decoding frames from agents) with references and handles decoding to the driver's own. */
  private decodeScope<T>(run: () => T): T {
    const refs = setActorRefResolver(this.refResolver)
    const shared = setSharedResolver(this.sharedResolver)
    try {
      return run()
    } finally {
      setActorRefResolver(refs)
      setSharedResolver(shared)
    }
  }

  /**
   * Starts a driver. With no options but `tasks`, it also starts one local
   * agent on loopback (threads = cores) that goes through the same sockets and
   * frames as a remote one. With `localAgents: 0` it waits for agents started
   * with `cluster agent --connect <cluster.address>`.
   */
  static async start(options: ClusterOptions = {}): Promise<Cluster> {
    const cluster = new Cluster(await setUpDriver(options))
    const inbound = {
      ledger: cluster.ledger,
      membership: cluster.membership,
      scheduler: cluster.scheduler,
      frames: cluster.scheduler instanceof SharedQueueScheduler ? cluster.scheduler : undefined,
      maxFrameBytes: cluster.options.maxFrameBytes,
      send: (peer: string, parts: Parts) => cluster.transport.send(peer, parts),
      scheduleFlush: () => cluster.scheduleFlush(),
      closing: () => cluster.closing !== undefined,
      actorHostLost: (actor: ActorTarget, node: ClusterNode) => cluster.actors.hostLost(actor, node),
      badFrame: () => void cluster.badFrames++,
      fetch: (node: ClusterNode, hashes: readonly string[]) => cluster.shared.fetch(node.peer, hashes),
      frameCounts: cluster.frameCounts,
      submit: (node: ClusterNode, body: Uint8Array | undefined, count: number) => cluster.requests.submit(node, body, count),
      decodeScope: <T>(run: () => T) => cluster.decodeScope(run),
    }
    cluster.transport.start(
      (peer, parts) => dispatch(inbound, peer, parts),
      (err) => cluster.onTransportFailure(err),
    )
    const transport = cluster.transport
    // While a broker is being reconnected, agents cannot be heard: silence is not loss then.
    cluster.timer = setInterval(() => cluster.membership.tick(transport.kind === 'shared-queue' && transport.reconnecting), cluster.options.heartbeatMs)
    cluster.timer.unref()
    cluster.observe.monitor.start()
    try {
      // Before the local agents: a dashboard port in use fails the start before anything else runs.
      if (cluster.options.dashboard) await cluster.observe.startDashboard(cluster.options.dashboard)
      await startLocalAgents(cluster.setup, (agent) => {
        cluster.localAgents.push(agent)
        cluster.localIds.add(agent.id)
      })
      const remote = () => cluster.membership.list().filter((n) => !cluster.localIds.has(n.id)).length
      await waitForRemoteNodes(cluster, remote, cluster.options.waitForNodes, cluster.options.waitForNodesMs)
    } catch (err) {
      await cluster.close()
      throw err
    }
    return cluster
  }

  /** The address agents connect to (`cluster agent --connect <address>`); for brokered designs, the broker URLs (passwords masked). */
  get address(): string {
    return this.transport.address
  }

  /**
   * Where agents of this user on this machine find the keys of this driver:
   * set when it listens on loopback TCP without keys of its own (it made
   * them). `cluster agent --connect` to that port finds them by itself;
   * `Agent.start({ connect, curve: { dir: cluster.localKeys } })` names them.
   * Brokered (not insecure, no secret given): the directory of the secret it
   * made for this cluster, where its agents on this machine find it.
   */
  get localKeys(): string | undefined {
    return this.setup.localKeys
  }

  /** The namespace of this cluster's queues on the brokers: agents of a brokered design join with `--cluster-id <id>`. */
  get id(): string {
    return this.setup.clusterId
  }

  /** The agents currently serving this driver. */
  nodes(): NodeInfo[] {
    return this.membership.list()
  }

  stats(): ClusterStats {
    return {
      ...this.ledger.counters,
      nodesLost: this.membership.nodesLost,
      badFrames: this.badFrames,
      authDenied: (this.setup.authDenied?.denied ?? 0) + this.membership.keysRefused,
      queued: this.scheduler.queued(),
      inFlight: this.scheduler.inFlight(this.membership),
      nodes: this.membership.size,
      taskFrames: this.scheduler.framesSent,
      resultFrames: this.frameCounts.results,
      transport: { ...this.transport.stats },
      shared: this.shared.stats(),
    }
  }

  /** The live actors. */
  liveActors(): ActorInfo[] {
    return this.actors.live()
  }

  /**
   * Everything known about the cluster now — nodes, tasks by state and name,
   * throughput history, latency percentiles, recent failures, actors,
   * transport counters. The dashboard, `/metrics` and `/api/stats` all read
   * this one function.
   */
  snapshot(): ClusterSnapshot {
    return this.observe.snapshot()
  }

  /** The Prometheus text of `/metrics`, also available without the dashboard. */
  metricsText(): Promise<string> {
    return this.observe.metricsText()
  }

  /** Where the dashboard is (`http://127.0.0.1:8265/`), when it was started. */
  get dashboardUrl(): string | undefined {
    return this.observe.dashboardUrl
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
    const notObject = notAnOptionsObject('cluster.with options', options)
    if (notObject) throw notObject
    checkKnownKeys('cluster.with options', options, VIEW_KEYS)
    const task = resolveTaskOptions(options, this.options.maxRetries)
    const spawnOptions = resolveSpawnOptions(options)
    const taskOnly = taskOptionOnSpawn(options as Record<string, unknown>)
    const spawnOnly = spawnOptionOnTask(options as Record<string, unknown>)
    // The view's spawns are one group when spread.
    const group = spawnOptions.spread ? new SpawnGroup() : undefined
    // One listener per view, not per call: on abort, the view's unsettled tasks are withdrawn.
    const { signal } = task
    signal?.addEventListener('abort', () => this.ledger.withdrawAll(task, () => new TaskCancelledError('the task was cancelled', { cause: signal.reason })), {
      once: true,
    })
    return {
      call: <R>(name: string, ...args: unknown[]) => (spawnOnly ? Promise.reject(spawnOnly) : (this.submit(name, args, task) as Promise<R>)),
      tasks: <M extends object>() => makeTasksProxy<M>((name, args) => (spawnOnly ? Promise.reject(spawnOnly) : this.submit(name, args, task))),
      map: <R>(name: string, inputs: Iterable<unknown> | AsyncIterable<unknown>, mapOptions: MapOptions | MapReduceOptions<R> = {}) =>
        this.checkedMap<R>(name, inputs, mapOptions, options) as AsyncGenerator<R, void, undefined> & Promise<R>,
      reduce: <R>(name: string, inputs: Iterable<unknown> | AsyncIterable<unknown>, combiner: string, initial: R, reduceOptions: ReduceOptions<R> = {}) =>
        this.checkedReduce<R>(name, inputs, combiner, initial, reduceOptions, options),
      spawn: <T extends object>(className: string, ...args: unknown[]) =>
        taskOnly ? Promise.reject(taskOnly) : this.actors.spawn<T>(className, args, spawnOptions, group),
    }
  }

  /**
   * The call path, per call: one promise and its resolve function (kept in
   * the ledger's arrays), nothing else that outlives the call. Arguments are
   * checked when their frame is encoded, not walked here.
   */
  private submit(name: string, args: unknown[], options: ResolvedTaskOptions | undefined): Promise<unknown> {
    const refused = this.refusal(name, options)
    if (refused !== undefined) return Promise.reject(refused)
    const promise = new Promise(keepResolve)
    const resolve = kept!
    kept = undefined
    this.enqueue(name, args, options, resolve, 0)
    return promise
  }

  /** Why a task cannot be queued at all (closed, unknown name, cancelled already), or undefined. */
  private refusal(name: string, options: ResolvedTaskOptions | undefined): Error | undefined {
    try {
      if (this.closing) throw new ClusterClosedError('the cluster is closed')
      this.names.checkTask(name)
      if (options?.signal?.aborted) throw new TaskCancelledError(`task "${name}" was cancelled before it was sent`, { cause: options.signal.reason })
    } catch (err) {
      return err as Error
    }
    return undefined
  }

  /** Queues a task checked by {@link refusal}; `settle` gets its outcome (with `seq`, for a map's sink). */
  private enqueue(name: string, args: unknown[], options: ResolvedTaskOptions | undefined, settle: Settle, seq: number): void {
    const id = this.observe.monitor.tasks.assignId(this.ledger.nextId, this.ledger.size === 0)
    this.scheduler.enqueue(this.ledger.add(id, name, args, settle, seq, undefined, ActorOp.Call, options, undefined))
    this.scheduleFlush()
  }

  /** Queues one task of a map or reduce, whose outcome goes to `sink` with `seq`; a task that cannot be queued fails there at once. */
  private enqueueFor(name: string, args: unknown[], options: ResolvedTaskOptions, sink: ResultSink, seq: number): void {
    const refused = this.refusal(name, options)
    if (refused === undefined) this.enqueue(name, args, options, sink, seq)
    else sink.settled(seq, false, refused)
  }

  /**
   * The tasks (routed designs) or actor calls of a frame for `node` that carry a shared value
   * the node cannot hold at all leave the frame; the rest of it goes. A task
   * that another member can hold waits for the next flush (see {@link elsewhere}),
   * which places it anew; the others, and actor calls (an actor does not
   * move), fail (ERR_SHARED_TOO_LARGE naming the node and the sizes).
   */
  private failUnfit(node: ClusterNode, chunk: readonly TaskEntry[], refs: readonly SharedRef[]): ReadonlySet<TaskEntry> | undefined {
    const unfit = this.shared.unfit(node, refs)
    if (unfit === undefined) return undefined
    const out = new Set<TaskEntry>()
    for (const e of chunk) {
      const args = this.ledger.args(e)
      const hash = carriedOf(args, (h) => unfit.has(h))
      if (hash === undefined) continue
      out.add(e)
      const actor = this.ledger.actor(e) !== undefined
      if (!actor && this.shared.fitsElsewhere(args, node)) {
        this.elsewhere.push(e)
        this.setAsideBy.add(node)
        continue
      }
      const what = actor ? `actor call "${this.ledger.name(e)}"` : `task "${this.ledger.name(e)}"`
      const alone = actor ? '' : '; no other node can hold it'
      this.ledger.fail(e, new SharedValueError('ERR_SHARED_TOO_LARGE', `${what}: ${unfit.get(hash)}${alone}`), node.nodeId)
    }
    return out
  }

  /** The name and arguments of each entry, for the shared values' walks (at release and eviction only). */
  private sharedUsers(entries: Iterable<TaskEntry>): SharedUser[] {
    return Array.from(entries, (e) => ({ name: this.ledger.name(e), args: this.ledger.args(e) }))
  }

  /**
   * Runs `name` once per element of `inputs` (each element is the argument
   * list; a non-array element is the single argument) and yields the results.
   * Inputs are pulled lazily: at most `concurrency` are taken and not yet
   * yielded, so an endless generator runs in bounded memory. A task that
   * throws makes the iteration throw at that result.
   *
   * With `reduce: { combiner, initial, until?, chunk? }` the results are
   * folded on the agents instead, and `map` resolves to the aggregate: the
   * same as {@link reduce} with those arguments (one implementation).
   *
   * ```ts
   * for await (const r of cluster.map('simulate', grid)) console.log(r)
   * const hits = await cluster.map('darts', seeds, { reduce: { combiner: 'sum', initial: 0, until: (n) => n >= 1e6 } })
   * ```
   */
  map<A>(name: string, inputs: Iterable<unknown> | AsyncIterable<unknown>, options: MapReduceOptions<A>): Promise<A>
  map<R = unknown>(name: string, inputs: Iterable<unknown> | AsyncIterable<unknown>, options?: MapOptions): AsyncGenerator<R, void, undefined>
  map<R>(
    name: string,
    inputs: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions | MapReduceOptions<R> = {},
  ): AsyncGenerator<R, void, undefined> | Promise<R> {
    return this.checkedMap<R>(name, inputs, options, undefined)
  }

  /** A map under the caller's options (checked: no unknown key) over a view's, if any. */
  private checkedMap<R>(
    name: string,
    inputs: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions | MapReduceOptions<R>,
    view: (TaskOptions & SpawnOptions) | undefined,
  ): AsyncGenerator<R, void, undefined> | Promise<R> {
    // Not an object at all: a map (no reduce asked for), failing as its iteration starts.
    const notObject = notAnOptionsObject('map options', options)
    if (notObject) return failedMap<R>(notObject)
    const reduce = (options as Partial<MapReduceOptions<R>>).reduce
    const refused =
      unknownKey('map options', options, MAP_KEYS) ??
      (reduce !== null && typeof reduce === 'object' ? unknownKey('options.reduce', reduce, MAP_REDUCE_KEYS) : undefined) ??
      (view === undefined ? undefined : spawnOptionOnTask(view as Record<string, unknown>))
    if (refused) return reduce !== undefined ? Promise.reject(refused) : failedMap<R>(refused)
    return this.mapOrReduce<R>(name, inputs, view === undefined ? options : { ...view, ...options })
  }

  /** A reduce under the caller's options (checked: no unknown key) over a view's, if any. */
  private checkedReduce<R>(
    name: string,
    inputs: Iterable<unknown> | AsyncIterable<unknown>,
    combiner: string,
    initial: R,
    options: ReduceOptions<R>,
    view: (TaskOptions & SpawnOptions) | undefined,
  ): Promise<R> {
    const refused =
      notAnOptionsObject('reduce options', options) ??
      unknownKey('reduce options', options, REDUCE_KEYS) ??
      (view === undefined ? undefined : spawnOptionOnTask(view as Record<string, unknown>))
    if (refused) return Promise.reject(refused)
    return this.reduceUnder<R>(name, inputs, combiner, initial, view === undefined ? options : { ...view, ...options })
  }

  private mapOrReduce<R>(
    name: string,
    inputs: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions | MapReduceOptions<R>,
  ): AsyncGenerator<R, void, undefined> | Promise<R> {
    if ('reduce' in options && options.reduce !== undefined) {
      const { reduce, ...rest } = options
      if (typeof reduce !== 'object' || reduce === null) {
        return Promise.reject(new InvalidArgumentError('options.reduce must be an object { combiner, initial, until?, chunk? }'))
      }
      // Left out, `initial` would be undefined and the aggregate NaN (undefined + 1), silently.
      const missing = (['combiner', 'initial'] as const).find((key) => !(key in reduce))
      if (missing !== undefined) {
        return Promise.reject(new InvalidArgumentError(`options.reduce.${missing} is missing: options.reduce is { combiner, initial, until?, chunk? }`))
      }
      return this.reduceUnder<R>(name, inputs, reduce.combiner, reduce.initial, { ...rest, until: reduce.until, chunk: reduce.chunk })
    }
    return runMap<R>(
      {
        enqueue: (n, args, task, sink, seq) => this.enqueueFor(n, args, task, sink, seq),
        withdrawAll: (task, err) => this.ledger.withdrawAll(task, err),
        checkTask: (n) => this.names.checkTask(n),
        resolveMapOptions: (o) => resolveMapOptions(o, this.options.maxRetries),
        startProgress: (n, i, o, read) => this.observe.mapProgress(n, i, o, read),
      },
      name,
      inputs,
      options,
    )
  }

  // --- shared inputs -------------------------------------------------------------

  /**
   * Puts a value on the cluster once and returns a handle to pass as (or
   * inside) task and actor arguments in its place: each node receives the
   * value at most once, before the first frame that needs it (brokered
   * designs: fetched by the node that took that frame), and every thread
   * there reads the same copy (a typed array as a view of one
   * SharedArrayBuffer; read-only by contract). Putting equal content again
   * returns another handle on the same value; the value is freed on the
   * nodes when every handle was released. Throws SerializationError for a
   * value msgpack cannot carry, SharedValueError (`ERR_SHARED_TOO_LARGE`)
   * for one larger than every member's cache or frame limit (brokered
   * designs: than any member's). On ZeroMQ a task whose node cannot hold the
   * value goes to one that can, and fails only when none can; an actor call
   * to a node that cannot hold it fails, as do, on the brokered designs, the
   * tasks such a node takes.
   *
   * ```ts
   * await using obs = await cluster.put(observed) // Float64Array
   * for await (const loss of cluster.map('loss', grid.map((p) => [p, obs]))) { ... }
   * ```
   */
  async put<T>(value: T): Promise<SharedRef<T>> {
    if (this.closing) throw new ClusterClosedError('the cluster is closed')
    return this.shared.put(value)
  }

  /**
   * Runs `name` once per element of `inputs`, as `map` does, and folds the
   * results with `combiner` — the name of an associative function `(a, b) =>
   * a ⊕ b` exported by the tasks module — into `initial`, on the agents: each
   * chunk of contiguous inputs comes back as one partial aggregate, which the
   * driver folds in input order (or as they arrive, with `ordered: false`,
   * for a commutative combiner). Resolves to `initial ⊕ r0 ⊕ r1 ⊕ …`.
   *
   * ```ts
   * const hits = await cluster.reduce('darts', Array.from({ length: 10_000 }, (_, i) => [i, 1_000]), 'sum', 0)
   * const stop = await cluster.reduce('darts', seeds, 'sum', 0, { until: (n) => n >= 1e6 })
   * ```
   */
  reduce<R>(name: string, inputs: Iterable<unknown> | AsyncIterable<unknown>, combiner: string, initial: R, options: ReduceOptions<R> = {}): Promise<R> {
    return this.checkedReduce<R>(name, inputs, combiner, initial, options, undefined)
  }

  private reduceUnder<R>(
    name: string,
    inputs: Iterable<unknown> | AsyncIterable<unknown>,
    combiner: string,
    initial: R,
    options: ReduceOptions<R>,
  ): Promise<R> {
    return runReduce<R>(
      {
        enqueue: (n, args, task, sink, seq) => this.enqueueFor(n, args, task, sink, seq),
        withdrawAll: (task, err) => this.ledger.withdrawAll(task, err),
        checkTask: (n, what) => this.names.checkTask(n, what),
        localFunction: (n) => this.names.localFunction(n),
        threads: () => this.membership.list().reduce((sum, node) => sum + node.threads, 0),
        resolveMapOptions: (o) => resolveMapOptions(o, this.options.maxRetries),
        startProgress: (n, i, o, read) => this.observe.mapProgress(n, i, o, read),
      },
      name,
      inputs,
      combiner,
      initial,
      options,
    )
  }

  // --- actors ------------------------------------------------------------------

  /**
   * Places one instance of an exported class on one node's actor thread and
   * returns a typed reference. Each method call is a message; an actor runs
   * its messages one at a time, in the order they were sent.
   */
  spawn<T extends object>(className: string, ...args: unknown[]): Promise<ActorRef<T>> {
    return this.actors.spawn<T>(className, args, SPAWN_DEFAULTS)
  }

  /**
   * The reference of the live actor spawned under `name`
   * (`cluster.with({ name: 'ledger' }).spawn(...)`). The driver holds the
   * names, so this answers at once; throws ActorNameError
   * (`ERR_ACTOR_NOT_FOUND`) naming the name when no live actor holds it, and
   * ClusterClosedError after `close()`.
   *
   * ```ts
   * await cluster.with({ name: 'totals', restart: 'always' }).spawn<Counter>('Counter')
   * const totals = cluster.actor<Counter>('totals')
   * totals.tell.inc(5)
   * ```
   */
  actor<T extends object>(name: string): ActorRef<T> {
    if (this.closing) throw new ClusterClosedError('the cluster is closed')
    return this.actors.lookup<T>(name)
  }

  // --- the wire ----------------------------------------------------------------

  private scheduleFlush(): void {
    if (!this.flushScheduled) {
      this.flushScheduled = true
      process.nextTick(this.flushBound)
    }
  }

  private flush(): void {
    this.flushScheduled = false
    if (this.closing) return
    this.requests.flush()
    this.actors.flush()
    this.scheduler.flush(this.membership)
    if (this.elsewhere.length > 0) this.placeElsewhere()
  }

  /**
   * Tasks a node set aside for a value it cannot hold go back first in the
   * queue and are offered once more, now, to the other nodes; those still
   * set aside wait first in the queue for the next flush. A node that can
   * hold them exists (else they failed), so they are not lost.
   */
  private placeElsewhere(): void {
    const refused = new Set(this.setAsideBy)
    this.setAsideBy.clear()
    this.scheduler.requeue(this.elsewhere.splice(0))
    this.scheduler.flush([...this.membership].filter((n) => !refused.has(n)))
    this.setAsideBy.clear()
    if (this.elsewhere.length > 0) this.scheduler.requeue(this.elsewhere.splice(0))
  }

  private nodeJoined(node: ClusterNode): void {
    this.emit('node:joined', node.describe(performance.now()))
    this.actors.wake()
    this.scheduleFlush()
  }

  /** A node is out: what it held goes back to the queue (or fails, past its budget); its actors are lost or restarted. */
  private nodeRemoved(node: ClusterNode, how: 'left' | 'lost', reason: string): void {
    // Brokered designs: what it took and said so, the ledger holds as the node's and sends again below; frames it
    // took without a word go back to the shared queue through the broker (marked as redelivered).
    if (this.transport.kind === 'shared-queue') this.transport.peerGone(node.peer)
    this.shared.nodeGone(node.peer)
    // First: the tasks its threads asked for are withdrawn, not requeued with the node's own.
    this.requests.nodeRemoved(node, how, reason)
    this.scheduler.requeue(this.ledger.reclaim(node, how, () => ({ node: node.nodeId, reason })))
    this.actors.nodeRemoved(node, reason)
    const info = node.describe(performance.now())
    if (how === 'left') this.emit('node:left', info)
    else this.emit('node:lost', info, reason)
    this.scheduleFlush()
  }

  /** The transport failed for good: every pending task rejects with its error (naming the broker and the cause), then the cluster closes. */
  private onTransportFailure(err: Error): void {
    if (this.closing) return
    this.ledger.failAll(err)
    this.scheduler.clear()
    this.emit('transport:error', err)
    void this.close()
  }

  // --- lifecycle ---------------------------------------------------------------

  /**
   * Stops everything this cluster started: local agents, timers and sockets.
   * Tasks still pending reject with a ClusterClosedError (the local agents'
   * threads still running them are stopped, not waited for); remote agents are
   * told to wait for the next driver. Idempotent; each step is bounded and
   * runs even if one before it failed.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown()
    return this.closing
  }

  private async shutdown(): Promise<void> {
    const steps: CloseStep[] = [
      {
        name: 'stop timers',
        run: () => {
          clearInterval(this.timer)
        },
      },
      { name: 'close the dashboard', run: () => this.observe.close() },
      {
        name: 'settle pending tasks',
        run: () => {
          this.ledger.failAll(new ClusterClosedError('the cluster was closed before the task settled'))
          this.scheduler.clear()
          this.actors.wake()
        },
      },
      // Their running tasks' calls were settled just above: nothing they return could be delivered, so their threads are stopped at once.
      { name: 'close the local agents', run: async () => void (await Promise.all(this.localAgents.map((a) => a.close({ timeoutMs: 0 })))) },
      { name: 'tell the remote agents', run: () => this.membership.clear() },
      { name: 'close the transport', run: () => this.transport.close() },
      { name: 'unregister the ZAP domain', run: () => (this.setup.zapDomain ? unregisterZapDomain(this.setup.zapDomain) : undefined) },
      { name: 'remove the local keys', run: () => (this.setup.localKeys ? unpublishLocalKeys(this.setup.localKeys) : undefined) },
    ]
    const problems = await closeSteps(steps, CLOSE_STEP_MS)
    for (const p of problems) this.observe.logger?.warn({ step: p.step, err: p.error.message }, 'close step failed')
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

/** A map refused before it starts: as a map with bad options, it throws when first iterated. */
async function* failedMap<R>(err: Error): AsyncGenerator<R, void, undefined> {
  // Nothing to yield: the generator only carries the refusal to the caller's loop.
  yield* [] as R[]
  throw err
}
