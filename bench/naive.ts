/**
 * The baseline: the seed's 2016 design, one message per task, no batching.
 * The driver pushes each task `(1, k)` as its own message and awaits each
 * push as the 2016 clients did; workers (one thread each, one broker
 * connection each) take one task, add the pair and push one result; the driver
 * takes the results one by one and checks count and sum. It talks to the
 * broker directly (ioredis, amqplib) and does not use this package's runtime:
 * it is what `redis` and `amqp` are compared against, in the same run.
 *
 * `zmq` is the seed's brokerless ZeroMQ design: a PUSH socket fanning tasks
 * out to the workers' PULL sockets and a PULL socket collecting their
 * results, one msgpack message per task (zeromq.js + msgpackr), over ipc in a
 * fresh private directory (no port another user could reach). It is what
 * `zmq` is compared against.
 */
import { Worker } from 'node:worker_threads'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expectedSum } from './seed.js'
import { median } from './stats.js'

export type NaiveBroker = 'redis' | 'amqp' | 'zmq'

export interface NaiveOptions {
  broker: NaiveBroker
  tasks: number
  workers: number
  runs: number
  redisUrl: string
  amqpUrl: string
}

export interface NaiveRun {
  submitSeconds: number
  roundTripSeconds: number
  tasksPerSecond: number
  ok: boolean
}

export interface NaiveResult extends NaiveRun {
  design: `naive-${NaiveBroker}`
  tasks: number
  workers: number
  runs: NaiveRun[]
}

export interface NaiveWorkerData {
  broker: NaiveBroker
  /** The broker's URL (unused by zmq). */
  url: string
  /** The tasks queue; for zmq, the endpoint of the driver's PUSH socket. */
  tasksQueue: string
  /** The results queue; for zmq, the endpoint of the driver's PULL socket. */
  resultsQueue: string
}

const WORKER = new URL('./naive-worker.js', import.meta.url)

function summarize(o: NaiveOptions, runs: NaiveRun[]): NaiveResult {
  const roundTripSeconds = median(runs.map((r) => r.roundTripSeconds))
  return {
    design: `naive-${o.broker}`,
    tasks: o.tasks,
    workers: o.workers,
    submitSeconds: median(runs.map((r) => r.submitSeconds)),
    roundTripSeconds,
    tasksPerSecond: Math.round(o.tasks / roundTripSeconds),
    ok: runs.every((r) => r.ok),
    runs,
  }
}

/** One run's figures, from its start, the end of its submissions, and the results counted and summed (now is its end). */
function measured(tasks: number, start: number, submitted: number, count: number, sum: number): NaiveRun {
  const seconds = (performance.now() - start) / 1000
  return {
    submitSeconds: (submitted - start) / 1000,
    roundTripSeconds: seconds,
    tasksPerSecond: Math.round(tasks / seconds),
    ok: count === tasks && sum === expectedSum(tasks),
  }
}

async function withWorkers<T>(data: NaiveWorkerData, n: number, body: () => Promise<T>): Promise<T> {
  const workers = Array.from({ length: n }, () => new Worker(WORKER, { workerData: data }))
  try {
    await Promise.all(workers.map((w) => once(w, 'message')))
    return await body()
  } finally {
    // ZeroMQ's threads close their sockets and end on their own: terminating them under live sockets aborts the process.
    if (data.broker === 'zmq') await Promise.all(workers.map((w) => (w.postMessage('stop'), once(w, 'exit'))))
    else await Promise.all(workers.map((w) => w.terminate()))
  }
}

async function runRedis(o: NaiveOptions): Promise<NaiveResult> {
  const { Redis } = await import('ioredis')
  const ns = `ac-naive:${randomBytes(6).toString('hex')}`
  const data: NaiveWorkerData = { broker: 'redis', url: o.redisUrl, tasksQueue: `${ns}:tasks`, resultsQueue: `${ns}:results` }
  const r = new Redis(o.redisUrl, { lazyConnect: true, retryStrategy: () => null })
  await r.connect()
  try {
    return await withWorkers(data, o.workers, async () => {
      const runs: NaiveRun[] = []
      for (let i = 0; i < o.runs; i++) {
        const start = performance.now()
        for (let k = 0; k < o.tasks; k++) await r.lpush(data.tasksQueue, `(1, ${k})`)
        const submitted = performance.now()
        let sum = 0
        let count = 0
        for (let k = 0; k < o.tasks; k++) {
          const got = await r.blpop(data.resultsQueue, 30)
          if (!got) break
          sum += Number(got[1])
          count++
        }
        runs.push(measured(o.tasks, start, submitted, count, sum))
      }
      return summarize(o, runs)
    })
  } finally {
    await r.del(data.tasksQueue, data.resultsQueue)
    r.disconnect()
  }
}

async function runAmqp(o: NaiveOptions): Promise<NaiveResult> {
  const { connect } = await import('amqplib')
  const ns = `ac-naive.${randomBytes(6).toString('hex')}`
  const data: NaiveWorkerData = { broker: 'amqp', url: o.amqpUrl, tasksQueue: `${ns}.tasks`, resultsQueue: `${ns}.results` }
  // Nagle off here too: with it on, every round trip waits ~40 ms for the delayed ACK and the baseline would measure that.
  const conn = await connect(o.amqpUrl, { noDelay: true })
  try {
    const ch = await conn.createChannel()
    await ch.assertQueue(data.tasksQueue, { durable: true })
    await ch.assertQueue(data.resultsQueue, { durable: true })
    return await withWorkers(data, o.workers, async () => {
      const runs: NaiveRun[] = []
      for (let i = 0; i < o.runs; i++) {
        const start = performance.now()
        for (let k = 0; k < o.tasks; k++) {
          if (!ch.sendToQueue(data.tasksQueue, Buffer.from(`(1, ${k})`), { persistent: true })) await once(ch, 'drain')
        }
        const submitted = performance.now()
        const rc = await conn.createChannel()
        await rc.prefetch(1)
        let sum = 0
        let count = 0
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`naive amqp: only ${count} of ${o.tasks} results in 120 s`)), 120_000)
          rc.consume(data.resultsQueue, (m) => {
            if (!m) return
            rc.ack(m)
            sum += Number(m.content.toString())
            if (++count === o.tasks) {
              clearTimeout(timer)
              resolve()
            }
          }).catch(reject)
        })
        const run = measured(o.tasks, start, submitted, count, sum)
        await rc.close()
        runs.push(run)
      }
      return summarize(o, runs)
    })
  } finally {
    const ch = await conn.createChannel()
    await ch.deleteQueue(data.tasksQueue).catch(() => {})
    await ch.deleteQueue(data.resultsQueue).catch(() => {})
    await conn.close().catch(() => {})
  }
}

async function runZmq(o: NaiveOptions): Promise<NaiveResult> {
  const zmq = await import('zeromq')
  const { pack, unpack } = await import('msgpackr')
  // mkdtemp makes it 0700 under a name no one could have planted: only this user reaches the sockets.
  const dir = await mkdtemp(join(tmpdir(), 'ac-naive-zmq-'))
  const data: NaiveWorkerData = { broker: 'zmq', url: '', tasksQueue: `ipc://${join(dir, 'tasks')}`, resultsQueue: `ipc://${join(dir, 'results')}` }
  const push = new zmq.Push()
  const pull = new zmq.Pull()
  try {
    await push.bind(data.tasksQueue)
    await pull.bind(data.resultsQueue)
    return await withWorkers(data, o.workers, async () => {
      const runs: NaiveRun[] = []
      for (let i = 0; i < o.runs; i++) {
        const start = performance.now()
        let sum = 0
        let count = 0
        const collected = (async () => {
          while (count < o.tasks) {
            const [m] = await pull.receive()
            sum += unpack(m!) as number
            count++
          }
        })()
        for (let k = 0; k < o.tasks; k++) await push.send(pack([1, k]))
        const submitted = performance.now()
        let timer: NodeJS.Timeout | undefined
        await Promise.race([
          collected,
          new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`naive zmq: only ${count} of ${o.tasks} results in 120 s`)), 120_000))),
        ]).finally(() => clearTimeout(timer))
        runs.push(measured(o.tasks, start, submitted, count, sum))
      }
      return summarize(o, runs)
    })
  } finally {
    push.close()
    pull.close()
    await rm(dir, { recursive: true, force: true })
  }
}

/** Runs the naive one-message-per-task baseline on one broker (or brokerless ZeroMQ). */
export async function runNaive(o: NaiveOptions): Promise<NaiveResult> {
  if (o.broker === 'zmq') return runZmq(o)
  return o.broker === 'redis' ? runRedis(o) : runAmqp(o)
}
