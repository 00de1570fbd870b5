/**
 * A fixed-bucket latency histogram: recording is a binary search over 82
 * bounds and two increments, so it can sit on a hot path. Bounds run from
 * 10 µs to 1000 s with ten per decade (1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8),
 * fine enough for percentiles within a bucket's width (≤ 25 %), and they
 * contain the usual Prometheus bounds (1, 2.5, 5 per decade) exactly.
 *
 * Besides the totals since start it keeps a sliding window made of
 * `windows` slices; `rotate()` (called by a timer) retires the oldest slice.
 */

const MANTISSAS = [1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8]
const MIN_EXP = -5 // 10 µs, in seconds
const MAX_EXP = 3 // 1000 s

/** Upper bounds of the buckets, in seconds, ascending; one more bucket (+Inf) follows. */
export const LATENCY_BOUNDS: readonly number[] = (() => {
  const b: number[] = []
  for (let e = MIN_EXP; e < MAX_EXP; e++) for (const m of MANTISSAS) b.push(Number((m * 10 ** e).toPrecision(3)))
  b.push(10 ** MAX_EXP)
  return b
})()

/** The subset exported to Prometheus: 1, 2.5 and 5 per decade from 100 µs to 1000 s. */
export const PROMETHEUS_BOUNDS: readonly number[] = LATENCY_BOUNDS.filter((b) => {
  const m = Number((b / 10 ** Math.floor(Math.log10(b) + 1e-9)).toPrecision(3))
  return b >= 1e-4 && (m === 1 || m === 2.5 || m === 5)
})

const N = LATENCY_BOUNDS.length + 1

function bucketOf(seconds: number): number {
  let lo = 0
  let hi = LATENCY_BOUNDS.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (seconds <= LATENCY_BOUNDS[mid]!) hi = mid
    else lo = mid + 1
  }
  return lo
}

/** Percentiles of a recent window, in milliseconds. */
export interface LatencySummary {
  /** Samples in the window. */
  count: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  maxMs: number
  /** The window the figures cover, in ms. */
  windowMs: number
}

export class LatencyHistogram {
  /** Cumulative counts per bucket since start (the last is +Inf). */
  readonly totals = new Float64Array(N)
  sum = 0
  count = 0
  private readonly slices: Float64Array[]
  private readonly sliceMax: number[]
  private current = 0

  constructor(
    private readonly windows = 6,
    readonly sliceMs = 10_000,
  ) {
    this.slices = Array.from({ length: windows }, () => new Float64Array(N))
    this.sliceMax = new Array<number>(windows).fill(0)
  }

  /** Records one duration, in seconds. */
  record(seconds: number): void {
    const b = bucketOf(seconds)
    this.totals[b]!++
    this.slices[this.current]![b]!++
    this.sum += seconds
    this.count++
    if (seconds > this.sliceMax[this.current]!) this.sliceMax[this.current] = seconds
  }

  /** Starts a new slice, forgetting the oldest. */
  rotate(): void {
    this.current = (this.current + 1) % this.windows
    this.slices[this.current]!.fill(0)
    this.sliceMax[this.current] = 0
  }

  /** Percentiles over the sliding window, interpolated inside buckets. */
  summary(): LatencySummary {
    const merged = new Float64Array(N)
    let count = 0
    for (const s of this.slices)
      for (let i = 0; i < N; i++) {
        merged[i]! += s[i]!
        count += s[i]!
      }
    const max = Math.max(...this.sliceMax)
    const q = (p: number) => Math.min(max, quantile(merged, count, p)) * 1000
    return { count, p50Ms: q(0.5), p90Ms: q(0.9), p99Ms: q(0.99), maxMs: max * 1000, windowMs: this.windows * this.sliceMs }
  }
}

/** The p-quantile of bucket counts, linear inside the bucket that holds it. */
export function quantile(counts: ArrayLike<number>, total: number, p: number): number {
  if (total === 0) return 0
  const rank = p * total
  let seen = 0
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i]!
    if (c > 0 && seen + c >= rank) {
      const lo = i === 0 ? 0 : LATENCY_BOUNDS[i - 1]!
      const hi = LATENCY_BOUNDS[i] ?? lo
      return lo + (hi - lo) * ((rank - seen) / c)
    }
    seen += c
  }
  return LATENCY_BOUNDS[LATENCY_BOUNDS.length - 1]!
}
