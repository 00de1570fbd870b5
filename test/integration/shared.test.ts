import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { Agent, Cluster, InvalidArgumentError, SerializationError, SharedValueError, type AgentOptions } from '../../lib/index.js'
import type { SharedCache } from '../../lib/agent/shared-cache.js'
import { secondValueWhileFirstInUse } from '../shared-bound.js'
import { FAST, FIXTURE_TASKS, fastAgentArgs, runCli, waitFor, within } from '../helpers.js'

type Info = { shared: boolean; length: number; sum: number; thread: number; pid: number; i: number }

async function startAgent(t: TestContext, cluster: Cluster, options: Partial<AgentOptions> = {}): Promise<Agent> {
  const agent = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 2, ...options })
  t.after(() => agent.close({ timeoutMs: 2_000 }))
  await within(agent.waitUntilReady(), 15_000, 'the agent to join')
  return agent
}

function ramp(n: number): Float64Array {
  const a = new Float64Array(n)
  for (let i = 0; i < n; i++) a[i] = i
  return a
}
const rampSum = (n: number) => (n * (n - 1)) / 2

test('a shared array reaches each node once, every thread reads one shared copy, release frees it', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const agents = [await startAgent(t, cluster), await startAgent(t, cluster)]
  const n = 125_000
  const h = await cluster.put(ramp(n))
  assert.equal(h.size, n * 8)
  // Same content, same value: another handle on it.
  const again = await cluster.put(ramp(n))
  assert.equal(again.hash, h.hash)
  assert.equal(cluster.stats().shared.values, 1)

  const infos = await Promise.all(Array.from({ length: 400 }, (_, i) => cluster.call<Info>('sharedInfo', h, i, i % 40 === 0 ? 20 : 0)))
  assert.deepEqual(
    infos.map((x) => x.i),
    Array.from({ length: 400 }, (_, i) => i),
  )
  for (const x of infos) {
    assert.equal(x.shared, true, 'the task sees a view of a SharedArrayBuffer')
    assert.equal(x.length, n)
    assert.equal(x.sum, rampSum(n))
  }
  assert.ok(new Set(infos.map((x) => x.thread)).size >= 2, 'several threads read it')
  const used = agents.filter((a) => a.stats.tasksDone > 0)
  assert.equal(used.length, 2, 'both agents ran tasks')
  for (const a of agents) {
    assert.equal(a.stats.sharedPuts, 1, 'one Put per node')
    assert.equal(a.stats.sharedValues, 1)
    assert.equal(a.stats.sharedBytes, n * 8)
  }
  const s = cluster.stats()
  assert.equal(s.shared.puts, 2)
  assert.equal(s.shared.putBytes, 2 * n * 8)
  // The value once per node, plus the tasks' frames: far less than a copy per task.
  assert.ok(s.transport.bytesOut < 2 * n * 8 + 400 * 200, `driver sent ${s.transport.bytesOut} bytes`)

  // A typed handle works through the typed proxy too.
  const tasks = cluster.tasks<typeof import('../fixtures/tasks.js')>()
  assert.equal((await tasks.sharedInfo(h, 7)).sum, rampSum(n))

  // An actor method argument carries it as well.
  const summer = await cluster.spawn<import('../fixtures/tasks.js').Summer>('Summer')
  assert.equal(await summer.add(h), rampSum(n))
  assert.equal(await summer.add(h), 2 * rampSum(n))
  // A value put after the actor's thread got its first table reaches it too.
  const later = await cluster.put(ramp(10))
  assert.equal(await summer.add(later), 2 * rampSum(n) + rampSum(10))
  await later.release()

  await again.release()
  assert.equal(cluster.stats().shared.values, 1, 'one handle left')
  await h.release()
  await h.release() // idempotent
  assert.equal(cluster.stats().shared.values, 0)
  await waitFor(() => agents.every((a) => a.stats.sharedValues === 0 && a.stats.sharedBytes === 0), 10_000, 'the nodes to free the value')
  await assert.rejects(cluster.call('sharedInfo', h, 0), (err: unknown) => err instanceof SerializationError && /was released/.test(err.message))
})

test('plain values, errors: unserialisable, released in use, larger than a node cache', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const agent = await startAgent(t, cluster, { sharedCacheBytes: 100_000 })
  const p = await cluster.put({ scale: 3, tags: ['a', 'b'] })
  assert.deepEqual(await Promise.all([1, 2, 3].map((x) => cluster.call('scaled', p, x))), [5, 8, 11])
  const mapped: number[] = []
  for await (const r of cluster.map<number>('scaled', [
    [p, 10],
    [p, 20],
  ]))
    mapped.push(r)
  assert.deepEqual(mapped, [32, 62])
  // Nested inside an argument.
  assert.deepEqual(await cluster.call('echo', { inner: [p] }), { inner: [{ scale: 3, tags: ['a', 'b'] }] })

  await assert.rejects(cluster.put(undefined), (err: unknown) => err instanceof InvalidArgumentError && /got undefined/.test(err.message))
  await assert.rejects(cluster.put({ f: () => 1 }), (err: unknown) => err instanceof SerializationError && /value\.f is a function/.test(err.message))
  await assert.rejects(
    cluster.put(new Float64Array(20_000)),
    (err: unknown) =>
      err instanceof SharedValueError && err.code === 'ERR_SHARED_TOO_LARGE' && err.message.includes(agent.id) && /160000 bytes/.test(err.message),
  )

  const h = await cluster.put(ramp(1000))
  const slow = Promise.all(Array.from({ length: 4 }, (_, i) => cluster.call<Info>('sharedInfo', h, i, 300)))
  await assert.rejects(h.release(), (err: unknown) => err instanceof SharedValueError && err.code === 'ERR_SHARED_IN_USE' && /4 unsettled/.test(err.message))
  assert.equal(h.released, false, 'the handle stays usable')
  assert.ok((await slow).every((x) => x.sum === rampSum(1000)))
  await h.release()
  await p.release()
  await waitFor(() => agent.stats.sharedValues === 0, 10_000, 'the node to free both values')
})

test("values that do not fit a node's cache together are evicted least recently used first and sent again when used", async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const agent = await startAgent(t, cluster, { sharedCacheBytes: 20_000, threads: 1 })
  const a = await cluster.put(ramp(2000))
  const b = await cluster.put(ramp(1999))
  assert.equal((await cluster.call<Info>('sharedInfo', a, 0)).sum, rampSum(2000))
  assert.equal((await cluster.call<Info>('sharedInfo', b, 0)).sum, rampSum(1999))
  assert.equal(cluster.stats().shared.evictions, 1)
  await waitFor(() => agent.stats.sharedValues === 1, 10_000, 'the node to drop the older value')
  assert.equal(agent.stats.sharedBytes, 1999 * 8)
  assert.equal((await cluster.call<Info>('sharedInfo', a, 1)).sum, rampSum(2000))
  assert.equal(agent.stats.sharedPuts, 3)
  assert.equal(cluster.stats().shared.evictions, 2)
})

test('a node that joins later gets the value on first use; tasks of a killed node find it on their new node', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0, ...FAST })
  const first = runCli(t, fastAgentArgs(cluster.address))
  await waitFor(() => cluster.nodes().length === 1, 15_000, 'the first agent')
  const n = 10_000
  const h = await cluster.put(ramp(n))
  assert.equal((await cluster.call<Info>('sharedInfo', h, 0)).pid, first.child.pid)
  // Tasks that hold the first node's thread; it dies under them.
  const lost = new Promise((resolve) => cluster.once('node:lost', resolve))
  const pending = Promise.all(Array.from({ length: 6 }, (_, i) => cluster.call<Info>('sharedInfo', h, i, 200)))
  await waitFor(() => cluster.stats().inFlight > 0, 10_000, 'the tasks to be sent to the first node')
  first.child.kill('SIGKILL')
  await within(lost, 15_000, 'the first node to be declared lost')
  const later = await startAgent(t, cluster, { threads: 1, heartbeatMs: FAST.heartbeatMs, driverTimeoutMs: FAST.nodeTimeoutMs })
  const infos = await within(pending, 30_000, 'the re-run tasks')
  assert.deepEqual(
    infos.map((x) => [x.i, x.sum, x.shared]),
    Array.from({ length: 6 }, (_, i) => [i, rampSum(n), true]),
  )
  assert.ok(
    infos.every((x) => x.pid === process.pid),
    'the re-run tasks ran on the later node',
  )
  assert.equal(later.stats.sharedPuts, 1)
  assert.ok(cluster.stats().tasksRetried >= 1)
})

test('a node that joins later with a smaller cache keeps its bound; a value larger than its cache or its frame limit fails the tasks sent there, naming node and sizes', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const a = await cluster.put(ramp(2000))
  const b = await cluster.put(ramp(1999))
  const big = await cluster.put(ramp(5000))
  const agent = await startAgent(t, cluster, { sharedCacheBytes: 20_000, threads: 1 })
  let most = 0
  const watch = setInterval(() => (most = Math.max(most, agent.stats.sharedBytes)), 1)
  t.after(() => clearInterval(watch))
  assert.equal((await cluster.call<Info>('sharedInfo', a, 0)).sum, rampSum(2000))
  assert.equal((await cluster.call<Info>('sharedInfo', b, 0)).sum, rampSum(1999))
  assert.equal((await cluster.call<Info>('sharedInfo', a, 0)).sum, rampSum(2000))
  clearInterval(watch)
  assert.ok(most <= 20_000, `the node held ${most} bytes`)
  assert.equal(cluster.stats().shared.evictions, 2)
  // A frame mixing tasks that can go with one that cannot: only that one fails.
  const [ok, tooBig] = await within(
    Promise.allSettled([cluster.call<Info>('sharedInfo', a, 1), cluster.call<Info>('sharedInfo', big, 2)]),
    10_000,
    'both tasks to settle',
  )
  assert.equal(ok.status === 'fulfilled' && ok.value.sum, rampSum(2000))
  assert.ok(tooBig.status === 'rejected')
  const err: unknown = tooBig.reason
  assert.ok(err instanceof SharedValueError && err.code === 'ERR_SHARED_TOO_LARGE', String(err))
  assert.match(
    err.message,
    /^task "sharedInfo": shared value \S+ of 40000 bytes exceeds the shared cache of node \S+ \(sharedCacheBytes 20000\); no other node can hold it$/,
  )
  assert.ok(err.message.includes(agent.id))
  assert.ok(agent.stats.sharedBytes <= 20_000)
  assert.equal(agent.stats.badFrames, 0)

  // A node whose own frame limit is below the value: the driver knows it from the Hello and never sends the Put.
  await agent.close()
  await waitFor(() => cluster.nodes().length === 0, 10_000, 'the first agent to leave')
  const narrow = await startAgent(t, cluster, { maxFrameBytes: 32 * 1024, threads: 1 })
  await assert.rejects(
    within(cluster.call('sharedInfo', big, 3), 10_000, 'the task to fail'),
    (e: unknown) =>
      e instanceof SharedValueError &&
      e.code === 'ERR_SHARED_TOO_LARGE' &&
      e.message.includes(narrow.id) &&
      /40000 bytes exceeds the largest message node \S+ accepts \(maxFrameBytes 32768/.test(e.message),
  )
  assert.equal(narrow.stats.badFrames, 0, 'nothing dropped as a bad frame')
  assert.equal(narrow.stats.sharedPuts, 0)
  assert.equal((await cluster.call<Info>('sharedInfo', a, 4)).sum, rampSum(2000))
  // An actor call carrying it fails the same way; the actor's other calls go.
  const summer = await cluster.spawn<import('../fixtures/tasks.js').Summer>('Summer')
  const [tooBigCall, fine] = await within(Promise.allSettled([summer.add(big), summer.add(a)]), 10_000, 'both actor calls to settle')
  assert.ok(tooBigCall.status === 'rejected' && tooBigCall.reason instanceof SharedValueError, String(tooBigCall.status))
  assert.match((tooBigCall.reason as Error).message, /^actor call "add": shared value \S+ of 40000 bytes exceeds the largest message node/)
  assert.equal(fine.status === 'fulfilled' && fine.value, rampSum(2000))
  assert.equal(narrow.stats.badFrames, 0)
  // put refuses a value a member cannot hold, naming the limit.
  await assert.rejects(cluster.put(ramp(5001)), (e: unknown) => e instanceof SharedValueError && /maxFrameBytes 32768/.test(e.message))
})

test('a task whose value one node cannot hold runs on a node that can; with none left, it fails naming the value and the limit', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const small = await startAgent(t, cluster, { sharedCacheBytes: 20_000, threads: 1 })
  const large = await startAgent(t, cluster, { threads: 1 })
  // Accepted: one member can hold it.
  const big = await cluster.put(ramp(5000))
  const a = await cluster.put(ramp(100))
  const calls = Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? cluster.call<Info>('sharedInfo', big, i) : cluster.call<Info>('sharedInfo', a, i)))
  const infos = await within(Promise.all(calls), 20_000, 'every task')
  assert.deepEqual(
    infos.map((x) => [x.i, x.sum]),
    Array.from({ length: 40 }, (_, i) => [i, i % 2 === 0 ? rampSum(5000) : rampSum(100)]),
  )
  assert.equal(small.stats.badFrames + large.stats.badFrames, 0)
  assert.ok(small.stats.sharedBytes <= 20_000, `the small node holds ${small.stats.sharedBytes} bytes`)
  assert.equal(small.stats.tasksDone + large.stats.tasksDone, 40)
  assert.ok(large.stats.tasksDone >= 20, `the large node ran ${large.stats.tasksDone} tasks`)

  // An actor on the small node cannot move: its call fails, naming the node and limit.
  const summer = await cluster.with({ node: small.id }).spawn<import('../fixtures/tasks.js').Summer>('Summer')
  await assert.rejects(
    within(summer.add(big), 10_000, 'the actor call'),
    (e: unknown) => e instanceof SharedValueError && e.code === 'ERR_SHARED_TOO_LARGE' && e.message.includes(small.id),
  )

  // The large node leaves: no member can hold the value now.
  await large.close()
  await waitFor(() => cluster.nodes().length === 1, 10_000, 'the large node to leave')
  await assert.rejects(
    within(cluster.call('sharedInfo', big, 99), 10_000, 'the task to fail'),
    (e: unknown) =>
      e instanceof SharedValueError &&
      e.code === 'ERR_SHARED_TOO_LARGE' &&
      /shared value \S+ of 40000 bytes exceeds the shared cache of node \S+ \(sharedCacheBytes 20000\); no other node can hold it$/.test(e.message) &&
      e.message.includes(small.id),
  )
  assert.equal((await cluster.call<Info>('sharedInfo', a, 0)).sum, rampSum(100))
  await assert.rejects(cluster.put(ramp(5001)), (e: unknown) => e instanceof SharedValueError && /sharedCacheBytes 20000/.test(e.message))
})

test('a task frame reaching a node that lost a value it needs: the node fetches it, nothing is dropped', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const agent = await startAgent(t, cluster, { threads: 1 })
  const a = await cluster.put(ramp(1000))
  assert.equal((await cluster.call<Info>('sharedInfo', a, 0)).sum, rampSum(1000))
  assert.equal(agent.stats.sharedPuts, 1)
  // The node's cache loses the value (as when it refuses a Put); the driver still counts it held there.
  ;(agent as unknown as { shared: SharedCache }).shared.drop([a.hash])
  assert.equal(agent.stats.sharedValues, 0)
  const infos = await within(
    Promise.all(Array.from({ length: 10 }, (_, i) => cluster.call<Info>('sharedInfo', a, i))),
    10_000,
    'the tasks of a frame that needs the value',
  )
  assert.ok(infos.every((x) => x.sum === rampSum(1000)))
  assert.equal(agent.stats.badFrames, 0, 'nothing dropped as a bad frame')
  assert.equal(agent.stats.sharedPuts, 2, 'fetched once')
  await a.release()
  await waitFor(() => agent.stats.sharedValues === 0, 10_000, 'the node to free the value')
})

test("a value that does not fit a node's cache beside the values in use there is not sent: its task fails, and runs once they settle", async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const agent = await startAgent(t, cluster, { sharedCacheBytes: 20_000, threads: 2 })
  await secondValueWhileFirstInUse(
    t,
    cluster,
    agent,
    () => cluster.stats().inFlight === 1,
    /15992 bytes does not fit the shared cache of node \S+ \(sharedCacheBytes 20000\) beside the 16000 bytes of values its unsettled tasks and actor calls carry; no other node can hold it$/,
  )
  assert.equal(agent.stats.sharedRefused, 0, 'the driver never sent what the node would refuse')
  assert.equal(agent.stats.badFrames, 0)
})

/** Lowers the agent's own cache bound below what it announced: as a driver that does not know it (or one that passes it) would find. */
function lowerOwnBound(agent: Agent, sharedCacheBytes: number): void {
  ;(agent as unknown as { shared: { limit: { nodeId: string; sharedCacheBytes: number } } }).shared.limit = { nodeId: agent.id, sharedCacheBytes }
}

const refusedBig = (agent: Agent, what: string) => (e: unknown) =>
  e instanceof SharedValueError &&
  e.code === 'ERR_SHARED_TOO_LARGE' &&
  new RegExp(`^${what} on node ${agent.id}: shared value \\S+ of 40000 bytes exceeds the shared cache of node ${agent.id} \\(sharedCacheBytes 10000\\)$`).test(
    e.message,
  )

test('a task frame needing a value the node refused to hold: only the tasks that need it fail, the rest of the frame runs', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const agent = await startAgent(t, cluster, { threads: 1 })
  lowerOwnBound(agent, 10_000)
  const big = await cluster.put(ramp(5000))
  const a = await cluster.put(ramp(100))
  const [tooBig, ok, plain, tooBigToo] = await within(
    Promise.allSettled([
      cluster.call<Info>('sharedInfo', big, 0),
      cluster.call<Info>('sharedInfo', a, 1),
      cluster.call('echo', 2),
      cluster.call('echo', [big]),
    ]),
    10_000,
    'every task of the frame to settle',
  )
  assert.ok(tooBig.status === 'rejected' && refusedBig(agent, 'task "sharedInfo"')(tooBig.reason), String(tooBig.status === 'rejected' && tooBig.reason))
  assert.ok(tooBigToo.status === 'rejected' && refusedBig(agent, 'task "echo"')(tooBigToo.reason), String(tooBigToo.status === 'rejected' && tooBigToo.reason))
  assert.equal(ok.status === 'fulfilled' && ok.value.sum, rampSum(100))
  assert.equal(plain.status === 'fulfilled' && plain.value, 2)
  assert.equal(agent.stats.sharedBytes, 800, 'the refused value was never stored')
  assert.ok(agent.stats.sharedRefused >= 1)
  assert.equal(agent.stats.badFrames, 0)
})

test('an actor frame carrying a value the node refused to hold: the calls that carry it fail, the others reach their actors', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const agent = await startAgent(t, cluster, { threads: 1 })
  // Another agent of this process holds the value: whether a node holds it is still that node's own word.
  const holder = await startAgent(t, cluster, { threads: 1 })
  const on = cluster.with({ node: agent.id })
  const summer = await on.spawn<import('../fixtures/tasks.js').Summer>('Summer')
  const other = await on.spawn<import('../fixtures/tasks.js').Summer>('Summer')
  lowerOwnBound(agent, 10_000)
  const big = await cluster.put(ramp(5000))
  const a = await cluster.put(ramp(100))
  const held = await cluster.with({ node: holder.id }).spawn<import('../fixtures/tasks.js').Summer>('Summer')
  assert.equal(await held.add(big), rampSum(5000))
  const [tooBig, fine, otherFine] = await within(
    Promise.allSettled([summer.add(big), summer.add(a), other.add(a)]),
    10_000,
    'every call of the frame to settle',
  )
  assert.ok(tooBig.status === 'rejected' && refusedBig(agent, 'actor call "add"')(tooBig.reason), String(tooBig.status === 'rejected' && tooBig.reason))
  assert.equal(fine.status === 'fulfilled' && fine.value, rampSum(100))
  assert.equal(otherFine.status === 'fulfilled' && otherFine.value, rampSum(100))
  assert.equal(agent.stats.badFrames, 0, 'nothing dropped as a bad frame')
  assert.equal(agent.stats.sharedBytes, 800)
  // The actor lives on.
  assert.equal(await summer.add(a), 2 * rampSum(100))
})

test('tasks of a batch whose thread died, run again one by one, still read the shared copy of their value', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const agent = await startAgent(t, cluster, { threads: 1 })
  const h = await cluster.put(ramp(1000))
  const calls = [0, 1, 2].map((i) => cluster.call<Info>('sharedInfo', h, i))
  const exit = cluster.call('exitThread')
  calls.push(...[3, 4].map((i) => cluster.call<Info>('sharedInfo', h, i)))
  const infos = await within(Promise.all(calls), 20_000, 'the tasks of the crashed batch')
  await exit.catch(() => {})
  assert.ok(agent.stats.threadsLost >= 1, 'the batch died')
  assert.deepEqual(
    infos.map((x) => [x.i, x.sum, x.shared]),
    [0, 1, 2, 3, 4].map((i) => [i, rampSum(1000), true]),
  )
  assert.equal(agent.stats.sharedPuts, 1)
})
