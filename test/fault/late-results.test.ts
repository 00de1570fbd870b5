// A registered node that answers after its task was cancelled, timed out or
// moved to another node: every such answer is dropped and counted in
// stats().lateResultsDropped, exactly, and no call or map sees it.
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { Agent, TaskCancelledError, TaskTimeoutError } from '../../lib/index.js'
import { Status } from '../../lib/protocol/messages.js'
import { FIXTURE_TASKS, waitFor } from '../helpers.js'
import { openDriver, welcomedRawAgent, type SentTask } from '../raw-agent.js'

/** A raw node that stays a member (heartbeats every 100 ms) and answers only when told. */
async function rawNode(t: TestContext, address: string, id: string, window: number) {
  const raw = await welcomedRawAgent(t, address, id, window)
  raw.beat(100)
  return raw
}

const sum = (t: SentTask) => (t.args[0] as number) + (t.args[1] as number)

test('a registered node answering tasks of a cancelled map, and one of them twice while the map runs: each late answer is dropped and counted, no value is yielded twice', async (t) => {
  await using cluster = await openDriver({ heartbeatMs: 100, nodeTimeoutMs: 5_000 })
  const raw = await rawNode(t, cluster.address, 'late-map', 8)
  const controller = new AbortController()
  const inputs = Array.from({ length: 6 }, (_, i) => [i, 100 * i])
  const yielded: number[] = []
  const consumed = (async () => {
    for await (const v of cluster.map<number>('add', inputs, { ordered: false, concurrency: 6, signal: controller.signal })) yielded.push(v)
  })().then(
    () => undefined,
    (e: unknown) => e,
  )
  await waitFor(() => raw.tasks.length === 6, 10_000, 'the raw node to hold the 6 tasks of the map')
  const before = cluster.stats()
  const [a, b, c] = raw.tasks
  // Three answers, the first of them twice in the same frame: the copy is late.
  await raw.answer([
    [a!.id, Status.Ok, sum(a!)],
    [a!.id, Status.Ok, sum(a!)],
    [b!.id, Status.Ok, sum(b!)],
    [c!.id, Status.Ok, sum(c!)],
  ])
  await waitFor(() => yielded.length === 3, 10_000, 'the map to yield the 3 answered values')
  assert.equal(cluster.stats().lateResultsDropped - before.lateResultsDropped, 1, 'the second answer to the same task is late')
  controller.abort()
  const ended = await consumed
  assert.ok(ended instanceof TaskCancelledError, `the map ends with TaskCancelledError: ${String(ended)}`)
  assert.equal(cluster.stats().tasksCancelled - before.tasksCancelled, 3, 'the 3 unanswered tasks were withdrawn')
  // Now the node answers all six: three settled, three withdrawn.
  await raw.answer(raw.tasks.map((x): [number, number, unknown] => [x.id, Status.Ok, sum(x)]))
  await waitFor(() => cluster.stats().lateResultsDropped - before.lateResultsDropped === 7, 10_000, 'the 6 answers after the cancel to be counted as late')
  const after = cluster.stats()
  assert.equal(after.lateResultsDropped - before.lateResultsDropped, 7)
  assert.equal(after.tasksSucceeded - before.tasksSucceeded, 3)
  assert.equal(after.badFrames, before.badFrames)
  assert.deepEqual(
    [...yielded].sort((x, y) => x - y),
    [a, b, c].map((x) => sum(x!)).sort((x, y) => x - y),
    'each answered task yielded once',
  )
  assert.equal(new Set(yielded).size, yielded.length, 'no value yielded twice')
})

test('a registered node answering a task after reporting its timeout: the call rejects once with TaskTimeoutError and the answer is counted as late', async (t) => {
  await using cluster = await openDriver({ heartbeatMs: 100, nodeTimeoutMs: 5_000 })
  const raw = await rawNode(t, cluster.address, 'late-timeout', 4)
  const settled: unknown[] = []
  const call = cluster
    .with({ timeoutMs: 250 })
    .call<number>('add', 1, 2)
    .then(
      (v) => settled.push(v),
      (e: unknown) => settled.push(e),
    )
  await waitFor(() => raw.tasks.length === 1, 10_000, 'the raw node to receive the timed task')
  assert.equal(raw.tasks[0]!.timeoutMs, 250, 'the task travels with its timeout')
  const id = raw.tasks[0]!.id
  const before = cluster.stats()
  await raw.answer([[id, Status.Failed, { name: 'TaskTimeoutError', message: 'task "add" timed out after 250 ms', code: 'ERR_TIMEOUT' }]])
  await call
  assert.equal(settled.length, 1)
  assert.ok(settled[0] instanceof TaskTimeoutError, `the call rejects with TaskTimeoutError: ${String(settled[0])}`)
  // The thread was not stopped in time after all: its result comes after the timeout.
  await raw.answer([[id, Status.Ok, 3]])
  await waitFor(() => cluster.stats().lateResultsDropped > before.lateResultsDropped, 10_000, 'the answer after the timeout to be counted as late')
  const after = cluster.stats()
  assert.equal(after.lateResultsDropped - before.lateResultsDropped, 1)
  assert.equal(after.tasksFailed - before.tasksFailed, 1)
  assert.equal(after.tasksSucceeded - before.tasksSucceeded, 0)
  assert.equal(settled.length, 1, 'the call settled once')
})

test('a registered node answering a task after it was retried on another node: the other node’s result counts, the stale answer is dropped as late', async (t) => {
  await using cluster = await openDriver({ heartbeatMs: 100, nodeTimeoutMs: 5_000 })
  const raw = await rawNode(t, cluster.address, 'late-retry', 1)
  const call = cluster.call<number>('add', 20, 22)
  await waitFor(() => raw.tasks.length === 1, 10_000, 'the raw node to receive the task')
  const id = raw.tasks[0]!.id
  // It wants no more work, then reports the task's thread crashed: the task is requeued (an infrastructure retry).
  await raw.credit(0)
  const retried = new Promise<number>((resolve) => cluster.once('task:retried', (info) => resolve(info.id)))
  const before = cluster.stats()
  await raw.answer([[id, Status.Failed, { name: 'WorkerCrashedError', message: 'worker thread exited with code 1', code: 'ERR_WORKER_CRASHED' }]])
  assert.equal(await retried, id)
  const agent = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => agent.close({ timeoutMs: 2_000 }))
  // The stale node answers the task it gave back, with a wrong value, while or after the agent runs it.
  await raw.answer([[id, Status.Ok, 999]])
  assert.equal(await call, 42, 'the result is the node’s that held the task')
  await waitFor(() => cluster.stats().lateResultsDropped > before.lateResultsDropped, 10_000, 'the stale answer to be counted as late')
  const after = cluster.stats()
  assert.equal(after.lateResultsDropped - before.lateResultsDropped, 1)
  assert.equal(after.tasksRetried - before.tasksRetried, 1)
  assert.equal(after.tasksSucceeded - before.tasksSucceeded, 1)
  assert.equal(raw.tasks.length, 1, 'the node that asked for no work got no more')
})
