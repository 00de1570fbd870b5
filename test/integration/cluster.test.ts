import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  Cluster,
  RemoteTaskError,
  UnknownTaskError,
  UnknownActorError,
  UnknownMethodError,
  SerializationError,
  ClusterClosedError,
  ActorStoppedError,
  TasksModuleError,
  InvalidArgumentError,
} from '../../lib/index.js'
import type * as Tasks from '../fixtures/tasks.js'
import { FIXTURE_TASKS, mapAhead, runProcess, waitFor, within } from '../helpers.js'

let cluster: Cluster

before(async () => {
  cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2 })
})
after(async () => {
  await cluster.close()
})

test('the embedded default starts one local agent with a thread per core', () => {
  const nodes = cluster.nodes()
  assert.equal(nodes.length, 1)
  assert.equal(nodes[0]!.threads, 2)
  assert.equal(nodes[0]!.local, true)
  assert.equal(nodes[0]!.pid, process.pid)
  // No listen given: in-process only, no socket at all (give listen for remote agents).
  assert.match(cluster.address, /^memory:\/\/actor-cluster-/)
})

test('call and the typed proxy return results', async () => {
  assert.equal(await cluster.call('add', 1, 2), 3)
  const t = cluster.tasks<typeof Tasks>()
  assert.equal(await t.add(20, 22), 42)
  assert.equal(await t.addLater(1, 1, 1), 2)
  assert.deepEqual(await t.echo({ a: [1, 'x', null], f: new Float64Array([0.5]) }), { a: [1, 'x', null], f: new Float64Array([0.5]) })
  // A proxy is not a thenable: awaiting it gives the proxy itself.
  assert.equal(await Promise.resolve(t), t)
})

test('a task that throws rejects with the remote message and stack', async () => {
  await assert.rejects(cluster.call('fail', 'it broke'), (err: unknown) => {
    assert.ok(err instanceof RemoteTaskError)
    assert.equal(err.message, 'it broke')
    assert.equal(err.remoteName, 'RangeError')
    assert.equal(err.task, 'fail')
    assert.match(err.stack ?? '', /at fail \(.*fixtures\/tasks\.js/)
    return true
  })
})

test('an unknown task rejects at once, naming what exists', async () => {
  await assert.rejects(cluster.call('nope'), (err: unknown) => err instanceof UnknownTaskError && /"nope".*"add"/.test(err.message))
  // Actor classes are not tasks.
  await assert.rejects(cluster.call('Counter'), UnknownTaskError)
})

test('arguments and results msgpack cannot carry are clear errors, and lose nothing else', async () => {
  const good = cluster.call('add', 2, 3)
  await assert.rejects(
    cluster.call('echo', () => 1),
    (e: unknown) => e instanceof SerializationError && /args\[0\] is a function/.test(e.message),
  )
  await assert.rejects(cluster.call('echo', Symbol('s')), SerializationError)
  await assert.rejects(cluster.call('returnsFunction'), (e: unknown) => e instanceof SerializationError && /returned a value/.test(e.message))
  assert.equal(await good, 5)
})

test('a bigint of any size arrives as sent, as an argument and as a result, of tasks, actors and shared values alike', async () => {
  const wide = [2n ** 63n, 2n ** 64n + 1n, -(2n ** 70n), 2n ** 200n]
  for (const big of wide) assert.equal(await cluster.call('echo', big), big)
  assert.deepEqual(await cluster.call('echo', { nested: [wide] }), { nested: [wide] })
  const seen: unknown[] = []
  for await (const r of cluster.map('echo', [[2n ** 70n]])) seen.push(r)
  assert.deepEqual(seen, [2n ** 70n])
  const counter = await cluster.spawn<Tasks.Counter>('Counter', 2n ** 70n)
  assert.equal(await counter.inc(1n as unknown as number), 2n ** 70n + 1n)
  await counter.stop()
  const shared = await cluster.put(2n ** 100n)
  assert.equal(await cluster.call('echo', shared), 2n ** 100n)
  await shared.release()
})

test('a value nested 200 levels deep arrives as sent, from and to tasks, actors and shared values; a circular one is named as such', async () => {
  const nest = (n: number): unknown => (n === 0 ? 'core' : { in: [nest(n - 1)] })
  const deep = nest(200)
  assert.deepEqual(await cluster.call('echo', deep), deep)
  const recorder = await cluster.spawn<Tasks.Recorder>('Recorder', 'deep')
  assert.deepEqual(await recorder.note(deep as string), deep)
  await recorder.stop()
  const shared = await cluster.put(deep)
  assert.deepEqual(await cluster.call('echo', shared), deep)
  await shared.release()
  const loop: Record<string, unknown> = { n: 1 }
  loop['again'] = [loop]
  await assert.rejects(cluster.call('echo', loop), { name: 'SerializationError', message: /args\[0\]\.again\[0\] is circular \(it contains itself\)/ })
  await assert.rejects(cluster.put(loop), { name: 'SerializationError', message: /value\.again\[0\] is circular/ })
})

test('an argument msgpack cannot carry, in one frame with good ones, fails exactly its call; the others are answered', async () => {
  class Point {
    x = 1
  }
  const before = cluster.stats()
  // Submitted in one tick: they travel in one frame, which fails to encode; only then are the arguments walked.
  const calls = [
    cluster.call<number>('add', 1, 2),
    cluster.call('echo', { a: [1, () => 0] }),
    cluster.call<number>('add', 3, 4),
    cluster.call('echo', 'x', new Point()),
    cluster.call<number>('add', 5, 6),
  ]
  const settled = await Promise.allSettled(calls)
  assert.deepEqual(
    settled.map((s) => (s.status === 'fulfilled' ? s.value : `${(s.reason as Error).name}: ${(s.reason as Error).message}`)),
    [
      3,
      'SerializationError: cannot send task "echo": args[0].a[1] is a function; msgpack cannot carry it',
      7,
      'SerializationError: cannot send task "echo": args[1] is an instance of Point, which would arrive as a plain object; msgpack cannot carry it',
      11,
    ],
  )
  for (const s of settled) if (s.status === 'rejected') assert.equal((s.reason as SerializationError).code, 'ERR_SERIALIZATION')
  const after = cluster.stats()
  assert.equal(after.tasksSucceeded - before.tasksSucceeded, 3)
  assert.equal(after.tasksFailed - before.tasksFailed, 2)
  assert.equal(after.queued + after.inFlight, 0)
})

test('the same through map: the bad argument fails the map at its place, after the results before it', async () => {
  const inputs = [
    [1, 2],
    [() => 0, 1],
    [3, 4],
  ]
  const seen: number[] = []
  await assert.rejects(
    (async () => {
      for await (const r of cluster.map<number>('add', inputs)) seen.push(r)
    })(),
    (e: unknown) =>
      e instanceof SerializationError &&
      e.message === 'cannot send task "add": args[0] is a function; msgpack cannot carry it' &&
      e.code === 'ERR_SERIALIZATION',
  )
  assert.deepEqual(seen, [3])
  // The map withdrew what it had left: nothing of it stays queued; a task already on an agent cannot be
  // called back, so it stays in flight until its (now late) result arrives, and no longer.
  assert.equal(cluster.stats().queued, 0)
  await waitFor(() => cluster.stats().inFlight === 0, 10_000, 'the withdrawn task already sent to come back')
})

test('many calls spread over the threads and all settle correctly', async () => {
  const n = 20_000
  const rs = await Promise.all(Array.from({ length: n }, (_, k) => cluster.call<number>('add', 1, k)))
  assert.equal(rs.length, n)
  assert.ok(rs.every((r, k) => r === k + 1))
})

test('map yields results in input order by default', async () => {
  const out: number[] = []
  for await (const r of cluster.map<number>('add', [
    [1, 1],
    [2, 2],
    [3, 3],
  ]))
    out.push(r)
  assert.deepEqual(out, [2, 4, 6])
  const single: unknown[] = []
  for await (const r of cluster.map('echo', ['a', 'b'])) single.push(r)
  assert.deepEqual(single, ['a', 'b'])
})

test('map with ordered: false yields every result', async () => {
  const inputs = Array.from({ length: 5000 }, (_, k) => [k, 0])
  const out: number[] = []
  for await (const r of cluster.map<number>('add', inputs, { ordered: false })) out.push(r)
  assert.deepEqual(
    out.sort((a, b) => a - b),
    inputs.map((x) => x[0]),
  )
})

test('map pulls inputs lazily: never more than concurrency ahead of the consumer', async () => {
  const { pulled, consumed, maxAhead } = await mapAhead(cluster, 64, 2000)
  assert.ok(maxAhead <= 65, `pulled ${maxAhead} ahead`)
  assert.ok(pulled <= consumed + 65)
})

test('map accepts async iterables', async () => {
  async function* gen() {
    for (let k = 0; k < 100; k++) {
      if (k % 10 === 0) await new Promise((r) => setImmediate(r))
      yield [k, k]
    }
  }
  let sum = 0
  for await (const r of cluster.map<number>('add', gen(), { ordered: false, concurrency: 7 })) sum += r
  assert.equal(sum, (2 * (99 * 100)) / 2)
})

test('map throws at the failing result, and checks its arguments', async () => {
  const seen: unknown[] = []
  await assert.rejects(
    async () => {
      for await (const r of cluster.map('echo', [[1], [2]])) seen.push(r)
      for await (const r of cluster.map('fail', [['bad one']])) seen.push(r)
    },
    (e: unknown) => e instanceof RemoteTaskError && e.message === 'bad one',
  )
  assert.deepEqual(seen, [1, 2])
  await assert.rejects(cluster.map('nope', []).next(), UnknownTaskError)
  await assert.rejects(cluster.map('add', [], { concurrency: 0 }).next(), InvalidArgumentError)
  await assert.rejects(cluster.map('add', 5 as never).next(), InvalidArgumentError)
})

test('actors keep state and run their messages one at a time, in order', async () => {
  const counter = await cluster.spawn<Tasks.Counter>('Counter', 10)
  assert.match(counter.id, /^Counter-/)
  assert.equal(counter.node, cluster.nodes()[0]!.id)
  assert.equal(await counter.inc(5), 15)
  // slowInc reads, awaits, then writes: interleaving would lose increments.
  const results = await Promise.all(Array.from({ length: 20 }, () => counter.slowInc(1, 1)))
  assert.deepEqual(
    results,
    Array.from({ length: 20 }, (_, i) => 16 + i),
  )
  assert.equal(await counter.inc(0), 35)
  await assert.rejects(counter.boom(), (e: unknown) => e instanceof RemoteTaskError && e.remoteName === 'TypeError')
  await assert.rejects((counter as unknown as { missing(): Promise<void> }).missing(), UnknownMethodError)
  assert.equal(await counter.inc(1), 36, 'errors do not lose state')
  await counter.stop()
  await counter.stop()
  await assert.rejects(counter.inc(1), ActorStoppedError)
})

test('actors are independent of each other and of tasks', async () => {
  const a = await cluster.spawn<Tasks.Counter>('Counter')
  const b = await cluster.spawn<Tasks.Counter>('Counter', 100)
  const [ra, rb, sum] = await Promise.all([a.inc(1), b.inc(1), cluster.call('add', 2, 2)])
  assert.deepEqual([ra, rb, sum], [1, 101, 4])
  await Promise.all([a.stop(), b.stop()])
})

test('spawning unknown classes or with bad arguments fails clearly', async () => {
  await assert.rejects(cluster.spawn('Nope'), (e: unknown) => e instanceof UnknownActorError && /"Counter"/.test(e.message))
  await assert.rejects(cluster.spawn('add'), UnknownActorError)
  await assert.rejects(
    cluster.spawn('Counter', () => 1),
    SerializationError,
  )
})

test('close() rejects pending tasks with a clear error, is idempotent, and later calls fail', async (t) => {
  const c = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => c.close())
  await c.with({ name: 'kept' }).spawn('Counter')
  const slow = c.call('sleep', 300)
  const queued = Promise.allSettled(Array.from({ length: 10 }, () => c.call('sleep', 300)))
  await waitFor(() => (c.nodes()[0]?.inFlight ?? 0) > 0, 10_000, 'the first task to reach the agent')
  const slowRejected = assert.rejects(slow, (e: unknown) => e instanceof ClusterClosedError && e.code === 'ERR_CLUSTER_CLOSED')
  await Promise.all([c.close(), c.close()])
  await slowRejected
  for (const q of await queued) assert.ok(q.status === 'rejected' && q.reason instanceof ClusterClosedError)
  await assert.rejects(c.call('add', 1, 2), ClusterClosedError)
  await assert.rejects(c.spawn('Counter'), ClusterClosedError)
  // A name lookup too says the cluster is closed, not that no actor holds the name.
  assert.throws(() => c.actor('kept'), ClusterClosedError)
  assert.deepEqual(c.nodes(), [])
})

test('close() does not wait for a local task that never ends: its call is settled, so its thread is stopped at once', async (t) => {
  const c = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => c.close())
  const endless = assert.rejects(c.call('loopForever'), ClusterClosedError)
  await waitFor(() => (c.nodes()[0]?.busyThreads ?? 0) > 0, 10_000, 'the endless task to start')
  const started = performance.now()
  await c.close()
  // Before, the local agent waited 10 s for its running batch to finish; a few seconds leaves room for a loaded machine.
  assert.ok(performance.now() - started < 5_000, `close() took ${Math.round(performance.now() - started)} ms`)
  await endless
})

test('await using disposes the cluster', async () => {
  let c: Cluster | undefined
  {
    await using inner = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1 })
    c = inner
    assert.equal(await inner.call('add', 1, 1), 2)
  }
  await assert.rejects(c.call('add', 1, 1), ClusterClosedError)
})

test('a listener that throws does not leave the task it hears of unsettled; its error is thrown on its own', async (t) => {
  // In a process of its own: the listener's error is an uncaught exception there, as from any emitter.
  const script = `import { Cluster } from ${JSON.stringify(new URL('../../lib/index.js', import.meta.url).href)}
const c = await Cluster.start({ tasks: ${JSON.stringify(FIXTURE_TASKS.href)}, threads: 1 })
process.on('uncaughtException', (e) => console.log('uncaught ' + e.message))
c.on('task:failed', () => { throw new Error('listener bug') })
const late = new Promise((r) => setTimeout(() => r('unsettled'), 10_000).unref())
console.log(await Promise.race([c.call('fail', 'on purpose').then(() => 'resolved', (e) => 'rejected ' + e.message), late]))
console.log('next ' + (await c.call('add', 1, 2)))
await c.close()
`
  const p = runProcess(t, process.execPath, ['--input-type=module', '-e', script])
  assert.equal(await within(p.exited, 30_000, 'the script'), 0, p.output())
  assert.match(p.output(), /^rejected on purpose$/m)
  assert.match(p.output(), /^uncaught listener bug$/m)
  assert.match(p.output(), /^next 3$/m)
})

test('a tasks module that fails to load is a clear error at start', async () => {
  await assert.rejects(
    Cluster.start({ tasks: new URL('./fixtures/does-not-exist.js', FIXTURE_TASKS) }),
    (e: unknown) => e instanceof TasksModuleError && /does-not-exist\.js failed to load on the driver/.test(e.message),
  )
  await assert.rejects(
    Cluster.start({ tasks: new URL('./broken-tasks.js', FIXTURE_TASKS) }),
    (e: unknown) => e instanceof TasksModuleError && /broken on purpose/.test(e.message),
  )
  await assert.rejects(
    Cluster.start({ tasks: new URL('./constants-tasks.js', FIXTURE_TASKS) }),
    (e: unknown) => e instanceof TasksModuleError && /constants-tasks\.js failed to load on the driver: it exports no functions or classes$/.test(e.message),
  )
  await assert.rejects(
    Cluster.start({ tasks: new URL('./default-tasks.js', FIXTURE_TASKS) }),
    (e: unknown) =>
      e instanceof TasksModuleError && /default-tasks\.js .*: its only export is the default one; export each task and actor class by name$/.test(e.message),
  )
})

test('stats count what happened', async () => {
  // Counted from here: the tests before this one used the same cluster.
  const before = cluster.stats()
  const n = 20_000
  await Promise.all(Array.from({ length: n }, (_, k) => cluster.call('add', 1, k)))
  await assert.rejects(cluster.call('fail', 'counted'), RemoteTaskError)
  const s = cluster.stats()
  assert.equal(s.tasksSubmitted - before.tasksSubmitted, n + 1)
  assert.equal(s.tasksSucceeded - before.tasksSucceeded, n)
  assert.equal(s.tasksFailed - before.tasksFailed, 1)
  assert.equal(s.badFrames, 0)
  assert.equal(s.nodes, 1)
  assert.ok(s.transport.framesOut > before.transport.framesOut && s.transport.bytesIn > before.transport.bytesIn)
})
