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
  /** The node that ran it; undefined when it failed before reaching one. */
  node: string | undefined
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
 * One task in SAMPLE_EVERY is timed for the latency histogram:
 * `performance.now()` costs ~50 ns here, ~3% of the driver's time per task
 * at 600k tasks/s, where a sample of 1/16 costs nothing measurable. A task
 * submitted to an idle driver is always timed, so one awaited call after
 * another is timed every time.
 *
 * The ledger entry carries only a boolean (`sampled`): a number field that
 * is sometimes 0 and sometimes a fraction would make V8 box a heap number
 * in every entry, an allocation per task. Submit times live here instead,
 * in a map holding only the sampled tasks still outstanding.
 */
const SAMPLE_EVERY = 16

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
  private sampleTurn = 0
  private readonly submitTimes = new Map<number, number>()

  /** Decides whether task `id` is timed (and notes its submit time if so). `idle`: nothing else is outstanding. */
  sample(id: number, idle: boolean): boolean {
    if (!idle && ++this.sampleTurn < SAMPLE_EVERY) return false
    this.sampleTurn = 0
    this.submitTimes.set(id, performance.now())
    return true
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

  /** A task succeeded; `sampled` as `sample()` said, `now` the batch's arrival time (performance.now()). */
  succeeded(id: number, name: string, sampled: boolean, now: number): void {
    this.counts(name).succeeded++
    if (sampled) this.settleSample(id, now)
  }

  /** A task failed; returns the record kept for the dashboard. */
  failed(id: number, name: string, node: string | undefined, err: Error, sampled: boolean, now: number): FailureRecord {
    this.counts(name).failed++
    if (sampled) this.settleSample(id, now)
    const code = (err as { code?: unknown }).code
    const rec: FailureRecord = {
      time: Date.now(),
      id,
      task: name,
      node,
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
