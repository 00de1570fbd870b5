/**
 * Rare paths of the brokered designs, each provoked directly on a real broker:
 * an agent that takes back what a crashed agent of its id had taken, malformed
 * task frames acknowledged and dropped by the agent, and the expiry of what a
 * crashed run leaves behind.
 */
import { spawnSync } from 'node:child_process'
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { connect as amqpConnect } from 'amqplib'
import { Agent, Cluster, ClusterClosedError } from '../../lib/index.js'
import { header, encode } from '../../lib/protocol/codec.js'
import { MsgType } from '../../lib/protocol/messages.js'
import { packParts } from '../../lib/transport/frames.js'
import { QUEUE_TTL_MS } from '../../lib/transport/paths.js'
import { RedisDriverTasks, RedisLink } from '../../lib/transport/redis.js'
import { FIXTURE_TASKS, runCli, waitFor } from '../helpers.js'
import { AMQP_URL, REDIS_URL, sealed, skipReason } from '../brokers.js'

const urls = { redisUrl: REDIS_URL, amqpUrl: AMQP_URL }

/**
 * A cluster id of its own for each test, and a Redis client that deletes its keys when the test
 * ends (each test closes its agents, then its cluster, before it returns: an agent's Leave would
 * otherwise reach a driver inbox after this cleanup, and stay until it expires).
 */
function redisFor(t: TestContext) {
  const clusterId = `paths-${randomBytes(4).toString('hex')}`
  const redis = new Redis(REDIS_URL)
  const k = (rest: string) => `ac:{${clusterId}}:${rest}`
  t.after(async () => {
    // This test's keys, and those of any cluster id it derived from its own.
    const left = await redis.keys(`ac:{${clusterId}*`)
    if (left.length > 0) await redis.del(...left)
    redis.disconnect()
  })
  return { clusterId, redis, k }
}

test(
  'redis: an agent that starts under the id of a crashed one takes back the frames that one had taken, as redeliveries: acknowledged unrun, the driver told',
  { skip: skipReason('redis') },
  async (t) => {
    const { clusterId, redis, k } = redisFor(t)
    const cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: 'redis', localAgents: 0, clusterId })
    t.after(() => cluster.close())
    // The crashed agent had taken one frame (numbered, as the driver numbers them; one this driver never sent).
    // It may have run: the agent that takes it back must not run it again, only say so (the driver sends
    // again what no one had taken) and acknowledge it.
    const stale = sealed(clusterId, 'task', [header(MsgType.Tasks, 1, null, 1_000_000), encode([1_000_000, 'add', [1000, 1]])])
    await redis.lpush(k('processing:twin'), stale)
    const agent = await Agent.start({ ...urls, transport: 'redis', clusterId, id: 'twin', tasks: FIXTURE_TASKS, threads: 1 })
    t.after(() => agent.close({ timeoutMs: 2_000 }))
    await waitFor(
      async () => (await redis.llen(k('processing:twin'))) === 0 && (await redis.llen(k('tasks'))) === 0,
      10_000,
      'the taken-back frame to be acknowledged (neither on the processing list nor on the task list)',
    )
    assert.equal(agent.stats.tasksDone, 0, 'a redelivery is not run')
    assert.equal(agent.stats.badFrames, 0, 'a numbered redelivery is not malformed')
    assert.equal(await cluster.call('add', 1, 2), 3, 'the agent serves the cluster')
    await agent.close()
    await cluster.close()
  },
)

test(
  'redis: malformed task frames are acknowledged and dropped by the agent, counted, never redelivered; the job runs on',
  { skip: skipReason('redis') },
  async (t) => {
    const { clusterId, redis, k } = redisFor(t)
    const cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: 'redis', localAgents: 0, clusterId })
    t.after(() => cluster.close())
    const agent = await Agent.start({ ...urls, transport: 'redis', clusterId, id: 'picky', tasks: FIXTURE_TASKS, threads: 1 })
    t.after(() => agent.close({ timeoutMs: 2_000 }))
    await agent.waitUntilReady()
    assert.equal(await cluster.call('add', 1, 1), 2)
    // Not a frame at all (no tag; the transport cannot unpack it), and a frame of the cluster whose header is not this protocol's.
    await redis.lpush(k('tasks'), Buffer.from('not a frame'))
    await redis.lpush(k('tasks'), sealed(clusterId, 'task', [Buffer.from('junk header'), encode([])]))
    await waitFor(() => agent.stats.badFrames === 2, 10_000, 'the agent to count both malformed frames')
    await waitFor(
      async () => (await redis.llen(k('processing:picky'))) === 0 && (await redis.llen(k('tasks'))) === 0,
      10_000,
      'both frames to be acknowledged: neither on the task list nor on the processing list',
    )
    assert.deepEqual(await Promise.all([cluster.call('add', 2, 3), cluster.call('add', 4, 5)]), [5, 9])
    assert.equal(agent.stats.badFrames, 2, 'neither came back')
    assert.equal(cluster.stats().badFrames, 0)
    await agent.close()
    await cluster.close()
  },
)

test(
  'redis: an agent told its driver is gone acknowledges the frames it had taken and not started (their driver sends them again), at once',
  { skip: skipReason('redis') },
  async (t) => {
    const { clusterId, redis, k } = redisFor(t)
    const cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: 'redis', localAgents: 0, clusterId })
    t.after(() => cluster.close())
    // The agent in a process of its own, so it keeps running while this process (and its driver) is held below.
    const agent = runCli(t, ['agent', '--transport', 'redis', '--cluster-id', clusterId, '--redis', REDIS_URL, '--tasks', FIXTURE_TASKS.href, '--threads', '1'])
    await waitFor(() => cluster.nodes().length === 1, 15_000, 'the agent to join')
    const id = cluster.nodes()[0]!.id
    // Timed tasks travel one to a frame and run alone: one runs (for longer than this test looks), the others wait on the agent.
    const calls = Array.from({ length: 8 }, (_, i) => cluster.with({ timeoutMs: 20_000 }).call<number>('sleep', 5_000, i))
    await waitFor(async () => (await redis.llen(k(`processing:${id}`))) >= 3, 10_000, 'the agent to hold one running and at least two waiting frames')
    // Frames the agent has not taken (it takes no more than its window): they stay on the task list.
    const untaken = await redis.llen(k('tasks'))
    // The driver's goodbye, as it sends it; then this process holds still (its driver cannot move the
    // agent's frames back when it says Hello again) while another process reads the lists.
    await redis.rpush(k(`agent:${id}`), sealed(clusterId, 'to-agent', [header(MsgType.DriverBye)], id))
    const lengths = (): [number, number] => {
      const r = spawnSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `import { Redis } from 'ioredis'; const r = new Redis(process.argv[1]); console.log(JSON.stringify([await r.llen(process.argv[2]), await r.llen(process.argv[3])])); r.disconnect()`,
          REDIS_URL,
          k(`processing:${id}`),
          k('tasks'),
        ],
        { encoding: 'utf8', timeout: 5_000, cwd: new URL('../../..', import.meta.url).pathname },
      )
      return JSON.parse(r.stdout) as [number, number]
    }
    const end = Date.now() + 10_000
    let seen = lengths()
    while (seen[0] > 1 && Date.now() < end) seen = lengths()
    assert.ok(
      seen[0] <= 1,
      `at most the running frame stays on the agent's processing list (processing, tasks: ${JSON.stringify(seen)}; agent: ${agent.output()})`,
    )
    // The driver knows the agent took them (Taken): a driver that took the agent out sends them again itself,
    // so they must not also go back to the broker's list, where they would run a second time.
    assert.ok(seen[1] <= untaken, `the waiting frames are not back on the task list (processing, tasks: ${JSON.stringify(seen)}; untaken before: ${untaken})`)
    // A driver says goodbye to a member only when it closes (one that took the agent out has already
    // moved its processing list back): so does this one now. Each call has its value or was closed.
    const settled = Promise.allSettled(calls)
    await cluster.close()
    const outcomes = await settled
    outcomes.forEach((o, i) =>
      assert.ok(
        (o.status === 'fulfilled' && o.value === i) || (o.status === 'rejected' && o.reason instanceof ClusterClosedError),
        `call ${i}: ${o.status === 'fulfilled' ? String(o.value) : String(o.reason)}`,
      ),
    )
    // Before the cleanup of the keys: nothing writes to them afterwards.
    agent.child.kill('SIGKILL')
    await agent.exited
  },
)

test(
  'redis: the task list and a processing list carry an expiry whenever they are written, so a crashed run’s leftovers go',
  { skip: skipReason('redis') },
  async (t) => {
    const { clusterId, redis, k } = redisFor(t)
    const ttlOf = async (key: string) => {
      const ttl = await redis.pttl(key)
      assert.ok(ttl > 0 && ttl <= QUEUE_TTL_MS, `${key} expires within ${QUEUE_TTL_MS} ms (PTTL ${ttl})`)
    }
    // The driver's end of the task list on its own: what it publishes, and what it moves back from a lost agent.
    const link = await RedisLink.connect(REDIS_URL, 'driver', 0, () => {})
    const tasks = new RedisDriverTasks(link, { clusterId })
    t.after(async () => {
      await tasks.close()
      await link.close()
    })
    await tasks.open()
    tasks.publish(packParts([header(MsgType.Tasks, 1), encode([1, 'add', [1, 2]])]))
    await waitFor(async () => (await redis.exists(k('tasks'))) === 1, 10_000, 'the published frame on the task list')
    await ttlOf(k('tasks'))
    await redis.del(k('tasks'))
    await redis.lpush(k('processing:gone'), packParts([header(MsgType.Tasks, 1), encode([2, 'add', [1, 2]])]))
    tasks.reclaim('gone')
    await waitFor(async () => (await redis.llen(k('tasks'))) === 1, 10_000, 'the lost agent’s frame moved back to the task list')
    await ttlOf(k('tasks'))
    // An agent's processing list while it runs a task.
    const cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: 'redis', localAgents: 0, clusterId: `${clusterId}-run` })
    t.after(() => cluster.close())
    const agent = await Agent.start({ ...urls, transport: 'redis', clusterId: `${clusterId}-run`, id: 'slow', tasks: FIXTURE_TASKS, threads: 1 })
    t.after(() => agent.close({ timeoutMs: 2_000 }))
    const run = `ac:{${clusterId}-run}:`
    const call = cluster.call<number>('sleep', 1_000, 7)
    await waitFor(async () => (await redis.exists(`${run}processing:slow`)) === 1, 10_000, 'the task on the agent’s processing list')
    await ttlOf(`${run}processing:slow`)
    assert.equal(await call, 7)
    await agent.close()
    await cluster.close()
  },
)

test('amqp: the task queue and the driver’s queue are declared to expire once unused', { skip: skipReason('amqp') }, async (t) => {
  const clusterId = `paths-${randomBytes(4).toString('hex')}`
  const cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: 'amqp', threads: 1, clusterId })
  t.after(() => cluster.close())
  assert.equal(await cluster.call('add', 1, 2), 3)
  const amqp = await amqpConnect(AMQP_URL)
  t.after(() => amqp.close())
  for (const q of [`ac.${clusterId}.tasks`, `ac.${clusterId}.driver`]) {
    // Declaring a queue again with the same arguments succeeds; with another expiry, the broker refuses.
    const same = await amqp.createChannel()
    await same.assertQueue(q, { durable: true, arguments: { 'x-expires': QUEUE_TTL_MS } })
    await same.close()
    const other = await amqp.createChannel()
    other.on('error', () => {})
    await assert.rejects(other.assertQueue(q, { durable: true, arguments: { 'x-expires': QUEUE_TTL_MS + 1 } }), /PRECONDITION_FAILED/, q)
  }
})
