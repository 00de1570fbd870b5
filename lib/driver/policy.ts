import { InvalidArgumentError } from '../errors.js'

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
   * its constructor arguments, with fresh state.
   */
  restart?: 'never' | 'always'
}

/** Resolved task options, shared by every task of one call site or map. */
export interface Policy {
  readonly timeoutMs: number | undefined
  readonly retries: number
  readonly maxRetries: number
  readonly signal: AbortSignal | undefined
}

function count(name: string, v: unknown, min: number): number | undefined {
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new InvalidArgumentError(`options.${name} must be ${min === 0 ? 'a non-negative' : 'a positive'} integer, got ${String(v)}`)
  }
  return v
}

export function resolvePolicy(o: TaskOptions, defaultMaxRetries: number): Policy {
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new InvalidArgumentError('options.signal must be an AbortSignal')
  return Object.freeze({
    timeoutMs: count('timeoutMs', o.timeoutMs, 1),
    retries: count('retries', o.retries, 0) ?? 0,
    maxRetries: count('maxRetries', o.maxRetries, 0) ?? defaultMaxRetries,
    signal: o.signal,
  })
}

export function resolveRestart(o: SpawnOptions): boolean {
  if (o.restart === undefined || o.restart === 'never') return false
  if (o.restart === 'always') return true
  throw new InvalidArgumentError(`options.restart must be 'never' or 'always', got ${String(o.restart)}`)
}
