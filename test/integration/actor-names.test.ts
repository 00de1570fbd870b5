/**
 * Named actors and `tell`, on a real cluster: a name is held by one live
 * actor, looked up by `cluster.actor(name)`, freed when the actor stops; a
 * tell keeps its place in the mailbox among asks and reports a failure once,
 * as an `actor:error` event.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  ActorLostError,
  ActorNameError,
  ActorStoppedError,
  Cluster,
  InvalidArgumentError,
  RemoteTaskError,
  UnknownMethodError,
  type ActorErrorEvent,
  type ActorRef,
} from '../../lib/index.js'
import type * as Tasks from '../fixtures/tasks.js'
import { FIXTURE_TASKS, waitFor, within } from '../helpers.js'

let cluster: Cluster

before(async () => {
  cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1 })
})
after(async () => {
  await cluster.close()
})

test('a second live actor under a taken name fails with ERR_ACTOR_NAME_TAKEN naming the name and the holder', async () => {
  const first = await cluster.with({ name: 'taken' }).spawn<Tasks.Counter>('Counter', 1)
  await assert.rejects(
    cluster.with({ name: 'taken' }).spawn<Tasks.Counter>('Counter', 2),
    (e: unknown) =>
      e instanceof ActorNameError &&
      e.code === 'ERR_ACTOR_NAME_TAKEN' &&
      e.actorName === 'taken' &&
      e.message === `the actor name "taken" is taken by actor ${first.id} (Counter); a name is freed when its actor stops or is lost`,
  )
  // Two spawns under one name at once: exactly one gets it.
  const both = await Promise.allSettled([cluster.with({ name: 'race' }).spawn('Counter'), cluster.with({ name: 'race' }).spawn('Counter')])
  assert.deepEqual(
    both.map((r) => r.status),
    ['fulfilled', 'rejected'],
  )
  assert.equal(((both[1] as PromiseRejectedResult).reason as ActorNameError).code, 'ERR_ACTOR_NAME_TAKEN')
  // The holder is untouched.
  assert.equal(await first.inc(1), 2)
  assert.equal(cluster.liveActors().filter((a) => a.name === 'taken').length, 1)
  await first.stop()
  await (both[0] as PromiseFulfilledResult<{ stop(): Promise<void> }>).value.stop()
})

test('cluster.actor(name) returns a working typed reference to the named actor', async () => {
  const spawned = await cluster.with({ name: 'totals' }).spawn<Tasks.Counter>('Counter', 10)
  const found = cluster.actor<Tasks.Counter>('totals')
  assert.equal(found.id, spawned.id)
  assert.equal(found.name, 'totals')
  assert.equal(spawned.name, 'totals')
  assert.equal(await found.inc(5), 15)
  assert.equal(await spawned.inc(1), 16)
  assert.deepEqual(
    cluster.liveActors().find((a) => a.id === spawned.id),
    { id: spawned.id, className: 'Counter', node: spawned.node, name: 'totals' },
  )
  await found.stop()
})

test('cluster.actor of a name no live actor holds throws ERR_ACTOR_NOT_FOUND naming it', () => {
  assert.throws(
    () => cluster.actor('nobody'),
    (e: unknown) =>
      e instanceof ActorNameError && e.code === 'ERR_ACTOR_NOT_FOUND' && e.actorName === 'nobody' && /^no live actor is named "nobody"; /.test(e.message),
  )
  assert.throws(
    () => cluster.with({ name: '' }),
    (e: unknown) => e instanceof InvalidArgumentError && e.message === 'options.name must be a non-empty string, got ""',
  )
})

test('a name is freed when its actor stops: the lookup fails, the old reference says stopped, the name can be taken again', async () => {
  const old = await cluster.with({ name: 'reused' }).spawn<Tasks.Counter>('Counter', 100)
  await old.stop()
  assert.throws(
    () => cluster.actor('reused'),
    (e: unknown) => e instanceof ActorNameError && e.code === 'ERR_ACTOR_NOT_FOUND',
  )
  await assert.rejects(old.inc(1), (e: unknown) => e instanceof ActorStoppedError)
  const fresh = await cluster.with({ name: 'reused' }).spawn<Tasks.Counter>('Counter', 200)
  assert.notEqual(fresh.id, old.id)
  assert.equal(await cluster.actor<Tasks.Counter>('reused').inc(1), 201)
  await fresh.stop()
})

test('a name is freed when its actor is lost (not restartable)', async () => {
  const fragile = await cluster.with({ name: 'fragile' }).spawn<Tasks.Fragile>('Fragile', 0)
  await assert.rejects(fragile.die())
  await assert.rejects(fragile.inc(1), (e: unknown) => e instanceof ActorLostError)
  assert.throws(
    () => cluster.actor('fragile'),
    (e: unknown) => e instanceof ActorNameError && e.code === 'ERR_ACTOR_NOT_FOUND',
  )
})

test('tells and asks interleaved reach the actor in the order they were made', async () => {
  const rec = await cluster.spawn<Tasks.Recorder>('Recorder', 'r')
  await rec.trace()
  // Typed as the asks are (checked by the compiler, never run).
  const typed = (c: ActorRef<Tasks.Counter>) => {
    // @ts-expect-error inc takes a number
    c.tell.inc('one')
    // @ts-expect-error no such method
    assert.equal(c.tell.nope, undefined)
    const r: void = c.tell.inc(1)
    return r
  }
  assert.equal(typeof typed, 'function')
  const expected: string[] = []
  const asks: Promise<string>[] = []
  for (let k = 0; k < 300; k++) {
    const tag = `m${k}`
    expected.push(`r:${tag}`)
    if (k % 3 === 0) asks.push(rec.note(tag))
    else assert.equal(rec.tell.note(tag), undefined)
    // Some in later ticks: order holds across frames too.
    if (k % 50 === 49) await new Promise((r) => setImmediate(r))
  }
  await within(Promise.all(asks), 10_000, 'the asks')
  assert.deepEqual(await rec.trace(), expected)
  await rec.stop()
})

test('a failed tell is reported once as actor:error (method threw, unknown method, actor stopped), never as an unhandled rejection', async (t) => {
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown) => unhandled.push(reason)
  process.on('unhandledRejection', onUnhandled)
  t.after(() => process.off('unhandledRejection', onUnhandled))
  const events: ActorErrorEvent[] = []
  const onError = (e: ActorErrorEvent) => events.push(e)
  cluster.on('actor:error', onError)
  t.after(() => cluster.off('actor:error', onError))

  const c = await cluster.with({ name: 'teller' }).spawn<Tasks.Counter>('Counter', 0)
  c.tell.boom()
  c.tell.inc(2)
  // An ask after the tells answers after them: the failures are in by then.
  assert.equal(await c.inc(1), 3)
  ;(c.tell as unknown as Record<string, () => void>)['nope']!()
  assert.equal(await c.inc(1), 4)
  await c.stop()
  c.tell.inc(1)
  await waitFor(() => events.length >= 3, 10_000, 'three actor:error events')
  // Nothing else arrives later: a round trip to another actor, and the count stands.
  const probe = await cluster.spawn<Tasks.Counter>('Counter', 0)
  assert.equal(await probe.inc(1), 1)
  await probe.stop()
  assert.equal(events.length, 3)
  assert.deepEqual(
    events.map((e) => [e.actor, e.method]),
    [
      [{ id: c.id, className: 'Counter', name: 'teller' }, 'boom'],
      [{ id: c.id, className: 'Counter', name: 'teller' }, 'nope'],
      [{ id: c.id, className: 'Counter', name: 'teller' }, 'inc'],
    ],
  )
  assert.ok(events[0]!.error instanceof RemoteTaskError && events[0]!.error.message === 'counter exploded', String(events[0]!.error))
  assert.ok(events[1]!.error instanceof UnknownMethodError, String(events[1]!.error))
  assert.ok(events[2]!.error instanceof ActorStoppedError, String(events[2]!.error))
  assert.deepEqual(unhandled, [])
})
