import { InvalidArgumentError } from '../errors.js'
import type { SpawnOptions, TaskOptions } from './types.js'

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
