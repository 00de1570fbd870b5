/**
 * Scale: one driver and many lightweight agents (several per process, each
 * with its own socket, identity and heartbeats, sharing a thread pool per
 * process). Measures the time for all to register, the seed benchmark's
 * throughput across them, and the driver's memory; checks that every agent
 * registered, every agent got work and no task was lost.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { Cluster } from '../lib/index.js'
import { BENCH_TASKS, expectedSum } from './seed.js'
import { median } from './stats.js'

export interface ScaleOptions {
  agents: number
  /** Processes the agents are spread over. Default: one per 250 agents, at least 2 (at most one per agent). */
  procs?: number
  tasks: number
  runs: number
  heartbeatMs?: number
}

export interface ScaleRun {
  seconds: number
  tasksPerSecond: number
  ok: boolean
}

export interface ScaleResult {
  agents: number
  procs: number
  tasks: number
  /** From starting the agent processes to the last agent registered. */
  registerSeconds: number
  registered: number
  /** Agents that ran at least one task. */
  withWork: number
  /** Median over runs. */
  tasksPerSecond: number
  runs: ScaleRun[]
  lost: number
  requeued: number
  /** The driver's resident memory before any agent, once all registered, and at its peak during the runs. */
  driverBaseRssMB: number
  driverRegisteredRssMB: number
  driverPeakRssMB: number
  ok: boolean
}

const AGENTS_SCRIPT = new URL('./scale-agents.js', import.meta.url).pathname

async function oneRun(cluster: Cluster, n: number): Promise<ScaleRun> {
  const start = performance.now()
  const futures = new Array<Promise<number>>(n)
  for (let k = 0; k < n; k++) futures[k] = cluster.call<number>('add', 1, k)
  let sum = 0
  let count = 0
  for (const r of await Promise.all(futures)) {
    sum += r
    count++
  }
  const seconds = (performance.now() - start) / 1000
  return { seconds, tasksPerSecond: Math.round(n / seconds), ok: count === n && sum === expectedSum(n) }
}

export async function runScale(o: ScaleOptions): Promise<ScaleResult> {
  const procs = o.procs ?? Math.min(o.agents, Math.max(2, Math.ceil(o.agents / 250)))
  const heartbeatMs = o.heartbeatMs ?? 1000
  await using cluster = await Cluster.start({
    config: {},
    tasks: BENCH_TASKS,
    listen: 'tcp://127.0.0.1:0',
    localAgents: 0,
    heartbeatMs,
    nodeTimeoutMs: Math.max(10_000, heartbeatMs * 3),
  })
  let lost = 0
  cluster.on('node:lost', () => lost++)
  const base = process.memoryUsage.rss()
  let peak = base
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 50)
  const children: ChildProcess[] = []
  try {
    const t0 = performance.now()
    for (let p = 0; p < procs; p++) {
      const count = Math.floor(o.agents / procs) + (p < o.agents % procs ? 1 : 0)
      const child = spawn(process.execPath, [AGENTS_SCRIPT, cluster.address, String(count), `scale${p}`], { stdio: ['ignore', 'ignore', 'inherit'] })
      children.push(child)
    }
    const deadline = Date.now() + 120_000
    while (cluster.nodes().length < o.agents) {
      if (Date.now() > deadline) throw new Error(`only ${cluster.nodes().length} of ${o.agents} agents registered within 120 s`)
      if (children.some((c) => c.exitCode !== null)) throw new Error('an agent process exited before its agents registered')
      await new Promise((r) => setTimeout(r, 10))
    }
    const registerSeconds = (performance.now() - t0) / 1000
    const registeredRss = process.memoryUsage.rss()
    const runs: ScaleRun[] = []
    for (let i = 0; i < o.runs; i++) runs.push(await oneRun(cluster, o.tasks))
    const nodes = cluster.nodes()
    const stats = cluster.stats()
    const withWork = nodes.filter((n) => n.tasksDone > 0).length
    return {
      agents: o.agents,
      procs,
      tasks: o.tasks,
      registerSeconds,
      registered: nodes.length,
      withWork,
      tasksPerSecond: median(runs.map((r) => r.tasksPerSecond)),
      runs,
      lost,
      requeued: stats.requeued,
      driverBaseRssMB: base / 2 ** 20,
      driverRegisteredRssMB: registeredRss / 2 ** 20,
      driverPeakRssMB: Math.max(peak, process.memoryUsage.rss()) / 2 ** 20,
      ok: runs.every((r) => r.ok) && nodes.length === o.agents && withWork === o.agents && lost === 0,
    }
  } finally {
    clearInterval(sampler)
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve()
            const kill = setTimeout(() => c.kill('SIGKILL'), 10_000)
            c.once('exit', () => {
              clearTimeout(kill)
              resolve()
            })
            c.kill('SIGTERM')
          }),
      ),
    )
  }
}
