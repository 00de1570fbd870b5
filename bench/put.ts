/**
 * Shared inputs: one array used by many tasks on several agents, passed with
 * each task against put once (`cluster.put`). Reports what crossed the wire
 * (the driver's transport counters) and the throughput of each way.
 */
import { Cluster } from '../lib/index.js'
import type { TransportKind } from '../lib/transport/options.js'
import { BENCH_TASKS } from './seed.js'
import { median } from './stats.js'

export interface PutRun {
  tasksPerSecond: number
  /** Bytes the driver sent during the run (Put messages, task frames, credit, heartbeats). */
  bytesOut: number
}

export interface PutResult {
  design: TransportKind
  bytes: number
  agents: number
  tasks: number
  /** Tasks of the run that passes the array with each task (fewer: each carries the whole array). */
  copyTasks: number
  put: PutRun & { runs: PutRun[]; bytesPerTask: number }
  copy: PutRun & { runs: PutRun[] }
  /** put throughput over copy throughput. */
  speedup: number
  /** put's bytes on the wire within bytes × agents × 1.1 + 64 bytes per task. */
  ok: boolean
}

export async function runPut(o: {
  bytes: number
  tasks: number
  copyTasks: number
  agents: number
  runs: number
  transport?: TransportKind
  redisUrl?: string
  amqpUrl?: string
}): Promise<PutResult> {
  const design = o.transport ?? 'zmq'
  await using cluster = await Cluster.start({
    tasks: BENCH_TASKS,
    localAgents: o.agents,
    threads: 1,
    localTransport: 'tcp',
    transport: design,
    redisUrl: o.redisUrl,
    amqpUrl: o.amqpUrl,
  })
  const values = new Float64Array(Math.floor(o.bytes / 8))
  for (let i = 0; i < values.length; i++) values[i] = i
  const measure = async (tasks: number, arg: () => Promise<unknown>, after: () => Promise<void>): Promise<PutRun> => {
    const before = cluster.stats().transport.bytesOut
    const t0 = performance.now()
    const a = await arg()
    const out = await Promise.all(Array.from({ length: tasks }, (_, i) => cluster.call<number>('pick', a, i)))
    const seconds = (performance.now() - t0) / 1000
    await after()
    if (out[tasks - 1] !== (tasks - 1) % values.length) throw new Error('wrong result')
    return { tasksPerSecond: Math.round(tasks / seconds), bytesOut: cluster.stats().transport.bytesOut - before }
  }
  // Warm-up of both paths.
  await measure(
    200,
    async () => values,
    async () => {},
  )
  const putRuns: PutRun[] = []
  const copyRuns: PutRun[] = []
  for (let r = 0; r < o.runs; r++) {
    let handle: { release(): Promise<void> } | undefined
    // The put is part of the run, and its release after: each run sends the value to the nodes again.
    putRuns.push(
      await measure(
        o.tasks,
        async () => (handle = await cluster.put(values)),
        async () => handle?.release(),
      ),
    )
    copyRuns.push(
      await measure(
        o.copyTasks,
        async () => values,
        async () => {},
      ),
    )
  }
  const put = { tasksPerSecond: median(putRuns.map((x) => x.tasksPerSecond)), bytesOut: median(putRuns.map((x) => x.bytesOut)) }
  const copy = { tasksPerSecond: median(copyRuns.map((x) => x.tasksPerSecond)), bytesOut: median(copyRuns.map((x) => x.bytesOut)) }
  const shipped = values.byteLength * o.agents
  return {
    design,
    bytes: values.byteLength,
    agents: o.agents,
    tasks: o.tasks,
    copyTasks: o.copyTasks,
    put: { ...put, runs: putRuns, bytesPerTask: (put.bytesOut - shipped) / o.tasks },
    copy: { ...copy, runs: copyRuns },
    speedup: put.tasksPerSecond / copy.tasksPerSecond,
    ok: put.bytesOut <= shipped * 1.1 + 64 * o.tasks,
  }
}
