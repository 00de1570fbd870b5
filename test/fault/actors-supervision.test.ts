/**
 * Supervision under failures, with agent processes' threads and nodes lost
 * for real: children go with a parent lost with its node (restarted or not);
 * the restart budget ends a restart loop (host threads that keep dying, a
 * constructor that throws on every restart) with ActorLostError and tells
 * the parent; the budget counts restarts within its window only.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  ActorLostError,
  ActorNameError,
  ActorStoppedError,
  Agent,
  Cluster,
  ClusterClosedError,
  RemoteTaskError,
  WorkerCrashedError,
  type ActorErrorEvent,
  type ActorFailure,
  type ActorRef,
} from '../../lib/index.js'
import type * as Tasks from '../fixtures/tasks.js'
import { FAST, FIXTURE_TASKS, fastAgentArgs, runCli, spawnChild, waitFor, within } from '../helpers.js'

/** A driver and `count` agents of one thread each. */
async function setup(t: TestContext, count: number) {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', insecure: true, localAgents: 0 })
  t.after(() => cluster.close())
  const agents = await Promise.all(Array.from({ length: count }, () => Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })))
  for (const a of agents) t.after(() => a.close({ timeoutMs: 1000 }))
  await waitFor(() => cluster.nodes().length === count, 10_000, `${count} agents to join`)
  const events = {
    restarted: [] as string[],
    stopped: [] as string[],
    lost: [] as [ActorFailure, Error][],
    childFailed: [] as ActorFailure[],
    errors: [] as ActorErrorEvent[],
  }
  cluster.on('actor:restarted', (a) => events.restarted.push(a.id))
  cluster.on('actor:stopped', (a) => events.stopped.push(a.id))
  cluster.on('actor:lost', (info, error) => events.lost.push([info, error]))
  cluster.on('actor:child-failed', (info) => events.childFailed.push(info))
  cluster.on('actor:error', (info) => events.errors.push(info))
  return { cluster, agents, events }
}

/** Ends the actor's host thread; the driver learns it from the reply. */
async function kill(ref: ActorRef<Tasks.Fragile> | ActorRef<Tasks.Flaky>): Promise<void> {
  await assert.rejects(ref.die(), (e: unknown) => e instanceof WorkerCrashedError)
}

test('children go with a parent lost with its node: stopped, whether the parent is restarted or lost for good', async (t) => {
  const { cluster, agents, events } = await setup(t, 2)
  const [doomed, safe] = agents as [Agent, Agent]
  const plain = await cluster.with({ node: doomed.id }).spawn<Tasks.Guardian>('Guardian')
  const phoenix = await cluster.with({ node: doomed.id, restart: 'always' }).spawn<Tasks.Guardian>('Guardian')
  const plainChild = await spawnChild<Tasks.Counter>(cluster, plain, 'Counter', [1], { node: safe.id, name: 'plain-child' })
  const phoenixChild = await spawnChild<Tasks.Counter>(cluster, phoenix, 'Counter', [2], { node: safe.id, restart: 'always' })
  const grandchild = await spawnChild<Tasks.Counter>(cluster, phoenixChild, 'Counter', [3], { node: safe.id })
  await doomed.close()
  await waitFor(() => events.restarted.length === 1 && events.stopped.length === 3, 10_000, 'the parent to restart and the children to stop')
  assert.deepEqual(events.restarted, [phoenix.id])
  assert.deepEqual(new Set(events.stopped), new Set([plainChild.id, phoenixChild.id, grandchild.id]))
  for (const ref of [plainChild, phoenixChild, grandchild]) await assert.rejects(ref.inc(1), (e: unknown) => e instanceof ActorStoppedError)
  await assert.rejects(plain.ping(), (e: unknown) => e instanceof ActorLostError)
  assert.equal(await phoenix.ping(), 'pong')
  // The plain parent was lost for good; a lost child of a lost parent is not reported to it.
  assert.deepEqual(
    events.lost.map(([info]) => [info.actor.id, info.restarts]),
    [[plain.id, 0]],
  )
  assert.match(events.lost[0]![0].reason, new RegExp(`its node ${doomed.id} was lost`))
  assert.deepEqual(events.childFailed, [])
  assert.deepEqual(await phoenix.told(), [], 'a restarted parent starts without children, and is told nothing of its old ones')
  assert.deepEqual(
    cluster.liveActors().map((a) => a.id),
    [phoenix.id],
  )
  assert.throws(
    () => cluster.actor('plain-child'),
    (e: unknown) => e instanceof ActorNameError,
  )
  assert.equal(cluster.nodes().find((n) => n.id === safe.id)?.actors, 1)
})

test('past its restart budget a child fails for good with ActorLostError, and its parent is told', async (t) => {
  const { cluster, agents, events } = await setup(t, 2)
  const [home, away] = agents as [Agent, Agent]
  const parent = await cluster.with({ node: home.id }).spawn<Tasks.Guardian>('Guardian')
  // Pinned: each restart goes back to the same node.
  const child = await spawnChild<Tasks.Fragile>(cluster, parent, 'Fragile', [0], { node: away.id, restart: 'always', maxRestarts: 2, name: 'fragile' })
  for (let i = 1; i <= 2; i++) {
    await kill(child)
    await waitFor(() => events.restarted.length === i, 10_000, `restart ${i}`)
    assert.equal(await child.inc(1), 1, 'fresh state')
  }
  assert.equal(events.lost.length, 0)
  await kill(child)
  await waitFor(() => events.lost.length === 1, 10_000, 'the child to be lost for good')
  const [info, error] = events.lost[0]!
  assert.deepEqual(info, {
    actor: { id: child.id, className: 'Fragile', name: 'fragile' },
    parent: parent.id,
    reason: `its host thread on node ${away.id} died; its restart budget is spent (2 restarts within 60000 ms)`,
    restarts: 2,
  })
  assert.ok(error instanceof ActorLostError)
  assert.equal(events.restarted.length, 2, 'no third restart')
  // Later asks reject with the same error.
  await assert.rejects(child.inc(1), (e: unknown) => e === error)
  assert.deepEqual(events.childFailed, [info])
  assert.deepEqual(await parent.told(), [info])
  assert.deepEqual(events.errors, [])
  assert.throws(
    () => cluster.actor('fragile'),
    (e: unknown) => e instanceof ActorNameError,
  )
  assert.deepEqual(
    cluster.liveActors().map((a) => a.id),
    [parent.id],
  )
  assert.equal(cluster.nodes().find((n) => n.id === away.id)?.actors, 0)
})

test('a parent without childFailed is told nothing it cannot take: no actor:error for the missing method', async (t) => {
  const { cluster, agents, events } = await setup(t, 2)
  const [home, away] = agents as [Agent, Agent]
  const parent = await cluster.with({ node: home.id }).spawn<Tasks.Counter>('Counter', 0)
  const child = await spawnChild<Tasks.Fragile>(cluster, parent, 'Fragile', [0], { node: away.id })
  await kill(child)
  await waitFor(() => events.childFailed.length === 1, 10_000, 'the parent to be told')
  assert.equal(events.childFailed[0]?.actor.id, child.id)
  assert.equal(events.childFailed[0]?.restarts, 0)
  // The tell went before this ask, in the same mailbox: its reply came with or before the ask's,
  // and what the driver does with it is done once the microtasks of that frame have run.
  assert.equal(await parent.inc(1), 1)
  await new Promise((resolve) => setImmediate(resolve))
  assert.deepEqual(events.errors, [])
})

test('a constructor that throws on every restart ends by the budget: each attempt counted, then ActorLostError with the cause', async (t) => {
  const { cluster, events } = await setup(t, 1)
  const dir = mkdtempSync(join(tmpdir(), 'actor-cluster-flaky-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const ref = await cluster.with({ restart: 'always', maxRestarts: 3 }).spawn<Tasks.Flaky>('Flaky', dir)
  writeFileSync(join(dir, 'refuse'), '')
  await kill(ref)
  await waitFor(() => events.lost.length === 1, 10_000, 'the actor to be lost for good')
  const [info, error] = events.lost[0]!
  assert.equal(info.restarts, 3)
  assert.match(info.reason, /its restart on node .* failed: .*Flaky refuses to start; its restart budget is spent \(3 restarts within 60000 ms\)/)
  assert.ok(error.cause instanceof RemoteTaskError)
  assert.equal(readFileSync(join(dir, 'starts'), 'utf8'), 'start\n'.repeat(4), 'the first start and three restarts')
  assert.deepEqual(events.restarted, [])
  await assert.rejects(ref.ping(), (e: unknown) => e === error)
  assert.deepEqual(cluster.liveActors(), [])
  assert.equal(cluster.nodes()[0]?.actors, 0)
})

test('the budget counts the restarts within its window: older ones no longer count', async (t) => {
  const { cluster, events } = await setup(t, 1)
  // Wide enough that the third loss, a thread start after the second, falls inside it on a loaded machine.
  const windowMs = 2500
  const ref = await cluster.with({ restart: 'always', maxRestarts: 1, restartWindowMs: windowMs }).spawn<Tasks.Fragile>('Fragile', 0)
  await kill(ref)
  await waitFor(() => events.restarted.length === 1, 10_000, 'the first restart')
  // The first restart leaves the window: the budget allows one more.
  await sleep(windowMs + 100)
  await kill(ref)
  await waitFor(() => events.restarted.length === 2, 10_000, 'the second restart')
  assert.equal(await ref.inc(1), 1)
  // A second loss within the window is one too many.
  await kill(ref)
  await waitFor(() => events.lost.length === 1, 10_000, 'the actor to be lost for good')
  assert.equal(events.lost[0]![0].restarts, 1)
  assert.equal(events.restarted.length, 2)
  await assert.rejects(ref.inc(1), (e: unknown) => e instanceof ActorLostError && /restart budget is spent \(1 restarts within 2500 ms\)/.test(e.message))
})

test('restarts back off: the first at once, then restartBackoffMs doubling up to restartBackoffMaxMs, until the budget ends the loop', async (t) => {
  const { cluster, events } = await setup(t, 1)
  const dir = mkdtempSync(join(tmpdir(), 'actor-cluster-backoff-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const ref = await cluster.with({ restart: 'always', maxRestarts: 4, restartBackoffMs: 200, restartBackoffMaxMs: 500 }).spawn<Tasks.Flaky>('Flaky', dir)
  writeFileSync(join(dir, 'refuse'), '')
  await kill(ref)
  // Sent while the restarts wait: held, as during any restart, and rejected with the loss once the budget is spent.
  const held = ref.ping().then(
    () => 'answered',
    (e: unknown) => e,
  )
  await waitFor(() => events.lost.length === 1, 20_000, 'the actor to be lost for good')
  const [info, error] = events.lost[0]!
  assert.equal(info.restarts, 4)
  assert.equal(await held, error)
  const times = readFileSync(join(dir, 'times'), 'utf8').trim().split('\n').map(Number)
  assert.equal(times.length, 5, 'the first start and four restarts')
  const gaps = times.slice(2).map((at, i) => at - times[i + 1]!)
  // Lower bounds only (a loaded machine only makes the gaps longer); 2 ms for the clock's granularity across threads.
  for (const [i, wait] of [200, 400, 500].entries())
    assert.ok(gaps[i]! >= wait - 2, `restart ${i + 2} waited ${gaps[i]} ms, at least ${wait} expected: ${JSON.stringify(gaps)}`)
})

test('a restart waiting out its back-off holds the messages sent meanwhile for the new instance; a stop ends the wait', async (t) => {
  const { cluster, events } = await setup(t, 1)
  const ref = await cluster.with({ restart: 'always', restartBackoffMs: 300 }).spawn<Tasks.Fragile>('Fragile', 0)
  await kill(ref)
  await waitFor(() => events.restarted.length === 1, 10_000, 'the first restart, at once')
  assert.equal(await ref.inc(1), 1)
  // The second loss within the window waits 300 ms: the messages sent meanwhile reach the new instance, in order.
  await kill(ref)
  const lostAt = performance.now()
  const answers = Promise.all([ref.inc(2), ref.inc(3)])
  assert.deepEqual(await within(answers, 10_000, 'the held messages'), [2, 5])
  assert.ok(performance.now() - lostAt >= 300, 'answered after the back-off')
  assert.equal(events.restarted.length, 2)
  // An actor whose second restart would wait 60 s: a stop does not wait for it; its held message is answered, then it stops.
  const slow = await cluster.with({ restart: 'always', restartBackoffMs: 60_000, restartBackoffMaxMs: 60_000 }).spawn<Tasks.Fragile>('Fragile', 0)
  await kill(slow)
  await waitFor(() => events.restarted.length === 3, 10_000, "the slow one's first restart, at once")
  await kill(slow)
  const last = slow.inc(7)
  await within(slow.stop(), 20_000, 'a stop during a 60 s back-off')
  assert.equal(await last, 7)
  assert.ok(events.stopped.includes(slow.id))
  await assert.rejects(slow.inc(1), (e: unknown) => e instanceof ActorStoppedError)
})

test('closing the cluster ends a back-off: the messages held for the new instance reject with ClusterClosedError, none left pending', async (t) => {
  const { cluster, events } = await setup(t, 1)
  const ref = await cluster.with({ restart: 'always', restartBackoffMs: 60_000, restartBackoffMaxMs: 60_000 }).spawn<Tasks.Fragile>('Fragile', 0)
  await kill(ref)
  await waitFor(() => events.restarted.length === 1, 10_000, 'the first restart, at once')
  await kill(ref)
  const held = ref.inc(1).then(
    () => 'answered',
    (e: unknown) => e,
  )
  await within(cluster.close(), 20_000, 'the close')
  const outcome = await within(held, 5_000, 'the held message to settle')
  assert.ok(outcome instanceof ClusterClosedError, `rejected with ClusterClosedError: ${String(outcome)}`)
})

test('a node killed mid-conversation: every outstanding ask settles once (value or ActorLostError), its children elsewhere finish their queues and stop', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0, ...FAST })
  const procs = [runCli(t, fastAgentArgs(cluster.address)), runCli(t, fastAgentArgs(cluster.address))]
  await waitFor(() => cluster.nodes().length === 2, 20_000, 'two agents to join')
  const nodeOf = (pid: number | undefined) => cluster.nodes().find((n) => n.pid === pid)!.id
  const [doomedProc] = procs as [(typeof procs)[0]]
  const doomed = nodeOf(doomedProc.child.pid)
  const safe = cluster.nodes().find((n) => n.id !== doomed)!.id
  const restarted: string[] = []
  cluster.on('actor:restarted', (a) => restarted.push(a.id))

  const parent = await cluster.with({ node: doomed, restart: 'always' }).spawn<Tasks.Guardian>('Guardian')
  const far = await spawnChild<Tasks.Counter>(cluster, parent, 'Counter', [0], { node: safe })
  const near = await spawnChild<Tasks.Counter>(cluster, parent, 'Counter', [0], { node: doomed, restart: 'always' })
  const plain = await cluster.with({ node: doomed }).spawn<Tasks.Counter>('Counter', 0)
  assert.equal(await near.inc(1), 1)

  // Asks outstanding when the node dies: on it (running and queued), and queued at the child elsewhere.
  const settled = new Map<string, number>()
  const watch = <T>(key: string, p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> =>
    p
      .then(
        (value) => ({ ok: true as const, value }),
        (error: unknown) => ({ ok: false as const, error }),
      )
      .finally(() => settled.set(key, (settled.get(key) ?? 0) + 1))
  const onDoomed = Array.from({ length: 20 }, (_, i) => watch(`plain ${i}`, plain.slowInc(1, 100)))
  const nearAsks = Array.from({ length: 5 }, (_, i) => watch(`near ${i}`, near.slowInc(1, 100)))
  const parentAsk = watch('parent', parent.ping())
  const farAsks = Array.from({ length: 10 }, (_, i) => watch(`far ${i}`, far.slowInc(1, 300)))
  await waitFor(() => settled.size === 0 && cluster.nodes().every((n) => n.id !== doomed || n.actors === 3), 5_000, 'the asks to be out')
  doomedProc.child.kill('SIGKILL')

  const all = await within(
    Promise.all([...onDoomed, ...nearAsks, parentAsk, ...farAsks]),
    30_000,
    () => `every ask to settle; settled: ${[...settled.keys()].join(', ')}`,
  )
  assert.equal(settled.size, 36)
  assert.ok(
    [...settled.values()].every((n) => n === 1),
    'each settled once',
  )
  const lost = (r: (typeof all)[number]) => !r.ok && r.error instanceof ActorLostError
  // On the lost node: each ask ran or not, unknown; it rejects with ActorLostError unless it had answered first.
  for (const r of [...all.slice(0, 26)]) assert.ok(r.ok || lost(r), String(!r.ok && r.error))
  assert.ok(all.slice(0, 20).some(lost), 'some asks to the plain actor were lost')
  // The child elsewhere ran its queue before its stop: 1..10 in order.
  assert.deepEqual(
    all.slice(26).map((r) => (r.ok ? r.value : String(r.error))),
    Array.from({ length: 10 }, (_, i) => i + 1),
  )
  await assert.rejects(far.inc(1), (e: unknown) => e instanceof ActorStoppedError)
  // The restartable child went with its parent: not restarted. The parent was.
  await waitFor(() => restarted.length === 1, 10_000, 'the parent to restart')
  assert.deepEqual(restarted, [parent.id])
  await assert.rejects(near.inc(1), (e: unknown) => e instanceof ActorLostError || e instanceof ActorStoppedError)
  await assert.rejects(plain.inc(1), (e: unknown) => e instanceof ActorLostError)
  assert.equal(await parent.ping(), 'pong')
  assert.deepEqual(
    cluster.liveActors().map((a) => [a.id, a.node]),
    [[parent.id, safe]],
  )
  assert.equal(cluster.stats().inFlight, 0)
})
