import { availableParallelism } from 'node:os'
import { Piscina } from 'piscina'
import { tasksSpecifier, type TasksModule } from '../options.js'
import { InvalidArgumentError } from '../errors.js'
import { loadCatalog } from '../tasks-module.js'
import type { PoolBatch, PoolResult } from './worker.js'

/** The piscina pool task batches run on: `threads` warm threads, one batch at a time each, never shrinking. */
export function createPiscina(tasks: string, threads: number, threadMemoryMb: number | undefined): Piscina<PoolBatch, PoolResult> {
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
 * without a thread per agent. Agents never close a pool they were given.
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
    if (!Number.isSafeInteger(threads) || threads < 1) throw new InvalidArgumentError(`options.threads must be a positive integer, got ${String(options.threads)}`)
    await loadCatalog(tasks, 'the shared pool')
    return new AgentPool(tasks, threads)
  }

  /** Runs one batch of task frames on a free thread (`signal` stops it: per-task timeouts). */
  run(batch: PoolBatch, options: { signal?: AbortSignal } = {}): Promise<PoolResult> {
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
