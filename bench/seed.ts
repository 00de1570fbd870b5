/**
 * The seed benchmark (2016): the driver emits N tasks (1, k), workers add the
 * pair, the driver collects every sum and checks the total. It goes through
 * the public API only — one `cluster.call` per task — so its figure is what a
 * user gets.
 */
import { availableParallelism } from 'node:os'
import { Cluster, Progress, type Logger } from '../lib/index.js'
import { maskToken } from '../lib/monitor/options.js'
import type { TransportKind } from '../lib/transport/options.js'
import { CLUSTER_DEFAULTS, type LocalTransport } from '../lib/options.js'
import { median } from './stats.js'

export interface SeedOptions {
  tasks: number
  agents: number
  threads?: number
  batch: 'auto' | number
  runs: number
  warmup: boolean
  via: 'call' | 'map'
  localTransport?: LocalTransport
  /** The design (default zmq). */
  transport?: TransportKind
  redisUrl?: string
  amqpUrl?: string
  /** Draw a progress bar (rate, ETA) on stderr. */
  progress?: boolean
  /** Serve the dashboard while running: a port (0 = a free one). */
  dashboard?: number
  logger?: Logger
}

export interface SeedRun {
  submitSeconds: number
  roundTripSeconds: number
  tasksPerSecond: number
  ok: boolean
}

export interface SeedResult extends SeedRun {
  design: string
  tasks: number
  agents: number
  threads: number
  batch: 'auto' | number
  via: 'call' | 'map'
  localTransport: LocalTransport
  runs: SeedRun[]
}

export const BENCH_TASKS = new URL('./tasks.js', import.meta.url)

export function expectedSum(n: number): number {
  return n + (n * (n - 1)) / 2
}

export async function oneRun(cluster: Cluster, n: number, via: 'call' | 'map'): Promise<SeedRun> {
  const start = performance.now()
  let sum = 0
  let count = 0
  let submitted: number
  if (via === 'call') {
    const futures = new Array<Promise<number>>(n)
    for (let k = 0; k < n; k++) futures[k] = cluster.call<number>('add', 1, k)
    submitted = performance.now()
    for (const r of await Promise.all(futures)) {
      sum += r
      count++
    }
  } else {
    function* inputs() {
      for (let k = 0; k < n; k++) yield [1, k]
    }
    const results = cluster.map<number>('add', inputs(), { ordered: false })
    submitted = performance.now()
    for await (const r of results) {
      sum += r
      count++
    }
  }
  const end = performance.now()
  const roundTripSeconds = (end - start) / 1000
  return {
    submitSeconds: (submitted - start) / 1000,
    roundTripSeconds,
    tasksPerSecond: Math.round(n / roundTripSeconds),
    ok: count === n && sum === expectedSum(n),
  }
}

/** The seed benchmark's runs on a cluster that is up (its agents registered); an unmeasured warm-up run first when `o.warmup`. */
export async function seedRuns(cluster: Cluster, o: Pick<SeedOptions, 'tasks' | 'runs' | 'warmup' | 'via'>): Promise<SeedRun[]> {
  // One unmeasured run lets the JIT and the credit windows settle, as any long job would.
  if (o.warmup) await oneRun(cluster, Math.min(o.tasks, 20_000), o.via)
  const runs: SeedRun[] = []
  for (let i = 0; i < o.runs; i++) runs.push(await oneRun(cluster, o.tasks, o.via))
  return runs
}

export async function runSeed(o: SeedOptions): Promise<SeedResult> {
  const threads = o.threads ?? Math.max(1, Math.floor(availableParallelism() / o.agents))
  const localTransport = o.localTransport ?? CLUSTER_DEFAULTS.localTransport
  const transport = o.transport ?? 'zmq'
  await using cluster = await Cluster.start({
    tasks: BENCH_TASKS,
    localAgents: o.agents,
    threads,
    batch: o.batch,
    localTransport,
    transport,
    redisUrl: o.redisUrl,
    amqpUrl: o.amqpUrl,
    dashboard: o.dashboard,
    logger: o.logger,
  })
  if (cluster.dashboardUrl) process.stderr.write(`dashboard: ${maskToken(cluster.dashboardUrl)}\n`)
  // Polls the driver's counters, so the benchmark pays nothing per task for it.
  const settled = () => {
    const s = cluster.stats()
    return s.tasksSucceeded + s.tasksFailed
  }
  const progress = o.progress ? new Progress(settled, { label: 'seed', total: (o.warmup ? Math.min(o.tasks, 20_000) : 0) + o.runs * o.tasks }) : undefined
  const runs = await seedRuns(cluster, o)
  progress?.stop()
  const roundTripSeconds = median(runs.map((r) => r.roundTripSeconds))
  return {
    design: transport,
    tasks: o.tasks,
    agents: o.agents,
    threads,
    batch: o.batch,
    via: o.via,
    localTransport,
    submitSeconds: median(runs.map((r) => r.submitSeconds)),
    roundTripSeconds,
    tasksPerSecond: Math.round(o.tasks / roundTripSeconds),
    ok: runs.every((r) => r.ok),
    runs,
  }
}
