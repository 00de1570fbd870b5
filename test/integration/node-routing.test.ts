/**
 * Messages between actors of one node stay on the node: with two host
 * threads on one agent, an actor's asks and tells to an actor of the other
 * host thread go from the agent straight to that thread, never through the
 * driver, in the order sent; failures are reported as through the driver, a
 * host thread dying with such messages on their way settles each of them
 * once, and an actor spawned with `restart: 'always'` is restarted.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster, type ActorErrorEvent, type ActorFailure, type ActorInfo, type ActorRef } from '../../lib/index.js'
import type * as Tasks from '../fixtures/context-tasks.js'
import { waitFor, within } from '../helpers.js'

const TASKS = new URL('../fixtures/context-tasks.js', import.meta.url)

let cluster: Cluster

before(async () => {
  cluster = await Cluster.start({ tasks: TASKS, threads: 2 })
})
after(async () => {
  await cluster.close()
})

/** Two actors on the two host threads of the one node, each the other's peer. */
async function pair(options: { restart?: 'always' } = {}): Promise<[ActorRef<Tasks.Node>, ActorRef<Tasks.Node>]> {
  const a = await cluster.spawn<Tasks.Node>('Node')
  const b = await cluster.with(options).spawn<Tasks.Node>('Node')
  // The agent puts a new actor on the host thread with the fewest actors: with one actor per thread, a and b differ.
  assert.notEqual(await a.hostThread(), await b.hostThread(), 'the two actors share a host thread')
  await a.setPeer(b)
  await b.setPeer(a)
  return [a, b]
}

/** What the cluster reported about actors while a test acted. */
interface Seen {
  errors: ActorErrorEvent[]
  lost: string[]
  restarted: string[]
}

/** Runs `act`, then waits until `done` holds of the `actor:error`, `actor:lost` and `actor:restarted` events seen meanwhile. */
async function watch(act: () => Promise<unknown>, done: (seen: Seen) => boolean, what: string): Promise<Seen> {
  const seen: Seen = { errors: [], lost: [], restarted: [] }
  const onError = (e: ActorErrorEvent) => seen.errors.push(e)
  const onLost = (info: ActorFailure) => seen.lost.push(info.actor.id)
  const onRestart = (info: ActorInfo) => seen.restarted.push(info.id)
  cluster.on('actor:error', onError)
  cluster.on('actor:lost', onLost)
  cluster.on('actor:restarted', onRestart)
  try {
    await act()
    await waitFor(() => done(seen), 20_000, what)
    return seen
  } finally {
    cluster.off('actor:error', onError)
    cluster.off('actor:lost', onLost)
    cluster.off('actor:restarted', onRestart)
  }
}

/** Bytes the driver's transport moved both ways so far. */
function driverBytes(): number {
  const t = cluster.stats().transport
  return t.bytesIn + t.bytesOut
}

test('1,000 tells between two host threads of one node arrive in order without going through the driver', async () => {
  assert.equal(cluster.nodes().length, 1)
  const [a, b] = await pair()
  const bytes = driverBytes()
  const frames = cluster.stats().transport.framesIn + cluster.stats().transport.framesOut
  await a.sendAll(1000)
  // Asked by a after its tells: it runs after all of them.
  assert.equal(await a.peerCount(), 1000)
  const movedBytes = driverBytes() - bytes
  const movedFrames = cluster.stats().transport.framesIn + cluster.stats().transport.framesOut - frames
  // Two asks from the driver (and perhaps a heartbeat); through the driver the tells alone take tens of kilobytes.
  assert.ok(movedBytes < 2_000, `the driver's transport moved ${movedBytes} bytes`)
  assert.ok(movedFrames <= 8, `the driver's transport moved ${movedFrames} frames`)
  assert.deepEqual(
    await b.log(),
    Array.from({ length: 1000 }, (_, i) => i),
  )
  await a.stop()
  await b.stop()
})

test('asks between two host threads of one node return values and errors, without the driver', async () => {
  const [a, b] = await pair()
  const bytes = driverBytes()
  assert.equal(await a.pingPong(200), 199)
  assert.ok(driverBytes() - bytes < 2_000, `the driver's transport moved ${driverBytes() - bytes} bytes for 200 asks`)
  assert.equal(await a.askThrows(), 'RemoteTaskError: boom')
  assert.equal(await a.askMissing(), 'UnknownMethodError')
  assert.deepEqual(await a.peerLog(), [])
  await a.stop()
  await b.stop()
})

test('a task (a pool thread) reaches an actor of its node without the driver, in order', async () => {
  const counter = await cluster.spawn<Tasks.Counter>('Counter', 0)
  const bytes = driverBytes()
  // 1,000 tells then an ask, from the task: the ask sees every tell.
  assert.equal(await cluster.call('bump', counter, 1000), 1000)
  const moved = driverBytes() - bytes
  assert.ok(moved < 2_000, `the driver's transport moved ${moved} bytes`)
  await counter.stop()
})

test('a shared value put by a thread reaches an actor of another host thread as its value', async () => {
  const [a, b] = await pair()
  // The node does not hold the value (the driver does): that tell and what follows it go through the driver, in order.
  assert.deepEqual(await a.sendShared(), { n: 42, list: [1, 2, 3] })
  assert.equal(await a.pingPong(3), 2)
  await a.stop()
  await b.stop()
})

test('a tell of an unknown method between two host threads is an actor:error on the driver', async () => {
  const [a, b] = await pair()
  const { errors } = await watch(
    () => a.tellMissing(),
    (seen) => seen.errors.length > 0,
    'an actor:error',
  )
  assert.equal(errors[0]!.actor.id, b.id)
  assert.equal(errors[0]!.method, 'nope')
  assert.equal(errors[0]!.error.name, 'UnknownMethodError')
  await a.stop()
  await b.stop()
})

test('an actor stopped through a reference in a thread takes no more messages from that thread', async () => {
  const [a, b] = await pair()
  // The ask goes to the driver, which no longer knows the actor, as for any stopped actor.
  assert.equal(await a.stopPeerThenAsk(), 'ActorLostError')
  await assert.rejects(b.echo(1), { name: 'ActorStoppedError' })
  await a.stop()
  await b.stop()
})

test('a restart-always actor whose host thread dies while only messages inside the node reach it is restarted; the ask in flight settles once', async () => {
  const [a, b] = await pair({ restart: 'always' })
  let settled = ''
  // Nothing else is sent to b: the agent's report alone makes the driver restart it.
  const { restarted } = await watch(
    async () => (settled = await within(a.askPeerDie(), 20_000, 'the ask to a dying actor')),
    (seen) => seen.restarted.length > 0,
    'the restart of the actor whose host thread died',
  )
  assert.match(settled, /^ActorLostError: actor .* was lost: its host thread died/)
  assert.deepEqual(restarted, [b.id])
  // a lived on the other host thread; the restarted b answers it again.
  assert.equal(await a.pingPong(3), 2)
  await a.stop()
  await b.stop()
})

test('tells on their way to a host thread that dies are each reported as an actor:error; the driver learns the actor is lost', async () => {
  const [a, b] = await pair()
  const { errors, lost } = await watch(
    () => a.tellPeerDieThen(5),
    (seen) => seen.errors.length >= 6 && seen.lost.length > 0,
    'six actor:errors and the loss of the actor',
  )
  assert.deepEqual(lost, [b.id])
  assert.deepEqual(
    errors.map((e) => [e.actor.id, e.method, e.error.name]),
    [[b.id, 'die', 'ActorLostError'], ...Array.from({ length: 5 }, () => [b.id, 'receive', 'ActorLostError'])],
  )
  await assert.rejects(b.echo(1), { name: 'ActorLostError' })
  await a.stop()
})

test('an actor restarted onto its caller’s node takes the caller’s messages in the order sent: those held during the restart first', async () => {
  // Two agents of three host threads each: b starts on the second node, beside two actors of its own, and its
  // restart goes to the first (fewer actors), where a, its caller, lives.
  await using two = await Cluster.start({ tasks: TASKS, localAgents: 2, threads: 3 })
  const [first, second] = two
    .nodes()
    .map((n) => n.id)
    .sort()
  const a = await two.with({ node: first! }).spawn<Tasks.Node>('Node')
  const b = await two.with({ restart: 'always' }).spawn<Tasks.Node>('Node')
  assert.equal(b.node, second)
  for (let i = 0; i < 2; i++) await two.with({ node: second! }).spawn<Tasks.Node>('Node')
  await a.setPeer(b)
  const restarted: string[] = []
  two.on('actor:restarted', (info) => restarted.push(info.node))
  two.on('actor:error', () => {})
  // a's tells go through the driver while b is on the other node; those sent during the restart are held there;
  // once b is on a's node, a's later tells go to it inside the node.
  await a.streamAfterPeerDies(3000)
  await waitFor(() => restarted.length > 0, 20_000, 'the restart of b')
  assert.deepEqual(restarted, [first])
  assert.equal(await a.peerCount(), (await b.log()).length)
  const log = await b.log()
  assert.ok(log.length > 0, 'the new instance received some of the stream')
  const outOfOrder = log.findIndex((v, i) => i > 0 && v <= log[i - 1]!)
  assert.equal(outOfOrder, -1, `received out of order at ${outOfOrder}: …${JSON.stringify(log.slice(Math.max(0, outOfOrder - 3), outOfOrder + 3))}`)
})
