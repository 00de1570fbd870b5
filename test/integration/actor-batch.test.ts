/**
 * Actor calls travel in batches: every call to the actors of one host thread
 * in one frame reaches the thread in one message. These tests make calls in
 * one tick (one frame) to several actors on a single thread and check what
 * batching must not change: each actor's mailbox order, where async methods
 * interleave, the answer of every call when the thread dies, and that a bad
 * call answers only itself.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { ActorLostError, ActorStoppedError, Cluster, SerializationError, UnknownMethodError, WorkerCrashedError } from '../../lib/index.js'
import type * as Tasks from '../fixtures/tasks.js'
import { FIXTURE_TASKS, within } from '../helpers.js'

let cluster: Cluster

before(async () => {
  // One thread: every actor shares it, so one frame is one batch.
  cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1 })
})
after(async () => {
  await cluster.close()
})

const prefixSums = (n: number, start: number) => Array.from({ length: n }, (_, k) => start + ((k + 1) * (k + 2)) / 2)

test('calls to several actors on one thread in one frame keep each actor’s order', async () => {
  const counters = await Promise.all([0, 1000, 2000].map((start) => cluster.spawn<Tasks.Counter>('Counter', start)))
  const calls: Promise<number>[][] = counters.map(() => [])
  // inc(k) returns the running sum: any reordering within an actor changes the sequence.
  for (let k = 1; k <= 300; k++) for (const [i, c] of counters.entries()) calls[i]!.push(c.inc(k))
  const results = await within(Promise.all(calls.map((c) => Promise.all(c))), 20_000, 'the batched calls')
  assert.deepEqual(results, [prefixSums(300, 0), prefixSums(300, 1000), prefixSums(300, 2000)])
  await Promise.all(counters.map((c) => c.stop()))
})

test('a frame for actors on two threads reaches each thread with its own messages, in order', async (t) => {
  const c = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2 })
  t.after(() => c.close())
  const starts = [0, 1000, 2000, 3000]
  const counters = await Promise.all(starts.map((start) => c.spawn<Tasks.Counter>('Counter', start)))
  const calls: Promise<number>[][] = counters.map(() => [])
  for (let k = 1; k <= 200; k++) for (const [i, x] of counters.entries()) calls[i]!.push(x.inc(k))
  const results = await within(Promise.all(calls.map((x) => Promise.all(x))), 20_000, 'the batched calls')
  assert.deepEqual(
    results,
    starts.map((start) => prefixSums(200, start)),
  )
})

test('async methods of actors on one thread interleave only at their awaits', async () => {
  const [a, b] = await Promise.all(['a', 'b'].map((name) => cluster.spawn<Tasks.Recorder>('Recorder', name)))
  await a!.trace()
  const answers = await within(
    Promise.all([a!.hold('x'), a!.note('y'), b!.note('p'), b!.release(), b!.note('q'), a!.note('z')]),
    10_000,
    'the calls of one frame',
  )
  // release() returns nothing: its answer is undefined, as a task's would be.
  assert.deepEqual(answers, ['x', 'y', 'p', undefined, 'q', 'z'])
  // a waits in hold: its later messages wait behind it; b runs meanwhile, and its release lets a go on.
  assert.deepEqual(await a!.trace(), ['a:x:start', 'b:p', 'b:release', 'b:q', 'a:x:end', 'a:y', 'a:z'])
  await Promise.all([a!.stop(), b!.stop()])
})

test('bad calls in a batch answer only themselves', async () => {
  const [a, b] = await Promise.all(['a', 'b'].map((name) => cluster.spawn<Tasks.Recorder>('Recorder', name)))
  await a!.trace()
  const missing = (a as unknown as { missing(): Promise<void> }).missing()
  const settled = await Promise.allSettled([a!.note('1'), missing, a!.fn(), b!.stop(), b!.note('after stop'), a!.note('2')])
  assert.deepEqual(
    settled.map((s) => (s.status === 'fulfilled' ? s.value : (s.reason as { code: string }).code)),
    ['1', 'ERR_UNKNOWN_METHOD', 'ERR_SERIALIZATION', undefined, 'ERR_ACTOR_STOPPED', '2'],
  )
  assert.ok((settled[1] as PromiseRejectedResult).reason instanceof UnknownMethodError)
  assert.ok((settled[2] as PromiseRejectedResult).reason instanceof SerializationError)
  assert.ok((settled[4] as PromiseRejectedResult).reason instanceof ActorStoppedError)
  assert.deepEqual(await a!.trace(), ['a:1', 'a:2'])
  await a!.stop()
})

test('a thread that dies mid-batch answers every call of the batch once, with WorkerCrashedError', async (t) => {
  const c = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => c.close())
  const f = await c.spawn<Tasks.Fragile>('Fragile')
  const g = await c.spawn<Tasks.Counter>('Counter')
  const batch = [f.inc(1), g.inc(1), f.inc(1), f.die(), g.inc(1), f.inc(1), g.inc(1)]
  const settled = await within(Promise.allSettled(batch), 10_000, 'the answers of the batch')
  assert.deepEqual(
    settled.map((s) => s.status === 'rejected' && s.reason instanceof WorkerCrashedError && s.reason.code === 'ERR_WORKER_CRASHED'),
    batch.map(() => true),
  )
  // The actors died with their thread: later calls fail without running.
  await assert.rejects(f.inc(1), ActorLostError)
  await assert.rejects(g.inc(1), ActorLostError)
  // A second answer to any call would have come before these (one socket, in order), counted as late.
  assert.equal(c.stats().lateResultsDropped, 0, 'one answer per call')
})
