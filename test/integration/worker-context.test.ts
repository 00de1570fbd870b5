/**
 * The worker context on a real cluster: tasks and actor methods call back
 * into the cluster (`context.call`, `tasks`, `map`, `spawn`, `actor`, `put`,
 * `self`), references travel as values, and nested work does not deadlock a
 * thread (a task awaiting its children secedes).
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { ActorLostError, Cluster, InvalidArgumentError, RemoteTaskError, type ActorErrorEvent, type ActorRef } from '../../lib/index.js'
import type * as Tasks from '../fixtures/context-tasks.js'
import { waitFor, within } from '../helpers.js'

const TASKS = new URL('../fixtures/context-tasks.js', import.meta.url)

let cluster: Cluster

before(async () => {
  cluster = await Cluster.start({ tasks: TASKS, threads: 1 })
})
after(async () => {
  await cluster.close()
})

/** Runs `act` and returns the first `actor:error` the cluster emits meanwhile or after (within 10 s). */
async function firstActorError(act: () => Promise<unknown>): Promise<ActorErrorEvent> {
  const errors: ActorErrorEvent[] = []
  const onError = (e: ActorErrorEvent) => errors.push(e)
  cluster.on('actor:error', onError)
  try {
    await act()
    await waitFor(() => errors.length > 0, 10_000, 'an actor:error')
    return errors[0]!
  } finally {
    cluster.off('actor:error', onError)
  }
}

test('recursive fib(22) through context.call completes on one agent with one thread', async () => {
  assert.equal(cluster.nodes().length, 1)
  assert.equal(cluster.nodes()[0]!.threads, 1)
  assert.equal(await within(cluster.call<number>('fib', 22), 120_000, 'fib(22)'), 17711)
  // Sequential awaits: the second request is made after the first reply, while the batch is parked.
  assert.equal(await within(cluster.call<number>('fibSeq', 15), 60_000, 'fibSeq(15)'), 610)
})

test('the typed proxy, the node id and the options are there in a task; self is not', async () => {
  assert.equal(await cluster.call('sumOfSquares', [1, 2, 3, 4]), 30)
  const where = await cluster.call<{ nodeId: string; threads: number; self: boolean }>('whereAmI')
  assert.deepEqual(where, { nodeId: cluster.nodes()[0]!.id, threads: 1, self: false })
})

test('a failure of nested work reaches the calling task as its error class', async () => {
  // In the thread the child's failure is an UnknownTaskError; the parent lets it through, so the driver sees it thrown.
  await assert.rejects(
    cluster.call('callsMissing'),
    (e: unknown) => e instanceof RemoteTaskError && e.remoteName === 'UnknownTaskError' && /"noSuchTask"/.test(e.message),
  )
})

test('a tree of 111,111 nested calls completes on one thread in bounded memory', async () => {
  let peak = 0
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 25)
  try {
    assert.equal(await within(cluster.call<number>('tree', 5, 10), 300_000, 'the tree'), 111_111)
  } finally {
    clearInterval(timer)
  }
  // The driver, the agent and its thread in one process; ~400 MB measured. The bound catches a leak per call.
  assert.ok(peak < 1536 * 1048576, `peak RSS ${(peak / 1048576).toFixed(0)} MB`)
  assert.equal(cluster.stats().inFlight, 0)
})

test('a task spawns an actor, tells and asks it in order', async () => {
  assert.equal(await cluster.call('spawnAndCount', 50), 50)
})

test('a reference passed as a task argument works in the thread, in mailbox order per caller', async () => {
  const c = await cluster.spawn<Tasks.Counter>('Counter', 0)
  assert.equal(await cluster.call('bump', c, 100), 100)
  assert.equal(await c.get(), 100)
  await c.stop()
})

test('a reference returned by a task arrives at the driver as a working reference', async () => {
  const c = await cluster.call<ActorRef<Tasks.Counter>>('makeCounter', 41)
  assert.equal(await c.inc(1), 42)
  await c.stop()
})

test('a method or task that returns nothing answers undefined, not null: to the driver and to a thread alike', async () => {
  const c = await cluster.spawn<Tasks.Counter>('Counter', 5)
  assert.equal(await c.reset(), undefined)
  assert.equal(await cluster.call('nothing'), undefined)
  await c.stop()
  assert.deepEqual(await cluster.call('voidReplies'), ['undefined', 'undefined'])
})

test('context.actor looks a named actor up; a missing name is an ActorNameError naming it', async () => {
  const c = await cluster.with({ name: 'ctx-named' }).spawn<Tasks.Counter>('Counter', 7)
  assert.equal(await cluster.call('askNamed', 'ctx-named'), 7)
  await assert.rejects(cluster.call('askNamed', 'nobody'), (e: unknown) => e instanceof Error && /no live actor is named "nobody"/.test(e.message))
  await c.stop()
})

test('context.put gives a handle another task receives as its value', async () => {
  assert.equal(await cluster.call('putAndSum', [1, 2, 3.5]), 6.5)
})

test('actors: self across an await, calls to tasks, children, tells through a reference in order, asks', async () => {
  const a = await cluster.spawn<Tasks.Node>('Node')
  const b = await cluster.spawn<Tasks.Node>('Node')
  assert.equal(await a.selfId(), a.id)
  assert.equal(await a.task(9), 81)
  assert.equal(await a.child(4), 5)
  await a.setPeer(b)
  await a.sendAll(200)
  assert.deepEqual(
    await a.peerLog(),
    Array.from({ length: 200 }, (_, i) => i),
  )
  await b.setPeer(a)
  assert.equal(await b.pingPong(100), 99)
  await a.stop()
  await b.stop()
})

test('a tell from a thread to a stopped actor is an actor:error on the driver', async () => {
  const c = await cluster.spawn<Tasks.Counter>('Counter', 0)
  await c.stop()
  const error = await firstActorError(() =>
    assert.rejects(cluster.call('bump', c, 1), (e: unknown) => e instanceof RemoteTaskError && e.remoteName === 'ActorLostError'),
  )
  assert.equal(error.actor.id, c.id)
  assert.equal(error.method, 'inc')
  assert.ok(error.error instanceof ActorLostError)
})

test('between actors of one host thread: messages stay in the thread, in order; a failed tell is an actor:error, a thrown ask an error', async () => {
  // One thread per agent here, so both actors share the one actor host thread.
  const a = await cluster.spawn<Tasks.Node>('Node')
  const b = await cluster.spawn<Tasks.Node>('Node')
  await a.setPeer(b)
  const before = cluster.stats().transport.framesIn
  await a.sendAll(1000)
  assert.deepEqual(
    await a.peerLog(),
    Array.from({ length: 1000 }, (_, i) => i),
  )
  // Two frames from the agent for the two driver calls (their replies), not one per tell.
  assert.ok(cluster.stats().transport.framesIn - before < 20, `frames in: ${cluster.stats().transport.framesIn - before}`)
  assert.equal(await a.askThrows(), 'RemoteTaskError: boom')
  const error = await firstActorError(() => a.tellMissing())
  assert.equal(error.actor.id, b.id)
  assert.equal(error.actor.className, 'Node')
  assert.equal(error.method, 'nope')
  assert.equal(error.error.name, 'UnknownMethodError')
  await a.stop()
  await b.stop()
})

test('between actors of one host thread: a message runs after its sender’s method returns, and 30,000 hops of one ball all arrive', async () => {
  const a = await cluster.spawn<Tasks.Node>('Node')
  const b = await cluster.spawn<Tasks.Node>('Node')
  await Promise.all([a.setPeer(b), b.setPeer(a)])
  await a.turn()
  await waitFor(async () => (await a.eventLog()).length === 3, 10_000, 'the call back')
  assert.deepEqual(await a.eventLog(), ['turn starts', 'turn ends', 'called back'])
  // Objects are copied as on the wire: the sender changing its own afterwards does not reach the receiver.
  await a.sendObject()
  await waitFor(async () => (await b.kept()) !== null, 10_000, 'the object')
  assert.deepEqual(await b.kept(), { n: 1, list: [1] })
  // One ball, each hop told from inside the previous one: a stack of 30,000 calls if delivered in place.
  const errors: ActorErrorEvent[] = []
  const onError = (e: ActorErrorEvent) => errors.push(e)
  cluster.on('actor:error', onError)
  try {
    a.tell.bounce(30_000)
    await waitFor(async () => (await a.bounceCount()) + (await b.bounceCount()) === 30_001 || errors.length > 0, 30_000, 'the ball')
    assert.deepEqual(
      errors.map((e) => `${e.method}: ${e.error.message}`),
      [],
    )
    assert.deepEqual([await a.bounceCount(), await b.bounceCount()], [15_001, 15_000])
  } finally {
    cluster.off('actor:error', onError)
  }
  await a.stop()
  await b.stop()
})

test('a request the cluster refuses fails in the thread as the error the driver raised, naming the value as the caller wrote it', async () => {
  const texts = await cluster.call<string[]>('refusedRequests')
  const node = cluster.nodes()[0]!.id
  assert.deepEqual(
    texts.map((t) => t.replace(/Counter-[\w-]+\.inc/, '<counter>.inc')),
    [
      `UnknownNodeError: unknown node "no-such-node"; the cluster's nodes are "${node}"`,
      "InvalidArgumentError: options.maxRestarts is a restart budget: it needs restart: 'always'",
      'SerializationError: cannot send task "square": args[0] is a function; msgpack cannot carry it',
      'SerializationError: cannot send spawn of "Counter": args[1][0] is a function; msgpack cannot carry it',
      'SerializationError: cannot send <counter>.inc: args[0] is a function; msgpack cannot carry it',
      'SerializationError: cannot send put: value.f is a function; msgpack cannot carry it',
      'SerializationError: cannot send task "square": options.timeoutMs is a function; msgpack cannot carry it',
    ],
  )
})

test('actor-cluster/worker is a package export; outside a cluster thread its calls fail saying where they work', async () => {
  // By name, as users import it (the specifier in a variable: the types come from lib, not from the build).
  const specifier = 'actor-cluster/worker'
  const { context } = (await import(specifier)) as typeof import('../../lib/worker/index.js')
  assert.equal(context.self, undefined)
  assert.equal(context.nodeId, undefined)
  await assert.rejects(
    context.call('square', 2),
    (e: unknown) => e instanceof InvalidArgumentError && /only available inside a task or an actor method/.test(e.message),
  )
})

test('context.with({ spread: true }): one view’s spawns are one group spread over the nodes, where least-loaded would not', async () => {
  await using two = await Cluster.start({ tasks: TASKS, threads: 1, localAgents: 2 })
  await waitFor(() => two.nodes().length === 2, 20_000, 'two local agents')
  const [a, b] = two.nodes().map((n) => n.id) as [string, string]
  // Load b: least-loaded alone would send the next two actors to a.
  const ballast = await Promise.all([0, 1].map(() => two.with({ node: b }).spawn<Tasks.Counter>('Counter')))
  const refs = await two.call<ActorRef<Tasks.Counter>[]>('spreadFour')
  assert.deepEqual(refs.map((r) => r.node).sort(), [a, a, b, b].sort())
  assert.deepEqual(await Promise.all(refs.map((r) => r.get())), [0, 1, 2, 3])
  await Promise.all([...ballast, ...refs].map((r) => r.stop()))
})

test('tells from an actor to one on another node in one turn (sent up in parts) arrive in order, and pings keep answering', async () => {
  await using two = await Cluster.start({ tasks: TASKS, threads: 1, localAgents: 2 })
  await waitFor(() => two.nodes().length === 2, 20_000, 'two local agents')
  const [na, nb] = two.nodes().map((n) => n.id) as [string, string]
  const a = await two.with({ node: na }).spawn<Tasks.Node>('Node')
  const b = await two.with({ node: nb }).spawn<Tasks.Node>('Node')
  await a.setPeer(b)
  await b.setPeer(a)
  await a.sendAll(1_000)
  assert.deepEqual(
    await a.peerLog(),
    Array.from({ length: 1_000 }, (_, i) => i),
  )
  assert.equal(await b.pingPong(100), 99)
})
