/**
 * A chunk of a reducing map on a worker thread: runs the task on each input
 * and folds the results, in input order, with the combiner into one partial
 * aggregate, `r0 ⊕ r1 ⊕ … ⊕ rk` (no initial value: the driver starts its fold
 * with it, once). The chunk's one result entry is that partial, or the first
 * failure: a task that threw (Threw, the task's own error, retried on
 * `retries` as the whole chunk), a combiner that threw or returned a promise
 * (Failed, CombinerError, final), or a chunk that names what this module does
 * not export (Failed, UnknownTaskError).
 */
import { CombinerError, ProtocolError, UnknownTaskError, toWireError } from '../errors.js'
import { isThenable } from '../util/thenable.js'
import { Status } from '../protocol/messages.js'
import { readReduceChunk, type ReduceChunk } from '../protocol/reduce.js'
import type { ResultsWriter } from '../protocol/bodies.js'

type Fn = (...args: unknown[]) => unknown

/** How a finished chunk's partial is checked and written (the worker's own `settle`: a value msgpack cannot carry fails). */
export type SettleResult = (out: ResultsWriter, slot: number, name: string, value: unknown) => void

/** Folds `b` into `a`; a throw, or a promise, is a CombinerError naming the combiner. */
function combine(op: Fn, chunk: ReduceChunk, a: unknown, b: unknown): unknown {
  let v: unknown
  try {
    v = op(a, b)
  } catch (e) {
    throw combinerError(chunk, e)
  }
  if (isThenable(v)) {
    throw new CombinerError(`combiner "${chunk.combiner}" of task "${chunk.task}" returned a promise; a combiner must return its value synchronously`)
  }
  return v
}

function combinerError(chunk: ReduceChunk, e: unknown): CombinerError {
  const message = e instanceof Error ? e.message : String(e)
  const err = new CombinerError(`combiner "${chunk.combiner}" threw while folding results of task "${chunk.task}": ${message}`, { cause: e })
  // The stack that helps is the combiner's own: it crosses the wire in place of this one.
  if (e instanceof Error && e.stack) err.stack = `${err.name}: ${err.message}\n${e.stack.split('\n').slice(1).join('\n')}`
  return err
}

/** Writes a failure into the chunk's slot: CombinerError and runtime errors as Failed, anything the task threw as Threw. */
function failSlot(out: ResultsWriter, slot: number, e: unknown): void {
  out.set(slot, e instanceof CombinerError || e instanceof ProtocolError ? Status.Failed : Status.Threw, toWireError(e))
}

/**
 * Runs one chunk into `slot` of `out`. Returns a promise when a task of the
 * chunk returned one (the batch awaits it), else undefined.
 */
export function runReduceChunk(
  functions: ReadonlyMap<string, Fn>,
  known: readonly string[],
  name: string,
  args: unknown,
  out: ResultsWriter,
  slot: number,
  settle: SettleResult,
): Promise<void> | undefined {
  let chunk: ReduceChunk
  try {
    chunk = readReduceChunk(name, args)
  } catch (e) {
    out.set(slot, Status.Failed, toWireError(e))
    return undefined
  }
  const fn = functions.get(chunk.task)
  const op = functions.get(chunk.combiner)
  if (!fn || !op) {
    const err = fn ? UnknownTaskError.of(chunk.combiner, known, 'combiner') : UnknownTaskError.of(chunk.task, known)
    out.set(slot, Status.Failed, toWireError(err))
    return undefined
  }
  const { inputs } = chunk
  let acc: unknown
  try {
    for (let i = 0; i < inputs.length; i++) {
      const v = fn(...inputs[i]!)
      if (isThenable(v)) return finishAsync(fn, op, name, chunk, i, v, acc, out, slot, settle)
      acc = i === 0 ? v : combine(op, chunk, acc, v)
    }
  } catch (e) {
    failSlot(out, slot, e)
    return undefined
  }
  settle(out, slot, name, acc)
  return undefined
}

/** From input `from` on, a task returned a promise: the rest start at once (as in any batch), then fold in order. */
async function finishAsync(
  fn: Fn,
  op: Fn,
  name: string,
  chunk: ReduceChunk,
  from: number,
  first: PromiseLike<unknown>,
  before: unknown,
  out: ResultsWriter,
  slot: number,
  settle: SettleResult,
): Promise<void> {
  const { inputs } = chunk
  const values: unknown[] = [first]
  let thrown: { error: unknown } | undefined
  for (let j = from + 1; j < inputs.length; j++) {
    try {
      values.push(fn(...inputs[j]!))
    } catch (e) {
      thrown = { error: e }
      break
    }
  }
  // Every promise is awaited, so none is left to reject unhandled; the first failure in input order is reported.
  const settled = await Promise.allSettled(values)
  let acc = before
  try {
    for (let k = 0; k < settled.length; k++) {
      const s = settled[k]!
      if (s.status === 'rejected') throw s.reason
      acc = from + k === 0 ? s.value : combine(op, chunk, acc, s.value)
    }
    if (thrown) throw thrown.error
  } catch (e) {
    failSlot(out, slot, e)
    return
  }
  settle(out, slot, name, acc)
}
