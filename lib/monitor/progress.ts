import { createRequire } from 'node:module'
import type { SingleBar } from 'cli-progress'
import { InvalidArgumentError } from '../errors.js'

/** What a progress report says at one moment. */
export interface ProgressState {
  done: number
  /** Undefined when the amount of work is not known (an endless generator). */
  total: number | undefined
  /** Items per second over the last few seconds. */
  ratePerSecond: number
  /** Seconds left at the current rate; undefined without a total or a rate. */
  etaSeconds: number | undefined
  elapsedSeconds: number
}

/** Options of a {@link Progress}. */
export interface ProgressOptions {
  /** Shown before the figures. Default `progress`. */
  label?: string
  /** Number of items in all; without it there is no bar and no ETA. */
  total?: number
  /** Where to draw. Default `process.stderr`. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number }
  /**
   * `bar` redraws one line (a terminal), `lines` prints a plain line every
   * `intervalMs` (a log file, a pipe), `off` draws nothing (use `onUpdate`).
   * Default `auto`: `bar` when the stream is a TTY, else `lines`.
   */
  mode?: 'auto' | 'bar' | 'lines' | 'off'
  /** Period of updates; in `lines` mode, of lines. Default 100 ms for `bar`, 2000 ms for `lines` and `off` (250 ms for a `map` progress callback). */
  intervalMs?: number
  /** Called at every update, and once at the end. */
  onUpdate?: (state: ProgressState) => void
}

const RATE_WINDOW_MS = 5000

function formatEta(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return '?'
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`
  const m = Math.floor(s / 60)
  return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`
}

const num = (n: number) => Math.round(n).toLocaleString('en-US')

/**
 * A progress report driven by polling a counter (`read`), so the work itself
 * pays nothing per item: a bar with rate and ETA on a terminal, plain
 * periodic lines elsewhere.
 *
 * ```ts
 * const p = new Progress(() => doneSoFar, { label: 'fit', total: 10_000 })
 * // ... work ...
 * p.stop()
 * ```
 */
export class Progress {
  private readonly mode: 'bar' | 'lines' | 'off'
  private readonly label: string
  private readonly total: number | undefined
  private readonly stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number }
  private readonly started = performance.now()
  private readonly samples: [number, number][] = []
  private readonly timer: NodeJS.Timeout
  private bar: SingleBar | undefined
  private stopped = false
  private last: ProgressState

  constructor(
    private readonly read: () => number,
    private readonly options: ProgressOptions = {},
  ) {
    if (options.total !== undefined && (!Number.isSafeInteger(options.total) || options.total < 0)) {
      throw new InvalidArgumentError(`progress total must be a non-negative integer, got ${String(options.total)}`)
    }
    if (options.intervalMs !== undefined && (!Number.isSafeInteger(options.intervalMs) || options.intervalMs < 10)) {
      throw new InvalidArgumentError(`progress intervalMs must be an integer of at least 10, got ${String(options.intervalMs)}`)
    }
    this.stream = options.stream ?? process.stderr
    const mode = options.mode ?? 'auto'
    if (!['auto', 'bar', 'lines', 'off'].includes(mode)) throw new InvalidArgumentError(`progress mode must be auto, bar, lines or off, got ${String(mode)}`)
    this.mode = mode === 'auto' ? (this.stream.isTTY ? 'bar' : 'lines') : mode
    this.label = options.label ?? 'progress'
    this.total = options.total
    this.last = { done: 0, total: this.total, ratePerSecond: 0, etaSeconds: undefined, elapsedSeconds: 0 }
    if (this.mode === 'bar' && this.total !== undefined) {
      // Loaded on first use: only a terminal bar needs it.
      const cliProgress = createRequire(import.meta.url)('cli-progress') as typeof import('cli-progress')
      this.bar = new cliProgress.SingleBar(
        {
          format: `${this.label} [{bar}] {percentage}% | {value}/{total} | {rate}/s | ETA {eta2}`,
          stream: this.stream,
          hideCursor: true,
          barsize: 30,
          // Our own timer drives updates; the bar only draws.
          fps: 10,
          formatValue: (v, _o, type) => (type === 'value' || type === 'total' ? num(v) : String(v)),
        },
        cliProgress.Presets.shades_classic,
      )
      this.bar.start(this.total, 0, { rate: '0', eta2: '?' })
    }
    const every = options.intervalMs ?? (this.mode === 'bar' ? 100 : 2000)
    this.timer = setInterval(() => this.update(), every)
    this.timer.unref()
  }

  /** Reads the counter and redraws; returns the state. */
  update(): ProgressState {
    if (this.stopped) return this.last
    const state = this.measure()
    this.draw(state, false)
    this.options.onUpdate?.(state)
    return state
  }

  private measure(): ProgressState {
    const now = performance.now()
    const done = this.read()
    this.samples.push([now, done])
    while (this.samples.length > 2 && now - this.samples[0]![0] > RATE_WINDOW_MS) this.samples.shift()
    const [t0, d0] = this.samples[0]!
    const elapsedSeconds = (now - this.started) / 1000
    const span = (now - t0) / 1000
    const ratePerSecond = span > 0 ? (done - d0) / span : elapsedSeconds > 0 ? done / elapsedSeconds : 0
    const etaSeconds = this.total !== undefined && ratePerSecond > 0 ? Math.max(0, this.total - done) / ratePerSecond : undefined
    this.last = { done, total: this.total, ratePerSecond, etaSeconds, elapsedSeconds }
    return this.last
  }

  private draw(s: ProgressState, final: boolean): void {
    if (this.mode === 'off') return
    if (this.bar) {
      this.bar.update(Math.min(s.done, this.total!), { rate: num(s.ratePerSecond), eta2: final ? '0 s' : formatEta(s.etaSeconds) })
      return
    }
    const pct = this.total ? ` (${((100 * s.done) / this.total).toFixed(1)}%)` : ''
    const of = this.total !== undefined ? `/${num(this.total)}` : ''
    const line = final
      ? `${this.label}: ${num(s.done)}${of} done in ${s.elapsedSeconds.toFixed(1)} s, ${num(s.elapsedSeconds > 0 ? s.done / s.elapsedSeconds : 0)}/s`
      : `${this.label}: ${num(s.done)}${of}${pct}, ${num(s.ratePerSecond)}/s, ETA ${formatEta(s.etaSeconds)}`
    if (this.mode === 'bar') this.stream.write(`\r${line}\x1b[K${final ? '\n' : ''}`)
    else this.stream.write(`${line}\n`)
  }

  /** Draws the final state and stops. Idempotent. */
  stop(): ProgressState {
    if (this.stopped) return this.last
    const state = this.measure()
    this.stopped = true
    clearInterval(this.timer)
    this.draw(state, true)
    this.bar?.stop()
    this.options.onUpdate?.(state)
    return state
  }
}
