/**
 * Rare paths of the brokered designs, each provoked directly on a real broker:
 * an agent that takes back what a crashed agent of its id had taken, malformed
 * task frames acknowledged and dropped by the agent, a frame taken while the
 * agent's driver is silent, one taken by an agent that never joined the driver,
 * and the expiry of what a crashed run leaves behind.
 */
import { spawnSync } from 'node:child_process'
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { connect as amqpConnect } from 'amqplib'
import { Agent, Cluster, ClusterClosedError, type AgentOptions } from '../../lib/index.js'
import { header, encode, parseHeader, type Header } from '../../lib/protocol/codec.js'
import { decodeTaskBody, readResultsBody, ResultsWriter } from '../../lib/protocol/bodies.js'
import { MsgType, Status, type HelloInfo } from '../../lib/protocol/messages.js'
import { findBrokerSecret } from '../../lib/transport/broker-secret.js'
import { FrameAuth, packParts, unpackParts } from '../../lib/transport/frames.js'
import { QUEUE_TTL_MS } from '../../lib/transport/paths.js'
import { RedisDriverTasks, RedisLink } from '../../lib/transport/redis.js'
import { VERSION } from '../../lib/version.js'
import { SharedRef } from '../../lib/protocol/shared-ref.js'
import { FIXTURE_TASKS, runCli, waitFor, within } from '../helpers.js'
import { AMQP_URL, REDIS_URL, redisFor, sealed, skipReason } from '../brokers.js'

const urls = { redisUrl: REDIS_URL, amqpUrl: AMQP_URL }

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

/**
 * The messages a driver of cluster `clusterId` puts on the lists, sealed with `secret` as it seals them, and
 * those its agents sent it, opened: for tests that play the driver to provoke one exact order of events.
 */
function driverWire(clusterId: string, secret: string) {
  const key = Buffer.from(secret, 'utf8')
  const [task, toAgent, toDriver] = (['task', 'to-agent', 'to-driver'] as const).map((d) => new FrameAuth(key, clusterId, d))
  return {
    task: (parts: Uint8Array[]) => task!.seal(parts),
    toAgent: (agentId: string, parts: Uint8Array[]) => toAgent!.seal(parts, agentId),
    /** An agent's message to the driver: who sent it, its header and its body. */
    open(message: Buffer): { from: string; h: Header; body: Uint8Array | undefined } {
      const packed = toDriver!.open(message)
      if (packed === undefined) throw new Error('a message in the driver inbox without the right tag')
      const [from, h, body] = unpackParts(packed)
      return { from: Buffer.from(from!).toString('utf8'), h: parseHeader(h), body }
    },
  }
}

/**
 * A real agent on Redis whose first driver (played by the test) welcomes it and falls silent; the moment the
 * agent finds it silent, a frame is pushed onto the task list, where a take the agent had waiting (it takes
 * nothing more while its driver is silent, but a waiting BLMOVE stays up to a second) meets it: Redis serves
 * the waiting take with the push itself, so if the frame is still on the list right after, no take was waiting,
 * and the first driver comes back to try again. Returns the frame's number (its one task has the same id).
 */
/** A real agent `id` on Redis, of a cluster whose driver the test plays (with `wire`), closed when the test ends. */
async function agentOfPlayedDriver(t: TestContext, id: string, options: Partial<AgentOptions>) {
  const { clusterId, redis, k } = redisFor(t)
  const secret = randomBytes(32).toString('hex')
  const wire = driverWire(clusterId, secret)
  const agent = await Agent.start({ ...urls, transport: 'redis', clusterId, brokerSecret: secret, id, tasks: FIXTURE_TASKS, threads: 1, ...options })
  t.after(() => agent.close({ timeoutMs: 2_000 }))
  return { redis, k, wire, agent }
}

async function frameTakenWhileSilent(t: TestContext) {
  const id = 'torn'
  const { redis, k, wire, agent } = await agentOfPlayedDriver(t, id, { heartbeatMs: 100, driverTimeoutMs: 400 })
  const welcome = (session: string) => redis.rpush(k(`agent:${id}`), wire.toAgent(id, [header(MsgType.Welcome, { nodeId: id, session, heartbeatMs: 100 })]))
  const said = async () => (await redis.lrangeBuffer(k('driver'), 0, -1)).map((m) => wire.open(m))
  const frame = (frameId: number, taskId: number) => wire.task([header(MsgType.Tasks, 1, null, frameId), encode([taskId, 'add', [40, 2]])])
  let first = 0
  for (let attempt = 1; attempt <= 5 && first === 0; attempt++) {
    await welcome('first')
    await waitFor(() => agent.state === 'ready', 10_000, 'the first Welcome')
    const frameId = 1000 + attempt
    const pushed = new Promise<Buffer[]>((resolve, reject) =>
      agent.once('driver:lost', () => {
        redis
          .lpush(k('tasks'), frame(frameId, frameId))
          .then(() => redis.lrangeBuffer(k('tasks'), 0, -1))
          .then(resolve, reject)
      }),
    )
    const left = await within(pushed, 10_000, 'the agent to find its driver silent')
    if (left.length === 1 && left[0]![0] !== 0xff) {
      await redis.del(k('tasks'))
      continue
    }
    first = frameId
  }
  assert.notEqual(first, 0, 'a take waiting on the task list met the frame (5 attempts)')
  // The driver that answers now keeps the agent from falling silent again.
  const beat = setInterval(() => void redis.rpush(k(`agent:${id}`), wire.toAgent(id, [header(MsgType.Heartbeat)])), 100)
  t.after(() => clearInterval(beat))
  /** The Taken frames the agent sent, in order. */
  const takens = async () => (await said()).flatMap(({ from, h }) => (h.type === MsgType.Taken ? [{ from, frameId: h.frameId, dropped: h.dropped }] : []))
  /** Waits for the results of one task and returns every answer the agent sent. */
  const answers = async () => {
    await waitFor(async () => (await said()).some(({ h }) => h.type === MsgType.Results), 10_000, 'results from the agent')
    const all: unknown[] = []
    for (const { h, body } of await said()) {
      if (h.type === MsgType.Results) readResultsBody(body, h.count, (taskId, status, value) => all.push([taskId, status, value]))
    }
    return all
  }
  const lists = async () => ({ tasks: await redis.llen(k('tasks')), processing: await redis.llen(k(`processing:${id}`)) })
  return { agent, id, first, welcome, frame, takens, answers, lists, redis, k }
}

test(
  'redis: a frame taken while the driver is silent waits unrun; if another driver answers, it goes back to the queue, and that driver, told it was dropped, sends it again',
  { skip: skipReason('redis') },
  async (t) => {
    const { agent, id, first, welcome, frame, takens, answers, lists, redis, k } = await frameTakenWhileSilent(t)
    // The next driver's Welcome, sent before it published the frame, is read after the frame was taken.
    await welcome('second')
    await waitFor(async () => (await takens()).length > 0, 10_000, 'the agent to say it took the frame')
    await waitFor(async () => (await redis.llen(k(`processing:${id}`))) === 0, 10_000, 'the frame to be acknowledged')
    // Given back, then taken again as a redelivery: dropped unrun, and said so once; not announced before.
    assert.deepEqual(await takens(), [{ from: id, frameId: first, dropped: true }])
    assert.deepEqual(await lists(), { tasks: 0, processing: 0 })
    assert.equal(agent.stats.tasksDone, 0)
    // The driver sends the task again in a frame of its own; the agent runs it and answers.
    await redis.lpush(k('tasks'), frame(first + 1000, first))
    assert.deepEqual(await answers(), [[first, Status.Ok, 42]])
    assert.equal(agent.stats.tasksDone, 1)
    await agent.close()
  },
)

test(
  'redis: a frame taken while the driver is silent waits unrun; if that driver answers again, it is taken as usual: said taken, run, answered',
  { skip: skipReason('redis') },
  async (t) => {
    const { agent, id, first, welcome, takens, answers, lists } = await frameTakenWhileSilent(t)
    // The silent driver was only busy: it answers the agent's Hello under the same session.
    await welcome('first')
    assert.deepEqual(await answers(), [[first, Status.Ok, 42]])
    assert.deepEqual(await takens(), [{ from: id, frameId: first, dropped: false }])
    // Acknowledged once its results are with Redis.
    await waitFor(async () => (await lists()).processing === 0, 10_000, 'the frame to be acknowledged')
    assert.deepEqual(await lists(), { tasks: 0, processing: 0 })
    assert.equal(agent.stats.tasksDone, 1)
    await agent.close()
  },
)

test(
  'redis: a frame taken by an agent that never joined this driver (it still serves an earlier one) is sent again, uncharged, and answered by a member',
  { skip: skipReason('redis') },
  async (t) => {
    const { clusterId, redis, k } = redisFor(t)
    const cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: 'redis', localAgents: 0, clusterId, nodeTimeoutMs: 60_000 })
    t.after(() => cluster.close())
    // The test plays two agents on the wire: a member of this driver, and a stranger still serving an earlier
    // driver of the cluster id (gone, and not yet found silent), which takes a frame of this one's.
    const tasks = new FrameAuth(findBrokerSecret(clusterId)!, clusterId, 'task')
    const say = (from: string, parts: Uint8Array[]) => redis.rpush(k('driver'), sealed(clusterId, 'to-driver', [Buffer.from(from), ...parts]))
    const take = async () => {
      let frame: Buffer | null = null
      await waitFor(async () => (frame = await redis.rpopBuffer(k('tasks'))) !== null, 10_000, 'a frame on the task list')
      const [h, body] = unpackParts(tasks.open(frame!)!)
      const parsed = parseHeader(h)
      assert.equal(parsed.type, MsgType.Tasks)
      return { frameId: (parsed as { frameId: number }).frameId, tasks: decodeTaskBody(body!) }
    }
    const hello: HelloInfo = {
      agentId: 'member',
      threads: 1,
      pid: process.pid,
      host: 'test',
      version: VERSION,
      tasks: ['add'],
      actors: [],
      window: 1,
      registration: 'r1',
    }
    await say('member', [header(MsgType.Hello, hello)])
    await waitFor(() => cluster.nodes().length === 1, 10_000, 'the member to join')
    const call = cluster.call<number>('add', 40, 2)
    const first = await take()
    assert.deepEqual(
      first.tasks.map((x) => [x.name, x.args]),
      [['add', [40, 2]]],
    )
    await say('stranger', [header(MsgType.Taken, first.frameId, false)])
    // The stranger answers its own driver, never this one: the task is published again, in a frame of its own.
    const again = await take()
    assert.notEqual(again.frameId, first.frameId)
    assert.deepEqual(again.tasks, first.tasks)
    await say('member', [header(MsgType.Taken, again.frameId, false)])
    const results = new ResultsWriter()
    results.add(again.tasks[0]!.id, Status.Ok, 42)
    await say('member', [header(MsgType.Results, 1, 'r1'), results.take()])
    assert.equal(await within(call, 10_000, 'the call, answered by the member'), 42)
    const s = cluster.stats()
    assert.deepEqual(
      { requeued: s.requeued, tasksRetried: s.tasksRetried, badFrames: s.badFrames, nodesLost: s.nodesLost },
      { requeued: 1, tasksRetried: 0, badFrames: 0, nodesLost: 0 },
    )
    await cluster.close()
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

test(
  "redis: a Put over the agent's maxFrameBytes (from a driver that does not know its limit) fails the tasks waiting for it, naming the limit",
  { skip: skipReason('redis') },
  async (t) => {
    const id = 'narrow'
    const { redis, k, wire, agent } = await agentOfPlayedDriver(t, id, { maxFrameBytes: 64 * 1024 })
    const toAgent = (parts: Uint8Array[]) => redis.rpush(k(`agent:${id}`), wire.toAgent(id, parts))
    await toAgent([header(MsgType.Welcome, { nodeId: id, session: 'played', heartbeatMs: 1000 })])
    await waitFor(() => agent.state === 'ready', 10_000, 'the Welcome')
    const said = async () => (await redis.lrangeBuffer(k('driver'), 0, -1)).map((m) => wire.open(m))
    const hash = 'A'.repeat(42) + '_'
    const ref = new SharedRef(hash, 100_000, { release: async () => {} })
    await redis.lpush(k('tasks'), wire.task([header(MsgType.Tasks, 1, null, 77, [hash]), encode([77, 'sharedInfo', [ref, 0]])]))
    await waitFor(async () => (await said()).some(({ h }) => h.type === MsgType.Fetch), 10_000, 'the Fetch')
    await toAgent([header(MsgType.Put, hash, 'Uint8Array', 100_000), Buffer.alloc(100_000)])
    let results: { body: Uint8Array | undefined } | undefined
    await waitFor(async () => (results = (await said()).find(({ h }) => h.type === MsgType.Results)) !== undefined, 10_000, 'the Results')
    const answers: [unknown, unknown, unknown][] = []
    readResultsBody(results!.body, 1, (taskId, status, value) => answers.push([taskId, status, value]))
    assert.equal(answers.length, 1)
    const [taskId, status, value] = answers[0]!
    assert.equal(taskId, 77)
    assert.equal(status, Status.Failed)
    const wireErr = value as { code: string; message: string }
    assert.equal(wireErr.code, 'ERR_SHARED_TOO_LARGE')
    assert.match(wireErr.message, /shared value A+_ of 100000 bytes exceeds the maxFrameBytes of node narrow \(65536\)/)
    assert.equal(agent.stats.badFrames, 1, 'the Put itself')
    assert.equal(agent.stats.sharedValues, 0)
    await waitFor(async () => (await redis.llen(k('processing:narrow'))) === 0, 10_000, 'the frame acknowledged')
  },
)
