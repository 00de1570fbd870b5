import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import * as zmq from 'zeromq'
import { Packr } from 'msgpackr'
import { Cluster, Agent, TransportError } from '../../lib/index.js'
import { MsgType, PROTOCOL_VERSION } from '../../lib/protocol/messages.js'
import { parseHeader } from '../../lib/protocol/codec.js'
import { FIXTURE_TASKS, agentArgs, freePort, runCli, waitFor, within } from '../helpers.js'

test('remote agents join a listening driver and tasks spread across them', async (t) => {
  const port = await freePort()
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: `tcp://127.0.0.1:${port}`, localAgents: 0 })
  assert.equal(cluster.address, `tcp://127.0.0.1:${port}`)
  // Submitted before any agent exists: waits in the queue.
  const early = cluster.call('add', 40, 2)
  const a = runCli(t, agentArgs(cluster.address, 1))
  const b = runCli(t, agentArgs(cluster.address, 2))
  await waitFor(() => cluster.nodes().length === 2, 15_000, 'two agents')
  assert.equal(await early, 42)
  const threads = cluster
    .nodes()
    .map((n) => n.threads)
    .sort()
  assert.deepEqual(threads, [1, 2])
  assert.ok(cluster.nodes().every((n) => !n.local && n.state === 'up' && n.version.length > 0))
  // Tasks that hold their thread must be spread: each agent gets some.
  const who = await Promise.all(Array.from({ length: 200 }, () => cluster.call<number>('sleepThenWhoami', 3)))
  const counts = new Map<number, number>()
  for (const p of who) counts.set(p, (counts.get(p) ?? 0) + 1)
  assert.deepEqual([...counts.keys()].sort(), [a.child.pid, b.child.pid].sort(), `results came from ${JSON.stringify([...counts])}`)
})

test('an agent that joins late gets work; one that leaves cleanly loses nothing', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const a = runCli(t, agentArgs(cluster.address, 1))
  await waitFor(() => cluster.nodes().length === 1, 15_000, 'first agent')
  const n = 400
  const results = Promise.all(Array.from({ length: n }, (_, i) => cluster.call<[number, number]>('sleepThenWhoamiWith', 5, i)))
  const b = runCli(t, agentArgs(cluster.address, 1))
  await waitFor(() => cluster.nodes().length === 2, 15_000, 'second agent')
  // Once the newcomer has taken some work, stop the first agent cleanly mid-run.
  await waitFor(() => (cluster.nodes().find((x) => x.pid === b.child.pid)?.tasksDone ?? 0) > 0, 15_000, 'the second agent to do some work')
  const left = new Promise((resolve) => cluster.once('node:left', resolve))
  a.child.kill('SIGTERM')
  assert.equal(await within(a.exited, 15_000, 'the first agent to exit on SIGTERM'), 0, a.output())
  await within(left, 15_000, 'node:left for the first agent')
  const all = await results
  assert.deepEqual(
    all.map(([i]) => i),
    Array.from({ length: n }, (_, i) => i),
    'every task answered once, correctly',
  )
  assert.ok(
    all.some(([, pid]) => pid === b.child.pid),
    'the late agent did work',
  )
  assert.ok(
    all.some(([, pid]) => pid === a.child.pid),
    'the first agent did work',
  )
  assert.equal(cluster.nodes().length, 1)
  assert.equal(cluster.nodes()[0]!.pid, b.child.pid)
  assert.equal(cluster.stats().lateResultsDropped, 0)
})

test('agents outlive the driver and serve the next one on the same address', async (t) => {
  const port = await freePort()
  const address = `tcp://127.0.0.1:${port}`
  const first = await Cluster.start({ tasks: FIXTURE_TASKS, listen: address, localAgents: 0 })
  t.after(() => first.close())
  const a = runCli(t, agentArgs(address, 1))
  await waitFor(() => first.nodes().length === 1, 15_000, 'agent on the first driver')
  assert.equal(await first.call('add', 1, 1), 2)
  await first.close()
  await using second = await Cluster.start({ tasks: FIXTURE_TASKS, listen: address, localAgents: 0 })
  await waitFor(() => second.nodes().length === 1, 30_000, 'agent on the second driver').catch((err: Error) => {
    throw new Error(`${err.message}; second driver ${JSON.stringify(second.stats())}; agent said:\n${a.output()}`)
  })
  assert.equal(await second.call('whoami'), a.child.pid)
  assert.match(a.output(), /lost the driver \(the driver closed\)/)
})

test('a listen address in use is a clear error', async () => {
  await using first = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  await assert.rejects(
    Cluster.start({ tasks: FIXTURE_TASKS, listen: first.address, localAgents: 0 }),
    (e: unknown) => e instanceof TransportError && e.code === 'ERR_ADDRESS_IN_USE' && e.message.includes(first.address),
  )
})

test('binding beyond loopback without authentication is refused unless insecure', async () => {
  await assert.rejects(
    Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://0.0.0.0:0', localAgents: 0 }),
    (e: unknown) => e instanceof TransportError && e.code === 'ERR_INSECURE_BIND' && /0\.0\.0\.0.*insecure/.test(e.message),
  )
})

test('an agent whose tasks module fails to load, or whose status file cannot be written, exits with a clear error', async (t) => {
  const p = runCli(t, ['agent', '--connect', 'tcp://127.0.0.1:9', '--tasks', new URL('./broken-tasks.js', FIXTURE_TASKS).href])
  assert.equal(await p.exited, 1)
  assert.match(p.output(), /broken-tasks\.js failed to load on agent .*broken on purpose \[ERR_TASKS_MODULE\]/)
  const status = runCli(t, ['agent', '--connect', 'tcp://127.0.0.1:9', '--tasks', FIXTURE_TASKS.href, '--status-file', '/nonexistent-dir/status.json'])
  assert.equal(await within(status.exited, 15_000, 'the agent to exit'), 1)
  assert.match(status.output(), /^cluster: --status-file \/nonexistent-dir\/status\.json cannot be written: ENOENT.* \[ERR_INVALID_ARGUMENT\]\n$/)
  // Nothing to run is as clear, not an agent waiting for work it could never take.
  const none = runCli(t, ['agent', '--connect', 'tcp://127.0.0.1:9', '--tasks', new URL('./constants-tasks.js', FIXTURE_TASKS).href])
  assert.equal(await within(none.exited, 15_000, 'the agent to exit'), 1)
  assert.match(none.output(), /constants-tasks\.js failed to load on agent .*: it exports no functions or classes \[ERR_TASKS_MODULE\]/)
  const q = runCli(t, ['agent', '--connect', 'somewhere', '--tasks', FIXTURE_TASKS.href])
  assert.equal(await q.exited, 1)
  assert.match(q.output(), /cluster: --connect must be an endpoint like tcp:\/\/127\.0\.0\.1:7100, got "somewhere"/)
  // A driver's in-process address (cluster.address without listen) cannot be reached from another process: said, not waited on.
  for (const address of ['memory://actor-cluster-1-abc', 'inproc://actor-cluster-1-abc']) {
    const inside = runCli(t, ['agent', '--connect', address, '--tasks', FIXTURE_TASKS.href])
    assert.equal(await within(inside.exited, 15_000, `the agent given ${address} to exit`), 1)
    assert.match(inside.output(), new RegExp(`--connect ${address} is an address inside the driver's own process.*start the driver with listen`))
  }
})

test('an agent of another protocol version is rejected with the reason; bad frames are counted and dropped', async () => {
  // The raw DEALER needs a ZeroMQ endpoint: with local agents over inproc the driver binds one.
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, localTransport: 'inproc' })
  const dealer = new zmq.Dealer({ routingId: 'old-agent', linger: 0 })
  try {
    dealer.connect(cluster.address)
    const hello = { agentId: 'old-agent', threads: 1, pid: 1, host: 'h', version: '0.0.0', tasks: [], actors: [], window: 1 }
    await dealer.send([new Packr().pack([PROTOCOL_VERSION + 1, MsgType.Hello, hello])])
    const [reply] = await dealer.receive()
    const h = parseHeader(reply)
    assert.equal(h.type, MsgType.Reject)
    assert.match((h as { reason: string }).reason, /protocol version/)
    // Garbage of every kind, then a job that must still complete.
    for (let i = 0; i < 200; i++) await dealer.send([randomBytes(1 + (i % 50)), randomBytes(i % 3)])
    await dealer.send([])
    const sums = await Promise.all(Array.from({ length: 1000 }, (_, k) => cluster.call<number>('add', k, 1)))
    assert.equal(
      sums.reduce((a, b) => a + b, 0),
      1000 + (999 * 1000) / 2,
    )
    await waitFor(() => cluster.stats().badFrames >= 150, 5000, 'bad frames counted')
    assert.equal(cluster.nodes().length, 1)
  } finally {
    dealer.close()
  }
})

test('results of an earlier driver never reach the next one on the same address', async (t) => {
  const port = await freePort()
  const address = `tcp://127.0.0.1:${port}`
  const first = await Cluster.start({ tasks: FIXTURE_TASKS, listen: address, localAgents: 0 })
  t.after(() => first.close())
  const agent = await Agent.start({ connect: address, tasks: FIXTURE_TASKS, threads: 1 })
  try {
    await agent.waitUntilReady()
    const slow = Promise.allSettled([first.call('sleep', 700), first.call('sleep', 700)])
    await waitFor(() => agent.activity().busy > 0, 5000, 'the slow batch to run on the agent')
    await first.close()
    await slow
    await using second = await Cluster.start({ tasks: FIXTURE_TASKS, listen: address, localAgents: 0 })
    await waitFor(() => second.nodes().length === 1, 15_000, 'the agent to join the second driver')
    assert.equal(await second.call('add', 1, 1), 2)
    // The first driver's batch finishes on the agent meanwhile; its results must not be sent here.
    await waitFor(() => agent.stats.tasksDone >= 3, 5000, 'the old batch to finish')
    // A result of the old batch sent here would come before the answer to a new call on the same connection.
    assert.equal(await within(second.call('add', 2, 2), 5000, 'a call after the old batch'), 4)
    assert.equal(second.stats().lateResultsDropped, 0)
    assert.equal(second.stats().badFrames, 0)
  } finally {
    await agent.close()
  }
})
