/** map() over a lazily generated input of many elements: the driver's memory must stay bounded. */
import { Cluster } from '../lib/index.js'
import { BENCH_TASKS, expectedSum } from './seed.js'

export interface MapMemoryResult {
  inputs: number
  seconds: number
  tasksPerSecond: number
  peakRssMB: number
  ok: boolean
}

export async function runMapMemory(o: { inputs: number; progress?: boolean }): Promise<MapMemoryResult> {
  await using cluster = await Cluster.start({ tasks: BENCH_TASKS })
  function* inputs() {
    for (let k = 0; k < o.inputs; k++) yield [1, k]
  }
  const t = performance.now()
  let sum = 0
  let count = 0
  for await (const r of cluster.map<number>('add', inputs(), { ordered: false, progress: o.progress ?? false, total: o.inputs })) {
    sum += r
    count++
  }
  const seconds = (performance.now() - t) / 1000
  // maxRSS is the process's peak resident set, in KiB: it includes the agent's threads in this process.
  const peakRssMB = process.resourceUsage().maxRSS / 1024
  return { inputs: o.inputs, seconds, tasksPerSecond: Math.round(o.inputs / seconds), peakRssMB, ok: count === o.inputs && sum === expectedSum(o.inputs) }
}
