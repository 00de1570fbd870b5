/**
 * The per-call options of the driver, resolved once per view (`cluster.with`)
 * or per `map`, and shared by every task submitted under them.
 */
import { InvalidArgumentError } from '../errors.js'
import { booleanOption, integerOption } from '../validate.js'
import type { MapOptions, SpawnOptions, TaskOptions } from './types.js'
import type { ProgressState } from '../monitor/progress.js'

/** Resolved task options, shared by every task of one view or map; the ledger tells their tasks apart by this object. */
export interface ResolvedTaskOptions {
  readonly timeoutMs: number | undefined
  readonly retries: number
  readonly maxRetries: number
  readonly signal: AbortSignal | undefined
  /** Each task travels in a task frame of its own (the chunks of a reduce: one partial aggregate per frame). */
  readonly alone?: boolean
  /**
   * The node whose thread asked for the tasks (`context.call` in a task or an
   * actor): when it leaves the cluster nobody waits for them any more, and
   * they are withdrawn (see lib/driver/requests.ts).
   */
  readonly submitter?: object
}

export interface ResolvedMapOptions {
  readonly ordered: boolean
  readonly concurrency: number
  readonly signal: AbortSignal | undefined
  /** The options of the map's tasks (without the signal: the map watches it once for all of them). */
  readonly task: ResolvedTaskOptions
  readonly progress: boolean | ((state: ProgressState) => void)
  readonly total: number | undefined
}

/** The longest timer Node keeps: a longer one would fire at once. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1

export const MAP_DEFAULTS = {
  ordered: true,
  concurrency: 16_384,
} as const

function timeoutOption(v: unknown): number | undefined {
  const ms = integerOption('timeoutMs', v, 1)
  if (ms !== undefined && ms > MAX_TIMEOUT_MS) {
    throw new InvalidArgumentError(`options.timeoutMs must be at most ${MAX_TIMEOUT_MS} (Node's longest timer, about 24.8 days), got ${ms}`)
  }
  return ms
}

function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new InvalidArgumentError('options.signal must be an AbortSignal')
  return signal
}

/** Resolves the options of a view, a map, or (with `submitter`) the calls a node's thread asked for; names the bad field. */
export function resolveTaskOptions(o: TaskOptions, defaultMaxRetries: number, submitter?: object): ResolvedTaskOptions {
  const signal = checkSignal(o.signal)
  return Object.freeze({
    timeoutMs: timeoutOption(o.timeoutMs),
    retries: integerOption('retries', o.retries, 0) ?? 0,
    maxRetries: integerOption('maxRetries', o.maxRetries, 0) ?? defaultMaxRetries,
    signal,
    ...(submitter === undefined ? {} : { submitter }),
  })
}

/** Whether an actor spawned under these options is restarted after its node is lost, and how often. */
export interface ResolvedSpawnOptions {
  readonly restart: boolean
  readonly maxRestarts: number
  readonly restartWindowMs: number
  /** The wait before the second restart within the window (the first is at once); each next one waits twice as long. */
  readonly restartBackoffMs: number
  /** The longest wait between two restarts. */
  readonly restartBackoffMaxMs: number
  readonly name: string | undefined
  readonly node: string | undefined
  readonly spread: boolean
  /** Internal: the id of the actor spawning this one (its parent), set when an actor spawns a child. */
  readonly parent?: string | undefined
}

const RESTART_DEFAULTS = { maxRestarts: 10, restartWindowMs: 60_000, restartBackoffMs: 100, restartBackoffMaxMs: 5_000 } as const

/** A plain `cluster.spawn`: no restart, no name, least-loaded placement. */
export const SPAWN_DEFAULTS: ResolvedSpawnOptions = Object.freeze({ restart: false, ...RESTART_DEFAULTS, name: undefined, node: undefined, spread: false })

/** Resolves the options of `spawn`; names the bad field. */
export function resolveSpawnOptions(o: SpawnOptions): ResolvedSpawnOptions {
  let restart: boolean
  if (o.restart === undefined || o.restart === 'never') restart = false
  else if (o.restart === 'always') restart = true
  else throw new InvalidArgumentError(`options.restart must be 'never' or 'always', got ${String(o.restart)}`)
  for (const field of ['name', 'node'] as const) {
    const v = o[field]
    if (v !== undefined && (typeof v !== 'string' || v.length === 0)) {
      throw new InvalidArgumentError(`options.${field} must be a non-empty string, got ${typeof v === 'string' ? '""' : String(v)}`)
    }
  }
  const spread = booleanOption('spread', o.spread) ?? false
  if (spread && o.node !== undefined) throw new InvalidArgumentError('options.spread and options.node cannot be combined: a pinned actor is not spread')
  const maxRestarts = integerOption('maxRestarts', o.maxRestarts, 0)
  const restartWindowMs = integerOption('restartWindowMs', o.restartWindowMs, 1, MAX_TIMEOUT_MS)
  const backoff = integerOption('restartBackoffMs', o.restartBackoffMs, 0, MAX_TIMEOUT_MS)
  const backoffMax = integerOption('restartBackoffMaxMs', o.restartBackoffMaxMs, 0, MAX_TIMEOUT_MS)
  if (!restart) {
    const given = Object.entries({ maxRestarts, restartWindowMs, restartBackoffMs: backoff, restartBackoffMaxMs: backoffMax }).find(([, v]) => v !== undefined)
    if (given) {
      const what = given[0].startsWith('restartBackoff') ? 'a wait between restarts' : 'a restart budget'
      throw new InvalidArgumentError(`options.${given[0]} is ${what}: it needs restart: 'always'`)
    }
  }
  // One given alone moves the other's default out of its way: a cap below the default first wait lowers that wait, a first wait above the default cap raises the cap.
  const restartBackoffMs = backoff ?? Math.min(RESTART_DEFAULTS.restartBackoffMs, backoffMax ?? Infinity)
  const restartBackoffMaxMs = backoffMax ?? Math.max(RESTART_DEFAULTS.restartBackoffMaxMs, restartBackoffMs)
  if (restartBackoffMaxMs < restartBackoffMs) {
    throw new InvalidArgumentError(
      `options.restartBackoffMaxMs must be at least options.restartBackoffMs (${restartBackoffMs}), the first wait it caps, got ${restartBackoffMaxMs}`,
    )
  }
  return {
    restart,
    maxRestarts: maxRestarts ?? RESTART_DEFAULTS.maxRestarts,
    restartWindowMs: restartWindowMs ?? RESTART_DEFAULTS.restartWindowMs,
    restartBackoffMs,
    restartBackoffMaxMs,
    name: o.name,
    node: o.node,
    spread,
  }
}

/** Resolves the options of one `map`; names the bad field. */
export function resolveMapOptions(o: MapOptions, defaultMaxRetries: number): ResolvedMapOptions {
  if (o === null || typeof o !== 'object') throw new InvalidArgumentError(`map options must be an object, got ${String(o)}`)
  const concurrency = integerOption('concurrency', o.concurrency) ?? MAP_DEFAULTS.concurrency
  const ordered = booleanOption('ordered', o.ordered) ?? MAP_DEFAULTS.ordered
  const progress = o.progress ?? false
  if (typeof progress !== 'boolean' && typeof progress !== 'function') {
    throw new InvalidArgumentError(`options.progress must be a boolean or a function, got ${String(progress)}`)
  }
  return Object.freeze({
    ordered,
    concurrency,
    // One options object per map: it also tells this map's tasks apart in the ledger.
    task: resolveTaskOptions({ ...o, signal: undefined }, defaultMaxRetries),
    signal: checkSignal(o.signal),
    progress,
    // Checked with or without a progress bar: a bad total is a mistake either way.
    total: integerOption('total', o.total, 0),
  })
}
