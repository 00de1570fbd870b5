/**
 * Local agents reach their driver in this process's memory by default
 * (`localTransport: 'memory'`): no socket at all without `listen`; with
 * `listen`, remote agents use the ROUTER while local ones stay in memory,
 * and the driver routes each send to the side its peer is on.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Agent, Cluster, InvalidArgumentError } from '../../lib/index.js'
import type { Counter } from '../fixtures/tasks.js'
import { FIXTURE_TASKS, runProcess, waitFor, within } from '../helpers.js'

test('the default: local agents in memory, and another agent of this process joins at cluster.address', async () => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, config: {} })
  assert.match(cluster.address, /^memory:\/\/actor-cluster-\d+-[0-9a-f]+$/)
  await using second = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })
  await within(second.waitUntilReady(), 10_000, 'the second agent to register')
  const [a, b] = cluster.nodes().map((n) => n.id)
  assert.ok(a !== undefined && b !== undefined, 'two nodes')
  // An actor pinned to each node: sends reach both agents.
  const counters = await Promise.all([a, b].map((node) => cluster.with({ node }).spawn<Counter>('Counter', 10)))
  assert.deepEqual(await Promise.all(counters.map((c) => c.inc(5))), [15, 15])
  assert.deepEqual(
    cluster
      .liveActors()
      .map((x) => x.node)
      .sort(),
    [a, b].sort(),
  )
  const { transport } = cluster.stats()
  assert.ok(transport.framesIn > 0 && transport.framesOut > 0 && transport.bytesIn > 0, 'the memory side counts what passes')
})

test('with listen: local agents in memory and a remote agent over TCP with keys, both served; counters sum both sides', async () => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, listen: 'tcp://127.0.0.1:0', config: {} })
  assert.match(cluster.address, /^tcp:\/\/127\.0\.0\.1:\d+$/)
  const local = cluster.nodes()[0]!
  const before = cluster.stats().transport
  // The remote agent finds the keys the driver made for its machine's agents (CURVE on the ROUTER).
  await using remote = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })
  await within(remote.waitUntilReady(), 10_000, 'the remote agent to register')
  const other = cluster.nodes().find((n) => n.id !== local.id)!
  assert.equal(other.local, false)
  const [mine, theirs] = await Promise.all([local.id, other.id].map((node) => cluster.with({ node }).spawn<Counter>('Counter', 1)))
  assert.equal(await mine!.inc(1), 2)
  assert.equal(await theirs!.inc(2), 3)
  const results = await Promise.all(Array.from({ length: 200 }, (_, i) => cluster.call('add', i, 1)))
  assert.deepEqual(
    results,
    Array.from({ length: 200 }, (_, i) => i + 1),
  )
  const after = cluster.stats().transport
  assert.ok(after.framesIn > before.framesIn && after.framesOut > before.framesOut)
  assert.equal(after.sendErrors, 0)
})

test("localTransport 'inproc' still reaches the driver over ZeroMQ's inproc", async () => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, localTransport: 'inproc', config: {} })
  assert.match(cluster.address, /^inproc:\/\/actor-cluster-/)
  assert.equal(await cluster.call('add', 2, 2), 4)
})

test('listen cannot be a memory:// address (the driver makes its own), and localTransport names the choices', async () => {
  await assert.rejects(
    Cluster.start({ tasks: FIXTURE_TASKS, listen: 'memory://mine', config: {} }),
    (e: unknown) => e instanceof InvalidArgumentError && /options\.listen must be a socket's endpoint.*memory:\/\/mine/.test(e.message),
  )
  await assert.rejects(
    Cluster.start({ tasks: FIXTURE_TASKS, localTransport: 'shm' as never, config: {} }),
    (e: unknown) => e instanceof InvalidArgumentError && /localTransport/.test(e.message) && /memory/.test(e.message),
  )
})

test('a driver with local agents in memory keeps its process running until closed, as one with a socket does', async (t) => {
  const script = `
    import { Cluster } from ${JSON.stringify(new URL('../../lib/index.js', import.meta.url).href)}
    const cluster = await Cluster.start({ tasks: ${JSON.stringify(FIXTURE_TASKS.href)}, threads: 1, config: {} })
    process.stdout.write('up ' + (await cluster.call('add', 1, 1)) + '\\n')
    process.on('SIGTERM', () => cluster.close().then(() => process.stdout.write('closed\\n')))
  `
  const p = runProcess(t, process.execPath, ['--input-type=module', '-e', script])
  await waitFor(() => p.output().includes('up 2'), 20_000, 'the child cluster to answer')
  await new Promise((r) => setTimeout(r, 500))
  assert.equal(p.child.exitCode, null, `the process is still running; output: ${p.output()}`)
  p.child.kill('SIGTERM')
  assert.equal(await within(p.exited, 15_000, 'the child to exit once closed'), 0)
  assert.match(p.output(), /closed/)
})
