/** A worker of the naive baselines (bench/naive.ts): one task per message, as in 2016. */
import { parentPort, workerData } from 'node:worker_threads'
import type { NaiveWorkerData } from './naive.js'

const d = workerData as NaiveWorkerData

function parse(body: string): [number, number] {
  const m = /^\((-?\d+), (-?\d+)\)$/.exec(body)
  if (!m) throw new Error(`naive baseline: malformed task ${JSON.stringify(body)}`)
  return [Number(m[1]), Number(m[2])]
}

if (d.broker === 'zmq') {
  const zmq = await import('zeromq')
  const { pack, unpack } = await import('msgpackr')
  const tasks = new zmq.Pull()
  const results = new zmq.Push()
  tasks.connect(d.tasksQueue)
  results.connect(d.resultsQueue)
  // Told to stop: closing the sockets ends the loop below, and the thread with it.
  parentPort!.once('message', () => {
    tasks.close()
    results.close()
  })
  parentPort!.postMessage('ready')
  try {
    for await (const [m] of tasks) {
      const [a, b] = unpack(m!) as [number, number]
      await results.send(pack(a + b))
    }
  } catch (err) {
    // A send cut short by the close is the end; anything else is a failure of the baseline.
    if (!results.closed) throw err
  }
} else if (d.broker === 'redis') {
  const { Redis } = await import('ioredis')
  const r = new Redis(d.url, { lazyConnect: true, retryStrategy: () => null })
  await r.connect()
  parentPort!.postMessage('ready')
  for (;;) {
    const got = await r.blpop(d.tasksQueue, 0)
    if (!got) continue
    const [a, b] = parse(got[1])
    await r.lpush(d.resultsQueue, String(a + b))
  }
} else {
  const { connect } = await import('amqplib')
  const conn = await connect(d.url, { noDelay: true })
  const ch = await conn.createChannel()
  const out = await conn.createChannel()
  await ch.assertQueue(d.tasksQueue, { durable: true })
  await ch.prefetch(1)
  await ch.consume(d.tasksQueue, (m) => {
    if (!m) return
    const [a, b] = parse(m.content.toString())
    out.sendToQueue(d.resultsQueue, Buffer.from(String(a + b)), { persistent: true })
    ch.ack(m)
  })
  parentPort!.postMessage('ready')
}
