/**
 * The `reduce` engine: a map whose results are folded where they are made.
 * Inputs are pulled lazily into chunks of contiguous inputs; each chunk is
 * one task entry that travels in a task frame of its own, runs on one thread
 * (lib/agent/reduce-chunk.ts) and comes back as one partial aggregate. The
 * driver folds the partials into `initial` with its own copy of the
 * combiner: in chunk order (ordered, the default), or as they arrive.
 *
 * The combiner is an associative operation on results, `(a, b) => a ⊕ b`; a
 * chunk answers `r_i ⊕ … ⊕ r_j` and the driver computes `initial ⊕ P_0 ⊕ P_1
 * ⊕ …`, which associativity makes equal to `initial ⊕ r_0 ⊕ r_1 ⊕ …`, the
 * fold on the driver in input order. A chunk is one ledger entry: settled
 * once, run again as a whole after a loss or a retry, so each partial counts
 * once.
 */
import { CombinerError, InvalidArgumentError, TaskCancelledError } from '../errors.js'
import { isThenable } from '../util/thenable.js'
import type { Progress } from '../monitor/progress.js'
import { reduceChunkArgs, reduceTaskName } from '../protocol/reduce.js'
import { integerOption } from '../validate.js'
import { Inputs, type MapSubmitter } from './map.js'
import type { ResolvedTaskOptions } from './task-options.js'
import type { ReduceOptions } from './types.js'

/** Most inputs in one chunk (as many as tasks in one frame under `batch: 'auto'`). */
export const MAX_CHUNK = 1024
/** With a known number of inputs, chunks are small enough for this many per thread of the cluster. */
const CHUNKS_PER_THREAD = 4

type Combiner = (a: unknown, b: unknown) => unknown

/** Receives the outcome of each chunk: `seq` is the chunk's number. */
export interface ChunkSink {
  settled(seq: number, ok: boolean, value: unknown): void
}

/** What the engine needs of the driver. */
export interface ReduceSubmitter extends Pick<MapSubmitter, 'withdrawAll' | 'resolveMapOptions' | 'startProgress'> {
  /** Queues one chunk; its outcome goes to `sink` with `seq` (a chunk that cannot be queued is settled failed at once). */
  enqueue(name: string, args: unknown[], options: ResolvedTaskOptions, sink: ChunkSink, seq: number): void
  /** Throws for a name that is not known (`what`: its role, for the message). */
  checkTask(name: string, what?: 'task' | 'combiner'): void
  /** The driver's own copy of a function of the tasks module (undefined without one loaded). */
  localFunction(name: string): Combiner | undefined
  /** Threads of the cluster's nodes now (to size chunks). */
  threads(): number
}

/**
 * The chunk size: `chunk` when given; else up to {@link MAX_CHUNK}, at most a
 * quarter of `concurrency` (so several chunks are in flight), and with a known
 * number of inputs small enough for {@link CHUNKS_PER_THREAD} chunks per thread.
 */
export function chunkSize(chunk: number | undefined, concurrency: number, total: number | undefined, threads: number): number {
  if (chunk !== undefined) return Math.min(chunk, concurrency)
  const perThread = total !== undefined && threads > 0 ? Math.ceil(total / (CHUNKS_PER_THREAD * threads)) : MAX_CHUNK
  return Math.max(1, Math.min(MAX_CHUNK, Math.floor(concurrency / 4), perThread))
}

function knownTotal(inputs: unknown, total: number | undefined): number | undefined {
  const n = total ?? (inputs as { length?: unknown }).length ?? (inputs as { size?: unknown }).size
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 ? n : undefined
}

/** Folds on the driver; a throw, or a promise, is a CombinerError naming the combiner. */
function foldLocal(op: Combiner, combiner: string, task: string, a: unknown, b: unknown): unknown {
  let v: unknown
  try {
    v = op(a, b)
  } catch (e) {
    throw new CombinerError(
      `combiner "${combiner}" threw on the driver while folding partial aggregates of task "${task}": ${(e as Error)?.message ?? String(e)}`,
      {
        cause: e,
      },
    )
  }
  // Folded on as a value, a promise would be wrong silently ('[object Promise]7').
  if (isThenable(v)) {
    throw new CombinerError(`combiner "${combiner}" of task "${task}" returned a promise on the driver; a combiner must return its value synchronously`)
  }
  return v
}

interface Arrived {
  ok: boolean
  value: unknown
  inputs: number
}

/** Runs a reduce; every check happens before anything is sent. */
export async function runReduce<R>(
  driver: ReduceSubmitter,
  name: string,
  inputs: Iterable<unknown> | AsyncIterable<unknown>,
  combiner: string,
  initial: R,
  options: ReduceOptions<R> = {},
): Promise<R> {
  const map = driver.resolveMapOptions(options)
  const chunkOption = integerOption('chunk', options.chunk)
  const total = map.total
  const until = options.until
  if (until !== undefined && typeof until !== 'function') throw new InvalidArgumentError(`options.until must be a function, got ${typeof until}`)
  driver.checkTask(name)
  if (typeof combiner !== 'string') throw new InvalidArgumentError(`combiner must be the name of a function of the tasks module, got ${typeof combiner}`)
  driver.checkTask(combiner, 'combiner')
  const op = driver.localFunction(combiner)
  if (op === undefined) {
    throw new InvalidArgumentError(
      `reduce folds the partial aggregates on the driver with its own copy of combiner "${combiner}": start the cluster with the tasks module (options.tasks)`,
    )
  }
  const { ordered, signal } = map
  const source = new Inputs(inputs, 'reduce', () => nudge())
  // One options object per reduce: it tells this reduce's chunks apart in the ledger, and sends each in a frame of its own.
  const task: ResolvedTaskOptions = Object.freeze({ ...map.task, alone: true })
  const size = chunkSize(chunkOption, map.concurrency, knownTotal(inputs, total), driver.threads())
  const chunkName = reduceTaskName(name, combiner)

  const arrived = new Map<number, Arrived>()
  let acc: unknown = initial
  let taken = 0 // inputs sent in chunks
  let folded = 0 // inputs whose results are in `acc`
  let sent = 0 // chunks sent
  let done = 0 // chunks folded
  let exhausted = false
  // Inputs pulled for the next chunk (it may fill across turns, as an async source answers).
  let chunk: unknown[][] = []
  let wake: (() => void) | undefined
  const nudge = () => {
    const w = wake
    wake = undefined
    w?.()
  }
  const sizes = new Map<number, number>()
  const sink: ChunkSink = {
    settled(seq, ok, value) {
      arrived.set(seq, { ok, value, inputs: sizes.get(seq) ?? 0 })
      sizes.delete(seq)
      nudge()
    },
  }
  const cancelled = () =>
    new TaskCancelledError(`reduce of "${name}" with "${combiner}" was cancelled after ${folded} of ${taken} inputs were folded`, { cause: signal?.reason })
  const progress: Progress | undefined = map.progress ? await driver.startProgress(name, inputs, map, () => folded) : undefined
  signal?.addEventListener('abort', nudge)
  try {
    for (;;) {
      if (signal?.aborted) throw cancelled()
      while (!exhausted && taken - folded + size <= map.concurrency) {
        let r: IteratorResult<unknown> | undefined
        while (chunk.length < size && (r = source.take()) !== undefined) {
          if (r.done) {
            exhausted = true
            break
          }
          chunk.push(Array.isArray(r.value) ? r.value : [r.value])
        }
        // A chunk goes full, or with the last inputs; a pull on its way nudges when it answers.
        if (chunk.length === 0 || (chunk.length < size && !exhausted)) break
        const seq = sent++
        taken += chunk.length
        sizes.set(seq, chunk.length)
        driver.enqueue(chunkName, reduceChunkArgs(name, combiner, chunk), task, sink, seq)
        chunk = []
        if (signal?.aborted) throw cancelled()
      }
      // Ordered: the next chunk in input order, and those after it that arrived. Unordered: any that arrived.
      for (;;) {
        let seq: number | undefined = done
        if (!ordered) seq = arrived.keys().next().value
        const p = seq === undefined ? undefined : arrived.get(seq)
        if (p === undefined) break
        arrived.delete(seq!)
        if (!p.ok) throw p.value
        acc = foldLocal(op, combiner, name, acc, p.value)
        done++
        folded += p.inputs
        if (until?.(acc as R) === true) return acc as R
        if (signal?.aborted) throw cancelled()
      }
      if (exhausted && done === sent) return acc as R
      if (!exhausted && taken - folded + size <= map.concurrency && !source.waiting) continue
      await new Promise<void>((resolve) => (wake = resolve))
    }
  } finally {
    progress?.stop()
    signal?.removeEventListener('abort', nudge)
    // Whatever this reduce still has queued or running is withdrawn: an early stop, a failure or a cancellation leaves no work behind.
    if (done < sent) {
      const err = cancelled()
      driver.withdrawAll(task, () => err)
    }
    if (!exhausted) await source.close()
  }
}
