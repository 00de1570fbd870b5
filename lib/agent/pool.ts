import { availableParallelism } from 'node:os'
import type { MessagePort } from 'node:worker_threads'
import { Piscina } from 'piscina'
import { tasksSpecifier, type TasksModule } from '../options.js'
import { InvalidArgumentError } from '../errors.js'
import { loadCatalog } from '../tasks-module.js'
import type { PoolBatch, PoolResult } from './worker.js'

/** The piscina pool task batches run on: `threads` warm threads, one batch at a time each, never shrinking. */
function createPiscina(tasks: string, threads: number, threadMemoryMb: number | undefined): Piscina<PoolBatch, PoolResult> {
  return new Piscina<PoolBatch, PoolResult>({
    filename: new URL('./worker.js', import.meta.url).href,
    workerData: { tasks },
    minThreads: threads,
    maxThreads: threads,
    concurrentTasksPerWorker: 1,
    idleTimeout: Number.MAX_SAFE_INTEGER,
    ...(threadMemoryMb === undefined ? {} : { resourceLimits: { maxOldGenerationSizeMb: threadMemoryMb } }),
  })
}

/** `signal` stops a batch and replaces its thread (per-task timeouts); `transferList` moves ports to the thread. */
export interface RunOptions {
  signal?: AbortSignal
  transferList?: MessagePort[]
}

/** What an agent runs its task batches on: a pool of its own, or one it shares with other agents. */
export interface WorkerPool {
  /** Runs one batch of task frames on a free thread (`signal` stops it and replaces the thread: per-task timeouts). */
  run(batch: PoolBatch, options: RunOptions): Promise<PoolResult>
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
}

/**
 * A pool that belongs to one agent, and recycles itself: after
 * `maxTasksPerThread` tasks per thread, or when a thread reports more heap
 * than `recycleHeapMb`, new batches go to a fresh pool while the old one
 * finishes what it runs, then stops. Piscina cannot retire one chosen thread,
 * so a leaking tasks module is contained by retiring them all.
 */
export class OwnedPool implements WorkerPool {
  private piscina: Piscina<PoolBatch, PoolResult>
  private readonly retiring = new Set<Piscina<PoolBatch, PoolResult>>()
  private tasksSinceRecycle = 0
  private closing: Promise<void> | undefined

  constructor(private readonly options: OwnedPoolOptions) {
    this.piscina = this.newPiscina()
  }

  private newPiscina(): Piscina<PoolBatch, PoolResult> {
    return createPiscina(this.options.tasks, this.options.threads, this.options.threadMemoryMb)
  }

  run(batch: PoolBatch, options: RunOptions): Promise<PoolResult> {
    return this.piscina.run(batch, options).then((r) => {
      this.tasksSinceRecycle += r.count
      const { maxTasksPerThread, recycleHeapMb, threads } = this.options
      if ((maxTasksPerThread > 0 && this.tasksSinceRecycle >= maxTasksPerThread * threads) || (recycleHeapMb > 0 && r.heapMb > recycleHeapMb)) {
        this.recycle()
      }
      return r
    })
  }

  /** Replaces every thread: new batches go to a fresh pool while the old one drains and stops. */
  recycle(): void {
    if (this.closing) return
    this.tasksSinceRecycle = 0
    const old = this.piscina
    this.piscina = this.newPiscina()
    this.retiring.add(old)
    void old
      .close()
      .catch(() => old.destroy())
      .finally(() => this.retiring.delete(old))
    this.options.onRecycle?.()
  }

  /** Stops every thread now, those of retiring pools too. Idempotent. */
  close(): Promise<void> {
    this.closing ??= Promise.all([this.piscina, ...this.retiring].map((p) => p.destroy())).then(() => {})
    return this.closing
  }
}

/** An agent's view of a shared {@link AgentPool}: it runs batches there and never closes it (its owner does). */
export function borrowPool(shared: AgentPool): WorkerPool {
  return {
    run: (batch, options) => shared.run(batch, options),
    close: async () => {},
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
  private readonly piscina: Piscina<PoolBatch, PoolResult>
  private closing: Promise<void> | undefined

  private constructor(tasks: string, threads: number) {
    this.tasks = tasks
    this.threads = threads
    this.piscina = createPiscina(tasks, threads, undefined)
  }

  /** Loads the tasks module (a TasksModuleError if it does not) and starts the threads. */
  static async start(options: AgentPoolOptions): Promise<AgentPool> {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options must be an object')
    const tasks = tasksSpecifier('tasks', options.tasks)
    const threads = options.threads ?? availableParallelism()
    if (!Number.isSafeInteger(threads) || threads < 1)
      throw new InvalidArgumentError(`options.threads must be a positive integer, got ${String(options.threads)}`)
    await loadCatalog(tasks, 'the shared pool')
    return new AgentPool(tasks, threads)
  }

  /** Runs one batch of task frames on a free thread (`signal` stops it: per-task timeouts). */
  run(batch: PoolBatch, options: RunOptions = {}): Promise<PoolResult> {
    return this.piscina.run(batch, options)
  }

  /** Stops the threads. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.piscina.destroy()
    return this.closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}
