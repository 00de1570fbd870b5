import { availableParallelism } from 'node:os'
import type { MessagePort, Worker } from 'node:worker_threads'
import { Piscina } from 'piscina'
import { tasksSpecifier, type TasksModule } from '../options.js'
import { InvalidArgumentError } from '../errors.js'
import { integerOption, MAX_THREADS } from '../validate.js'
import { loadCatalog } from '../tasks-module.js'
import { Deque } from '../util/deque.js'
import type { PoolBatch, PoolResult } from './worker.js'

/** How long an isolated thread (see {@link PoolThreads}) stays once it has nothing to run. */
const ISOLATED_IDLE_MS = 2_000

/**
 * The piscina pool task batches run on: `threads` warm threads, one batch at
 * a time each, never shrinking; or, `isolated`, up to `threads` threads made
 * when needed and gone once idle, whose batches never secede.
 */
function createPiscina(tasks: string, threads: number, threadMemoryMb: number | undefined, isolated = false): Piscina<PoolBatch, PoolResult> {
  return new Piscina<PoolBatch, PoolResult>({
    filename: new URL('./worker.js', import.meta.url).href,
    workerData: isolated ? { tasks, isolated } : { tasks },
    minThreads: isolated ? 0 : threads,
    maxThreads: threads,
    concurrentTasksPerWorker: 1,
    // Not 'sync': that parks an idle thread in Atomics.wait, event loop and all, and a task that seceded (it waits
    // on work it asked the cluster for) must go on running between batches.
    atomics: 'async',
    idleTimeout: isolated ? ISOLATED_IDLE_MS : Number.MAX_SAFE_INTEGER,
    ...(threadMemoryMb === undefined ? {} : { resourceLimits: { maxOldGenerationSizeMb: threadMemoryMb } }),
  })
}

/**
 * The threads of a pool: the main piscina, and the isolated one, made the
 * first time a timed batch needs it. A timed batch that a main thread
 * declines (that thread holds tasks that seceded, which stopping it at the
 * batch's limit would end too) runs on an isolated thread, where a batch
 * never secedes: it holds its thread until its tasks settle, so a timed task
 * there is alone on its thread, and stopping that thread takes nothing else.
 */
class PoolThreads {
  readonly main: Piscina<PoolBatch, PoolResult>
  private isolated: Piscina<PoolBatch, PoolResult> | undefined
  /** Isolated batches handed to piscina, at most one per thread; the others wait here. */
  private isolatedRunning = 0
  private readonly isolatedWaiting = new Deque<() => void>()
  /** Told once no isolated batch runs or waits (a retiring pool finishes its isolated batches before it closes). */
  private isolatedIdle: (() => void)[] = []
  private readonly watchers = new Map<ThreadWatcher, (() => void)[]>()

  constructor(
    private readonly tasks: string,
    private readonly threads: number,
    private readonly threadMemoryMb: number | undefined,
  ) {
    this.main = createPiscina(tasks, threads, threadMemoryMb)
  }

  /**
   * Runs a batch on an isolated thread, or once one is free. The batches wait
   * here rather than in piscina: with no thread kept warm, piscina leaves its
   * queue waiting when the thread it would run next on is stopped.
   */
  async runIsolated(batch: PoolBatch, options: RunOptions): Promise<PoolResult> {
    if (!this.isolated) {
      this.isolated = createPiscina(this.tasks, this.threads, this.threadMemoryMb, true)
      for (const [w, unwatch] of this.watchers) unwatch.push(watchPiscina(this.isolated, w))
    }
    if (this.isolatedRunning >= this.threads) await new Promise<void>((resolve) => this.isolatedWaiting.push(resolve))
    else this.isolatedRunning++
    try {
      return await this.isolated.run(batch, options)
    } finally {
      const next = this.isolatedWaiting.shift()
      if (next) next()
      else if (--this.isolatedRunning === 0) for (const resolve of this.isolatedIdle.splice(0)) resolve()
    }
  }

  /** Reports the threads of both pools, now and from now on; returns how to stop. */
  watch(watcher: ThreadWatcher): () => void {
    const unwatch = [watchPiscina(this.main, watcher)]
    if (this.isolated) unwatch.push(watchPiscina(this.isolated, watcher))
    this.watchers.set(watcher, unwatch)
    return () => {
      this.watchers.delete(watcher)
      for (const u of unwatch) u()
    }
  }

  /** Finishes what runs (isolated batches that wait for a thread too), then stops the threads (stops them at once if that fails). */
  async retire(): Promise<void> {
    const retire = (p: Piscina<PoolBatch, PoolResult>) => p.close().catch(() => p.destroy())
    const isolated = this.isolated
    await Promise.all([
      retire(this.main),
      isolated &&
        (this.isolatedRunning === 0 ? Promise.resolve() : new Promise<void>((resolve) => this.isolatedIdle.push(resolve))).then(() => retire(isolated)),
    ])
  }

  /** Stops every thread now; isolated batches waiting for a thread fail at once. */
  async destroy(): Promise<void> {
    const isolated = this.isolated
    await Promise.all([this.main.destroy(), isolated?.destroy()])
    for (let next = this.isolatedWaiting.shift(); next; next = this.isolatedWaiting.shift()) next()
  }
}

/** `signal` stops a batch and replaces its thread (per-task timeouts); `transferList` moves ports to the thread. */
export interface RunOptions {
  signal?: AbortSignal
  transferList?: MessagePort[]
}

/** Told when a pool thread starts (before it is given a batch) and when it is gone. */
export interface ThreadWatcher {
  started(threadId: number): void
  gone(threadId: number): void
}

/**
 * Follows one piscina's threads for every agent watching it: one `exit`
 * listener per thread and one `workerCreate` listener, however many agents
 * share the pool, and a watcher that stops watching is told nothing more.
 */
class ThreadFollower {
  private readonly live = new Set<number>()
  private readonly watchers = new Set<ThreadWatcher>()

  constructor(piscina: Piscina<PoolBatch, PoolResult>) {
    for (const w of piscina.threads) this.follow(w)
    piscina.on('workerCreate', (w: { id: number }) => {
      const worker = piscina.threads.find((t) => t.threadId === w.id)
      if (worker) this.follow(worker)
    })
  }

  private follow(worker: Worker): void {
    // Read now: a thread's id is -1 once it has exited.
    const id = worker.threadId
    if (id < 0 || this.live.has(id)) return
    this.live.add(id)
    for (const w of this.watchers) w.started(id)
    worker.once('exit', () => {
      this.live.delete(id)
      for (const w of this.watchers) w.gone(id)
    })
  }

  /** Reports the threads running now and each one started or gone from now on; returns how to stop. */
  watch(watcher: ThreadWatcher): () => void {
    this.watchers.add(watcher)
    for (const id of this.live) watcher.started(id)
    return () => this.watchers.delete(watcher)
  }
}

const followers = new WeakMap<Piscina<PoolBatch, PoolResult>, ThreadFollower>()

/** Reports a piscina's threads to `watcher`: those running now, and each one started or gone from now on. */
function watchPiscina(piscina: Piscina<PoolBatch, PoolResult>, watcher: ThreadWatcher): () => void {
  let follower = followers.get(piscina)
  if (!follower) followers.set(piscina, (follower = new ThreadFollower(piscina)))
  return follower.watch(watcher)
}

/** What an agent runs its task batches on: a pool of its own, or one it shares with other agents. */
export interface WorkerPool {
  /** Reports the pool's threads, now and from now on (each thread's link to the agent opens and closes with it). */
  watch(watcher: ThreadWatcher): void
  /** Runs one batch of task frames on a free thread (`signal` stops it and replaces the thread: per-task timeouts). */
  run(batch: PoolBatch, options: RunOptions): Promise<PoolResult>
  /** Runs a timed batch a thread declined on an isolated thread (see {@link PoolThreads}). */
  runIsolated(batch: PoolBatch, options: RunOptions): Promise<PoolResult>
  /** Stops this agent's use of the pool; running batches of an owned pool reject. Idempotent. */
  close(): Promise<void>
}

export interface OwnedPoolOptions {
  tasks: string
  threads: number
  threadMemoryMb: number | undefined
  /** Replace the threads after each ran about this many tasks (0 = never). */
  maxTasksPerThread: number
  /** Replace the threads when one reports a heap above this many MB after a batch (0 = never). */
  recycleHeapMb: number
  /** Called each time the threads were replaced. */
  onRecycle?: () => void
  /** Whether the threads hold tasks that seceded (a recycle then waits: it would end them). */
  holding?: () => boolean
}

/**
 * A pool that belongs to one agent, and recycles itself: after
 * `maxTasksPerThread` tasks per thread, or when a thread reports more heap
 * than `recycleHeapMb`, new batches go to a fresh pool while the old one
 * finishes what it runs, then stops. Piscina cannot retire one chosen thread,
 * so a leaking tasks module is contained by retiring them all.
 */
export class OwnedPool implements WorkerPool {
  private threads: PoolThreads
  private readonly retiring = new Set<PoolThreads>()
  private tasksSinceRecycle = 0
  private closing: Promise<void> | undefined
  private readonly watchers: ThreadWatcher[] = []

  constructor(private readonly options: OwnedPoolOptions) {
    this.threads = this.newThreads()
  }

  private newThreads(): PoolThreads {
    const threads = new PoolThreads(this.options.tasks, this.options.threads, this.options.threadMemoryMb)
    for (const w of this.watchers) threads.watch(w)
    return threads
  }

  watch(watcher: ThreadWatcher): void {
    this.watchers.push(watcher)
    this.threads.watch(watcher)
  }

  run(batch: PoolBatch, options: RunOptions): Promise<PoolResult> {
    return this.threads.main.run(batch, options).then((r) => this.counted(r))
  }

  runIsolated(batch: PoolBatch, options: RunOptions): Promise<PoolResult> {
    return this.threads.runIsolated(batch, options).then((r) => this.counted(r))
  }

  /** A batch ended: the threads are replaced if they ran their share of tasks, or this one's heap grew too large. */
  private counted(r: PoolResult): PoolResult {
    this.tasksSinceRecycle += r.count
    const { maxTasksPerThread, recycleHeapMb, threads } = this.options
    if ((maxTasksPerThread > 0 && this.tasksSinceRecycle >= maxTasksPerThread * threads) || (recycleHeapMb > 0 && r.heapMb > recycleHeapMb)) {
      this.recycle()
    }
    return r
  }

  /** Replaces every thread: new batches go to fresh pools while the old ones drain and stop. */
  recycle(): void {
    if (this.closing || this.options.holding?.()) return
    this.tasksSinceRecycle = 0
    const old = this.threads
    this.threads = this.newThreads()
    this.retiring.add(old)
    void old.retire().finally(() => this.retiring.delete(old))
    this.options.onRecycle?.()
  }

  /** Stops every thread now, those of retiring pools too. Idempotent. */
  close(): Promise<void> {
    this.closing ??= Promise.all([this.threads, ...this.retiring].map((p) => p.destroy())).then(() => {})
    return this.closing
  }
}

/** An agent's view of a shared {@link AgentPool}: it runs batches there and never closes it (its owner does). */
export function borrowPool(shared: AgentPool): WorkerPool {
  let unwatch: (() => void) | undefined
  return {
    run: (batch, options) => shared.run(batch, options),
    runIsolated: (batch, options) => shared.runIsolated(batch, options),
    watch: (watcher) => {
      unwatch = shared.watch(watcher)
    },
    // The pool stays (its owner closes it); this agent's links stop following its threads.
    close: async () => unwatch?.(),
  }
}

export interface AgentPoolOptions {
  /** The tasks module every agent sharing the pool runs. */
  tasks: TasksModule
  /** Worker threads. Default: the number of cores. */
  threads?: number
}

/**
 * One thread pool that several agents in one process share
 * (`Agent.start({ ..., pool })`): each agent keeps its own socket, identity,
 * credit and heartbeats, and their task batches run on these threads. It lets
 * one process stand in for many lightweight nodes (`cluster bench scale`)
 * without a thread per agent. Agents never close a pool they were given, and
 * never recycle its threads.
 */
export class AgentPool {
  /** The tasks module, as an import specifier. */
  readonly tasks: string
  readonly threads: number
  private readonly pool: PoolThreads
  private closing: Promise<void> | undefined

  private constructor(tasks: string, threads: number) {
    this.tasks = tasks
    this.threads = threads
    this.pool = new PoolThreads(tasks, threads, undefined)
  }

  /** Loads the tasks module (a TasksModuleError if it does not) and starts the threads. */
  static async start(options: AgentPoolOptions): Promise<AgentPool> {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options must be an object')
    const tasks = tasksSpecifier('tasks', options.tasks)
    const threads = integerOption('threads', options.threads, 1, MAX_THREADS) ?? availableParallelism()
    await loadCatalog(tasks, 'the shared pool')
    return new AgentPool(tasks, threads)
  }

  /** Runs one batch of task frames on a free thread (`signal` stops it: per-task timeouts). */
  run(batch: PoolBatch, options: RunOptions = {}): Promise<PoolResult> {
    return this.pool.main.run(batch, options)
  }

  /** Runs a timed batch a thread declined on an isolated thread (see {@link PoolThreads}). */
  runIsolated(batch: PoolBatch, options: RunOptions = {}): Promise<PoolResult> {
    return this.pool.runIsolated(batch, options)
  }

  /** Reports the threads to an agent using the pool (its links to them); returns how to stop. */
  watch(watcher: ThreadWatcher): () => void {
    return this.pool.watch(watcher)
  }

  /** Stops the threads. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.pool.destroy()
    return this.closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}
