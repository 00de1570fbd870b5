import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster, TaskTimeoutError } from '../../lib/index.js'
import { FIXTURE_TASKS, waitFor } from '../helpers.js'

test('timeoutMs counts from when the task starts: a 10 ms task with a 400 ms limit queued behind a 1.5 s task succeeds', async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => cluster.close())
  const long = cluster.call<number>('sleep', 1500, 1)
  await waitFor(() => cluster.stats().inFlight === 1, 10_000, 'the 1.5 s task to reach the agent')
  const started = performance.now()
  // Queued on the agent behind the long task (its one thread is busy), it waits ~1.5 s, then runs 10 ms.
  assert.equal(await cluster.with({ timeoutMs: 400 }).call<number>('sleep', 10, 2), 2)
  assert.ok(performance.now() - started > 1000, 'the timed task did wait behind the long one')
  assert.equal(await long, 1)
  // The limit still holds once the task runs: a task that loops, queued the same way, is stopped.
  const again = cluster.call<number>('sleep', 1000, 3)
  await waitFor(() => cluster.stats().inFlight === 1, 10_000, 'the 1 s task to reach the agent')
  await assert.rejects(cluster.with({ timeoutMs: 400 }).call('loopForever'), (e: unknown) => e instanceof TaskTimeoutError && e.code === 'ERR_TIMEOUT')
  assert.equal(await again, 3)
  assert.equal(await cluster.call<number>('add', 2, 3), 5)
})
