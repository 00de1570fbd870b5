/**
 * The `map` engine: pulls inputs lazily (at most `concurrency` taken and
 * not yet yielded), submits each as a task, and yields results in input
 * order or as they complete. Whatever it still has queued or running when it
 * ends early (break, failure, cancellation) is withdrawn.
 */
import { InvalidArgumentError, TaskCancelledError } from '../errors.js'
import type { Progress } from '../monitor/progress.js'
import { Deque } from '../util/deque.js'
import type { ResultSink } from './ledger.js'
import type { ResolvedMapOptions, ResolvedTaskOptions } from './task-options.js'
import type { MapOptions } from './types.js'

/** What the engine needs of the driver. */
export interface MapSubmitter {
  /** Queues one task, whose outcome goes to `sink` with `seq`; a bad task is settled (failed) at once. */
  enqueue(name: string, args: unknown[], options: ResolvedTaskOptions, sink: ResultSink, seq: number): void
  withdrawAll(options: ResolvedTaskOptions, err: () => Error): void
  /** Throws for a task name that is not a string or not known. */
  checkTask(name: string): void
  resolveMapOptions(options: MapOptions): ResolvedMapOptions
  /** A progress bar or callback reading how many results were yielded. */
  startProgress(name: string, inputs: unknown, options: ResolvedMapOptions, read: () => number): Promise<Progress>
}

/** A failed task's error among the results (made only on failure: a success is stored as its bare value). */
class Failed {
  constructor(readonly error: unknown) {}
}

/** Checks that `inputs` can be iterated; returns whether it is async. */
export function checkInputs(inputs: unknown, what: 'map' | 'reduce' = 'map'): boolean {
  const isAsync = inputs != null && typeof (inputs as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function'
  if (!isAsync && (inputs == null || typeof (inputs as Iterable<unknown>)[Symbol.iterator] !== 'function')) {
    throw new InvalidArgumentError(`${what} inputs must be an iterable or async iterable of argument lists`)
  }
  return isAsync
}

/**
 * The inputs of a map or reduce, pulled one at a time. A pull of an async
 * source is not awaited in place: it may take long, or never answer (a queue
 * nobody feeds), and meanwhile the engine still yields the results that come
 * in, and still stops on an abort, an early stop or a failure. `answered` is
 * called when a pull answers.
 */
export class Inputs {
  private readonly isAsync: boolean
  private readonly source: Iterator<unknown> | AsyncIterator<unknown>
  /** A pull of the async source is on its way. */
  private pulling = false
  /** What the last pull answered, not yet taken. */
  private answer: { ok: true; r: IteratorResult<unknown> } | { ok: false; error: unknown } | undefined

  constructor(
    inputs: Iterable<unknown> | AsyncIterable<unknown>,
    what: 'map' | 'reduce',
    private readonly answered: () => void,
  ) {
    this.isAsync = checkInputs(inputs, what)
    this.source = this.isAsync ? (inputs as AsyncIterable<unknown>)[Symbol.asyncIterator]() : (inputs as Iterable<unknown>)[Symbol.iterator]()
  }

  /** A pull of an async source is on its way: the next input is not at hand. */
  get waiting(): boolean {
    return this.pulling
  }

  /**
   * The next input when it is at hand (always, for a sync source); else
   * undefined, with a pull on its way. Throws what the source threw.
   */
  take(): IteratorResult<unknown> | undefined {
    if (!this.isAsync) return (this.source as Iterator<unknown>).next()
    const answer = this.answer
    if (answer !== undefined) {
      this.answer = undefined
      if (!answer.ok) throw answer.error
      return answer.r
    }
    if (!this.pulling) {
      this.pulling = true
      ;(this.source as AsyncIterator<unknown>).next().then(
        (r) => this.settle({ ok: true, r }),
        (error: unknown) => this.settle({ ok: false, error }),
      )
    }
    return undefined
  }

  private settle(answer: NonNullable<Inputs['answer']>): void {
    this.pulling = false
    this.answer = answer
    this.answered()
  }

  /**
   * Closes inputs not read to their end. With a pull on its way, the
   * source's `return()` is not awaited: an async generator answers it only
   * after that pull, which may be never.
   */
  async close(): Promise<void> {
    if (!this.pulling) return void (await this.source.return?.())
    Promise.resolve()
      .then(() => this.source.return?.())
      .catch(() => undefined)
  }
}

/** Runs a map; every check happens on the first `next()`, as with any generator. */
export async function* runMap<R>(
  driver: MapSubmitter,
  name: string,
  inputs: Iterable<unknown> | AsyncIterable<unknown>,
  mapOptions: MapOptions,
): AsyncGenerator<R, void, undefined> {
  const options = driver.resolveMapOptions(mapOptions)
  driver.checkTask(name)
  const { ordered, concurrency, signal, task } = options
  const source = new Inputs(inputs, 'map', () => nudge())
  // Results waiting to be yielded: by input number (ordered), or as they came.
  const inOrder = new Map<number, unknown>()
  const asDone = new Deque<unknown>()
  let taken = 0
  let yielded = 0
  let exhausted = false
  const progress = options.progress ? await driver.startProgress(name, inputs, options, () => yielded) : undefined
  let wake: (() => void) | undefined
  const nudge = () => {
    if (wake) {
      const w = wake
      wake = undefined
      w()
    }
  }
  // One sink for every task of the map: no closure per task.
  const sink: ResultSink = {
    settled(seq, ok, value) {
      const o = ok ? value : new Failed(value)
      if (ordered) inOrder.set(seq, o)
      else asDone.push(o)
      nudge()
    },
  }
  const waiting = () => (ordered ? inOrder.has(yielded) : asDone.length > 0)
  const next = (): unknown => {
    if (!ordered) return asDone.shift()
    const o = inOrder.get(yielded)
    inOrder.delete(yielded)
    return o
  }
  const cancelled = () => new TaskCancelledError(`map of "${name}" was cancelled after ${yielded} of ${taken} results`, { cause: signal?.reason })
  signal?.addEventListener('abort', nudge)
  try {
    for (;;) {
      if (signal?.aborted) throw cancelled()
      while (!exhausted && taken - yielded < concurrency) {
        const r = source.take()
        // A pull on its way: it nudges when it answers.
        if (r === undefined) break
        if (r.done) {
          exhausted = true
          break
        }
        const seq = taken++
        const args = Array.isArray(r.value) ? r.value : [r.value]
        driver.enqueue(name, args, task, sink, seq)
        if (signal?.aborted) throw cancelled()
      }
      while (waiting()) {
        const o = next()
        yielded++
        if (o instanceof Failed) throw o.error
        yield o as R
        if (signal?.aborted) throw cancelled()
      }
      if (exhausted && yielded === taken) return
      if (!exhausted && taken - yielded < concurrency && !source.waiting) continue
      await new Promise<void>((resolve) => (wake = resolve))
    }
  } finally {
    progress?.stop()
    signal?.removeEventListener('abort', nudge)
    // Whatever this map still has queued or running is withdrawn: an early
    // break, a failure or a cancellation leaves no work behind.
    if (yielded < taken) {
      const err = cancelled()
      driver.withdrawAll(task, () => err)
    }
    if (!exhausted) await source.close()
  }
}
