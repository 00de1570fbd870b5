/**
 * Ray's microbenchmark shapes through the public API: tasks and actor calls
 * one at a time and with 1,000 in flight, and a task with a 1 MB argument.
 * Each shape is one small function of the cluster; Ray 2.48's published
 * figures (m5.16xlarge, 64 vCPU) are printed beside ours as reference rows.
 */
import { availableParallelism, cpus, loadavg } from 'node:os'
import { Cluster, type ActorRef } from '../lib/index.js'
import { BENCH_TASKS } from './seed.js'
import { median } from './stats.js'
import type { Pinger } from './tasks.js'

export interface ShapesOptions {
  /** Calls per measured run of the shapes with 1,000 in flight. */
  calls: number
  /** Calls per measured run of the one-at-a-time shapes. */
  syncCalls: number
  /** Tasks per measured run of the 1 MB argument shape. */
  mbTasks: number
  agents: number
  /** Threads per agent (default: cores / agents). */
  threads?: number
  runs: number
}

export interface ShapeRow {
  shape: string
  /** Median of the runs. */
  callsPerSecond: number
  runs: number[]
}

export interface ShapesResult {
  agents: number
  threads: number
  /** Actors of `n_n_actor_calls_async`: one per thread of every agent. */
  actors: number
  inFlight: number
  machine: string
  /** The 1-minute load average before and after the runs. */
  load: [number, number]
  rows: ShapeRow[]
  reference: { source: string; rows: { shape: string; callsPerSecond: number }[] }
}

/** Calls kept in flight by the async shapes, as in Ray's. */
const IN_FLIGHT = 1000
const MB_FLOATS = 131_072

/** Ray 2.48 microbenchmark, published figures (release logs, m5.16xlarge, 64 vCPU). */
const RAY_REFERENCE = {
  source: 'Ray 2.48 microbenchmark, m5.16xlarge (64 vCPU)',
  rows: [
    { shape: 'single_client_tasks_sync', callsPerSecond: 981 },
    { shape: 'single_client_tasks_async', callsPerSecond: 8041 },
    { shape: '1_1_actor_calls_sync', callsPerSecond: 2012 },
    { shape: '1_1_actor_calls_async', callsPerSecond: 8664 },
    { shape: 'n_n_actor_calls_async', callsPerSecond: 27_376 },
  ],
}

interface Bench {
  cluster: Cluster
  o: ShapesOptions
  one: ActorRef<Pinger>
  many: ActorRef<Pinger>[]
}

/** A shape: makes `calls` of its calls once. */
interface Shape {
  name: string
  calls(o: ShapesOptions): number
  run(b: Bench, calls: number): Promise<void>
}

/** Runs `calls` calls of `call`, one at a time. */
async function oneAtATime(calls: number, call: (k: number) => Promise<unknown>): Promise<void> {
  for (let k = 0; k < calls; k++) await call(k)
}

/** Runs `calls` calls of `call` in rounds of {@link IN_FLIGHT} awaited together (Ray's async shapes). */
async function inFlight(calls: number, call: (k: number) => Promise<unknown>): Promise<void> {
  const round = new Array<Promise<unknown>>(IN_FLIGHT)
  for (let k = 0; k < calls;) {
    const n = Math.min(IN_FLIGHT, calls - k)
    round.length = n
    for (let i = 0; i < n; i++, k++) round[i] = call(k)
    await Promise.all(round)
  }
}

const SHAPES: Shape[] = [
  { name: 'single_client_tasks_sync', calls: (o) => o.syncCalls, run: (b, n) => oneAtATime(n, (k) => b.cluster.call('add', 1, k)) },
  { name: 'single_client_tasks_async', calls: (o) => o.calls, run: (b, n) => inFlight(n, (k) => b.cluster.call('add', 1, k)) },
  { name: '1_1_actor_calls_sync', calls: (o) => o.syncCalls, run: (b, n) => oneAtATime(n, () => b.one.ping()) },
  { name: '1_1_actor_calls_async', calls: (o) => o.calls, run: (b, n) => inFlight(n, () => b.one.ping()) },
  { name: 'n_n_actor_calls_async', calls: (o) => o.calls, run: (b, n) => inFlight(n, (k) => b.many[k % b.many.length]!.ping()) },
  { name: 'tasks_1mb_arg', calls: (o) => o.mbTasks, run: (b, n) => mbArgument(b, n) },
  { name: 'tasks_1mb_arg_with_put', calls: (o) => o.mbTasks, run: (b, n) => mbArgumentWithPut(b, n) },
]

/** The same 1 MB Float64Array passed with each task, 1,000 tasks in flight. */
function mbArgument(b: Bench, n: number): Promise<void> {
  const xs = new Float64Array(MB_FLOATS)
  return inFlight(n, () => b.cluster.call('byteLength', xs))
}

/**
 * The 1 MB array stored once with `cluster.put` (inside the measured time), its
 * handle passed with each of `n` tasks, 1,000 in flight, then released.
 */
async function mbArgumentWithPut(b: Bench, n: number): Promise<void> {
  const shared = await b.cluster.put(new Float64Array(MB_FLOATS))
  await inFlight(n, () => b.cluster.call('byteLength', shared))
  await shared.release()
}

async function measure(b: Bench, shape: Shape): Promise<ShapeRow> {
  const calls = shape.calls(b.o)
  // One unmeasured run at a tenth of the size lets the JIT settle.
  await shape.run(b, Math.max(1, Math.ceil(calls / 10)))
  const runs: number[] = []
  for (let r = 0; r < b.o.runs; r++) {
    const start = performance.now()
    await shape.run(b, calls)
    runs.push(Math.round(calls / ((performance.now() - start) / 1000)))
  }
  return { shape: shape.name, callsPerSecond: median(runs), runs }
}

export async function runShapes(o: ShapesOptions, log: (line: string) => void = () => {}): Promise<ShapesResult> {
  const threads = o.threads ?? Math.max(1, Math.floor(availableParallelism() / o.agents))
  const load0 = loadavg()[0]!
  await using cluster = await Cluster.start({ tasks: BENCH_TASKS, localAgents: o.agents, threads })
  const actors = o.agents * threads
  const one = await cluster.spawn<Pinger>('Pinger')
  const many = await Promise.all(Array.from({ length: actors }, () => cluster.spawn<Pinger>('Pinger')))
  const b: Bench = { cluster, o, one, many }
  const rows: ShapeRow[] = []
  for (const shape of SHAPES) {
    const row = await measure(b, shape)
    log(`${row.shape}: ${row.callsPerSecond.toLocaleString('en-US')} calls/s (runs ${row.runs.join(', ')})`)
    rows.push(row)
  }
  return {
    agents: o.agents,
    threads,
    actors,
    inFlight: IN_FLIGHT,
    machine: `${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${availableParallelism()} cores`,
    load: [load0, loadavg()[0]!],
    rows,
    reference: RAY_REFERENCE,
  }
}

/** The result as a Markdown table: our rows, then Ray's reference rows. */
export function shapesMarkdown(r: ShapesResult): string {
  const fmt = (x: number) => Math.round(x).toLocaleString('en-US')
  return [
    `Ray's microbenchmark shapes — ${r.agents} agent(s) × ${r.threads} threads, ${r.inFlight} calls in flight for the async shapes, n = ${r.actors} actors`,
    `Machine: ${r.machine}; load ${r.load[0].toFixed(2)} before, ${r.load[1].toFixed(2)} after`,
    '',
    '| shape | calls/s | Ray 2.48 calls/s |',
    '| --- | ---: | ---: |',
    ...r.rows.map((row) => {
      const ray = r.reference.rows.find((x) => x.shape === row.shape)
      return `| ${row.shape} | ${fmt(row.callsPerSecond)} | ${ray ? fmt(ray.callsPerSecond) : '—'} |`
    }),
    '',
    `Reference (${r.reference.source}):`,
    ...r.reference.rows.map((x) => `  ${x.shape}: ${fmt(x.callsPerSecond)} calls/s`),
  ].join('\n')
}
