import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster, TaskTimeoutError } from '../../lib/index.js'
import { FAST, FIXTURE_TASKS, fastAgentArgs, runCli, waitFor, within } from '../helpers.js'

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

test('a driver that stalls past the timeouts loses no node: every result once and correct, nothing retried', async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0, ...FAST })
  t.after(() => cluster.close())
  const agents = [runCli(t, fastAgentArgs(cluster.address)), runCli(t, fastAgentArgs(cluster.address))]
  await waitFor(() => cluster.nodes().length === 2, 20_000, 'two agents to join')
  const lost: string[] = []
  const retried: string[] = []
  cluster.on('node:lost', (n, reason) => lost.push(`${n.id}: ${reason}`))
  cluster.on('task:retried', (info) => retried.push(String(info.attempt)))
  const n = 2000
  let done = 0
  const all = Promise.all(
    Array.from({ length: n }, (_, i) =>
      cluster.call<number>('spin', 2000, i).then((r) => {
        done++
        return r
      }),
    ),
  )
  await waitFor(() => done >= 200, 60_000, 'the first 200 results')
  // The driver's event loop is blocked for twice the node timeout: both agents hear nothing past their driverTimeoutMs.
  const until = performance.now() + 2 * FAST.nodeTimeoutMs
  while (performance.now() < until) {
    // busy
  }
  const results = await within(all, 60_000, `every result (${done} of ${n} so far; ${JSON.stringify(cluster.stats())})`)
  results.forEach((r, i) => assert.equal(r, i))
  const s = cluster.stats()
  assert.deepEqual(lost, [], 'no node lost')
  assert.deepEqual(retried, [], 'no task retried')
  assert.equal(s.nodesLost, 0)
  assert.equal(s.tasksRetried, 0)
  assert.equal(s.requeued, 0)
  assert.equal(s.tasksSucceeded, n)
  assert.equal(s.lateResultsDropped, 0)
  assert.equal(cluster.nodes().length, 2)
  // The stall was seen: each agent went silent, then found the same driver again.
  for (const a of agents) {
    await waitFor(() => /no word from the driver/.test(a.output()), 5000, `agent ${a.child.pid} to report the silence (it said: ${a.output()})`)
  }
})
