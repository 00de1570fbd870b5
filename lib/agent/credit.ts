/**
 * Credit: how much work an agent asks its driver for. The *window* is the
 * number of tasks the agent wants to hold (announced in Hello and Credit
 * frames); for brokered designs it is also turned into a *prefetch*, the
 * number of task frames the agent takes from the shared queue. Pure: no I/O,
 * the agent sends what this decides.
 */

/** Tasks per thread the window starts at, before any task was measured. */
export const START_PER_THREAD = 2
/** Tasks per thread the window may grow to. */
export const MAX_PER_THREAD = 4096
/** A new window is announced once it differs from the last one sent by more than this share. */
const RESEND_CHANGE = 0.25

/**
 * The window for tasks measured at `msPerTask`: about `targetQueueMs` of work
 * per thread, between {@link START_PER_THREAD} and {@link MAX_PER_THREAD}
 * tasks per thread, so fast tasks stream in deep pipelines and slow ones are
 * not hoarded by one node.
 */
export function windowFor(msPerTask: number, threads: number, targetQueueMs: number): number {
  const perThread = Math.round(targetQueueMs / Math.max(msPerTask, 1e-6))
  return Math.max(START_PER_THREAD, Math.min(MAX_PER_THREAD, perThread)) * threads
}

/** Whether `window` should be announced, the last one sent being `sent` (≤ 0: none yet, or zero). */
export function shouldAnnounce(window: number, sent: number): boolean {
  return sent <= 0 || Math.abs(window - sent) / sent > RESEND_CHANGE
}

/**
 * Brokered designs: the frames to take from the shared queue for a window of
 * `window` tasks arriving `tasksPerFrame` to a frame, plus one per thread for
 * frames whose results are on their way to the broker (acknowledged only
 * then). Zero stops taking.
 */
export function prefetchFor(window: number, tasksPerFrame: number, threads: number): number {
  return window === 0 ? 0 : Math.ceil(window / tasksPerFrame) + threads
}

/** The credit state of one agent: what it measured, what it asks for, what it last announced. */
export class Credit {
  /** Tasks the agent asks to hold. */
  window: number
  /** Smoothed milliseconds per task; undefined before the first batch. */
  private msPerTask: number | undefined
  /** The window last announced; -1 for none since the driver welcomed us. */
  private sent = -1
  /** Tasks per frame received lately (brokered designs). */
  private tasksPerFrame = 1
  /** Tasks that seceded and are not yet answered: the node holds them beyond its window. */
  seceded = 0

  constructor(
    private readonly threads: number,
    private readonly targetQueueMs: number,
  ) {
    this.window = threads * START_PER_THREAD
  }

  /** A batch of `count` tasks ran in `elapsedMs`: adapts the window; true when it should be announced. */
  measured(elapsedMs: number, count: number): boolean {
    if (count <= 0) return false
    const ms = elapsedMs / count
    this.msPerTask = this.msPerTask === undefined ? ms : this.msPerTask * 0.7 + ms * 0.3
    this.window = windowFor(this.msPerTask, this.threads, this.targetQueueMs)
    return shouldAnnounce(this.window, this.sent)
  }

  /** A task frame of `count` tasks came from the shared queue. */
  frameTaken(count: number): void {
    this.tasksPerFrame = this.tasksPerFrame * 0.8 + Math.max(1, count) * 0.2
  }

  /** A new driver: the next window is announced whatever it is. */
  reset(): void {
    this.sent = -1
  }

  /** Records the window announced now (0 while leaving) and returns it with its prefetch. */
  announce(leaving: boolean): { window: number; prefetch: number } {
    // Tasks that seceded wait on work they asked for: they hold no thread, and must not hold the window either.
    const window = leaving ? 0 : this.window + this.seceded
    this.sent = window
    return { window, prefetch: prefetchFor(window, this.tasksPerFrame, this.threads) }
  }
}
