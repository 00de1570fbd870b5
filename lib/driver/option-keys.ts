/**
 * The options each driver call takes, as key tables: `cluster.with`, `map`,
 * `reduce` and `map`'s `reduce` object refuse a key that is none of them
 * (see {@link checkKnownKeys}).
 */
import { InvalidArgumentError } from '../errors.js'
import type { KeyTable } from '../util/known-keys.js'
import type { MapReduce, MapReduceOptions, ReduceOptions, SpawnOptions, TaskOptions } from './types.js'

const TASK_KEYS: KeyTable<TaskOptions> = { timeoutMs: true, signal: true, retries: true, maxRetries: true }

/**
 * A view's task option given to its `spawn` (`cluster.with({ timeoutMs }).spawn(...)`):
 * none applies to an actor, whose messages run in its mailbox's order, so the
 * spawn is refused rather than the option ignored. Undefined when none is given.
 */
export function taskOptionOnSpawn(options: Record<string, unknown>): InvalidArgumentError | undefined {
  const key = Object.keys(TASK_KEYS).find((k) => options[k] !== undefined)
  if (key === undefined) return undefined
  return new InvalidArgumentError(
    `options.${key} applies to tasks (call, map, reduce), not to spawn: an actor's calls have no timeout or retries of their own; spawn from a view without it`,
  )
}

const SPAWN_KEYS: KeyTable<SpawnOptions> = {
  restart: true,
  maxRestarts: true,
  restartWindowMs: true,
  restartBackoffMs: true,
  restartBackoffMaxMs: true,
  name: true,
  node: true,
  spread: true,
}

/**
 * A view's spawn option given to its tasks (`cluster.with({ node }).call(...)`):
 * none applies to a task, which runs on whichever node has room, so the
 * call, map or reduce is refused rather than the option ignored (a task is
 * not pinned by `node`). Undefined when none is given.
 */
export function spawnOptionOnTask(options: Record<string, unknown>): InvalidArgumentError | undefined {
  const key = Object.keys(SPAWN_KEYS).find((k) => options[k] !== undefined)
  if (key === undefined) return undefined
  return new InvalidArgumentError(
    `options.${key} applies to spawn, not to tasks (call, map, reduce): a task runs on any node with room and is not an actor; call from a view without it`,
  )
}

/** `cluster.with(...)` and `context.with(...)`: task and spawn options. */
export const VIEW_KEYS: KeyTable<TaskOptions & SpawnOptions> = { ...TASK_KEYS, ...SPAWN_KEYS }

/** `context.map`'s options in a thread: a task's (but `signal`) and the map's own. */
export const CONTEXT_MAP_KEYS: KeyTable<Omit<TaskOptions, 'signal'> & { ordered?: boolean; concurrency?: number }> = {
  timeoutMs: true,
  retries: true,
  maxRetries: true,
  ordered: true,
  concurrency: true,
}

export const MAP_KEYS: KeyTable<MapReduceOptions<unknown>> = { ...TASK_KEYS, ordered: true, concurrency: true, progress: true, total: true, reduce: true }

export const REDUCE_KEYS: KeyTable<ReduceOptions> = { ...TASK_KEYS, ordered: true, concurrency: true, chunk: true, until: true, progress: true, total: true }

/** `map(..., { reduce: { ... } })`. */
export const MAP_REDUCE_KEYS: KeyTable<MapReduce<unknown>> = { combiner: true, initial: true, until: true, chunk: true }
