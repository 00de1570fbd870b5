/**
 * What monitoring costs the seed benchmark. Two clusters live side by side in
 * one process: one plain, one with the dashboard and /metrics on and a client
 * process reading every live update and scraping /metrics each second (as a
 * browser and Prometheus would). Runs alternate between them, A B B A ...,
 * and the medians are compared: same process, same JIT, same moment.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { availableParallelism } from 'node:os'
import { Cluster } from '../lib/index.js'
import { BENCH_TASKS, oneRun } from './seed.js'
import { median } from './stats.js'

export interface MonitorCostOptions {
  tasks: number
  rounds: number
  threads?: number
  /** One call() per task (the seed benchmark), or one map(), which keeps the event loop free to serve pages during the run. */
  via?: 'call' | 'map'
}

export interface MonitorCostResult {
  tasks: number
  via: 'call' | 'map'
  rounds: number
  threads: number
  /** Tasks/s of each round, dashboard off and on. */
  off: number[]
  on: number[]
  offMedian: number
  onMedian: number
  /** 1 - on/off: the share of throughput monitoring costs (negative: none measurable). */
  cost: number
  /** Median over rounds of on/off within the round (the two runs of a round are adjacent in time). */
  pairedRatio: number
  /** CPU time of the whole process (driver and agent threads) per task, in µs: medians off and on. */
  cpuUsPerTaskOff: number
  cpuUsPerTaskOn: number
  /** Live updates and scrapes the client got, in all. */
  updates: number
  scrapes: number
  ok: boolean
}

const CLIENT = new URL('./monitor-client.js', import.meta.url).pathname

async function measure(cluster: Cluster, tasks: number, via: 'call' | 'map'): Promise<{ rate: number; cpuUs: number; ok: boolean }> {
  const cpu = process.cpuUsage()
  const r = await oneRun(cluster, tasks, via)
  const used = process.cpuUsage(cpu)
  return { rate: r.tasksPerSecond, cpuUs: (used.user + used.system) / tasks, ok: r.ok }
}

export async function runMonitorCost(o: MonitorCostOptions): Promise<MonitorCostResult> {
  const threads = o.threads ?? availableParallelism()
  const via = o.via ?? 'call'
  await using plain = await Cluster.start({ tasks: BENCH_TASKS, threads })
  await using watched = await Cluster.start({ tasks: BENCH_TASKS, threads, dashboard: 0 })
  let client: ChildProcess | undefined = spawn(process.execPath, [CLIENT, watched.dashboardUrl!], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    await once(client.stdout!, 'data')
    for (const c of [plain, watched]) await oneRun(c, Math.min(o.tasks, 20_000), via)
    const off: { rate: number; cpuUs: number }[] = []
    const on: { rate: number; cpuUs: number }[] = []
    let ok = true
    for (let i = 0; i < o.rounds; i++) {
      // A B, then B A: neither side always runs first.
      for (const side of i % 2 === 0 ? ['off', 'on'] : ['on', 'off']) {
        const r = await measure(side === 'on' ? watched : plain, o.tasks, via)
        ok &&= r.ok
        ;(side === 'on' ? on : off).push(r)
      }
    }
    const out = once(client.stdout!, 'data')
    client.kill('SIGTERM')
    const counts = JSON.parse(String((await out)[0])) as { updates: number; scrapes: number }
    client = undefined
    const offMedian = median(off.map((r) => r.rate))
    const onMedian = median(on.map((r) => r.rate))
    return {
      tasks: o.tasks,
      via,
      rounds: o.rounds,
      threads,
      off: off.map((r) => r.rate),
      on: on.map((r) => r.rate),
      offMedian,
      onMedian,
      cost: 1 - onMedian / offMedian,
      pairedRatio: median(on.map((r, i) => r.rate / off[i]!.rate)),
      cpuUsPerTaskOff: median(off.map((r) => r.cpuUs)),
      cpuUsPerTaskOn: median(on.map((r) => r.cpuUs)),
      ...counts,
      ok,
    }
  } finally {
    client?.kill('SIGKILL')
  }
}
