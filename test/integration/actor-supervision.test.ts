/**
 * Children on a real cluster: an actor spawned by an actor stops with it
 * (its children too, each after its parent, once the parent's queued
 * messages have run); stopping a child leaves its parent running; names and
 * records are freed.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ActorNameError, ActorStoppedError, Cluster, InvalidArgumentError } from '../../lib/index.js'
import type * as Tasks from '../fixtures/tasks.js'
import { FIXTURE_TASKS, spawnChild, within } from '../helpers.js'

const isStopped = (e: unknown) => e instanceof ActorStoppedError

test('stopping a parent stops its children and theirs after its own messages; stopping a child leaves the parent; names are freed', async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2 })
  t.after(() => cluster.close())
  const stopped: string[] = []
  cluster.on('actor:stopped', (a) => stopped.push(a.id))
  const parent = await cluster.spawn<Tasks.Guardian>('Guardian')
  const child = await spawnChild<Tasks.Counter>(cluster, parent, 'Counter', [10], { name: 'kid' })
  const grandchild = await spawnChild<Tasks.Counter>(cluster, child, 'Counter', [20])
  const other = await spawnChild<Tasks.Counter>(cluster, parent, 'Counter', [30])
  const bystander = await cluster.spawn<Tasks.Counter>('Counter', 0)

  // A child stopped on its own: its parent and siblings run on.
  await other.stop()
  assert.equal(await parent.ping(), 'pong')
  assert.equal(await child.inc(1), 11)
  assert.deepEqual(stopped, [other.id])

  // Queued before the stop: it runs, the grandchild stops after it.
  const slow = grandchild.slowInc(1, 200)
  await parent.stop()
  assert.equal(await slow, 21)
  assert.deepEqual(stopped, [other.id, parent.id, child.id, grandchild.id], 'each after its parent')
  await assert.rejects(parent.ping(), isStopped)
  await assert.rejects(child.inc(1), isStopped)
  await assert.rejects(grandchild.inc(1), isStopped)
  assert.equal(await bystander.inc(1), 1, 'an actor of no parent is left alone')
  assert.deepEqual(
    cluster.liveActors().map((a) => a.id),
    [bystander.id],
  )
  assert.equal(
    cluster.nodes().reduce((n, node) => n + node.actors, 0),
    1,
    'the nodes count the bystander only',
  )

  // The child's name is free again; a stopped actor cannot have children.
  assert.throws(
    () => cluster.actor('kid'),
    (e: unknown) => e instanceof ActorNameError && e.code === 'ERR_ACTOR_NOT_FOUND',
  )
  const again = await cluster.with({ name: 'kid' }).spawn<Tasks.Counter>('Counter', 5)
  assert.equal(await cluster.actor<Tasks.Counter>('kid').inc(1), 6)
  await assert.rejects(
    spawnChild(cluster, parent, 'Counter'),
    (e: unknown) => isStopped(e) && (e as Error).message.includes(`child of actor ${parent.id}: that actor is not running`),
  )
  await again.stop()
})

test('a child stopped while its parent stops, and a parent stopped while its child is being spawned', async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => cluster.close())
  const parent = await cluster.spawn<Tasks.Guardian>('Guardian')
  const child = await spawnChild<Tasks.Counter>(cluster, parent, 'Counter', [1])
  // Both stops settle; the child stops once.
  let stops = 0
  cluster.on('actor:stopped', (a) => void (a.id === child.id && stops++))
  await Promise.all([child.stop(), parent.stop()])
  assert.equal(stops, 1)
  // The spawn of a child is under way when its parent stops: the child is stopped too.
  const parent2 = await cluster.spawn<Tasks.Guardian>('Guardian')
  const spawning = spawnChild<Tasks.Counter>(cluster, parent2, 'Counter', [1])
  await parent2.stop()
  await assert.rejects(spawning, (e: unknown) => isStopped(e) && /stopped while spawning its child/.test((e as Error).message))
  assert.deepEqual(cluster.liveActors(), [])
})

test('stop({ force: true }) stops an actor stuck in a method that never settles: its running and queued calls reject, a graceful stop behind them settles, its children stop too', async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2 })
  t.after(() => cluster.close())
  const stopped: string[] = []
  cluster.on('actor:stopped', (a) => stopped.push(a.id))
  const stuck = await cluster.with({ name: 'stuck' }).spawn<Tasks.Recorder>('Recorder', 'stuck')
  const child = await spawnChild<Tasks.Counter>(cluster, stuck, 'Counter', [5])
  const bystander = await cluster.spawn<Tasks.Counter>('Counter', 0)
  // `hold` never settles (nothing calls release): everything sent after it waits behind it, a graceful stop too.
  const forced = (e: unknown) => isStopped(e) && /was stopped with force before this message finished/.test((e as Error).message)
  const held = assert.rejects(stuck.hold('forever'), forced)
  const queued = assert.rejects(stuck.note('after'), forced)
  let gracefulDone = false
  const graceful = stuck.stop().then(() => (gracefulDone = true))
  await new Promise((resolve) => setTimeout(resolve, 200))
  assert.equal(gracefulDone, false, 'a graceful stop waits behind the method that never settles')

  await within(stuck.stop({ force: true }), 10_000, 'the forced stop')
  await held
  await queued
  await graceful
  await assert.rejects(stuck.note('later'), isStopped)
  await assert.rejects(child.inc(1), isStopped)
  assert.deepEqual(stopped, [stuck.id, child.id], 'the actor, then its child, once each')
  assert.equal(
    cluster.nodes().reduce((n, node) => n + node.actors, 0),
    1,
    'only the bystander is counted',
  )
  assert.equal(await bystander.inc(1), 1)
  // Its name is free again; stopping a stopped actor with force is a no-op.
  const again = await cluster.with({ name: 'stuck' }).spawn<Tasks.Counter>('Counter', 7)
  assert.equal(await again.inc(0), 7)
  await stuck.stop({ force: true })
  // Options that are none are refused by name.
  await assert.rejects(
    again.stop({ forse: true } as never),
    (e: unknown) => e instanceof InvalidArgumentError && /unknown option "forse" \(did you mean "force"\?\)/.test(e.message),
  )
  await assert.rejects(
    again.stop({ force: 'yes' } as never),
    (e: unknown) => e instanceof InvalidArgumentError && e.message === 'options.force must be a boolean, got "yes"',
  )
  await assert.rejects(again.stop(5 as never), (e: unknown) => e instanceof InvalidArgumentError && e.message === 'stop options must be an object, got number')
  assert.equal(await again.inc(1), 8, 'a refused stop stops nothing')
  // From a thread: a task stops an actor stuck the same way.
  const stuck2 = await cluster.spawn<Tasks.Recorder>('Recorder', 'stuck2')
  const held2 = assert.rejects(stuck2.hold('forever'), forced)
  assert.equal(await within(cluster.call<string>('stopWithForce', stuck2), 10_000, 'the forced stop from a task'), 'stopped')
  await held2
  // From a thread, while a graceful stop waits behind the stuck method: the reference the task receives still reaches it.
  const stuck3 = await cluster.spawn<Tasks.Recorder>('Recorder', 'stuck3')
  const held3 = assert.rejects(stuck3.hold('forever'), forced)
  const graceful3 = stuck3.stop()
  assert.equal(await within(cluster.call<string>('stopWithForce', stuck3), 10_000, 'the forced stop from a task during a graceful one'), 'stopped')
  await within(held3, 10_000, 'the stuck call to reject')
  await within(graceful3, 10_000, 'the graceful stop behind it')
  await assert.rejects(stuck3.note('later'), isStopped)
})

test('stop({ force: true }) during a graceful stop reaches an actor on any host thread of its node, not only the first', async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2 })
  t.after(() => cluster.close())
  // The first actor takes the node's first host thread, the second one its second.
  const first = await cluster.spawn<Tasks.Counter>('Counter', 0)
  const stuck = await cluster.spawn<Tasks.Recorder>('Recorder', 'second')
  const forced = (e: unknown) => isStopped(e) && /was stopped with force before this message finished/.test((e as Error).message)
  const held = assert.rejects(stuck.hold('forever'), forced)
  const graceful = stuck.stop()
  await new Promise((resolve) => setTimeout(resolve, 200))
  await within(stuck.stop({ force: true }), 10_000, 'the forced stop')
  await within(held, 10_000, 'the stuck call to reject')
  await within(graceful, 10_000, 'the graceful stop behind it')
  assert.equal(await first.inc(1), 1, 'the actor on the first thread runs on')
})

test('stop() called again while a stop is under way settles with it, from the driver and from a thread', async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2 })
  t.after(() => cluster.close())
  const stopped: string[] = []
  cluster.on('actor:stopped', (a) => stopped.push(a.id))
  const busy = await cluster.spawn<Tasks.Counter>('Counter', 0)
  const slow = assert.rejects(busy.slowInc(1, 200), isStopped)
  const stops = await Promise.allSettled([busy.stop(), busy.stop(), cluster.call<string>('stopWithForce', busy), busy.stop({ force: true })])
  assert.deepEqual(
    stops.map((s) => (s.status === 'fulfilled' ? 'stopped' : `${(s.reason as Error).name}: ${(s.reason as Error).message}`)),
    ['stopped', 'stopped', 'stopped', 'stopped'],
  )
  await slow
  assert.deepEqual(stopped, [busy.id], 'stopped once')

  const graceful = await cluster.spawn<Tasks.Counter>('Counter', 0)
  const last = graceful.slowInc(1, 200)
  const twice = await Promise.allSettled([graceful.stop(), graceful.stop()])
  assert.deepEqual(
    twice.map((s) => s.status),
    ['fulfilled', 'fulfilled'],
  )
  assert.equal(await last, 1, 'a graceful stop lets the queued call finish')
})
