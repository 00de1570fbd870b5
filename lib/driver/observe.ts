/**
 * What the driver shows of itself: the monitor (snapshot, throughput and
 * latency), Prometheus metrics, the dashboard, logs and `map` progress. The
 * HTTP framework, prom-client and the progress bars load only when used.
 */
import type { EventEmitter } from 'node:events'
import type { ResolvedClusterOptions } from '../options.js'
import type { Dashboard } from '../monitor/dashboard.js'
import { createLogger, logClusterEvents, type Logger } from '../monitor/log.js'
import type { ClusterMetrics } from '../monitor/metrics.js'
import { ClusterMonitor, type ClusterSnapshot } from '../monitor/monitor.js'
import { maskToken } from '../monitor/options.js'
import type { Progress } from '../monitor/progress.js'
import type { LedgerHooks } from './ledger.js'
import type { ResolvedMapOptions } from './task-options.js'
import type { ActorInfo, ClusterEvents, ClusterStats, NodeInfo } from './types.js'

/** What the monitor reads of the driver. */
export interface Observed extends EventEmitter<ClusterEvents> {
  readonly address: string
  stats(): ClusterStats
  nodes(): NodeInfo[]
  liveActors(): ActorInfo[]
}

export class Observability {
  readonly monitor: ClusterMonitor
  readonly logger: Logger | undefined
  private metrics: ClusterMetrics | undefined
  private dashboard: Dashboard | undefined

  constructor(
    private readonly driver: Observed,
    options: ResolvedClusterOptions,
  ) {
    this.monitor = new ClusterMonitor({
      get address() {
        return driver.address
      },
      transportName: options.transport,
      heartbeatMs: options.heartbeatMs,
      stats: () => driver.stats(),
      nodes: () => driver.nodes(),
      actors: () => driver.liveActors(),
    })
    this.logger = options.logger ?? (options.logLevel === 'silent' ? undefined : createLogger(options.logLevel))
    if (this.logger) logClusterEvents(driver, this.logger)
  }

  /** The ledger's reports: counted by task name, timed, and told as events. */
  ledgerHooks(): LedgerHooks {
    const { driver, monitor } = this
    return {
      succeeded: (id, name, now) => monitor.tasks.succeeded(id, name, now),
      failed: (id, name, error, node) => {
        monitor.tasks.failed(id, name, node, error, performance.now())
        if (driver.listenerCount('task:failed') > 0) driver.emit('task:failed', { id, name, node, error })
      },
      retried: (id, name, args, cause, attempt) => {
        monitor.tasks.retried(name)
        if (driver.listenerCount('task:retried') > 0) driver.emit('task:retried', { id, name, args, cause, attempt })
      },
    }
  }

  /** Serves the dashboard (a port in use fails here, before anything else starts). */
  async startDashboard(options: NonNullable<ResolvedClusterOptions['dashboard']>): Promise<void> {
    const metrics = await this.registry()
    const { Dashboard } = await import('../monitor/dashboard.js')
    this.dashboard = await Dashboard.start({ snapshot: () => this.snapshot(), metrics }, options)
    // The token stays out of the logs: the program reads it from `cluster.dashboardUrl`.
    this.logger?.info({ url: maskToken(this.dashboard.url) }, 'dashboard listening')
  }

  /** With the real token: the program asked for it. Never logged as is. */
  get dashboardUrl(): string | undefined {
    return this.dashboard?.url
  }

  snapshot(): ClusterSnapshot {
    const snap = this.monitor.snapshot()
    if (this.dashboard) snap.dashboard = this.dashboard.stats()
    return snap
  }

  async metricsText(): Promise<string> {
    return (await this.registry()).text()
  }

  private async registry(): Promise<ClusterMetrics> {
    if (!this.metrics) {
      const { ClusterMetrics } = await import('../monitor/metrics.js')
      this.metrics ??= new ClusterMetrics({ snapshot: () => this.snapshot(), latency: this.monitor.tasks.latency })
    }
    return this.metrics
  }

  /** A progress bar (or callback) for one map. */
  async mapProgress(name: string, inputs: unknown, options: ResolvedMapOptions, read: () => number): Promise<Progress> {
    const { Progress } = await import('../monitor/progress.js')
    const known = options.total ?? (inputs as { length?: unknown }).length ?? (inputs as { size?: unknown }).size
    const total = typeof known === 'number' ? known : undefined
    const onUpdate = typeof options.progress === 'function' ? options.progress : undefined
    return new Progress(read, { label: name, total, mode: onUpdate ? 'off' : 'auto', onUpdate, intervalMs: onUpdate ? 250 : undefined })
  }

  async close(): Promise<void> {
    this.monitor.stop()
    await this.dashboard?.close()
  }
}
