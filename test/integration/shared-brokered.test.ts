/**
 * Shared inputs on the brokered designs: any agent may take a task frame from
 * the shared queue, so the one that took it fetches the values it lacks.
 */
import { describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { encode, header } from '../../lib/protocol/codec.js'
import { MsgType } from '../../lib/protocol/messages.js'
import { SharedRef } from '../../lib/protocol/shared-ref.js'
import { Agent, Cluster, SharedValueError, type AgentOptions } from '../../lib/index.js'
import type { TransportKind } from '../../lib/transport/options.js'
import { FIXTURE_TASKS, runCli, waitFor, within } from '../helpers.js'
import { secondValueWhileFirstInUse } from '../shared-bound.js'
import { AMQP_URL, REDIS_URL, brokeredAgentArgs, redisFor, sealed, skipReason } from '../brokers.js'

const BROKERED: TransportKind[] = ['redis', 'amqp', 'amqp+redis']
const urls = { redisUrl: REDIS_URL, amqpUrl: AMQP_URL }
/** brokeredAgentArgs' heartbeats, and a node timeout to match. */
const TIMING = { heartbeatMs: 300, nodeTimeoutMs: 1500 }

type Info = { shared: boolean; length: number; sum: number; thread: number; pid: number; i: number }

function ramp(n: number): Float64Array {
  const a = new Float64Array(n)
  for (let i = 0; i < n; i++) a[i] = i
  return a
}
const rampSum = (n: number) => (n * (n - 1)) / 2

async function startAgent(t: TestContext, cluster: Cluster, design: TransportKind, options: Partial<AgentOptions> = {}): Promise<Agent> {
  const agent = await Agent.start({
    ...urls,
    transport: design,
    clusterId: cluster.id,
    tasks: FIXTURE_TASKS,
    threads: 1,
    heartbeatMs: TIMING.heartbeatMs,
    driverTimeoutMs: TIMING.nodeTimeoutMs,
    ...options,
  })
  t.after(() => agent.close({ timeoutMs: 2_000 }))
  await within(agent.waitUntilReady(), 15_000, 'the agent to join')
  return agent
}

for (const design of BROKERED) {
  describe(`shared inputs on ${design}`, { skip: skipReason(design) }, () => {
    test('each node fetches a value once; a node that joins later fetches it; a lost node’s re-run tasks find it; release frees it', async (t) => {
      await using cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: design, localAgents: 0, ...TIMING })
      const first = runCli(t, brokeredAgentArgs(design, cluster.id))
      const second = await startAgent(t, cluster, design)
      await waitFor(() => cluster.nodes().length === 2, 15_000, 'two agents')
      const n = 50_000
      const h = await cluster.put(ramp(n))
      const infos = await within(
        Promise.all(Array.from({ length: 200 }, (_, i) => cluster.call<Info>('sharedInfo', h, i, i % 20 === 0 ? 20 : 1))),
        30_000,
        'the tasks',
      )
      assert.deepEqual(
        infos.map((x) => [x.i, x.sum, x.length, x.shared]),
        Array.from({ length: 200 }, (_, i) => [i, rampSum(n), n, true]),
      )
      const pids = new Set(infos.map((x) => x.pid))
      assert.equal(pids.size, 2, 'both agents ran tasks')
      assert.equal(second.stats.sharedPuts, 1, 'one Put for this node, however many frames needed it')
      assert.equal(cluster.stats().shared.puts, 2, 'one Put per node')
      assert.equal(cluster.stats().shared.putBytes, 2 * n * 8)

      // An actor call carries it too (sent ahead to the actor's node).
      const summer = await cluster.spawn<import('../fixtures/tasks.js').Summer>('Summer')
      assert.equal(await summer.add(h), rampSum(n))
      await summer.stop()
      await second.close()
      await waitFor(() => cluster.nodes().length === 1, 15_000, 'the second agent to leave')

      // Tasks that hold the first node; it dies under them, and a node that joins later runs them again.
      const lost = new Promise((resolve) => cluster.once('node:lost', resolve))
      const pending = Promise.all(Array.from({ length: 6 }, (_, i) => cluster.call<Info>('sharedInfo', h, i, 300)))
      await waitFor(() => cluster.nodes()[0]!.inFlight > 0, 10_000, 'the first node to take the tasks')
      first.child.kill('SIGKILL')
      await within(lost, 15_000, 'the first node to be declared lost')
      const later = await startAgent(t, cluster, design)
      const rerun = await within(pending, 30_000, 'the re-run tasks')
      assert.deepEqual(
        rerun.map((x) => [x.i, x.sum, x.pid]),
        Array.from({ length: 6 }, (_, i) => [i, rampSum(n), process.pid]),
      )
      assert.equal(later.stats.sharedPuts, 1, 'the later node fetched it once')
      assert.ok(cluster.stats().tasksRetried >= 1)

      await h.release()
      await waitFor(() => later.stats.sharedValues === 0 && later.stats.sharedBytes === 0, 10_000, 'the node to free the value')
    })

    test('a node whose cache or frame limit is below a value fails the tasks it took that need it, naming node and sizes', async (t) => {
      await using cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: design, localAgents: 0, ...TIMING })
      const h = await cluster.put(ramp(10_000))
      const small = await startAgent(t, cluster, design, { sharedCacheBytes: 40_000 })
      await assert.rejects(
        within(cluster.call('sharedInfo', h, 0), 15_000, 'the task to fail'),
        (err: unknown) =>
          err instanceof SharedValueError &&
          err.code === 'ERR_SHARED_TOO_LARGE' &&
          err.message.includes(small.id) &&
          /80000 bytes/.test(err.message) &&
          /sharedCacheBytes 40000/.test(err.message),
      )
      assert.equal(small.stats.sharedPuts, 0, 'nothing was sent to it')
      await small.close()
      await waitFor(() => cluster.nodes().length === 0, 15_000, 'the small agent to leave')
      const narrow = await startAgent(t, cluster, design, { maxFrameBytes: 64 * 1024 })
      await assert.rejects(
        within(cluster.call('sharedInfo', h, 1), 15_000, 'the task to fail'),
        (err: unknown) =>
          err instanceof SharedValueError && err.code === 'ERR_SHARED_TOO_LARGE' && err.message.includes(narrow.id) && /maxFrameBytes 65536/.test(err.message),
      )
      assert.equal(narrow.stats.badFrames, 0, 'no Put was dropped as a bad frame')
      // A value that fits still goes.
      const fits = await cluster.put(ramp(1000))
      assert.equal((await cluster.call<Info>('sharedInfo', fits, 2)).sum, rampSum(1000))
    })

    test("the agent refuses a Put that would pass its cache's bound: the tasks that need it fail, and run once the values in use settle", async (t) => {
      await using cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: design, localAgents: 0, ...TIMING })
      const agent = await startAgent(t, cluster, design, { sharedCacheBytes: 20_000, threads: 2 })
      // The driver answers the node's Fetch of the second value all the same (it cannot drop the first).
      await secondValueWhileFirstInUse(
        t,
        cluster,
        agent,
        () => agent.activity().busy === 1,
        /15992 bytes exceeds the shared cache of node \S+ \(sharedCacheBytes 20000\) beside the 16000 bytes of the 1 value\(s\) it holds in use$/,
      )
      assert.equal(agent.stats.sharedRefused, 1)
    })
  })
}

test(
  'redis: a frame taken after its value was released has its tasks answered ERR_SHARED_RELEASED, not left waiting',
  { skip: skipReason('redis') },
  async (t) => {
    const { clusterId, redis, k } = redisFor(t, 'shared')
    const cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: 'redis', localAgents: 0, clusterId })
    t.after(() => cluster.close())
    const h = await cluster.put(ramp(100))
    const { hash } = h
    await h.release()
    // What a map that ended early leaves on the queue: a frame whose tasks were settled, naming a value since released.
    const ref = new SharedRef(hash, 800, { release: async () => {} })
    const body = encode([1_000_001, 'sharedInfo', [ref, 0], 1_000_002, 'sharedInfo', [ref, 1]])
    await redis.lpush(k('tasks'), sealed(clusterId, 'task', [header(MsgType.Tasks, 2, null, 1_000_001, [hash]), body]))
    const agent = await Agent.start({ ...urls, transport: 'redis', clusterId, id: 'late-taker', tasks: FIXTURE_TASKS, threads: 1 })
    t.after(() => agent.close({ timeoutMs: 2_000 }))
    await waitFor(
      async () => cluster.stats().lateResultsDropped === 2 && (await redis.llen(k('tasks'))) === 0 && (await redis.llen(k('processing:late-taker'))) === 0,
      15_000,
      'both tasks answered (late: settled already) and the frame acknowledged',
    )
    assert.equal(agent.stats.tasksDone, 0, 'nothing ran')
    assert.equal(agent.stats.sharedPuts, 0)
    assert.equal(agent.stats.badFrames, 0)
    assert.equal(cluster.stats().badFrames, 0)
  },
)
