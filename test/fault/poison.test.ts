import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  Cluster,
  Agent,
  WorkerCrashedError,
  OutOfMemoryError,
  TaskTimeoutError,
  TaskCancelledError,
  RemoteTaskError,
  InvalidArgumentError,
} from '../../lib/index.js'
import { FIXTURE_TASKS, waitFor } from '../helpers.js'

let cluster: Cluster

before(async () => {
  cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2, localAgentOptions: { threadMemoryMb: 48 } })
})
after(async () => {
  await cluster.close()
})

test('a task that kills its thread is retried maxRetries times, then rejects with WorkerCrashedError naming it', async () => {
  const retried: number[] = []
  const onRetry = (info: { attempt: number }) => retried.push(info.attempt)
  cluster.on('task:retried', onRetry)
  try {
    await assert.rejects(cluster.call('exitThread', 3), (e: unknown) => {
      assert.ok(e instanceof WorkerCrashedError, String(e))
      assert.equal(e.code, 'ERR_WORKER_CRASHED')
      assert.match(e.message, /task "exitThread" crashed its worker thread/)
      return true
    })
  } finally {
    cluster.off('task:retried', onRetry)
  }
  assert.deepEqual(retried, [1, 2, 3])
  // The cluster is whole afterwards: its one node still serves.
  assert.equal(await cluster.call('add', 2, 2), 4)
  assert.equal(cluster.nodes().length, 1)
})

test('a poison task among good ones: the good ones all complete, only the poison fails', async () => {
  const n = 500
  const poison = 123
  const results = await Promise.allSettled(Array.from({ length: n }, (_, i) => cluster.call<number>('maybeExit', i, poison)))
  results.forEach((r, i) => {
    if (i === poison) assert.ok(r.status === 'rejected' && r.reason instanceof WorkerCrashedError)
    else assert.deepEqual(r, { status: 'fulfilled', value: i })
  })
})

test('maxRetries is per call and can be zero', async () => {
  const retried: unknown[] = []
  const onRetry = (i: unknown) => retried.push(i)
  cluster.on('task:retried', onRetry)
  try {
    await assert.rejects(cluster.with({ maxRetries: 0 }).call('exitThread'), WorkerCrashedError)
  } finally {
    cluster.off('task:retried', onRetry)
  }
  assert.equal(retried.length, 0)
})

test('a task that runs out of memory fails with OutOfMemoryError, and its thread is replaced', async () => {
  await assert.rejects(cluster.with({ maxRetries: 1 }).call('exhaustMemory'), (e: unknown) => e instanceof OutOfMemoryError && e.code === 'ERR_OUT_OF_MEMORY')
  assert.equal(await cluster.call('add', 1, 1), 2)
})

test('a task past its timeout rejects with TaskTimeoutError and its thread is replaced', async () => {
  const started = Date.now()
  await assert.rejects(cluster.with({ timeoutMs: 200 }).call('loopForever'), (e: unknown) => {
    assert.ok(e instanceof TaskTimeoutError, String(e))
    assert.match(e.message, /ran longer than its timeout of 200 ms/)
    return true
  })
  assert.ok(Date.now() - started < 5000)
  // Both threads still serve: two tasks that each hold a thread for a while land on two threads.
  const ids = await Promise.all([cluster.call('threadIdAfter', 300), cluster.call('threadIdAfter', 300)])
  assert.notEqual(ids[0], ids[1])
  // A task that finishes in time is unaffected by its timeout.
  assert.equal(await cluster.with({ timeoutMs: 2000 }).call('add', 3, 4), 7)
})

test('a task that throws is not retried unless asked; with retries it is', async () => {
  await assert.rejects(cluster.call('flaky', 'a', 1), (e: unknown) => e instanceof RemoteTaskError && /flaky failure 1 of 1/.test(e.message))
  // The key's count is per thread: whichever thread succeeds does so on its 4th run (3, or up to 6, failures in all).
  const retried: number[] = []
  const onRetry = (info: { name: string; attempt: number }) => {
    if (info.name === 'flaky') retried.push(info.attempt)
  }
  cluster.on('task:retried', onRetry)
  let v: number
  try {
    v = await cluster.with({ retries: 10 }).call<number>('flaky', 'b', 3)
  } finally {
    cluster.off('task:retried', onRetry)
  }
  assert.equal(v, 4)
  assert.ok(retried.length >= 3 && retried.length <= 6, `retried ${retried.length} times`)
  assert.deepEqual(
    retried,
    Array.from({ length: retried.length }, (_, i) => i + 1),
  )
  await assert.rejects(cluster.with({ retries: 1 }).call('flaky', 'c', 100), RemoteTaskError)
})

test('cancelling a call withdraws it', async () => {
  const ac = new AbortController()
  const blockers = [cluster.call('sleep', 200), cluster.call('sleep', 200)]
  const p = cluster.with({ signal: ac.signal }).call('add', 1, 2)
  ac.abort(new Error('user changed their mind'))
  await assert.rejects(
    p,
    (e: unknown) => e instanceof TaskCancelledError && e.code === 'ERR_CANCELLED' && (e.cause as Error).message === 'user changed their mind',
  )
  await assert.rejects(cluster.with({ signal: ac.signal }).call('add', 1, 2), /cancelled before it was sent/)
  await Promise.all(blockers)
})

test('cancelling a 100,000-task map half-way stops it: nothing more is pulled, queued work is withdrawn', async () => {
  const ac = new AbortController()
  let pulled = 0
  function* inputs() {
    for (let k = 0; k < 100_000; k++) {
      pulled++
      yield [1, k]
    }
  }
  const before = cluster.stats()
  let got = 0
  await assert.rejects(
    async () => {
      for await (const r of cluster.map<number>('add', inputs(), { signal: ac.signal, concurrency: 4096 })) {
        assert.equal(r, got + 1)
        got++
        if (got === 50_000) ac.abort()
      }
    },
    (e: unknown) => e instanceof TaskCancelledError && /cancelled after 50000 of/.test(e.message),
  )
  assert.equal(got, 50_000)
  assert.ok(pulled <= 50_000 + 4096, `pulled ${pulled}`)
  const after = cluster.stats()
  // At once, without waiting: every task the map took has settled (run, or withdrawn by the map as it ended).
  const submitted = after.tasksSubmitted - before.tasksSubmitted
  const settled = after.tasksSucceeded - before.tasksSucceeded + (after.tasksFailed - before.tasksFailed) + (after.tasksCancelled - before.tasksCancelled)
  assert.equal(submitted, pulled)
  assert.equal(settled, submitted, 'every task taken is settled when the map throws')
  assert.equal(after.queued, 0)
  assert.ok(after.tasksCancelled - before.tasksCancelled <= 4096)
  // Nothing of the map is left behind: what was on the agent finishes (its results dropped), nothing is queued.
  await waitFor(() => cluster.stats().inFlight === 0, 10_000, 'the tasks the map left on the agent to finish')
  assert.equal(cluster.stats().queued, 0)
  assert.equal(await cluster.call('add', 5, 5), 10)
})

test('breaking out of a map early withdraws its remaining tasks', async () => {
  // Let the agent measure these tasks first, so it asks for only a few at a time.
  await Promise.all(Array.from({ length: 20 }, () => cluster.call('sleep', 5)))
  const before = cluster.stats().tasksCancelled
  for await (const r of cluster.map(
    'sleep',
    Array.from({ length: 200 }, () => [5]),
    { concurrency: 100 },
  )) {
    void r
    break
  }
  assert.ok(cluster.stats().tasksCancelled - before >= 80, `withdrew ${cluster.stats().tasksCancelled - before}`)
})

test('bad per-call options are clear errors', () => {
  assert.throws(
    () => cluster.with({ timeoutMs: 0 }),
    (e: unknown) => e instanceof InvalidArgumentError && /options\.timeoutMs must be a positive integer/.test(e.message),
  )
  assert.throws(() => cluster.with({ retries: -1 }), /options\.retries/)
  assert.throws(() => cluster.with({ signal: {} as AbortSignal }), /options\.signal must be an AbortSignal/)
  assert.throws(() => cluster.with({ restart: 'sometimes' as 'always' }), /options\.restart/)
})

test('threads are recycled after maxTasksPerThread, so a leaking module cannot grow a node without bound', async () => {
  await using driver = await Cluster.start({ tasks: FIXTURE_TASKS, localAgents: 0 })
  const agent = await Agent.start({ connect: driver.address, tasks: FIXTURE_TASKS, threads: 1, maxTasksPerThread: 50, threadMemoryMb: 64 })
  try {
    await agent.waitUntilReady()
    // 300 × 1 MB kept alive would exceed the 64 MB heap; recycling every 50 tasks keeps it far below.
    for (let round = 0; round < 6; round++) {
      const rs = await Promise.all(Array.from({ length: 50 }, (_, i) => driver.call<number>('leak', i)))
      assert.equal(rs.length, 50)
    }
    assert.ok(agent.stats.recycles >= 5, `recycled ${agent.stats.recycles} times`)
    assert.ok((await driver.call<number>('servedByThisThread')) <= 50)
  } finally {
    await agent.close()
  }
})

test('threads are recycled above recycleHeapMb', async () => {
  await using driver = await Cluster.start({ tasks: FIXTURE_TASKS, localAgents: 0 })
  const agent = await Agent.start({ connect: driver.address, tasks: FIXTURE_TASKS, threads: 1, recycleHeapMb: 24 })
  try {
    await agent.waitUntilReady()
    for (let i = 0; i < 60; i++) await driver.call('leak', i)
    assert.ok(agent.stats.recycles >= 1, `recycled ${agent.stats.recycles} times`)
  } finally {
    await agent.close()
  }
})
