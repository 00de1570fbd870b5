import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from 'prom-client'
import { LATENCY_BOUNDS, PROMETHEUS_BOUNDS, type LatencyHistogram } from './histogram.js'
import type { ClusterSnapshot } from './monitor.js'

/** What `/metrics` reads: the snapshot, and the latency histogram's raw buckets. */
export interface MetricsSource {
  snapshot(): ClusterSnapshot
  readonly latency: LatencyHistogram
}

const P = 'actor_cluster_'

/**
 * The Prometheus metrics of one cluster, in a registry of its own (two
 * clusters in one process do not collide). Values are read from one snapshot
 * per scrape: nothing is updated on the task path.
 */
export class ClusterMetrics {
  readonly registry = new Registry()
  private readonly tasks: Counter<'name' | 'state'>
  private readonly tasksNow: Gauge<'state'>
  private readonly queueDepth: Gauge
  private readonly nodes: Gauge
  private readonly nodeThreads: Gauge<'node' | 'host'>
  private readonly nodeBusy: Gauge<'node' | 'host'>
  private readonly nodeInFlight: Gauge<'node' | 'host'>
  private readonly nodeDone: Counter<'node' | 'host'>
  private readonly actors: Gauge
  private readonly bytes: Counter<'direction'>
  private readonly frames: Counter<'direction'>
  private readonly sendErrors: Counter
  private readonly badFrames: Counter
  private readonly heartbeatsMissed: Counter
  private readonly lateResults: Counter
  private readonly cancelled: Counter
  private readonly nodesLost: Counter
  private readonly authDenied: Counter

  constructor(private readonly source: MetricsSource) {
    const r = [this.registry]
    this.tasks = new Counter({
      name: `${P}tasks_total`,
      help: 'Tasks settled or retried, by task name and state (succeeded, failed, retried)',
      labelNames: ['name', 'state'],
      registers: r,
    })
    this.tasksNow = new Gauge({
      name: `${P}tasks`,
      help: 'Tasks outstanding now, by state (pending on the driver, running on a node)',
      labelNames: ['state'],
      registers: r,
    })
    this.queueDepth = new Gauge({ name: `${P}queue_depth`, help: 'Tasks queued on the driver, waiting for a node with credit', registers: r })
    this.nodes = new Gauge({ name: `${P}nodes`, help: 'Agents serving the driver', registers: r })
    const nodeLabels = ['node', 'host'] as const
    this.nodeThreads = new Gauge({ name: `${P}node_threads`, help: 'Worker threads of each node', labelNames: nodeLabels, registers: r })
    this.nodeBusy = new Gauge({
      name: `${P}node_busy_threads`,
      help: 'Busy worker threads of each node (from its last heartbeat)',
      labelNames: nodeLabels,
      registers: r,
    })
    this.nodeInFlight = new Gauge({
      name: `${P}node_tasks_in_flight`,
      help: 'Tasks sent to each node and not yet answered',
      labelNames: nodeLabels,
      registers: r,
    })
    this.nodeDone = new Counter({ name: `${P}node_tasks_done_total`, help: 'Tasks answered by each node', labelNames: nodeLabels, registers: r })
    this.actors = new Gauge({ name: `${P}actors`, help: 'Live actors', registers: r })
    this.bytes = new Counter({
      name: `${P}transport_bytes_total`,
      help: 'Bytes through the driver socket, by direction (in, out)',
      labelNames: ['direction'],
      registers: r,
    })
    this.frames = new Counter({
      name: `${P}transport_frames_total`,
      help: 'Messages through the driver socket, by direction (in, out)',
      labelNames: ['direction'],
      registers: r,
    })
    this.sendErrors = new Counter({ name: `${P}transport_send_errors_total`, help: 'Sends that failed (peer gone or full)', registers: r })
    this.badFrames = new Counter({ name: `${P}bad_frames_total`, help: 'Malformed frames received and dropped', registers: r })
    this.heartbeatsMissed = new Counter({ name: `${P}heartbeats_missed_total`, help: 'Heartbeats of agents that did not arrive on time', registers: r })
    this.lateResults = new Counter({
      name: `${P}late_results_total`,
      help: 'Results for tasks already settled (duplicates, answers to cancelled tasks), dropped',
      registers: r,
    })
    this.cancelled = new Counter({ name: `${P}tasks_cancelled_total`, help: 'Tasks cancelled by a signal or an early end of a map', registers: r })
    this.nodesLost = new Counter({ name: `${P}nodes_lost_total`, help: 'Nodes declared lost (silent past nodeTimeoutMs)', registers: r })
    this.authDenied = new Counter({ name: `${P}auth_denied_total`, help: 'Connections refused by CURVE authentication', registers: r })
    this.registry.registerMetric(latencyMetric(source.latency) as unknown as Metric)
    collectDefaultMetrics({ register: this.registry })
  }

  get contentType(): string {
    return this.registry.contentType
  }

  /** The exposition text, from a fresh snapshot. */
  async text(snapshot: ClusterSnapshot = this.source.snapshot()): Promise<string> {
    this.update(snapshot)
    return this.registry.metrics()
  }

  private update(s: ClusterSnapshot): void {
    this.tasks.reset()
    for (const n of s.taskNames) {
      this.tasks.inc({ name: n.name, state: 'succeeded' }, n.succeeded)
      this.tasks.inc({ name: n.name, state: 'failed' }, n.failed)
      this.tasks.inc({ name: n.name, state: 'retried' }, n.retried)
    }
    this.tasksNow.set({ state: 'pending' }, s.tasks.pending)
    this.tasksNow.set({ state: 'running' }, s.tasks.running)
    this.queueDepth.set(s.tasks.pending)
    this.nodes.set(s.nodes.length)
    for (const g of [this.nodeThreads, this.nodeBusy, this.nodeInFlight]) g.reset()
    this.nodeDone.reset()
    for (const n of s.nodes) {
      const l = { node: n.id, host: n.host }
      this.nodeThreads.set(l, n.threads)
      this.nodeBusy.set(l, n.busyThreads)
      this.nodeInFlight.set(l, n.inFlight)
      this.nodeDone.inc(l, n.tasksDone)
    }
    this.actors.set(s.actors.count)
    setCounter(this.bytes, s.transport.bytesIn, { direction: 'in' })
    setCounter(this.bytes, s.transport.bytesOut, { direction: 'out' }, false)
    setCounter(this.frames, s.transport.framesIn, { direction: 'in' })
    setCounter(this.frames, s.transport.framesOut, { direction: 'out' }, false)
    setCounter(this.sendErrors, s.transport.sendErrors)
    setCounter(this.badFrames, s.badFrames)
    setCounter(this.heartbeatsMissed, s.heartbeatsMissed)
    setCounter(this.lateResults, s.tasks.lateResultsDropped)
    setCounter(this.cancelled, s.tasks.cancelled)
    setCounter(this.nodesLost, s.nodesLost)
    setCounter(this.authDenied, s.authDenied)
  }
}

function setCounter<L extends string>(c: Counter<L>, value: number, labels?: Partial<Record<L, string>>, reset = true): void {
  if (reset) c.reset()
  if (labels) c.inc(labels, value)
  else c.inc(value)
}

/**
 * The task duration histogram, exported from the monitor's own buckets
 * (recorded per sampled task, O(1)) rather than observed into prom-client
 * task by task. Shaped as prom-client's registry expects of a metric.
 */
function latencyMetric(h: LatencyHistogram) {
  const name = `${P}task_duration_seconds`
  const help = 'Submit-to-result time of sampled tasks (one in 16, and every task sent to an idle driver)'
  return {
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    labelNames: [],
    get: async () => {
      const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = []
      let cumulative = 0
      let next = 0
      for (let i = 0; i < LATENCY_BOUNDS.length; i++) {
        cumulative += h.totals[i]!
        if (LATENCY_BOUNDS[i] === PROMETHEUS_BOUNDS[next]) {
          values.push({ metricName: `${name}_bucket`, labels: { le: PROMETHEUS_BOUNDS[next]! }, value: cumulative })
          next++
        }
      }
      values.push({ metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: h.count })
      values.push({ metricName: `${name}_sum`, labels: {}, value: h.sum })
      values.push({ metricName: `${name}_count`, labels: {}, value: h.count })
      return { name, help, type: 'histogram', values, aggregator: 'sum' }
    },
  }
}
