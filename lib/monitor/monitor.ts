import type { ActorInfo, ClusterStats, NodeInfo } from '../driver/types.js'
import type { TransportStats } from '../transport/transport.js'
import { VERSION } from '../version.js'
import type { LatencySummary } from './histogram.js'
import { TaskStats, type FailureRecord, type TaskNameCounts } from './task-stats.js'

/** What the monitor reads from its cluster. */
export interface MonitorSource {
  readonly address: string
  readonly transportName: string
  readonly heartbeatMs: number
  stats(): ClusterStats
  nodes(): NodeInfo[]
  actors(): ActorInfo[]
}

/** One node in a snapshot: `NodeInfo` and the heartbeats it missed since it joined. */
export interface NodeSnapshot extends NodeInfo {
  heartbeatsMissed: number
}

/**
 * Everything known about a cluster at one moment: the one source of the
 * dashboard, `/metrics`, `/api/stats` and `cluster status`. Plain data,
 * safe to `JSON.stringify`.
 */
export interface ClusterSnapshot {
  /** actor-cluster version of the driver. */
  version: string
  /** When the snapshot was taken (epoch ms). */
  time: number
  startedAt: number
  uptimeMs: number
  /** The address agents connect to. */
  address: string
  /** Heartbeat interval of the cluster, in ms (a node silent for 1.5 intervals is late). */
  heartbeatMs: number
  transport: TransportStats & { name: string }
  tasks: {
    submitted: number
    /** Queued on the driver, not yet sent to a node. */
    pending: number
    /** Sent to a node, no result yet. */
    running: number
    succeeded: number
    failed: number
    /** Cancelled by a signal or an early end of a `map`. */
    cancelled: number
    /** Sent again: after their node was lost, a worker crashed, or (with `retries`) they failed. */
    retried: number
    /** Results for tasks already settled (duplicates after a redelivery, answers to cancelled tasks), dropped. */
    lateResultsDropped: number
    /** Tasks settled per second, averaged over the last 5 s. */
    ratePerSecond: number
  }
  /** Counts per task name, most settled first. */
  taskNames: (TaskNameCounts & { name: string })[]
  /** Submit-to-result time of sampled tasks over the last minute. */
  latency: LatencySummary
  /** Tasks settled per second, one point per second, oldest first (`t` in epoch seconds). */
  throughput: { t: number[]; done: number[]; failed: number[] }
  nodes: NodeSnapshot[]
  actors: { count: number; list: ActorInfo[] }
  /** The latest failures, newest first. */
  failures: FailureRecord[]
  badFrames: number
  heartbeatsMissed: number
  /** Nodes declared lost since start. */
  nodesLost: number
  /** Connections refused by CURVE authentication. */
  authDenied: number
  /** The dashboard server's own counters, when it runs. */
  dashboard?: DashboardStats
}

/** Counters of the dashboard server itself. */
export interface DashboardStats {
  /** Pages connected to the live stream now. */
  clients: number
  /** Updates written to pages. */
  updatesSent: number
  /** Updates replaced by a newer one before a slow page took them. */
  updatesDropped: number
  /** Connections refused: over `maxClients`, bad token or bad Host. */
  rejected: number
}

/** Seconds of throughput history kept. */
const HISTORY_SECONDS = 300
const SAMPLE_MS = 1000
const MAX_ACTORS_LISTED = 200
const FAILURES_LISTED = 20
const RATE_WINDOW = 5

/**
 * The driver's monitor: per-task counters (`tasks`), a once-a-second sampler
 * for the throughput history, latency windows and missed heartbeats, and
 * `snapshot()`. It owns one unref'd timer; nothing here runs per task except
 * the O(1) methods of {@link TaskStats}.
 */
export class ClusterMonitor {
  readonly tasks = new TaskStats()
  readonly startedAt = Date.now()
  private readonly t: number[] = []
  private readonly done: number[] = []
  private readonly failed: number[] = []
  private lastDone = 0
  private lastFailed = 0
  private lastSample = performance.now()
  private sinceRotate = 0
  private missedTotal = 0
  private readonly missedByNode = new Map<string, { counted: number; total: number }>()
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly source: MonitorSource) {}

  start(): void {
    if (this.timer) return
    this.timer = setInterval(() => this.sample(), SAMPLE_MS)
    this.timer.unref()
  }

  stop(): void {
    clearInterval(this.timer)
  }

  /** Takes one sample now (the timer does this once a second). */
  sample(): void {
    const now = performance.now()
    const elapsed = Math.max(1, now - this.lastSample) / 1000
    this.lastSample = now
    const s = this.source.stats()
    this.push(Math.floor(Date.now() / 1000), (s.tasksSucceeded - this.lastDone) / elapsed, (s.tasksFailed - this.lastFailed) / elapsed)
    this.lastDone = s.tasksSucceeded
    this.lastFailed = s.tasksFailed
    this.sinceRotate += SAMPLE_MS
    if (this.sinceRotate >= this.tasks.latency.sliceMs) {
      this.sinceRotate = 0
      this.tasks.latency.rotate()
    }
    this.countMissedHeartbeats(this.source.nodes())
  }

  private push(t: number, done: number, failed: number): void {
    if (this.t.length >= HISTORY_SECONDS) {
      this.t.shift()
      this.done.shift()
      this.failed.shift()
    }
    this.t.push(t)
    this.done.push(Math.round(done))
    this.failed.push(Math.round(failed))
  }

  /**
   * A node silent for `age` has missed `floor(age / heartbeatMs)` heartbeats
   * after the first 1.5 intervals of grace; count each one once, whatever the
   * sampling period.
   */
  private countMissedHeartbeats(nodes: NodeInfo[]): void {
    const hb = this.source.heartbeatMs
    const seen = new Set<string>()
    for (const n of nodes) {
      seen.add(n.id)
      let m = this.missedByNode.get(n.id)
      if (!m) this.missedByNode.set(n.id, (m = { counted: 0, total: 0 }))
      const missed = n.heartbeatAgeMs > 1.5 * hb ? Math.floor((n.heartbeatAgeMs - 0.5 * hb) / hb) : 0
      if (missed > m.counted) {
        m.total += missed - m.counted
        this.missedTotal += missed - m.counted
      }
      m.counted = missed
    }
    for (const id of this.missedByNode.keys()) if (!seen.has(id)) this.missedByNode.delete(id)
  }

  snapshot(): ClusterSnapshot {
    const s = this.source.stats()
    const nodes = this.source.nodes()
    const actors = this.source.actors()
    const time = Date.now()
    const recent = this.done.slice(-RATE_WINDOW)
    const failedRecent = this.failed.slice(-RATE_WINDOW)
    let rate = 0
    for (let i = 0; i < recent.length; i++) rate += recent[i]! + failedRecent[i]!
    rate = recent.length > 0 ? Math.round(rate / recent.length) : 0
    const names = [...this.tasks.byName].map(([name, c]) => ({ name, ...c }))
    names.sort((a, b) => b.succeeded + b.failed - (a.succeeded + a.failed))
    return {
      version: VERSION,
      time,
      startedAt: this.startedAt,
      uptimeMs: time - this.startedAt,
      address: this.source.address,
      heartbeatMs: this.source.heartbeatMs,
      transport: { name: this.source.transportName, ...s.transport },
      tasks: {
        submitted: s.tasksSubmitted,
        pending: s.queued,
        running: s.inFlight,
        succeeded: s.tasksSucceeded,
        failed: s.tasksFailed,
        cancelled: s.tasksCancelled,
        retried: s.tasksRetried,
        lateResultsDropped: s.lateResultsDropped,
        ratePerSecond: rate,
      },
      taskNames: names,
      latency: this.tasks.latency.summary(),
      throughput: { t: [...this.t], done: [...this.done], failed: [...this.failed] },
      nodes: nodes.map((n) => ({ ...n, heartbeatsMissed: this.missedByNode.get(n.id)?.total ?? 0 })),
      actors: { count: actors.length, list: actors.slice(0, MAX_ACTORS_LISTED) },
      failures: this.tasks.recentFailures(FAILURES_LISTED),
      badFrames: s.badFrames,
      heartbeatsMissed: this.missedTotal,
      nodesLost: s.nodesLost,
      authDenied: s.authDenied,
    }
  }
}
