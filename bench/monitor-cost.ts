/**
 * What monitoring costs the seed benchmark: the same run with the dashboard
 * and /metrics on (a client process reading every live update and scraping
 * /metrics each second) and off, alternated in one process, A B B A ...;
 * medians of several rounds.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { availableParallelism } from 'node:os'
import { Cluster } from '../lib/index.js'
import { BENCH_TASKS, oneRun } from './seed.js'
import { median } from './stats.js'

export interface MonitorCostOptions {
  tasks: number
  rounds: number
  threads?: number
}

export interface MonitorCostResult {
  tasks: number
  rounds: number
  threads: number
  /** Tasks/s of each round, dashboard off and on. */
  off: number[]
  on: number[]
  offMedian: number
  onMedian: number
  /** 1 - on/off: the share of throughput monitoring costs (negative: none measurable). */
  cost: number
  /** Live updates and scrapes the client got, in all. */
  updates: number
  scrapes: number
  ok: boolean
}

const CLIENT = new URL('./monitor-client.js', import.meta.url).pathname

async function measure(on: boolean, tasks: number, threads: number): Promise<{ rate: number; ok: boolean; updates: number; scrapes: number }> {
  await using cluster = await Cluster.start({ tasks: BENCH_TASKS, threads, dashboard: on ? 0 : undefined })
  await oneRun(cluster, Math.min(tasks, 20_000), 'call')
  let client: ReturnType<typeof spawn> | undefined
  if (on) {
    client = spawn(process.execPath, [CLIENT, cluster.dashboardUrl!], { stdio: ['ignore', 'pipe', 'inherit'] })
    await once(client.stdout!, 'data')
  }
  try {
    const r = await oneRun(cluster, tasks, 'call')
    let counts = { updates: 0, scrapes: 0 }
    if (client) {
      const out = once(client.stdout!, 'data')
      client.kill('SIGTERM')
      counts = JSON.parse(String((await out)[0])) as typeof counts
    }
    return { rate: r.tasksPerSecond, ok: r.ok, ...counts }
  } finally {
    if (client && client.exitCode === null) client.kill('SIGKILL')
  }
}

export async function runMonitorCost(o: MonitorCostOptions): Promise<MonitorCostResult> {
  const threads = o.threads ?? availableParallelism()
  const off: number[] = []
  const on: number[] = []
  let ok = true
  let updates = 0
  let scrapes = 0
  for (let i = 0; i < o.rounds; i++) {
    // A B, then B A: neither variant always runs first.
    for (const variant of i % 2 === 0 ? [false, true] : [true, false]) {
      const r = await measure(variant, o.tasks, threads)
      ok &&= r.ok
      updates += r.updates
      scrapes += r.scrapes
      ;(variant ? on : off).push(r.rate)
    }
  }
  const offMedian = median(off)
  const onMedian = median(on)
  return { tasks: o.tasks, rounds: o.rounds, threads, off, on, offMedian, onMedian, cost: 1 - onMedian / offMedian, updates, scrapes, ok }
}
