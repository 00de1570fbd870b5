import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Runner, type SessionView } from '../../lib/agent/runner.js'
import type { WorkerPool } from '../../lib/agent/pool.js'
import type { PoolBatch, PoolResult } from '../../lib/agent/worker.js'
import { encodeTaskBody, readTaskBody, readResultsBody, ResultsWriter } from '../../lib/protocol/bodies.js'
import { createPackr, parseHeader } from '../../lib/protocol/codec.js'
import { MsgType, Status } from '../../lib/protocol/messages.js'
import type { Delivery, Parts } from '../../lib/transport/transport.js'

const packr = createPackr()

interface Running {
  ids: number[]
  names: string[]
  signal: AbortSignal | undefined
  resolve(r: PoolResult): void
  reject(e: Error): void
}

/** A pool whose batches end when the test says so. */
class FakePool implements WorkerPool {
  readonly running: Running[] = []
  closed = false

  watch(): void {}

  run(batch: PoolBatch, options: { signal?: AbortSignal }): Promise<PoolResult> {
    const ids: number[] = []
    const names: string[] = []
    for (const body of batch.bodies) {
      readTaskBody(packr, body, (id, name) => {
        ids.push(id as number)
        names.push(name as string)
      })
    }
    return new Promise((resolve, reject) => this.running.push({ ids, names, signal: options.signal, resolve, reject }))
  }

  runIsolated(batch: PoolBatch, options: { signal?: AbortSignal }): Promise<PoolResult> {
    return this.run(batch, options)
  }

  /** Ends the oldest running batch with a result for each of its tasks. */
  succeed(): void {
    const b = this.running.shift()!
    const w = new ResultsWriter()
    for (const id of b.ids) w.add(id, Status.Ok, id * 10)
    b.resolve({ results: w.take(), count: b.ids.length, elapsedMs: b.ids.length, bad: 0, heapMb: 1, thread: 0 })
  }

  /** The thread of the oldest running batch dies. */
  fail(err: Error): void {
    this.running.shift()!.reject(err)
  }

  async close(): Promise<void> {
    this.closed = true
  }
}

interface Sent {
  type: MsgType
  results: { id: unknown; status: unknown; value: unknown }[]
}

function setup(threads = 1, maxPoolBatch = 100) {
  const pool = new FakePool()
  const session: { id: string | undefined; registration: string; ready: boolean; silent: boolean } & SessionView = {
    id: 's1',
    registration: 'r1',
    ready: true,
    silent: false,
  }
  const stats = { tasksDone: 0, badFrames: 0, batches: 0, threadsLost: 0 }
  const sent: Sent[] = []
  /** The registration each Results frame names. */
  const registrations: (string | undefined)[] = []
  const acked: Delivery[] = []
  const measured: [number, number][] = []
  const send = (parts: Parts) => {
    const h = parseHeader(parts[0])
    assert.ok(h.type === MsgType.Results)
    const results: Sent['results'] = []
    readResultsBody(parts[1], h.count, (id, status, value) => results.push({ id, status, value }))
    sent.push({ type: h.type, results })
    registrations.push(h.registration)
  }
  const runner = new Runner(pool, session, stats, {
    threads,
    maxPoolBatch,
    send,
    measured: (ms, n) => measured.push([ms, n]),
    broker: { ack: (d) => acked.push(...d) },
  })
  return { pool, session, stats, sent, registrations, acked, measured, runner }
}

const frame = (...ids: number[]) => encodeTaskBody(ids.map((id) => ({ id, name: id === 13 ? 'poison' : 'add', args: [id] })))

/** Lets the pool's promise callbacks run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve))

test("frames are grouped up to one thread's share, results go out and the frames are acknowledged", async () => {
  const { pool, runner, sent, acked, stats, measured } = setup(2, 4)
  // Not ready: frames wait.
  runner.push(frame(1, 2), 2, undefined, 'd1')
  runner.push(frame(3, 4), 2, undefined, 'd2')
  runner.push(frame(5), 1, undefined, 'd3')
  // Two threads: the first batch starts as soon as the first frame arrives, at most two per thread run.
  assert.deepEqual(
    pool.running.map((b) => b.ids),
    [[1, 2], [3, 4], [5]],
  )
  assert.equal(runner.batchesRunning, 3)
  assert.equal(runner.queued, 0)
  pool.succeed()
  await settle()
  assert.deepEqual(sent, [
    {
      type: MsgType.Results,
      results: [
        { id: 1, status: Status.Ok, value: 10 },
        { id: 2, status: Status.Ok, value: 20 },
      ],
    },
  ])
  assert.deepEqual(acked, ['d1'])
  assert.deepEqual(measured, [[2, 2]])
  assert.equal(stats.tasksDone, 2)
  assert.equal(stats.batches, 1)
  pool.succeed()
  pool.succeed()
  await runner.drained()
  assert.deepEqual(acked, ['d1', 'd2', 'd3'])
  assert.equal(runner.batchesRunning, 0)
})

test('queued frames are grouped up to the share of one thread, never past maxPoolBatch', async () => {
  const { pool, runner, session } = setup(1, 3)
  session.ready = false
  for (let i = 0; i < 5; i++) runner.push(frame(i), 1, undefined, undefined)
  assert.equal(pool.running.length, 0)
  session.ready = true
  runner.pump()
  // Five tasks queued, one thread, at most three a batch.
  assert.deepEqual(
    pool.running.map((b) => b.ids),
    [
      [0, 1, 2],
      [3, 4],
    ],
  )
})

test('a timed frame runs alone, under its limit, and is reported as timed out', async () => {
  const { pool, runner, sent, acked, stats } = setup(2)
  runner.push(frame(7), 1, 50, 'timed')
  runner.push(frame(8), 1, undefined, 'plain')
  assert.equal(pool.running.length, 2)
  assert.ok(pool.running[0]!.signal instanceof AbortSignal)
  assert.equal(pool.running[1]!.signal, undefined)
  pool.fail(Object.assign(new Error('aborted'), { name: 'AbortError' }))
  await settle()
  assert.equal(stats.threadsLost, 1)
  assert.equal(sent.length, 1)
  const r = sent[0]!.results[0]!
  assert.equal(r.id, 7)
  assert.equal(r.status, Status.Failed)
  assert.equal((r.value as { code: string }).code, 'ERR_TIMEOUT')
  assert.match((r.value as { message: string }).message, /task "add" ran longer than its timeout of 50 ms/)
  assert.deepEqual(acked, ['timed'])
})

test('a batch whose thread died is split into single tasks; only the culprit is reported, the frames acked once all are answered', async () => {
  const { pool, runner, sent, acked, stats, session } = setup(1, 100)
  session.ready = false
  runner.push(frame(11, 12), 2, undefined, 'a')
  runner.push(frame(13, 14), 2, undefined, 'b')
  session.ready = true
  runner.pump()
  // One thread, four tasks queued: one batch of both frames.
  assert.deepEqual(
    pool.running.map((b) => b.ids),
    [[11, 12, 13, 14]],
  )
  pool.fail(new Error('worker exited'))
  await settle()
  assert.equal(stats.threadsLost, 1)
  // Every task now runs alone, in order, two at a time (two batches per thread).
  assert.deepEqual(
    pool.running.map((b) => b.ids),
    [[11], [12]],
  )
  assert.equal(runner.queued, 2)
  pool.succeed()
  pool.succeed()
  await settle()
  assert.deepEqual(
    pool.running.map((b) => b.ids),
    [[13], [14]],
  )
  assert.deepEqual(acked, [])
  pool.fail(Object.assign(new Error('out of memory'), { code: 'ERR_WORKER_OUT_OF_MEMORY' }))
  await settle()
  assert.deepEqual(acked, [])
  pool.succeed()
  await settle()
  assert.deepEqual(acked, ['a', 'b'])
  assert.deepEqual(
    sent.map((s) => s.results.map((r) => r.id)),
    [[11], [12], [13], [14]],
  )
  const culprit = sent[2]!.results[0]!
  assert.equal(culprit.status, Status.Failed)
  assert.equal((culprit.value as { code: string }).code, 'ERR_OUT_OF_MEMORY')
  assert.match((culprit.value as { message: string }).message, /task "poison" ran its worker thread out of memory/)
  assert.equal(stats.tasksDone, 3)
})

test('a single task that crashes its thread is reported as WorkerCrashed', async () => {
  const { pool, runner, sent } = setup(1)
  runner.push(frame(13), 1, undefined, undefined)
  pool.fail(new Error('exit code 7'))
  await settle()
  assert.equal(sent.length, 1)
  const r = sent[0]!.results[0]!
  assert.equal((r.value as { code: string }).code, 'ERR_WORKER_CRASHED')
  assert.match((r.value as { message: string }).message, /task "poison" crashed its worker thread: exit code 7/)
})

test('a batch that ends after its driver was replaced sends nothing and is not split', async () => {
  const { pool, runner, sent, acked, session } = setup(1)
  runner.push(frame(1, 2), 2, undefined, 'x')
  runner.push(frame(3, 4), 2, undefined, 'y')
  session.id = 's2'
  pool.succeed()
  await settle()
  pool.fail(new Error('worker exited'))
  await settle()
  assert.equal(sent.length, 0)
  assert.equal(pool.running.length, 0)
  assert.deepEqual(acked, ['x', 'y'])
})

test('release drops the queued frames and acknowledges them, the driver sends them again (a split batch once its last piece is gone); malformed frames are acked', async () => {
  const { pool, runner, acked, sent, session } = setup(1)
  runner.push(frame(1, 2, 3), 3, undefined, 'run')
  session.ready = false
  runner.push(frame(4), 1, undefined, 'q1')
  runner.push(frame(5), 1, undefined, 'q2')
  assert.equal(runner.queued, 2)
  runner.release()
  // The broker must not hand them out again: the driver knows this agent took them, and sends them again itself.
  assert.deepEqual(acked, ['q1', 'q2'])
  assert.equal(runner.queued, 0)
  runner.discard('bad')
  assert.deepEqual(acked, ['q1', 'q2', 'bad'])
  // The running batch dies: split into three pieces, two start, the third waits.
  session.ready = true
  pool.fail(new Error('worker exited'))
  await settle()
  assert.deepEqual(
    pool.running.map((b) => b.ids),
    [[1], [2]],
  )
  session.ready = false
  runner.release()
  // Pieces are still running: the original frame is not due yet.
  assert.deepEqual(acked, ['q1', 'q2', 'bad'])
  pool.succeed()
  pool.succeed()
  await runner.drained()
  // The last running piece answered: the original frame is acknowledged, once; the dropped piece never ran.
  assert.deepEqual(acked, ['q1', 'q2', 'bad', 'run'])
  assert.deepEqual(
    sent.map((x) => x.results.map((r) => r.id)),
    [[1], [2]],
  )
  assert.equal(pool.running.length, 0)
})

test('a frame pushed with a promise waits until it resolves; frames behind it wait too, and start in order', async () => {
  const { pool, runner, acked } = setup(2, 100)
  let said!: () => void
  const taken = new Promise<void>((resolve) => (said = resolve))
  runner.push(frame(1), 1, undefined, 'a', taken)
  runner.push(frame(2), 1, undefined, 'b', Promise.resolve())
  await settle()
  assert.equal(pool.running.length, 0, 'nothing starts before the first frame may')
  assert.equal(runner.queued, 2)
  said()
  await settle()
  assert.deepEqual(
    pool.running.map((b) => b.ids),
    [[1], [2]],
  )
  pool.succeed()
  pool.succeed()
  await runner.drained()
  assert.deepEqual(acked, ['a', 'b'])
})

test('after stop, a batch that ends says nothing and nothing more starts', async () => {
  const { pool, runner, sent, acked, stats } = setup(1)
  runner.push(frame(1), 1, undefined, 'x')
  const drained = runner.drained()
  runner.stop()
  runner.push(frame(2), 1, undefined, 'y')
  pool.succeed()
  await drained
  assert.equal(sent.length, 0)
  assert.equal(acked.length, 0)
  assert.equal(stats.tasksDone, 0)
  assert.equal(pool.running.length, 0)
})

test('results name the registration their tasks came under, not the one current when they are sent', async () => {
  const { pool, runner, session, sent, registrations } = setup(1, 100)
  runner.push(frame(1), 1, undefined, undefined)
  // The agent lost the driver and registered again with it (same driver session, a new registration).
  session.registration = 'r2'
  runner.push(frame(2), 1, undefined, undefined)
  pool.succeed()
  await settle()
  pool.succeed()
  await runner.drained()
  assert.deepEqual(
    sent.map((s) => s.results.map((r) => r.id)),
    [[1], [2]],
  )
  assert.deepEqual(registrations, ['r1', 'r2'])
  // A thread that dies under a single task: its failure report names the registration too.
  runner.push(frame(3), 1, undefined, undefined)
  session.registration = 'r3'
  pool.fail(new Error('thread died'))
  await runner.drained()
  await settle()
  assert.deepEqual(registrations, ['r1', 'r2', 'r2'])
})
