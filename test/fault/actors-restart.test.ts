import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import * as zmq from 'zeromq'
import { ActorLostError, ActorNameError, Agent, Cluster, WorkerCrashedError, type ActorErrorEvent, type ActorFailure, type ActorInfo } from '../../lib/index.js'
import { decode, encode, header, parseHeader } from '../../lib/protocol/codec.js'
import { ActorOp, MsgType } from '../../lib/protocol/messages.js'
import type * as Tasks from '../fixtures/tasks.js'
import { FIXTURE_TASKS, waitFor, within } from '../helpers.js'

type ActorMessage = [id: number, op: ActorOp, actorId: string, name: string, args: unknown[]]

/** A node played by hand over a raw DEALER: it joins, and the test decides what it answers. */
async function fakeNode(t: TestContext, address: string, id: string) {
  const dealer = new zmq.Dealer({ routingId: id, linger: 0, receiveTimeout: 5000 })
  t.after(() => dealer.close())
  dealer.connect(address)
  const next = async (type: MsgType, what: string): Promise<Buffer[]> => {
    for (;;) {
      const parts = await dealer.receive().catch((e: unknown) => {
        throw new Error(`fake node ${id}: nothing within 5 s while waiting for ${what}`, { cause: e })
      })
      if (parseHeader(parts[0]).type === type) return parts
    }
  }
  const info = { agentId: id, threads: 1, pid: 1, host: 'fake', version: '0.0.0', tasks: [], actors: ['Counter'], window: 4, registration: 'r1' }
  await dealer.send([header(MsgType.Hello, info)])
  await next(MsgType.Welcome, 'the Welcome')
  return {
    /** The messages of the next Actor frame. */
    async actorFrame(what: string): Promise<ActorMessage[]> {
      const [, body] = await next(MsgType.Actor, what)
      const flat = decode(body!) as unknown[]
      const out: ActorMessage[] = []
      for (let i = 0; i < flat.length; i += 5) out.push(flat.slice(i, i + 5) as ActorMessage)
      return out
    },
    answer: (id: number, value: unknown) => dealer.send([header(MsgType.ActorResults, 1), encode([id, 0, value])]),
    leave: () => dealer.send([header(MsgType.Leave, [])]),
  }
}

async function setup(t: TestContext) {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', insecure: true, localAgents: 0 })
  t.after(() => cluster.close())
  const first = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => first.close({ timeoutMs: 1000 }))
  await first.waitUntilReady()
  await waitFor(() => cluster.nodes().length === 1, 10_000, 'the first agent to join')
  const ref = await cluster.with({ restart: 'always' }).spawn<Tasks.Counter>('Counter', 100)
  assert.equal(await ref.inc(1), 101)
  const restarted: string[] = []
  cluster.on('actor:restarted', (info) => restarted.push(info.node))
  return { cluster, first, ref, restarted }
}

test('a restart whose target node is lost while the Spawn is on its way restarts the actor once, on the next node', async (t) => {
  const { cluster, first, ref, restarted } = await setup(t)
  await first.close()
  await waitFor(() => cluster.nodes().length === 0, 10_000, 'the first agent to leave')
  const fake = await fakeNode(t, cluster.address, 'fake-target')
  const [spawn] = await fake.actorFrame('the restart Spawn')
  assert.equal(spawn?.[1], ActorOp.Respawn)
  const second = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => second.close({ timeoutMs: 1000 }))
  await waitFor(() => cluster.nodes().length === 2, 10_000, 'the second agent to join')
  // The target leaves before answering the Spawn: the restart goes on to the second agent.
  await fake.leave()
  await waitFor(() => restarted.length >= 1, 10_000, 'the actor to be restarted')
  // Fresh state; the reply comes after any other Spawn sent to the same node.
  assert.equal(await ref.inc(1), 101)
  assert.deepEqual(restarted, [second.id], 'restarted once')
  assert.deepEqual(
    cluster.liveActors().map((a) => a.node),
    [second.id],
  )
  assert.equal(cluster.nodes().find((n) => n.id === second.id)?.actors, 1)
})

test('messages sent during a restart reach the new instance in the order they were sent', async (t) => {
  const { cluster, first, ref } = await setup(t)
  await first.close()
  await waitFor(() => cluster.nodes().length === 0, 10_000, 'the first agent to leave')
  // A: sent while no node can take the actor.
  const a = ref.inc(1)
  const fake = await fakeNode(t, cluster.address, 'fake-target')
  const [spawn] = await fake.actorFrame('the restart Spawn')
  assert.equal(spawn?.[1], ActorOp.Respawn)
  // B: sent while the new instance's Spawn is on its way.
  const b = ref.inc(2)
  await fake.answer(spawn[0], spawn[2])
  const calls: ActorMessage[] = []
  while (calls.length < 2) calls.push(...(await fake.actorFrame('the two calls')))
  assert.deepEqual(
    calls.map((m) => [m[3], m[4]]),
    [
      ['inc', [1]],
      ['inc', [2]],
    ],
  )
  await fake.answer(calls[0]![0], 1)
  await fake.answer(calls[1]![0], 3)
  assert.deepEqual(await Promise.all([a, b]), [1, 3])
})

test('an actor host thread that dies takes its actors: the driver learns it, plain ones are lost, restart: always ones come back', async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', insecure: true, localAgents: 0 })
  t.after(() => cluster.close())
  // One thread: every actor shares one host thread.
  const agent = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => agent.close({ timeoutMs: 1000 }))
  await agent.waitUntilReady()
  const killer = await cluster.spawn<Tasks.Fragile>('Fragile', 0)
  const bystander = await cluster.spawn<Tasks.Counter>('Counter', 10)
  const phoenix = await cluster.with({ restart: 'always' }).spawn<Tasks.Fragile>('Fragile', 100)
  assert.equal(await bystander.inc(1), 11)
  assert.equal(await phoenix.inc(1), 101)
  const restarted: string[] = []
  cluster.on('actor:restarted', (info) => restarted.push(info.id))
  await assert.rejects(killer.die(), (e: unknown) => e instanceof WorkerCrashedError)
  // The actor whose message killed the thread is gone.
  await assert.rejects(killer.inc(1), (e: unknown) => e instanceof ActorLostError)
  // The others on that thread died with it: their next message says so, and does not run.
  await assert.rejects(bystander.inc(1), (e: unknown) => e instanceof ActorLostError && /host thread died/.test(e.message))
  await assert.rejects(phoenix.inc(1), (e: unknown) => e instanceof ActorLostError)
  // The restartable one comes back, fresh, and serves.
  await waitFor(() => restarted.length === 1, 10_000, 'the restartable actor to restart')
  assert.deepEqual(restarted, [phoenix.id])
  assert.equal(await phoenix.inc(1), 101)
  assert.deepEqual(
    cluster.liveActors().map((a) => a.id),
    [phoenix.id],
  )
  assert.equal(cluster.nodes()[0]?.actors, 1)
})

test('a named actor with restart: always keeps its name across a restart; a plain named one frees it when its node is lost', async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', insecure: true, localAgents: 0 })
  t.after(() => cluster.close())
  const first = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => first.close({ timeoutMs: 1000 }))
  const second = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => second.close({ timeoutMs: 1000 }))
  await waitFor(() => cluster.nodes().length === 2, 10_000, 'two agents to join')
  const kept = await cluster.with({ name: 'kept', restart: 'always', node: first.id }).spawn<Tasks.Counter>('Counter', 100)
  const gone = await cluster.with({ name: 'gone', node: first.id }).spawn<Tasks.Counter>('Counter', 0)
  assert.equal(await kept.inc(1), 101)
  const restarted: ActorInfo[] = []
  cluster.on('actor:restarted', (info) => restarted.push(info))
  await first.close()
  await waitFor(() => restarted.length === 1, 10_000, 'the named actor to restart')
  assert.deepEqual(restarted, [{ id: kept.id, className: 'Counter', node: second.id, name: 'kept' }])
  // The same reference, by name and as held: fresh state, on the other node.
  const found = cluster.actor<Tasks.Counter>('kept')
  assert.equal(found, kept)
  assert.equal(await found.inc(1), 101)
  assert.equal(kept.node, second.id)
  assert.throws(
    () => cluster.actor('gone'),
    (e: unknown) => e instanceof ActorNameError && e.code === 'ERR_ACTOR_NOT_FOUND' && e.actorName === 'gone',
  )
  await assert.rejects(gone.inc(1), (e: unknown) => e instanceof ActorLostError)
  // A tell to the lost actor: one actor:error, with its name.
  const told = new Promise<ActorErrorEvent>((resolve) => cluster.once('actor:error', resolve))
  gone.tell.inc(1)
  const event = await within(told, 5_000, 'the actor:error of the tell')
  assert.deepEqual([event.actor, event.method, event.error instanceof ActorLostError], [{ id: gone.id, className: 'Counter', name: 'gone' }, 'inc', true])
  const again = await cluster.with({ name: 'gone' }).spawn<Tasks.Counter>('Counter', 7)
  assert.equal(await again.inc(1), 8)
})

test('a pinned actor with restart: always whose node is lost restarts on the least-loaded other node', async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', insecure: true, localAgents: 0 })
  t.after(() => cluster.close())
  const agents = await Promise.all([0, 1, 2].map(() => Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })))
  for (const a of agents) t.after(() => a.close({ timeoutMs: 1000 }))
  await waitFor(() => cluster.nodes().length === 3, 10_000, 'three agents to join')
  const [pinnedTo, busy, idle] = agents as [Agent, Agent, Agent]
  // Load one of the others: the restart goes to the idle one.
  await cluster.with({ node: busy.id }).spawn('Counter')
  const ref = await cluster.with({ restart: 'always', node: pinnedTo.id }).spawn<Tasks.Counter>('Counter', 5)
  assert.equal(ref.node, pinnedTo.id)
  const restarted: string[] = []
  cluster.on('actor:restarted', (info) => restarted.push(info.node))
  await pinnedTo.close()
  await waitFor(() => restarted.length === 1, 10_000, 'the pinned actor to restart')
  assert.deepEqual(restarted, [idle.id])
  assert.equal(await ref.inc(1), 6)
  assert.equal(ref.node, idle.id)
})

test('a restart whose target nodes keep being lost before answering ends by the budget: each attempt counted, then ActorLostError', async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', insecure: true, localAgents: 0 })
  t.after(() => cluster.close())
  const first = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => first.close({ timeoutMs: 1000 }))
  await waitFor(() => cluster.nodes().length === 1, 10_000, 'the first agent to join')
  const ref = await cluster.with({ restart: 'always', maxRestarts: 2 }).spawn<Tasks.Counter>('Counter', 100)
  const lost: [ActorFailure, Error][] = []
  cluster.on('actor:lost', (info, error) => lost.push([info, error]))
  let restarted = 0
  cluster.on('actor:restarted', () => restarted++)
  await first.close()
  await waitFor(() => cluster.nodes().length === 0, 10_000, 'the first agent to leave')
  // Restart 1 goes to a node that leaves before answering; restart 2 too; a third loss is past the budget.
  for (const id of ['fake-1', 'fake-2']) {
    const fake = await fakeNode(t, cluster.address, id)
    const [spawn] = await fake.actorFrame(`the restart Spawn on ${id}`)
    assert.equal(spawn?.[1], ActorOp.Respawn)
    await fake.leave()
  }
  await waitFor(() => lost.length === 1, 10_000, 'the actor to be lost for good')
  const [info, error] = lost[0]!
  assert.equal(info.restarts, 2)
  assert.match(info.reason, /^its restart on node fake-2 failed: .*; its restart budget is spent \(2 restarts within 60000 ms\)$/)
  assert.ok(error instanceof ActorLostError && error.cause instanceof ActorLostError)
  assert.equal(restarted, 0)
  await assert.rejects(ref.inc(1), (e: unknown) => e === error)
  // A node joining now gets no Spawn of it.
  const late = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => late.close({ timeoutMs: 1000 }))
  await waitFor(() => cluster.nodes().length === 1, 10_000, 'a late agent to join')
  assert.deepEqual(cluster.liveActors(), [])
  assert.equal(cluster.nodes()[0]?.actors, 0)
})
