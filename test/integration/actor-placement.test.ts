/**
 * Where actors go, on a cluster of two agent processes: pinned to a node id,
 * a spread group over both nodes, and a clear error for a node that is not a
 * member. Each actor reports the pid of the process that hosts it.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster, InvalidArgumentError, UnknownNodeError, type NodeInfo } from '../../lib/index.js'
import type * as Tasks from '../fixtures/tasks.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { agentArgs, CLI, FIXTURE_TASKS, waitFor, within } from '../helpers.js'

let cluster: Cluster
let nodes: NodeInfo[]
const agents: ChildProcess[] = []

before(async () => {
  cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  // Two agent processes for the whole file (runCli would stop them at the end of the first test).
  for (const id of ['place-a', 'place-b']) agents.push(spawn(process.execPath, [CLI, ...agentArgs(cluster.address, 1, '--id', id)], { stdio: 'ignore' }))
  await waitFor(() => cluster.nodes().length === 2, 20_000, 'two agents to register')
  nodes = cluster.nodes().sort((x, y) => x.id.localeCompare(y.id))
})
after(async () => {
  await cluster.close()
  for (const a of agents) a.kill('SIGKILL')
})

test('spawn({ node }) places the actor on that node, for each of two agents', async () => {
  assert.deepEqual(
    nodes.map((n) => n.id),
    ['place-a', 'place-b'],
  )
  for (const node of nodes) {
    // Three each: the default (least-loaded) would alternate.
    const refs = await Promise.all([0, 1, 2].map(() => cluster.with({ node: node.id }).spawn<Tasks.Where>('Where')))
    assert.deepEqual(
      refs.map((r) => r.node),
      [node.id, node.id, node.id],
    )
    assert.deepEqual(await Promise.all(refs.map((r) => r.pid())), [node.pid, node.pid, node.pid])
    await Promise.all(refs.map((r) => r.stop()))
  }
})

test('spawn({ node }) of a node id that is not a member fails naming it and the members', async () => {
  await assert.rejects(
    cluster.with({ node: 'place-z' }).spawn('Where'),
    (e: unknown) =>
      e instanceof UnknownNodeError &&
      e.code === 'ERR_UNKNOWN_NODE' &&
      e.nodeId === 'place-z' &&
      e.message === 'unknown node "place-z"; the cluster\'s nodes are "place-a", "place-b"',
  )
  assert.throws(
    () => cluster.with({ node: 'place-a', spread: true }),
    (e: unknown) => e instanceof InvalidArgumentError && /options.spread and options.node cannot be combined/.test(e.message),
  )
  assert.deepEqual(cluster.liveActors(), [])
})

test('spawn({ spread: true }) spreads the group over the two agents, where least-loaded would not', async () => {
  // Load place-b: least-loaded alone would now send the next two actors to place-a.
  const ballast = await Promise.all([0, 1].map(() => cluster.with({ node: 'place-b' }).spawn<Tasks.Where>('Where')))
  const group = cluster.with({ spread: true })
  const refs = await Promise.all([0, 1, 2, 3].map(() => group.spawn<Tasks.Where>('Where')))
  const pids = await Promise.all(refs.map((r) => r.pid()))
  const byNode = (id: string) => nodes.find((n) => n.id === id)!.pid
  assert.deepEqual(
    refs.map((r) => r.node),
    ['place-a', 'place-b', 'place-a', 'place-b'],
  )
  assert.deepEqual(pids, [byNode('place-a'), byNode('place-b'), byNode('place-a'), byNode('place-b')])
  await Promise.all([...ballast, ...refs].map((r) => r.stop()))
})

test('spawns made at once with the default placement share the two agents out evenly', async () => {
  // All issued in one tick: each must see the actors placed before it, not all the same least-loaded node.
  const refs = await Promise.all(Array.from({ length: 10 }, () => cluster.spawn<Tasks.Where>('Where')))
  const count = (id: string) => refs.filter((r) => r.node === id).length
  assert.deepEqual([count('place-a'), count('place-b')], [5, 5])
  await Promise.all(refs.map((r) => r.stop()))
})

test('a pinned actor with restart: always whose host thread dies comes back on its node while that node is a member', async () => {
  // Load place-b: least-loaded alone would restart it on place-a.
  const ballast = await Promise.all([0, 1].map(() => cluster.with({ node: 'place-b' }).spawn<Tasks.Where>('Where')))
  const ref = await cluster.with({ node: 'place-b', restart: 'always' }).spawn<Tasks.Fragile>('Fragile', 10)
  const restarted = new Promise<string>((resolve) => cluster.once('actor:restarted', (info) => resolve(info.node)))
  await assert.rejects(ref.die())
  assert.equal(await within(restarted, 10_000, 'the actor to restart'), 'place-b')
  assert.equal(await ref.inc(1), 11)
  assert.equal(ref.node, 'place-b')
  // The ballast shared the dead thread: plain actors, lost.
  await Promise.all(ballast.map((r) => r.stop()))
  await ref.stop()
})
