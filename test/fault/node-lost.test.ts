import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster, NodeLostError } from '../../lib/index.js'
import { FAST, FIXTURE_TASKS, fastAgentArgs, runCli, waitFor, within, type Proc } from '../helpers.js'

test('a task that kills its node is charged each loss: after maxRetries losses it rejects with NodeLostError naming it, and nothing else is lost', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0, maxRetries: 1, ...FAST })
  const agents: Proc[] = Array.from({ length: 3 }, () => runCli(t, fastAgentArgs(cluster.address)))
  await waitFor(() => cluster.nodes().length === 3, 20_000, 'three agents to register')
  const lost: string[] = []
  cluster.on('node:lost', (node, reason) => lost.push(`${node.pid}: ${reason}`))
  const retried: { name: string; attempt: number; cause: string }[] = []
  cluster.on('task:retried', (info) => retried.push({ name: info.name, attempt: info.attempt, cause: info.cause.name }))
  const killer = cluster.call('killProcess').then(
    () => assert.fail('a task that kills its node cannot succeed'),
    (e: unknown) => e,
  )
  const err = await within(killer, 30_000, 'the killing task to reject')
  assert.ok(err instanceof NodeLostError, String(err))
  assert.equal(err.code, 'ERR_NODE_LOST')
  assert.match(err.message, /^task "killProcess" was on node \S+ when it was lost \(no heartbeat for \d+ ms\), after 1 earlier infrastructure failures$/)
  // It ran twice (maxRetries 1): two nodes died, the retry was charged once, and the third node is whole.
  assert.equal(lost.length, 2, lost.join('; '))
  assert.deepEqual(
    retried.filter((r) => r.name === 'killProcess'),
    [{ name: 'killProcess', attempt: 1, cause: 'NodeLostError' }],
  )
  assert.equal(agents.filter((a) => a.child.exitCode === null && a.child.signalCode === null).length, 1)
  assert.deepEqual(
    await Promise.all(Array.from({ length: 50 }, (_, i) => cluster.call<number>('add', i, 1))),
    Array.from({ length: 50 }, (_, i) => i + 1),
  )
  assert.equal(cluster.nodes().length, 1)
})
