/**
 * A chunk of a reducing map, as it travels: one task entry whose name is
 * {@link reduceTaskName} and whose arguments are `[task, combiner, inputs]`
 * (each input an argument list). The worker runs `task` on every input and
 * folds the results with `combiner` into one partial aggregate: one result
 * entry per chunk. Read and checked here, like every other layout.
 */
import { ProtocolError } from '../errors.js'

const PREFIX = 'reduce('

/** The task name a chunk travels under: `reduce(task, combiner)` (also what stats and the dashboard count). */
export function reduceTaskName(task: string, combiner: string): string {
  return `${PREFIX}${task}, ${combiner})`
}

/** Whether `name` has the shape of a chunk's name (the worker looks no further for a name it does not export). */
export function isReduceTaskName(name: string): boolean {
  return name.startsWith(PREFIX) && name.endsWith(')')
}

/** The task and combiner a chunk's name speaks of, or undefined for any other name. */
export function parseReduceTaskName(name: string): { task: string; combiner: string } | undefined {
  if (!isReduceTaskName(name)) return undefined
  const inner = name.slice(PREFIX.length, -1)
  const comma = inner.indexOf(', ')
  if (comma <= 0 || comma + 2 >= inner.length) return undefined
  return { task: inner.slice(0, comma), combiner: inner.slice(comma + 2) }
}

/** The arguments of a chunk. */
export function reduceChunkArgs(task: string, combiner: string, inputs: unknown[][]): unknown[] {
  return [task, combiner, inputs]
}

export interface ReduceChunk {
  readonly task: string
  readonly combiner: string
  readonly inputs: readonly (readonly unknown[])[]
}

/** Checks a chunk received from the network; throws ProtocolError naming what is wrong. */
export function readReduceChunk(name: string, args: unknown): ReduceChunk {
  if (!Array.isArray(args) || args.length !== 3) throw new ProtocolError(`arguments of "${name}" are not [task, combiner, inputs]`)
  const [task, combiner, inputs] = args as unknown[]
  if (typeof task !== 'string' || typeof combiner !== 'string' || reduceTaskName(task, combiner) !== name) {
    throw new ProtocolError(`arguments of "${name}" do not name its task and combiner`)
  }
  if (!Array.isArray(inputs) || inputs.length === 0 || !inputs.every((a) => Array.isArray(a))) {
    throw new ProtocolError(`inputs of "${name}" are not a non-empty list of argument lists`)
  }
  return { task, combiner, inputs: inputs as unknown[][] }
}
