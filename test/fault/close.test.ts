import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Agent, Cluster } from '../../lib/index.js'
import { FIXTURE_TASKS, waitFor } from '../helpers.js'

test('an agent whose task never returns still closes, within its bound, and the driver takes the task back', async () => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0, heartbeatMs: 200, nodeTimeoutMs: 3000 })
  const agent = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1, heartbeatMs: 200 })
  await agent.waitUntilReady()
  const hung = cluster.call('loopForever')
  // Never settled by an agent: the driver rejects it when it closes.
  hung.catch(() => {})
  const queued = cluster.call<number>('add', 1, 2)
  queued.catch(() => {})
  await waitFor(() => agent.activity().busy === 1, 10_000, 'the task to start')
  const started = Date.now()
  await agent.close({ timeoutMs: 300 })
  const took = Date.now() - started
  assert.ok(took < 5000, `close took ${took} ms`)
  assert.equal(agent.state, 'closed')
  // The agent said Leave: the driver requeued what it held instead of waiting for a timeout.
  await waitFor(() => cluster.nodes().length === 0, 5000, 'the node to leave')
  assert.ok(cluster.stats().requeued >= 1)
  // Idempotent, and quick the second time.
  await agent.close()
})
