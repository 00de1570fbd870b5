/**
 * The driver's public types: what `Cluster` takes and reports. Imports
 * nothing from the driver, so monitoring and other rooms can name them
 * without an import circle.
 */
import type { ProgressState } from '../monitor/progress.js'
import type { TransportStats } from '../transport/transport.js'
import type { SharedRef } from '../protocol/shared-ref.js'

/** Per-call options, given through `cluster.with(options)` or to `map`. */
export interface TaskOptions {
  /**
   * Most time a task may run on its thread, in ms. Past it the thread is
   * stopped and replaced and the task fails with TaskTimeoutError (counted
   * from when it starts running, not from submission).
   */
  timeoutMs?: number
  /** Cancels the call (or the whole map): queued tasks are withdrawn, running ones abandoned. */
  signal?: AbortSignal
  /** Times to retry a task that threw or timed out. Default 0. */
  retries?: number
  /** Times to retry after infrastructure failures (worker crash, out of memory, node lost). Default: the cluster's `maxRetries` (3). */
  maxRetries?: number
}

/** Options of `spawn`, through `cluster.with(options).spawn(...)`. */
export interface SpawnOptions {
  /**
   * `'never'` (default): if the actor's node is lost, calls reject with
   * ActorLostError. `'always'`: the actor is recreated on another node, from
   * its constructor arguments, with fresh state, within its restart budget
   * (`maxRestarts`). Either way the children of the lost instance are stopped.
   */
  restart?: 'never' | 'always'
  /**
   * With `restart: 'always'`: the most restarts allowed within
   * `restartWindowMs`. One more loss within the window (a node or host thread
   * lost again, or a constructor that throws on a restart) and the actor fails
   * for good with ActorLostError (`actor:lost`; its parent is told). Default 10.
   */
  maxRestarts?: number
  /** The window `maxRestarts` counts restarts in, in ms (a sliding window: older restarts no longer count). Default 60,000. */
  restartWindowMs?: number
  /**
   * With `restart: 'always'`: how long the second restart within the window
   * waits, in ms; the first is at once (a lost node is no crash loop), and
   * each next one waits twice as long as the one before, up to
   * `restartBackoffMaxMs`. The count starts again once the window passes
   * without a loss. Messages sent meanwhile wait for the new instance. 0: no
   * wait. Default 100.
   */
  restartBackoffMs?: number
  /** The longest wait between two restarts, in ms (at least `restartBackoffMs`). Default 5,000. */
  restartBackoffMaxMs?: number
  /**
   * Registers the actor under this cluster-wide name, for `cluster.actor(name)`.
   * A name is held by one live actor at a time (a second spawn under it fails
   * with `ERR_ACTOR_NAME_TAKEN`); it is freed when the actor stops or is lost,
   * and kept across a restart.
   */
  name?: string
  /** Places the actor on this node id (`cluster.nodes()[i].id`) instead of the least-loaded one. A restart goes to the least-loaded node. */
  node?: string
  /**
   * The spawns through one view (`cluster.with({ spread: true })`) are a
   * group spread over the nodes: each goes to the node with the fewest of the
   * group's actors (the least-loaded among equals). Cannot be combined with `node`.
   */
  spread?: boolean
}

type AnyFn = (...args: never[]) => unknown
/** Each argument may also be given as a handle on a shared value of its type (`cluster.put`). */
type Shareable<A extends readonly unknown[]> = { [I in keyof A]: A[I] | SharedRef<A[I]> }
type Told<F> = F extends (...args: infer A) => unknown ? (...args: Shareable<A>) => void : never
/** A reference's own members: an actor's methods of these names are not reachable through it. */
type ActorRefOwn = 'stop' | 'id' | 'node' | 'name' | 'tell'
/** `K` if it is a method of `T` reachable through a reference, else never. */
type MethodKey<T, K extends keyof T> = K extends ActorRefOwn ? never : T[K] extends AnyFn ? K : never
type Promisified<F> = F extends (...args: infer A) => infer R ? (...args: Shareable<A>) => Promise<Awaited<R>> : never

/** The task functions of a tasks module, each returning a promise of its result. */
export type TasksProxy<M> = {
  readonly [K in keyof M as M[K] extends abstract new (...a: never[]) => unknown ? never : M[K] extends AnyFn ? K : never]: Promisified<M[K]>
}

/**
 * A reference to a running actor: each method of `T` as a message returning a
 * promise (ask), the same through `tell` without a reply (fire and forget),
 * plus `stop()`. (`stop`, `id`, `node`, `name` and `tell` are the reference's
 * own; an actor's methods of those names are not reachable through it.)
 */
export type ActorRef<T> = {
  readonly [K in keyof T as MethodKey<T, K>]: Promisified<T[K]>
} & {
  /** The actor's cluster-wide id. */
  readonly id: string
  /** The name it was spawned under, if any. */
  readonly name: string | undefined
  /**
   * Each method as a message without a reply promise (fire and forget): it
   * keeps its place in the actor's mailbox among the calls made through this
   * driver, and a failure (the method threw, no such method, actor lost or
   * stopped) is reported once as an `actor:error` event on the cluster.
   */
  readonly tell: {
    readonly [K in keyof T as MethodKey<T, K>]: Told<T[K]>
  }
  /** The node the actor lives on. */
  readonly node: string
  /**
   * Lets queued messages finish, then removes the actor, then its children
   * (an actor's children stop with it). Later calls reject with
   * ActorStoppedError. With `{ force: true }`, at once: the message the actor
   * is running and those queued reject with ActorStoppedError (a method still
   * running goes on in the background, its result dropped), and its children
   * are stopped the same way — for an actor stuck in a method that never
   * settles, which a graceful stop would wait for forever.
   */
  stop(options?: StopOptions): Promise<void>
}

/** Options of `ref.stop(...)`. */
export interface StopOptions {
  /** Stop at once instead of after the actor's queued messages (default false). */
  force?: boolean
}

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

/**
 * Options of one `reduce`: ordering, concurrency, chunk size and an early
 * stop, plus every per-task option (`retries`, `maxRetries` and `timeoutMs`
 * apply to a chunk as a whole).
 */
export interface ReduceOptions<R = unknown> extends TaskOptions {
  /**
   * Fold the partial aggregates in input order (default true): the combiner
   * must be associative, not commutative. `false` folds them as they arrive:
   * the combiner must be commutative too.
   */
  ordered?: boolean
  /** Most inputs taken from the iterable and not yet folded. Default 16384. */
  concurrency?: number
  /**
   * Inputs per chunk: one task frame, run by one thread, answered by one
   * partial aggregate. Default: up to 1024, fewer when the number of inputs
   * is known and small (at least four chunks per thread of the cluster).
   */
  chunk?: number
  /**
   * Called on the driver with the running aggregate after each partial is
   * folded in; `true` stops the reduce: the remaining work is withdrawn and
   * the promise resolves with the aggregate so far (in order: of a prefix of
   * the inputs, in whole chunks).
   */
  until?: (aggregate: R) => boolean
  /** Report progress in inputs folded, as `map` does (`true`: a bar on stderr; a function: called with each update). */
  progress?: boolean | ((state: ProgressState) => void)
  /** Number of inputs, to size the chunks (and for the progress bar's ETA) when `inputs` has no `length` or `size`. */
  total?: number
}

/**
 * The `reduce` of `map(name, inputs, { reduce })`: the results are folded on
 * the agents instead of yielded, and `map` resolves to the aggregate. It is
 * `cluster.reduce(name, inputs, combiner, initial, { ...options, until, chunk })`.
 */
export interface MapReduce<A> {
  /** The name of an associative function `(a, b) => a ⊕ b` exported by the tasks module. */
  combiner: string
  /** The aggregate the partials are folded into, once, on the driver (it need not be an identity). */
  initial: A
  /** Stops early: see {@link ReduceOptions.until}. */
  until?: (aggregate: A) => boolean
  /** Inputs per chunk: see {@link ReduceOptions.chunk}. */
  chunk?: number
}

/** Options of `map` with `reduce`: `map` then resolves to the aggregate instead of yielding results. */
export interface MapReduceOptions<A> extends MapOptions {
  reduce: MapReduce<A>
}

/** What `cluster.liveActors()` reports of one live actor. */
export interface ActorInfo {
  id: string
  className: string
  /** The name it was spawned under, if any. */
  name?: string
  /** The node that hosts it. */
  node: string
}

/** A `tell` that failed, as `actor:error` reports it. */
export interface ActorErrorEvent {
  /** The actor's id, class and name (if any). */
  actor: { id: string; className: string; name?: string }
  method: string
  /** Why: the error its ask would have rejected with (RemoteTaskError, UnknownMethodError, ActorLostError, ...). */
  error: Error
}

/** An actor lost for good, as `actor:lost` and `actor:child-failed` report it, and as its parent's `childFailed(info)` receives it. */
export interface ActorFailure {
  /** The actor's id, class and name (if any). */
  actor: { id: string; className: string; name?: string }
  /** The id of the actor that spawned it, if an actor did. */
  parent?: string
  /** Why, in words: the last loss, and the restart budget when that was spent. */
  reason: string
  /** Its restarts within the window when it failed (0 for an actor without `restart: 'always'`). */
  restarts: number
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
  /** Task frames the driver sent (or published). */
  taskFrames: number
  /** Results frames the driver received from its nodes. */
  resultFrames: number
  transport: TransportStats
  shared: SharedStats
}

/** Counters of shared values, in `cluster.stats().shared`. */
export interface SharedStats {
  /** Values put and not released. */
  values: number
  /** Their bytes. */
  bytes: number
  /** Put messages sent to nodes, and their bytes. */
  puts: number
  putBytes: number
  /** Values dropped from a node to make room in its cache. */
  evictions: number
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
  /**
   * An actor was lost for good: its node or host thread was lost and it is not
   * restarted (no `restart: 'always'`, or its restart budget is spent). Its
   * pending and later asks reject with `error`; its name is free again.
   */
  'actor:lost': [info: ActorFailure, error: Error]
  /** A child actor was lost for good and its parent told (its `childFailed(info)` method is called, when it has one). */
  'actor:child-failed': [info: ActorFailure]
  /** A message sent with `ref.tell` failed: the method threw, does not exist, or the actor was lost or stopped. */
  'actor:error': [info: ActorErrorEvent]
  /** The transport failed for good (a broker connection was lost): pending tasks rejected with `err`, the cluster closes. */
  'transport:error': [err: Error]
}

/** The calls of a cluster under given options: `cluster.with({ timeoutMs: 500 }).call(...)`. */
export interface ClusterView {
  call<R = unknown>(name: string, ...args: unknown[]): Promise<R>
  tasks<M extends object>(): TasksProxy<M>
  map<A>(name: string, inputs: Iterable<unknown> | AsyncIterable<unknown>, options: MapReduceOptions<A>): Promise<A>
  map<R = unknown>(name: string, inputs: Iterable<unknown> | AsyncIterable<unknown>, options?: MapOptions): AsyncGenerator<R, void, undefined>
  reduce<R>(name: string, inputs: Iterable<unknown> | AsyncIterable<unknown>, combiner: string, initial: R, options?: ReduceOptions<R>): Promise<R>
  spawn<T extends object>(className: string, ...args: unknown[]): Promise<ActorRef<T>>
}
