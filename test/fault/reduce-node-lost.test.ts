import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster } from '../../lib/index.js'
import { FAST, FIXTURE_TASKS, fastAgentArgs, runCli, waitFor, within, type Proc } from '../helpers.js'

const REDUCE_TASKS = new URL('../fixtures/reduce-tasks.js', import.meta.url)

// The agents of the fault tests, on the reduce fixtures.
const agentArgs = (address: string) => fastAgentArgs(address).map((a) => (a === FIXTURE_TASKS.href ? REDUCE_TASKS.href : a))

test('a node killed mid-reduce: its chunks run again elsewhere and each counts once, so the aggregate is exact (in order, with a non-commutative combiner)', async (t) => {
  await using cluster = await Cluster.start({ tasks: REDUCE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0, ...FAST })
  const agents: Proc[] = [runCli(t, agentArgs(cluster.address)), runCli(t, agentArgs(cluster.address))]
  await waitFor(() => cluster.nodes().length === 2, 20_000, 'two agents to register')
  const lost: string[] = []
  cluster.on('node:lost', (node) => lost.push(node.id))
  // 600 inputs of 5 ms in chunks of 10: 60 chunks, about 1.5 s of work on the two threads.
  const inputs = Array.from({ length: 600 }, (_, i) => [i, 5])
  const before = cluster.stats()
  const joined = cluster.reduce<string>('slowLabel', inputs, 'concat', '', { chunk: 10 })
  // Kill one agent once it has answered a chunk and holds others.
  const victim = await within(
    (async () => {
      for (;;) {
        const node = cluster.nodes().find((n) => n.tasksDone > 0 && n.inFlight > 0)
        if (node) return node
        await new Promise((r) => setTimeout(r, 10))
      }
    })(),
    20_000,
    'an agent that answered a chunk and holds more',
  )
  const proc = agents.find((a) => a.child.pid === victim.pid)
  assert.ok(proc, `agent process ${victim.pid} not found`)
  proc.child.kill('SIGKILL')
  assert.equal(await within(joined, 60_000, 'the reduce to finish'), inputs.map(([i]) => `${i};`).join(''))
  const after = cluster.stats()
  assert.deepEqual(lost, [victim.id])
  assert.ok(after.requeued - before.requeued > 0, 'the lost node held chunks')
  assert.equal(after.tasksSucceeded - before.tasksSucceeded, 60, 'each chunk settled once')
  // And a sum, on the surviving node.
  assert.equal(await cluster.reduce('square', [1, 2, 3], 'sum', 0), 14)
})
