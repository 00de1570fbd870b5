import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import * as zmq from 'zeromq'
import { Packr } from 'msgpackr'
import { Agent, Cluster, InvalidArgumentError } from '../../lib/index.js'
import { MsgType, PROTOCOL_VERSION } from '../../lib/protocol/messages.js'
import { FIXTURE_TASKS, waitFor } from '../helpers.js'

const packr = new Packr()
const V = PROTOCOL_VERSION

/** A raw DEALER that registers as an agent and records what the driver sends it. */
async function rawAgent(t: TestContext, address: string, id: string, window: number) {
  const socket = new zmq.Dealer({ routingId: id, linger: 0, sendTimeout: 0 })
  t.after(() => socket.close())
  socket.connect(address)
  const received: unknown[][] = []
  void (async () => {
    try {
      for await (const parts of socket) received.push(parts.map((p) => packr.unpack(p) as unknown))
    } catch {
      // closed
    }
  })()
  const hello = { agentId: id, threads: 1, pid: process.pid, host: 'raw', version: '0', tasks: ['add', 'sleep'], actors: [], window }
  await socket.send([packr.pack([V, MsgType.Hello, hello])])
  await waitFor(() => received.some((m) => (m[0] as unknown[])[1] === MsgType.Welcome), 10_000, `a Welcome for ${id}`)
  return { socket, received }
}

test('a result counts only from the node the task was sent to: a member answering another node\u2019s tasks is dropped as late', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  // The forger asks for one task and never answers it: every later task goes to the real agent.
  const forger = await rawAgent(t, cluster.address, 'forger', 1)
  const held = cluster.call('sleep', 1, -1).catch((e: unknown) => e)
  await waitFor(() => forger.received.some((m) => (m[0] as unknown[])[1] === MsgType.Tasks), 10_000, 'the forger to receive its task')
  const frame = forger.received.find((m) => (m[0] as unknown[])[1] === MsgType.Tasks)!
  const heldId = (frame[1] as unknown[])[0] as number
  const agent = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => agent.close())
  await agent.waitUntilReady()
  const n = 20
  const calls = Array.from({ length: n }, (_, i) => cluster.call<number>('sleep', 30, i))
  await waitFor(() => agent.stats.tasksDone > 0 || cluster.stats().inFlight > 1, 10_000, 'the real agent to take tasks')
  // The ids that follow the forger's own are the real agent's; the forger answers them all with 999.
  const forged = Array.from({ length: n + 16 }, (_, k) => [heldId + 1 + k, 0, 999]).flat()
  const before = cluster.stats().lateResultsDropped
  await forger.socket.send([packr.pack([V, MsgType.Results, forged.length / 3]), packr.pack(forged)])
  assert.deepEqual(
    await Promise.all(calls),
    Array.from({ length: n }, (_, i) => i),
    'every result is the real agent\u2019s',
  )
  assert.equal(cluster.stats().lateResultsDropped - before, n + 16, 'every forged result was dropped as late')
  await cluster.close()
  // The silent forger is lost after nodeTimeoutMs and its task runs on the real agent, unless the cluster closed first.
  const h = await held
  assert.ok(h === -1 || (h as Error).name === 'ClusterClosedError', `the forger's task settled once: ${String(h)}`)
})

test('results from a node that is no longer a member are counted as late results, not as bad frames', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0, heartbeatMs: 100, nodeTimeoutMs: 400 })
  const lost = new Promise<string>((resolve) => cluster.once('node:lost', (_n, reason) => resolve(reason)))
  // It never sends a heartbeat: the driver declares it lost.
  const raw = await rawAgent(t, cluster.address, 'silent', 0)
  assert.match(await lost, /no heartbeat/)
  const before = cluster.stats()
  await raw.socket.send([packr.pack([V, MsgType.Results, 2]), packr.pack([1, 0, 5, 2, 0, 6])])
  await waitFor(() => cluster.stats().lateResultsDropped > before.lateResultsDropped, 5_000, 'the late results to be counted')
  const after = cluster.stats()
  assert.equal(after.lateResultsDropped - before.lateResultsDropped, 2)
  assert.equal(after.badFrames, before.badFrames)
})

test('timeoutMs beyond Node\u2019s longest timer is refused (it would fire at once)', async () => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1 })
  assert.throws(
    () => cluster.with({ timeoutMs: 2 ** 31 }),
    (e: unknown) => e instanceof InvalidArgumentError && /options\.timeoutMs must be at most 2147483647/.test(e.message),
  )
  assert.equal(await cluster.with({ timeoutMs: 2 ** 31 - 1 }).call('add', 1, 2), 3)
})
