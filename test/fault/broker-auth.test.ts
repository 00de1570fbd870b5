/**
 * Brokered designs: a user of the broker without the cluster's secret can
 * pose neither as an agent nor as the driver. Every frame it pushes (into the
 * driver's inbox, an agent's inbox, or the shared task queue) without the
 * right HMAC is dropped and counted, never acted on; a task frame is
 * acknowledged, so it does not come back. And the secret's files: private,
 * the user's own, or refused.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { connect as amqpConnect } from 'amqplib'
import { Agent, Cluster } from '../../lib/index.js'
import { AuthError } from '../../lib/errors.js'
import { header, encode } from '../../lib/protocol/codec.js'
import { MsgType, Status } from '../../lib/protocol/messages.js'
import { FrameAuth, TAG_BYTES, packParts } from '../../lib/transport/frames.js'
import { findBrokerSecret, readSecretFile } from '../../lib/transport/broker-secret.js'
import { usesAmqp, usesRedis, type TransportKind } from '../../lib/transport/options.js'
import { FIXTURE_TASKS, waitFor } from '../helpers.js'
import { AMQP_URL, REDIS_URL, skipReason } from '../brokers.js'

const urls = { redisUrl: REDIS_URL, amqpUrl: AMQP_URL }
const DESIGNS: TransportKind[] = ['redis', 'amqp', 'amqp+redis']

/** A private directory for a test's files, removed when it ends. */
function privateTmp(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'broker-auth-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function secretFile(dir: string, name: string, text = randomBytes(32).toString('hex'), mode = 0o600): string {
  const path = join(dir, name)
  writeFileSync(path, `${text}\n`, { mode })
  chmodSync(path, mode)
  return path
}

/** A raw broker client of the design: pushes frames where the cluster's driver, agents and task queue read them. */
async function forger(t: TestContext, design: TransportKind, clusterId: string) {
  const redis = usesRedis(design) ? new Redis(REDIS_URL) : undefined
  const amqp = usesAmqp(design) ? await amqpConnect(AMQP_URL) : undefined
  const ch = amqp ? await amqp.createConfirmChannel() : undefined
  t.after(async () => {
    redis?.disconnect()
    await amqp?.close().catch(() => {})
  })
  const toQueue = async (queue: string, frame: Buffer) => {
    ch!.sendToQueue(queue, frame, { persistent: true })
    await ch!.waitForConfirms()
  }
  return {
    driver: async (frame: Buffer) => (redis ? void (await redis.lpush(`ac:{${clusterId}}:driver`, frame)) : toQueue(`ac.${clusterId}.driver`, frame)),
    agent: async (id: string, frame: Buffer) =>
      redis ? void (await redis.rpush(`ac:{${clusterId}}:agent:${id}`, frame)) : toQueue(`ac.${clusterId}.agent.${id}`, frame),
    task: async (frame: Buffer) => (ch ? toQueue(`ac.${clusterId}.tasks`, frame) : void (await redis!.lpush(`ac:{${clusterId}}:tasks`, frame))),
    /** Task frames waiting on the queue (Redis: on the list or an agent's processing list). */
    waiting: async (agentId: string): Promise<number> => {
      if (ch) return (await ch.checkQueue(`ac.${clusterId}.tasks`)).messageCount
      return (await redis!.llen(`ac:{${clusterId}}:tasks`)) + (await redis!.llen(`ac:{${clusterId}}:processing:${agentId}`))
    },
  }
}

/** The ways a frame can lack the right tag: none, a random one, another secret's, another cluster's, another direction's. */
function forgeries(clusterId: string, key: Buffer, direction: 'task' | 'to-driver' | 'to-agent', parts: Buffer[], to = ''): Buffer[] {
  const packed = packParts(parts)
  const wrongDirection = direction === 'to-driver' ? 'to-agent' : 'to-driver'
  return [
    packed,
    Buffer.concat([packed, randomBytes(TAG_BYTES)]),
    new FrameAuth(randomBytes(32), clusterId, direction).seal(parts, to),
    new FrameAuth(key, `${clusterId}-other`, direction).seal(parts, to),
    new FrameAuth(key, clusterId, wrongDirection).seal(parts, to),
  ]
}

for (const design of DESIGNS) {
  test(
    `${design}: forged Hello and Results in the driver's inbox (no tag, a wrong one, another secret's, cluster's or direction's) are dropped and counted; every real result is right`,
    { skip: skipReason(design) },
    async (t) => {
      const clusterId = `auth-${design.replace('+', '-')}-${randomBytes(4).toString('hex')}`
      const cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: design, threads: 1, clusterId })
      t.after(() => cluster.close())
      assert.equal(await cluster.call('add', 1, 1), 2)
      const agentId = cluster.nodes()[0]!.id
      const key = findBrokerSecret(clusterId)!
      const raw = await forger(t, design, clusterId)
      const calls = Array.from({ length: 20 }, (_, i) => cluster.call<number>('sleep', 20, i))
      // A new member, and answers in the real agent's name to every task id in use (each -1).
      const hello = { agentId: 'forger', threads: 8, pid: 1, host: 'forger', version: '0', tasks: ['add', 'sleep'], actors: [], window: 64 }
      const forgedHello = forgeries(clusterId, key, 'to-driver', [Buffer.from('forger'), header(MsgType.Hello, hello)])
      const ids = Array.from({ length: 64 }, (_, i) => i)
      const forgedResults = forgeries(clusterId, key, 'to-driver', [
        Buffer.from(agentId),
        header(MsgType.Results, ids.length),
        encode(ids.flatMap((id) => [id, Status.Ok, -1])),
      ])
      for (const frame of [...forgedHello, ...forgedResults]) await raw.driver(frame)
      const want = forgedHello.length + forgedResults.length
      await waitFor(() => cluster.stats().badFrames >= want, 10_000, `the driver to count the ${want} forged frames`)
      assert.deepEqual(
        await Promise.all(calls),
        Array.from({ length: 20 }, (_, i) => i),
      )
      const s = cluster.stats()
      assert.equal(s.badFrames, want, 'each forged frame counted once')
      assert.equal(s.tasksSucceeded, 21)
      assert.equal(s.lateResultsDropped, 0, 'no forged result got as far as the ledger')
      assert.deepEqual(
        cluster.nodes().map((n) => n.id),
        [agentId],
        'the forged Hello made no member',
      )
    },
  )

  test(
    `${design}: forged task frames on the shared queue are never run (counted, acknowledged, gone), nor forged frames in an agent's inbox acted on`,
    { skip: skipReason(design) },
    async (t) => {
      const clusterId = `auth-${design.replace('+', '-')}-${randomBytes(4).toString('hex')}`
      const cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: design, localAgents: 0, clusterId })
      t.after(() => cluster.close())
      // No secret given: the agent finds the one its driver made, by the cluster id.
      const agent = await Agent.start({ ...urls, transport: design, clusterId, id: 'worker', tasks: FIXTURE_TASKS, threads: 1 })
      t.after(() => agent.close({ timeoutMs: 2_000 }))
      await agent.waitUntilReady()
      assert.equal(await cluster.call('add', 1, 1), 2)
      const key = findBrokerSecret(clusterId)!
      const raw = await forger(t, design, clusterId)
      const forgedTasks = forgeries(clusterId, key, 'task', [header(MsgType.Tasks, 1), encode([1_000_000, 'add', [1000, 1]])])
      // The driver's goodbye, which would make the agent drop its driver.
      const forgedBye = forgeries(clusterId, key, 'to-agent', [header(MsgType.DriverBye)], 'worker')
      for (const frame of forgedTasks) await raw.task(frame)
      for (const frame of forgedBye) await raw.agent('worker', frame)
      const want = forgedTasks.length + forgedBye.length
      await waitFor(() => agent.stats.badFrames >= want, 10_000, `the agent to count the ${want} forged frames`)
      await waitFor(async () => (await raw.waiting('worker')) === 0, 10_000, 'the forged task frames to be acknowledged')
      assert.deepEqual(await Promise.all([cluster.call('add', 2, 3), cluster.call('add', 4, 5)]), [5, 9])
      assert.equal(agent.state, 'ready', 'the forged goodbye was not acted on')
      assert.equal(agent.stats.badFrames, want, 'each forged frame counted once')
      assert.equal(agent.stats.tasksDone, 3, 'only the real tasks ran')
      await agent.close()
      // A frame taken and not acknowledged would be given back at close: none is.
      assert.equal(await raw.waiting('worker'), 0, 'no forged task frame came back')
      assert.equal(cluster.stats().lateResultsDropped, 0)
      assert.equal(cluster.stats().badFrames, 0)
    },
  )
}

test(
  'redis: an agent holding another secret cannot join (its Hellos dropped and counted); one given the driver’s secret file does',
  { skip: skipReason('redis') },
  async (t) => {
    const dir = privateTmp(t)
    const ours = secretFile(dir, 'ours')
    const theirs = secretFile(dir, 'theirs')
    const clusterId = `auth-file-${randomBytes(4).toString('hex')}`
    const cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: 'redis', localAgents: 0, clusterId, brokerSecretFile: ours })
    t.after(() => cluster.close())
    assert.equal(cluster.localKeys, undefined, 'a configured secret is not published')
    const stranger = await Agent.start({ ...urls, transport: 'redis', clusterId, id: 'stranger', tasks: FIXTURE_TASKS, threads: 1, brokerSecretFile: theirs })
    t.after(() => stranger.close({ timeoutMs: 2_000 }))
    await waitFor(() => cluster.stats().badFrames >= 2, 15_000, 'the driver to drop two Hellos of the agent with the wrong secret')
    assert.equal(cluster.nodes().length, 0, 'it is no member')
    await stranger.close()
    const agent = await Agent.start({ ...urls, transport: 'redis', clusterId, id: 'friend', tasks: FIXTURE_TASKS, threads: 1, brokerSecretFile: ours })
    t.after(() => agent.close({ timeoutMs: 2_000 }))
    await agent.waitUntilReady()
    assert.equal(await cluster.call('add', 2, 2), 4)
    assert.equal(agent.stats.badFrames, 0)
  },
)

test(
  'redis: the secret a driver makes is a 0600 file of the user in a 0700 directory of the user, named by the cluster id, removed at close',
  { skip: skipReason('redis') },
  async () => {
    const clusterId = `auth-dir-${randomBytes(4).toString('hex')}`
    const cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: 'redis', localAgents: 0, clusterId })
    const dir = cluster.localKeys ?? ''
    try {
      assert.ok(dir.endsWith(`broker-${clusterId}`), `published under the cluster id: ${dir}`)
      const d = lstatSync(dir)
      const f = lstatSync(join(dir, 'secret'))
      assert.equal(d.mode & 0o777, 0o700)
      assert.equal(f.mode & 0o777, 0o600)
      assert.equal(d.uid, process.getuid!())
      assert.equal(f.uid, process.getuid!())
      assert.equal(findBrokerSecret(clusterId)!.toString('utf8'), readSecretFile(join(dir, 'secret')).toString('utf8'))
      assert.match(findBrokerSecret(clusterId)!.toString('utf8'), /^[0-9a-f]{64}$/)
    } finally {
      await cluster.close()
    }
    assert.equal(existsSync(dir), false, 'removed at close')
  },
)

test('secret files another user could read, write or have planted are refused, naming the file and why', (t) => {
  const dir = privateTmp(t)
  assert.throws(
    () => readSecretFile(secretFile(dir, 'open', undefined, 0o644)),
    (e: unknown) => e instanceof AuthError && e.code === 'ERR_AUTH' && /open to other users \(mode 644/.test(e.message),
  )
  assert.throws(
    () => readSecretFile(secretFile(dir, 'short', 'abc')),
    (e: unknown) => e instanceof AuthError && /at least 32 characters/.test(e.message),
  )
  const good = secretFile(dir, 'good')
  symlinkSync(good, join(dir, 'link'))
  assert.throws(
    () => readSecretFile(join(dir, 'link')),
    (e: unknown) => e instanceof AuthError && /link: it is a symbolic link/.test(e.message),
  )
  assert.throws(
    () => readSecretFile(join(dir, 'none')),
    (e: unknown) => e instanceof AuthError && /none: it is missing/.test(e.message),
  )
  assert.equal(readSecretFile(good).length, 64)
  if (process.getuid?.() === 0) {
    const planted = secretFile(dir, 'planted')
    chownSync(planted, 65534, 65534)
    assert.throws(
      () => readSecretFile(planted),
      (e: unknown) => e instanceof AuthError && /belongs to another user \(uid 65534\)/.test(e.message),
    )
  }
  // Where agents look: a directory that is a link (or another user's) is refused, not read.
  const runtime = join(dir, 'run')
  mkdirSync(join(runtime, 'actor-cluster'), { recursive: true, mode: 0o700 })
  const elsewhere = join(dir, 'elsewhere')
  mkdirSync(elsewhere, { mode: 0o700 })
  secretFile(elsewhere, 'secret')
  symlinkSync(elsewhere, join(runtime, 'actor-cluster', 'broker-linked'))
  assert.throws(
    () => findBrokerSecret('linked', { XDG_RUNTIME_DIR: runtime }),
    (e: unknown) => e instanceof AuthError && /broker-linked: it is a symbolic link/.test(e.message),
  )
  assert.equal(findBrokerSecret('absent', { XDG_RUNTIME_DIR: runtime }), undefined)
})

test('an agent of a brokered design with no secret to find fails at start, naming what to set; a private file is required', async (t) => {
  await assert.rejects(
    Agent.start({ ...urls, transport: 'redis', clusterId: `no-secret-${randomBytes(4).toString('hex')}`, tasks: FIXTURE_TASKS, threads: 1 }),
    (e: unknown) =>
      e instanceof AuthError &&
      e.code === 'ERR_AUTH' &&
      /no broker secret for cluster no-secret-.*brokerSecretFile \(--broker-secret-file, CLUSTER_BROKER_SECRET_FILE\)/.test(e.message),
  )
  const open = secretFile(privateTmp(t), 'open', undefined, 0o644)
  await assert.rejects(
    Agent.start({ ...urls, transport: 'redis', clusterId: 'any', tasks: FIXTURE_TASKS, threads: 1, brokerSecretFile: open }),
    (e: unknown) => e instanceof AuthError && /refusing the broker secret file .*open: it is open to other users/.test(e.message),
  )
  await assert.rejects(
    Cluster.start({ ...urls, transport: 'redis', localAgents: 0, brokerSecretFile: open }),
    (e: unknown) => e instanceof AuthError && /refusing the broker secret file/.test(e.message),
  )
})
