/**
 * Reduction on the agents against reduction on the driver, in one run: a
 * Monte Carlo estimate of π from `samples` points, in tasks of `perTask`
 * points each that return their hits. `reduce` sums the hits on the agents
 * (one partial per chunk); `map` brings every task's hits back and the
 * driver sums them. Both draw the same points, so both counts must agree
 * exactly. Reported: seconds, samples/s, task frames sent and Results
 * frames and result values received by the driver.
 */
import { availableParallelism } from 'node:os'
import { Cluster } from '../lib/index.js'
import { median } from './stats.js'

const REDUCE_BENCH_TASKS = new URL('./reduce-tasks.js', import.meta.url)

export interface ReduceBenchOptions {
  samples: number
  perTask: number
  runs: number
  threads?: number
  /** Inputs per chunk of the reduce (default: auto). */
  chunk?: number
}

export interface ReduceBenchRun {
  seconds: number
  samplesPerSecond: number
  hits: number
  /** Task frames the driver sent. */
  taskFrames: number
  /** Results frames the driver received. */
  resultFrames: number
  /** Result values the driver received (one per task for map, one per chunk for reduce). */
  resultValues: number
}

export interface ReduceBenchSide extends ReduceBenchRun {
  runs: ReduceBenchRun[]
}

export interface ReduceBenchResult {
  samples: number
  perTask: number
  tasks: number
  threads: number
  reduce: ReduceBenchSide
  map: ReduceBenchSide
  /** reduce samples/s ÷ map samples/s, median of the per-round ratios. */
  speedup: number
  pi: number
  ok: boolean
}

function* inputs(tasks: number, perTask: number, samples: number): Generator<[number, number]> {
  for (let i = 0; i < tasks; i++) yield [i + 1, Math.min(perTask, samples - i * perTask)]
}

async function measure(cluster: Cluster, o: ReduceBenchOptions, tasks: number, via: 'reduce' | 'map'): Promise<ReduceBenchRun> {
  const before = cluster.stats()
  const start = performance.now()
  let hits = 0
  if (via === 'reduce') {
    hits = await cluster.reduce('darts', inputs(tasks, o.perTask, o.samples), 'sum', 0, { total: tasks, chunk: o.chunk })
  } else {
    for await (const h of cluster.map<number>('darts', inputs(tasks, o.perTask, o.samples))) hits += h
  }
  const seconds = (performance.now() - start) / 1000
  const after = cluster.stats()
  return {
    seconds,
    samplesPerSecond: Math.round(o.samples / seconds),
    hits,
    taskFrames: after.taskFrames - before.taskFrames,
    resultFrames: after.resultFrames - before.resultFrames,
    resultValues: after.tasksSucceeded - before.tasksSucceeded,
  }
}

function side(runs: ReduceBenchRun[]): ReduceBenchSide {
  const seconds = median(runs.map((r) => r.seconds))
  const mid = runs.find((r) => r.seconds === seconds) ?? runs[0]!
  return { ...mid, seconds, samplesPerSecond: median(runs.map((r) => r.samplesPerSecond)), runs }
}

/** One warm-up of each, then `runs` rounds of reduce and map, alternated. */
export async function runReduceBench(o: ReduceBenchOptions): Promise<ReduceBenchResult> {
  const threads = o.threads ?? availableParallelism()
  const tasks = Math.ceil(o.samples / o.perTask)
  await using cluster = await Cluster.start({ tasks: REDUCE_BENCH_TASKS, threads })
  await measure(cluster, { ...o, samples: Math.min(o.samples, 100 * o.perTask) }, Math.min(tasks, 100), 'reduce')
  await measure(cluster, { ...o, samples: Math.min(o.samples, 100 * o.perTask) }, Math.min(tasks, 100), 'map')
  const reduce: ReduceBenchRun[] = []
  const map: ReduceBenchRun[] = []
  for (let i = 0; i < o.runs; i++) {
    reduce.push(await measure(cluster, o, tasks, 'reduce'))
    map.push(await measure(cluster, o, tasks, 'map'))
  }
  const speedup = median(reduce.map((r, i) => r.samplesPerSecond / map[i]!.samplesPerSecond))
  const hits = reduce[0]!.hits
  const ok = [...reduce, ...map].every((r) => r.hits === hits) && reduce.every((r) => r.resultValues <= r.taskFrames)
  return { samples: o.samples, perTask: o.perTask, tasks, threads, reduce: side(reduce), map: side(map), speedup, pi: (4 * hits) / o.samples, ok }
}

export function reduceBenchLines(r: ReduceBenchResult): string[] {
  const n = (x: number) => Math.round(x).toLocaleString('en-US')
  const row = (name: string, s: ReduceBenchSide) =>
    `  ${name.padEnd(26)} ${s.seconds.toFixed(3).padStart(7)} s ${n(s.samplesPerSecond).padStart(13)} samples/s  task frames ${n(s.taskFrames).padStart(7)}  result frames ${n(s.resultFrames).padStart(7)}  result values ${n(s.resultValues).padStart(9)}`
  return [
    `reduce benchmark — Monte Carlo π from ${n(r.samples)} samples, ${n(r.tasks)} tasks of ${n(r.perTask)} samples, ${r.threads} threads, medians of ${r.reduce.runs.length} runs`,
    row('reduce (on the agents)', r.reduce),
    row('map + sum on the driver', r.map),
    `reduce ÷ map: ${r.speedup.toFixed(2)}× (goal ≥ 1.5×); result frames per task frame: reduce ${(r.reduce.resultFrames / r.reduce.taskFrames).toFixed(2)}, map ${(r.map.resultFrames / r.map.taskFrames).toFixed(2)}; π ≈ ${r.pi.toFixed(5)}; check ${r.ok ? 'ok (same hits every run)' : 'FAILED'}`,
  ]
}
