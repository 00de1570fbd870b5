/** One call at a time, awaited, on loopback: the round trip a single task pays. */
import { Cluster } from '../lib/index.js'
import type { LocalTransport } from '../lib/options.js'
import { BENCH_TASKS } from './seed.js'
import { median, percentile } from './stats.js'

export interface LatencyResult {
  localTransport: LocalTransport
  calls: number
  p50Us: number
  p99Us: number
  meanUs: number
  runs: { p50Us: number; p99Us: number; meanUs: number }[]
}

export async function runLatency(o: { calls: number; runs: number; localTransport: LocalTransport }): Promise<LatencyResult> {
  await using cluster = await Cluster.start({ tasks: BENCH_TASKS, localTransport: o.localTransport })
  for (let k = 0; k < 1000; k++) await cluster.call('add', 1, k)
  const runs: LatencyResult['runs'] = []
  for (let r = 0; r < o.runs; r++) {
    const us = new Float64Array(o.calls)
    for (let k = 0; k < o.calls; k++) {
      const t = performance.now()
      await cluster.call('add', 1, k)
      us[k] = (performance.now() - t) * 1000
    }
    us.sort()
    runs.push({ p50Us: percentile(us, 0.5), p99Us: percentile(us, 0.99), meanUs: us.reduce((a, b) => a + b, 0) / us.length })
  }
  return {
    localTransport: o.localTransport,
    calls: o.calls,
    p50Us: median(runs.map((x) => x.p50Us)),
    p99Us: median(runs.map((x) => x.p99Us)),
    meanUs: median(runs.map((x) => x.meanUs)),
    runs,
  }
}
