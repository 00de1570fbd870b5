/**
 * An option that is not one — a typo such as `thread` or `timeout` — is an
 * error naming it and the nearest known option, wherever options are taken:
 * Cluster.start, Agent.start, cluster.with, map, reduce, and context.with in
 * a thread. Before, each was silently ignored.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Agent, Cluster, InvalidArgumentError } from '../../lib/index.js'

const TASKS = new URL('../fixtures/context-tasks.js', import.meta.url)
const unknown = (key: string, near: string) => (e: unknown) =>
  e instanceof InvalidArgumentError && e.message.includes(`unknown option "${key}" (did you mean "${near}"?)`)

let cluster: Cluster
before(async () => {
  cluster = await Cluster.start({ tasks: TASKS, threads: 1 })
})
after(async () => {
  await cluster.close()
})

test('Cluster.start and Agent.start refuse an unknown option, and one of localAgentOptions', async () => {
  await assert.rejects(Cluster.start({ tasks: TASKS, thread: 2 } as never), unknown('thread', 'threads'))
  await assert.rejects(Cluster.start({ tasks: TASKS, localAgentOptions: { sharedCacheByte: 1 } } as never), unknown('sharedCacheByte', 'sharedCacheBytes'))
  await assert.rejects(Agent.start({ connect: 'tcp://127.0.0.1:1', tasks: TASKS, heartbeat: 5 } as never), unknown('heartbeat', 'heartbeatMs'))
})

test('cluster.with, map, map’s reduce and reduce refuse an unknown option; the right ones still work', async () => {
  assert.throws(() => cluster.with({ timeout: 5 } as never), unknown('timeout', 'timeoutMs'))
  assert.throws(() => cluster.with({ restarts: 'always' } as never), unknown('restarts', 'restart'))
  const drain = async (it: unknown) => {
    for await (const _ of it as AsyncIterable<unknown>);
  }
  await assert.rejects(drain(cluster.map('square', [[1]], { concurency: 2 } as never)), unknown('concurency', 'concurrency'))
  await assert.rejects(drain(cluster.with({ timeoutMs: 60_000 }).map('square', [[1]], { order: false } as never)), unknown('order', 'ordered'))
  await assert.rejects(cluster.map('square', [[1]], { reduce: { combiner: 'add', initial: 0, chunks: 2 } } as never), unknown('chunks', 'chunk'))
  await assert.rejects(cluster.reduce('square', [[1]], 'add', 0, { untill: () => true } as never), unknown('untill', 'until'))
  // A required field of map's reduce left out is named, not taken as undefined (a sum from undefined is NaN).
  for (const missing of ['initial', 'combiner']) {
    const reduce = { combiner: 'add', initial: 0, [missing]: undefined }
    delete reduce[missing]
    await assert.rejects(
      cluster.map('square', [[1]], { reduce } as never),
      (e: unknown) =>
        e instanceof InvalidArgumentError && e.message === `options.reduce.${missing} is missing: options.reduce is { combiner, initial, until?, chunk? }`,
    )
  }
  // A view's own options do not count against the map's.
  const view = cluster.with({ timeoutMs: 60_000, maxRetries: 1 })
  const squares: number[] = []
  for await (const r of view.map<number>('square', [[2], [3]], { ordered: true })) squares.push(r)
  assert.deepEqual(squares, [4, 9])
})

test('options that are no object at all (null, a number, an array) are refused by name, not a TypeError nor silently taken', async () => {
  const notObject = (what: string, got: string) => (e: unknown) => e instanceof InvalidArgumentError && e.message === `${what} must be an object, got ${got}`
  const drain = async (it: unknown) => {
    for await (const _ of it as AsyncIterable<unknown>);
  }
  await assert.rejects(Agent.start(null as never), notObject('options', 'null'))
  await assert.rejects(Agent.start([] as never), notObject('options', 'an array'))
  await assert.rejects(Cluster.start([] as never), notObject('options', 'an array'))
  assert.throws(() => cluster.with(null as never), notObject('cluster.with options', 'null'))
  assert.throws(() => cluster.with(5 as never), notObject('cluster.with options', 'number'))
  assert.throws(() => cluster.with([] as never), notObject('cluster.with options', 'an array'))
  await assert.rejects(drain(cluster.map('square', [[1]], null as never)), notObject('map options', 'null'))
  await assert.rejects(drain(cluster.with({ timeoutMs: 60_000 }).map('square', [[1]], 7 as never)), notObject('map options', 'number'))
  await assert.rejects(cluster.reduce('square', [[1]], 'add', 0, null as never), notObject('reduce options', 'null'))
  await assert.rejects(cluster.with({ timeoutMs: 60_000 }).reduce('square', [[1]], 'add', 0, 'fast' as never), notObject('reduce options', '"fast"'))
  // Left out, they are the defaults.
  const squares: number[] = []
  for await (const r of cluster.map<number>('square', [[2], [3]])) squares.push(r)
  assert.deepEqual(squares, [4, 9])
})

test('context.map in a thread refuses an unknown option, options that are no object and inputs that are none; its timeoutMs applies', async () => {
  const [typo, notObject, noInputs] = await cluster.call<string[]>('badMaps')
  assert.match(typo!, /^\w+Error: context\.map options: unknown option "ordred" \(did you mean "ordered"\?\)/)
  assert.match(notObject!, /^\w+Error: context\.map options must be an object, got number/)
  assert.match(noInputs!, /^\w+Error: map inputs must be an iterable or async iterable of argument lists/)
  const mapper = await cluster.spawn<{ run(ms: number, timeoutMs: number): Promise<string> }>('TimedMapper')
  assert.match(await mapper.run(5_000, 200), /^TaskTimeoutError: task "slowChild" ran longer than its timeout of 200 ms/)
  assert.equal(await mapper.run(10, 10_000), '1 result')
})

test('context.with in a thread: a call and a spawn under an unknown option fail naming it, as InvalidArgumentError', async () => {
  const [call, spawn] = await cluster.call<string[]>('typoOptions')
  for (const text of [call, spawn]) assert.match(text!, /^InvalidArgumentError: context\.with options: unknown option "timeout" \(did you mean "timeoutMs"\?\)/)
})

test('a spawn from a view holding a task option (timeoutMs, retries, maxRetries, signal) is refused naming it, not run without it; the view still calls', async () => {
  const refused = (key: string) => (e: unknown) =>
    e instanceof InvalidArgumentError && e.message.startsWith(`options.${key} applies to tasks (call, map, reduce), not to spawn`)
  const actors = () => cluster.nodes().reduce((n, node) => n + node.actors, 0)
  const before = actors()
  await assert.rejects(cluster.with({ timeoutMs: 50 }).spawn('Counter'), refused('timeoutMs'))
  await assert.rejects(cluster.with({ maxRetries: 0, restart: 'always' }).spawn('Counter'), refused('maxRetries'))
  await assert.rejects(cluster.with({ signal: new AbortController().signal }).spawn('Counter'), refused('signal'))
  assert.equal(actors(), before, 'no actor was spawned')
  assert.equal(await cluster.with({ timeoutMs: 60_000 }).call('square', 3), 9)
  assert.match(
    await cluster.call<string>('spawnUnderTaskOption'),
    /^InvalidArgumentError: options\.retries applies to tasks \(call, map, reduce\), not to spawn/,
  )
})

test('a call, map or reduce from a view holding a spawn option (node, name, restart, spread, …) is refused naming it, not run without it', async () => {
  const refused = (key: string) => (e: unknown) =>
    e instanceof InvalidArgumentError && e.message.startsWith(`options.${key} applies to spawn, not to tasks (call, map, reduce)`)
  const drain = async (it: unknown) => {
    for await (const _ of it as AsyncIterable<unknown>);
  }
  const before = cluster.stats().tasksSubmitted
  const node = cluster.nodes()[0]!.id
  await assert.rejects(cluster.with({ node }).call('square', 3), refused('node'))
  await assert.rejects(cluster.with({ name: 'n' }).tasks<{ square(x: number): number }>().square(3), refused('name'))
  await assert.rejects(drain(cluster.with({ restart: 'always', timeoutMs: 60_000 }).map('square', [[3]])), refused('restart'))
  await assert.rejects(cluster.with({ spread: true }).map('square', [[3]], { reduce: { combiner: 'add', initial: 0 } }), refused('spread'))
  await assert.rejects(cluster.with({ restart: 'always', maxRestarts: 2 }).reduce('square', [[3]], 'add', 0), refused('restart'))
  assert.equal(cluster.stats().tasksSubmitted, before, 'no task was run')
  // The same view still spawns.
  const pinned = await cluster.with({ node }).spawn<{ get(): number }>('Counter', 7)
  assert.equal(await pinned.get(), 7)
  // In a thread, the same.
  const texts = await cluster.call<string[]>('callUnderSpawnOption')
  assert.deepEqual(
    texts.map((t) => /^InvalidArgumentError: options\.(\w+) applies to spawn, not to tasks/.exec(t)?.[1] ?? t),
    ['node', 'spread', 'restart'],
  )
})
