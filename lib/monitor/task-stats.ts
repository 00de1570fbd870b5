import { LatencyHistogram } from './histogram.js'

/** Outcome counts of one task name. */
export interface TaskNameCounts {
  succeeded: number
  failed: number
  retried: number
}

/** One failed task, as the dashboard and `cluster.snapshot()` show it. */
export interface FailureRecord {
  /** When it failed (epoch ms). */
  time: number
  id: number
  task: string
  /** The node that ran it; absent when it failed before reaching one (so the record survives JSON unchanged). */
  node?: string
  /** The error's class (for a task that threw, the remote class). */
  error: string
  code: string | undefined
  message: string
  stack: string | undefined
}

/** Task names tracked one by one; beyond this, counts go to one "(other)" row (bounded label cardinality). */
const MAX_NAMES = 256
const OTHER = '(other)'
/** Failures kept for the dashboard. */
const MAX_FAILURES = 50
const MAX_STACK = 4096
const MAX_MESSAGE = 1024
/**
 * Tasks whose id is a multiple of SAMPLE_EVERY are timed for the latency
 * histogram: `performance.now()` costs ~50 ns here, ~3% of the driver's time
 * per task at 600k tasks/s, where a sample of 1/16 costs nothing measurable.
 * A task submitted to an idle driver takes the next such id, so one awaited
 * call after another is timed every time.
 *
 * The ledger entry carries nothing for this: the id says whether a task is
 * timed, and submit times live here, in a map holding only the timed tasks
 * still outstanding. (One more field on the entry, even a boolean, measured
 * 15-20% less throughput on the seed benchmark.)
 */
const SAMPLE_EVERY = 16
/** Timed tasks remembered at most; the oldest are forgotten first (a task withdrawn unsettled leaves its time behind). */
const MAX_OUTSTANDING_SAMPLES = 131_072

/**
 * Per-task bookkeeping of the driver, kept O(1) and allocation-free on the
 * success path: counters per name (the last name is cached, since batches
 * are usually of one task), and a sampled latency histogram.
 */
export class TaskStats {
  readonly latency = new LatencyHistogram()
  readonly byName = new Map<string, TaskNameCounts>()
  private readonly failures: FailureRecord[] = []
  private failureHead = 0
  private lastName = ''
  private last: TaskNameCounts | undefined
  private readonly submitTimes = new Map<number, number>()

  /**
   * The id of the next task: `next`, or when the driver is `idle` the next
   * id that is timed. Notes the submit time of a timed task.
   */
  assignId(next: number, idle: boolean): number {
    const id = idle ? next + ((SAMPLE_EVERY - (next % SAMPLE_EVERY)) % SAMPLE_EVERY) : next
    if (id % SAMPLE_EVERY === 0) {
      this.submitTimes.set(id, performance.now())
      if (this.submitTimes.size > MAX_OUTSTANDING_SAMPLES) this.submitTimes.delete(this.submitTimes.keys().next().value!)
    }
    return id
  }

  private settleSample(id: number, now: number): void {
    const t0 = this.submitTimes.get(id)
    if (t0 === undefined) return
    this.submitTimes.delete(id)
    this.latency.record((now - t0) / 1000)
  }

  /** Sampled tasks not yet settled. */
  get outstandingSamples(): number {
    return this.submitTimes.size
  }

  private counts(name: string): TaskNameCounts {
    if (name === this.lastName && this.last) return this.last
    let c = this.byName.get(name)
    if (!c) {
      const key = this.byName.size >= MAX_NAMES ? OTHER : name
      c = this.byName.get(key)
      if (!c) {
        c = { succeeded: 0, failed: 0, retried: 0 }
        this.byName.set(key, c)
      }
    }
    this.lastName = name
    this.last = c
    return c
  }

  /** A task succeeded; `now` is the batch's arrival time (performance.now()). */
  succeeded(id: number, name: string, now: number): void {
    this.counts(name).succeeded++
    if (id % SAMPLE_EVERY === 0) this.settleSample(id, now)
  }

  /** A task failed; returns the record kept for the dashboard. */
  failed(id: number, name: string, node: string | undefined, err: Error, now: number): FailureRecord {
    this.counts(name).failed++
    if (id % SAMPLE_EVERY === 0) this.settleSample(id, now)
    const code = (err as { code?: unknown }).code
    const rec: FailureRecord = {
      time: Date.now(),
      id,
      task: name,
      ...(node === undefined ? {} : { node }),
      error: err.name,
      code: typeof code === 'string' ? code : undefined,
      message: err.message.slice(0, MAX_MESSAGE),
      stack: err.stack?.slice(0, MAX_STACK),
    }
    if (this.failures.length < MAX_FAILURES) this.failures.push(rec)
    else {
      this.failures[this.failureHead] = rec
      this.failureHead = (this.failureHead + 1) % MAX_FAILURES
    }
    return rec
  }

  retried(name: string): void {
    this.counts(name).retried++
  }

  /** The latest failures, newest first. */
  recentFailures(limit = MAX_FAILURES): FailureRecord[] {
    const ordered = [...this.failures.slice(this.failureHead), ...this.failures.slice(0, this.failureHead)]
    return ordered.reverse().slice(0, limit)
  }
}
