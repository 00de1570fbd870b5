/**
 * The lifecycle every transport shares: its counters, and one `close()` that
 * is idempotent, bounded and step-isolated. A design says what closing means
 * for it as a list of steps; the base runs them, and the forced steps after
 * them if any graceful step failed or ran out of time.
 */
import { debuglog } from 'node:util'
import { closeSteps, type CloseProblem, type CloseStep } from '../util/close.js'
import { TransportError } from '../errors.js'
import { newStats, partsBytes, type Parts, type TransportFailure, type TransportStats } from './transport.js'

const log = debuglog('actor-cluster')

/** How long each step of a transport's close may take, unless the step says otherwise. */
const CLOSE_TIMEOUT_MS = 5000

/** What every transport's options may add to its lifecycle. */
export interface TransportLifecycleOptions {
  /** Limit in ms for each graceful step of `close()` (default {@link CLOSE_TIMEOUT_MS}); past it, the forced steps run. */
  closeTimeoutMs?: number | undefined
}

/**
 * Base of every transport: counts frames and bytes (parts only, never a
 * routing id or a broker's packing), drops sends once closing began, and
 * closes once however often it is asked.
 *
 * @example
 * ```ts
 * class Pipe extends TransportBase {
 *   send(parts: Parts): void {
 *     if (!this.countOut(parts)) return // closed: dropped, not counted
 *     this.socket.send(parts).catch(() => this.countSendError())
 *   }
 *   protected gracefulSteps(): CloseStep[] {
 *     return [{ name: 'socket', run: () => this.socket.close() }]
 *   }
 * }
 * ```
 */
export abstract class TransportBase implements AsyncDisposable {
  readonly stats: TransportStats = newStats()
  #closed = false
  #closing: Promise<void> | undefined
  #problems: readonly CloseProblem[] = []
  /** Limit of each graceful close step, in ms. */
  protected readonly closeTimeoutMs: number

  constructor(options: TransportLifecycleOptions = {}) {
    this.closeTimeoutMs = options.closeTimeoutMs ?? CLOSE_TIMEOUT_MS
  }

  /** True from the moment `close()` is called: sends are dropped, receptions ignored, nothing counted. */
  get closed(): boolean {
    return this.#closed
  }

  /** The steps of the last `close()` that failed or timed out (the steps after them still ran). */
  get closeProblems(): readonly CloseProblem[] {
    return this.#problems
  }

  /** Counts a message about to leave; false (and nothing counted) once closed, and the caller drops it. */
  protected countOut(parts: Parts): boolean {
    if (this.#closed) return false
    this.stats.framesOut++
    this.stats.bytesOut += partsBytes(parts)
    return true
  }

  /** Counts a message that arrived with `bytes` of parts; false (and nothing counted) once closed, and the caller drops it. */
  protected countIn(bytes: number): boolean {
    if (this.#closed) return false
    this.stats.framesIn++
    this.stats.bytesIn += bytes
    return true
  }

  /** A send that was counted out failed (a gone peer, a full queue, a frame over the limit). */
  protected countSendError(): void {
    this.stats.sendErrors++
  }

  /**
   * Delivers every message of `source` (a socket read by async iteration),
   * counting each as `bytes(message)`, until the source ends or this transport
   * closes. An error while open goes to `onFailure`, wrapped in a
   * TransportError; one after close is the close itself, and is ignored.
   * Never leaves a rejection unhandled.
   */
  protected receiveFrom<M>(
    source: AsyncIterable<M>,
    bytes: (message: M) => number,
    onFailure: TransportFailure | undefined,
    deliver: (message: M) => void,
  ): void {
    void (async () => {
      try {
        for await (const m of source) if (this.countIn(bytes(m))) deliver(m)
      } catch (err) {
        if (!this.#closed) onFailure?.(new TransportError(`receiving failed: ${(err as Error).message}`, { cause: err }))
      }
    })()
  }

  /** What closing means for this design, in order: each step bounded by `closeTimeoutMs` or its own `timeoutMs`. */
  protected abstract gracefulSteps(): CloseStep[]

  /** Run only when a graceful step failed or ran out of time: let go of whatever is left, without waiting. */
  protected forcedSteps(): CloseStep[] {
    return []
  }

  /** Idempotent: every call returns the same promise, which never rejects (problems are in `closeProblems`). */
  close(): Promise<void> {
    this.#closed = true
    return (this.#closing ??= this.#runClose())
  }

  async #runClose(): Promise<void> {
    const problems = await closeSteps(this.gracefulSteps(), this.closeTimeoutMs)
    if (problems.length > 0) problems.push(...(await closeSteps(this.forcedSteps(), this.closeTimeoutMs)))
    this.#problems = problems
    for (const p of problems) log('%s close: %s: %s', this.constructor.name, p.step, p.error.message)
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}
