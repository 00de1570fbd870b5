/**
 * What only the brokered designs do: agents joining through the brokers,
 * redelivery of a dead agent's tasks, namespaces, stale queues, bad URLs and
 * a broker that goes away mid-run.
 */
import { describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { connect as amqpConnect } from 'amqplib'
import { Cluster, ClusterClosedError, InvalidArgumentError, TransportError, resolveAgentOptions } from '../../lib/index.js'
import { header, encode } from '../../lib/protocol/codec.js'
import { MsgType } from '../../lib/protocol/messages.js'
import { packParts } from '../../lib/transport/frames.js'
import type { TransportKind } from '../../lib/transport/options.js'
import { FIXTURE_TASKS, freePort, runCli, waitFor, within } from '../helpers.js'
import { AMQP_URL, REDIS_URL, brokeredAgentArgs as agentArgs, proxyTo, skipReason, withPort } from '../brokers.js'

const BROKERED: TransportKind[] = ['redis', 'amqp', 'amqp+redis']
const urls = { redisUrl: REDIS_URL, amqpUrl: AMQP_URL }

/**
 * A cluster of one thread on `design` whose broker it reaches through a proxy the test can cut or freeze
 * (`query` added to the proxied URL), with `brokerReconnectMs` 1000; it has answered one call. Closed when the test ends.
 */
async function behindProxy(t: TestContext, design: 'redis' | 'amqp', url: string, port: number, query = '') {
  const proxy = await proxyTo(t, url, port)
  const via = withPort(url, proxy.port) + query
  const cluster = await Cluster.start({
    tasks: FIXTURE_TASKS,
    transport: design,
    threads: 1,
    brokerReconnectMs: 1000,
    ...(design === 'redis' ? { redisUrl: via } : { amqpUrl: via }),
  })
  t.after(() => cluster.close())
  assert.equal(await cluster.call('add', 1, 1), 2)
  return { proxy, cluster }
}

for (const design of BROKERED) {
  describe(`brokered design ${design}`, { skip: skipReason(design) }, () => {
    test('remote agents join through the brokers; a killed agent loses nothing; another cluster on the same brokers never mixes in', async (t) => {
      await using cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: design, localAgents: 0, heartbeatMs: 300, nodeTimeoutMs: 1200 })
      await using other = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: design, threads: 1 })
      assert.notEqual(cluster.id, other.id)
      const early = cluster.call('add', 40, 2)
      const a = runCli(t, agentArgs(design, cluster.id))
      const b = runCli(t, agentArgs(design, cluster.id))
      await waitFor(() => cluster.nodes().length === 2, 15_000, 'two agents')
      assert.equal(await early, 42)
      const lost = new Promise<string>((resolve) => cluster.once('node:lost', (_n, reason) => resolve(reason)))
      const n = 300
      // What each agent had done before this job (one of them answered `early`): both must work on this one.
      const before = new Map(cluster.nodes().map((x) => [x.id, x.tasksDone]))
      const results = Promise.all(Array.from({ length: n }, (_, i) => cluster.call<[number, number]>('sleepThenWhoamiWith', 5, i)))
      const theirs = Promise.all(Array.from({ length: 2000 }, (_, k) => other.call<number>('add', k, 1)))
      await waitFor(() => cluster.nodes().every((x) => x.tasksDone > (before.get(x.id) ?? 0)), 10_000, 'both agents at work on this job')
      a.child.kill('SIGKILL')
      const all = await results
      assert.deepEqual(
        all.map(([i]) => i),
        Array.from({ length: n }, (_, i) => i),
        'every task answered, once, correctly',
      )
      assert.ok(
        all.some(([, pid]) => pid === b.child.pid),
        'the survivor did work',
      )
      assert.ok(
        all.some(([, pid]) => pid === a.child.pid),
        'the killed agent did work first',
      )
      assert.match(await lost, /no heartbeat/)
      assert.deepEqual(
        await theirs,
        Array.from({ length: 2000 }, (_, k) => k + 1),
      )
      assert.equal(other.nodes().length, 1, 'the other cluster saw only its own agent')
      assert.ok(other.nodes()[0]!.local)
      assert.deepEqual(
        cluster.nodes().map((x) => x.pid),
        [b.child.pid],
      )
    })

    test("a second driver under a live driver's cluster id is refused, naming the id; the first works on; a closed driver frees the id at once", async (t) => {
      const clusterId = `twice-${design.replace('+', '-')}-${randomBytes(4).toString('hex')}`
      const first = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: design, threads: 1, clusterId })
      t.after(() => first.close())
      assert.equal(await first.call('add', 1, 1), 2)
      const began = Date.now()
      await assert.rejects(
        within(Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: design, threads: 1, clusterId }), 20_000, 'the second driver to be refused'),
        (e: unknown) => {
          assert.ok(e instanceof TransportError, String(e))
          assert.equal(e.code, 'ERR_ADDRESS_IN_USE')
          assert.ok(e.message.includes(`cluster id ${clusterId}`) && /another driver/.test(e.message), e.message)
          return true
        },
      )
      assert.ok(Date.now() - began < 15_000, `refused within seconds (${Date.now() - began} ms)`)
      // Its queues and inbox are intact: nothing purged, deleted or taken by the refused driver.
      const sums = await within(Promise.all(Array.from({ length: 200 }, (_, k) => first.call<number>('add', k, 1))), 15_000, 'the first driver to answer')
      assert.deepEqual(
        sums,
        Array.from({ length: 200 }, (_, k) => k + 1),
      )
      await first.close()
      const freed = Date.now()
      await using next = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: design, threads: 1, clusterId })
      assert.ok(Date.now() - freed < 3000, `a closed driver's id is free at once (${Date.now() - freed} ms)`)
      assert.equal(await within(next.call<number>('add', 2, 3), 15_000, 'the next driver to answer'), 5)
    })

    test('queues of a crashed run under the same id do not leak into a new one, and close removes them', async (t) => {
      const clusterId = `stale-${design.replace('+', '-')}-${process.pid}`
      // What a crashed run leaves: a task frame on the shared queue, and a message in the driver's inbox.
      const stale = packParts([header(MsgType.Tasks, 1), encode([7, 'add', [1000, 1]])])
      const junk = packParts([Buffer.from('ghost-agent'), header(MsgType.Results, 1), encode([7, 0, 1001])])
      const redis = new Redis(REDIS_URL)
      const amqp = await amqpConnect(AMQP_URL)
      const ch = await amqp.createChannel()
      const queueArgs = { durable: true, arguments: { 'x-expires': 60_000 } }
      try {
        if (design === 'redis') {
          await redis.lpush(`ac:{${clusterId}}:tasks`, stale)
          await redis.lpush(`ac:{${clusterId}}:processing:ghost-agent`, stale)
        } else {
          await ch.assertQueue(`ac.${clusterId}.tasks`, queueArgs)
          ch.sendToQueue(`ac.${clusterId}.tasks`, stale, { persistent: true })
        }
        if (design === 'amqp') {
          await ch.assertQueue(`ac.${clusterId}.driver`, queueArgs)
          ch.sendToQueue(`ac.${clusterId}.driver`, junk)
        } else {
          await redis.lpush(`ac:{${clusterId}}:driver`, junk)
        }
        const cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: design, threads: 1, clusterId })
        t.after(() => cluster.close())
        assert.equal(cluster.id, clusterId)
        const sums = await Promise.all(Array.from({ length: 100 }, (_, k) => cluster.call<number>('add', k, 1)))
        assert.deepEqual(
          sums,
          Array.from({ length: 100 }, (_, k) => k + 1),
        )
        await new Promise((r) => setTimeout(r, 200))
        const s = cluster.stats()
        assert.equal(s.lateResultsDropped, 0, 'no stale result reached the driver')
        assert.equal(s.badFrames, 0)
        assert.equal(cluster.nodes()[0]!.tasksDone, 100, 'the stale frame did not run')
        await cluster.close()
        assert.deepEqual(await redis.keys(`ac:{${clusterId}}:*`), [], 'no Redis keys left')
        if (design !== 'redis') {
          const probe = await amqp.createChannel()
          probe.on('error', () => {})
          await assert.rejects(probe.checkQueue(`ac.${clusterId}.tasks`), /NOT_FOUND/)
        }
      } finally {
        await redis.del(`ac:{${clusterId}}:tasks`, `ac:{${clusterId}}:driver`, `ac:{${clusterId}}:processing:ghost-agent`)
        redis.disconnect()
        await amqp.close()
      }
    })
  })
}

describe('bad broker URLs and lost brokers', () => {
  test('an unreachable broker fails at start, naming the URL with its password masked, and the cause', async () => {
    const port = await freePort()
    await assert.rejects(Cluster.start({ tasks: FIXTURE_TASKS, transport: 'redis', redisUrl: `redis://:s3cret@127.0.0.1:${port}` }), (e: unknown) => {
      assert.ok(e instanceof TransportError, String(e))
      assert.equal(e.code, 'ERR_BROKER_UNREACHABLE')
      assert.ok(e.message.includes(`redis://:***@127.0.0.1:${port}`), e.message)
      assert.doesNotMatch(e.message, /s3cret/)
      assert.match(e.message, /ECONNREFUSED/)
      return true
    })
    await assert.rejects(
      Cluster.start({ tasks: FIXTURE_TASKS, transport: 'amqp', amqpUrl: `amqp://guest:s3cret@127.0.0.1:${port}` }),
      (e: unknown) =>
        e instanceof TransportError &&
        e.code === 'ERR_BROKER_UNREACHABLE' &&
        e.message.includes(`amqp://guest:***@127.0.0.1:${port}`) &&
        !e.message.includes('s3cret') &&
        /ECONNREFUSED/.test(e.message),
    )
  })

  test('wrong RabbitMQ credentials fail at start with the reason', { skip: skipReason('amqp') }, async () => {
    const url = new URL(AMQP_URL)
    url.password = 'not-the-password'
    await assert.rejects(
      Cluster.start({ tasks: FIXTURE_TASKS, transport: 'amqp', amqpUrl: url.href }),
      (e: unknown) =>
        e instanceof TransportError && e.code === 'ERR_BROKER_UNREACHABLE' && /ACCESS_REFUSED|auth/i.test(e.message) && !e.message.includes('not-the-password'),
    )
  })

  test('a RabbitMQ virtual host the broker refuses fails at start naming the virtual host and the user', { skip: skipReason('amqp') }, async () => {
    const url = new URL(AMQP_URL)
    url.pathname = `/no-such-vhost-${randomBytes(4).toString('hex')}`
    await assert.rejects(Cluster.start({ tasks: FIXTURE_TASKS, transport: 'amqp', amqpUrl: url.href, threads: 1 }), (e: unknown) => {
      assert.ok(e instanceof TransportError, String(e))
      assert.equal(e.code, 'ERR_BROKER_UNREACHABLE')
      assert.ok(e.message.includes(`virtual host "${url.pathname.slice(1)}"`) && e.message.includes(`user "${url.username || 'guest'}"`), e.message)
      return true
    })
  })

  test('malformed URLs and a missing cluster id are clear option errors', async () => {
    await assert.rejects(
      Cluster.start({ tasks: FIXTURE_TASKS, transport: 'redis', redisUrl: 'http://x:1' }),
      (e: unknown) => e instanceof InvalidArgumentError && /options\.redisUrl must be a redis: or rediss: URL/.test(e.message),
    )
    await assert.rejects(
      Cluster.start({ tasks: FIXTURE_TASKS, transport: 'amqp', amqpUrl: 'amqp://u:pw@' }),
      (e: unknown) => e instanceof InvalidArgumentError && /options\.amqpUrl/.test(e.message) && !e.message.includes('pw'),
    )
    await assert.rejects(
      Cluster.start({ tasks: FIXTURE_TASKS, transport: 'kafka' as never }),
      /options\.transport must be one of 'zmq', 'redis', 'amqp', 'amqp\+redis', got "kafka"/,
    )
    await assert.rejects(Cluster.start({ tasks: FIXTURE_TASKS, transport: 'redis', clusterId: 'a b' }), /options\.clusterId must be/)
    // ioredis would SELECT NaN on connect, and that reply error crashed the process.
    await assert.rejects(
      Cluster.start({ tasks: FIXTURE_TASKS, transport: 'redis', redisUrl: 'redis://:pw@127.0.0.1:6379/abc' }),
      (e: unknown) =>
        e instanceof InvalidArgumentError &&
        /options\.redisUrl's path must be a database number/.test(e.message) &&
        e.message.includes('"/abc"') &&
        !e.message.includes('pw'),
    )
    assert.throws(() => resolveAgentOptions({ tasks: 't.js', transport: 'redis' }), /options\.clusterId is required with transport 'redis'/)
    assert.equal(resolveAgentOptions({ tasks: 't.js', transport: 'amqp', clusterId: 'x' }).connect, '')
  })

  test('a Redis database the server does not have fails at start, naming it, instead of using database 0', { skip: skipReason('redis') }, async () => {
    const url = `${REDIS_URL.replace(/\/\d*$/, '')}/9999`
    await assert.rejects(Cluster.start({ tasks: FIXTURE_TASKS, transport: 'redis', redisUrl: url, threads: 1 }), (e: unknown) => {
      assert.ok(e instanceof TransportError, String(e))
      assert.equal(e.code, 'ERR_BROKER_UNREACHABLE')
      assert.ok(e.message.includes('/9999') && /database 9999/.test(e.message) && /out of range/.test(e.message), e.message)
      return true
    })
  })

  test('an agent whose broker is unreachable exits with the reason', async (t) => {
    const port = await freePort()
    // Insecure: an agent with no secret to find fails before it dials (below).
    const p = runCli(t, [
      'agent',
      '--transport',
      'redis',
      '--redis',
      `redis://:pw@127.0.0.1:${port}`,
      '--cluster-id',
      'x',
      '--insecure',
      '--tasks',
      FIXTURE_TASKS.href,
    ])
    assert.equal(await p.exited, 1, `signal ${String(p.child.signalCode)}; output: ${p.output()}`)
    assert.match(p.output(), new RegExp(`cannot connect to Redis at redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port}: .*ECONNREFUSED.*\\[ERR_BROKER_UNREACHABLE\\]`))
    const r = runCli(t, ['agent', '--transport', 'redis', '--redis', `redis://127.0.0.1:${port}`, '--cluster-id', 'no-secret-x', '--tasks', FIXTURE_TASKS.href])
    assert.equal(await r.exited, 1, `signal ${String(r.child.signalCode)}; output: ${r.output()}`)
    assert.match(r.output(), /no broker secret for cluster no-secret-x: set brokerSecretFile \(--broker-secret-file, CLUSTER_BROKER_SECRET_FILE\)/)
    const q = runCli(t, ['agent', '--tasks', FIXTURE_TASKS.href])
    assert.equal(await q.exited, 1, `signal ${String(q.child.signalCode)}; output: ${q.output()}`)
    assert.match(q.output(), /--connect is required with --transport zmq/)
  })

  for (const [design, url, port] of [
    ['redis', REDIS_URL, 6379],
    ['amqp', AMQP_URL, 5672],
  ] as const) {
    test(
      `a ${design} broker that goes away for longer than brokerReconnectMs fails the pending tasks with a clear error, never a hang`,
      { skip: skipReason(design) },
      async (t) => {
        const { proxy, cluster } = await behindProxy(t, design, url, port)
        const failed = new Promise<Error>((resolve) => cluster.once('transport:error', resolve))
        const pending = Array.from({ length: 20 }, () => cluster.call('sleep', 200))
        // The agent has taken tasks from the queue (some may finish before the cut).
        await waitFor(() => (cluster.nodes()[0]?.inFlight ?? 0) > 0, 10_000, 'the agent to take tasks')
        await proxy.cut()
        const outcomes = await Promise.allSettled(pending)
        const err = await failed
        assert.ok(err instanceof TransportError && err.code === 'ERR_BROKER_LOST', String(err))
        assert.ok(err.message.includes(`127.0.0.1:${proxy.port}`) && err.message.includes('gone for more than 1000 ms'), err.message)
        // Tasks that finished before the cut may have settled; every other one failed with that error.
        const rejected = outcomes.filter((o) => o.status === 'rejected')
        assert.ok(rejected.length > 0)
        for (const o of rejected) assert.equal(o.reason, err)
        await cluster.close()
        await assert.rejects(cluster.call('add', 1, 1), ClusterClosedError)
      },
    )
  }
})

test('connections per process stay constant: an agent of 4 threads holds 3 Redis connections, not one per thread', { skip: skipReason('redis') }, async () => {
  await using cluster = await Cluster.start({ ...urls, tasks: FIXTURE_TASKS, transport: 'redis', threads: 4 })
  await Promise.all(Array.from({ length: 2000 }, (_, k) => cluster.call('add', k, 1)))
  const agent = cluster.nodes()[0]!.id.replace(/[^A-Za-z0-9_.:-]/g, '_')
  const redis = new Redis(REDIS_URL)
  try {
    const names = ((await redis.client('LIST')) as string).split('\n').map((l) => /name=(\S*)/.exec(l)?.[1] ?? '')
    const mine = names.filter((n) => n.startsWith(`actor-cluster:agent_${agent}:`)).sort()
    assert.deepEqual(
      mine,
      ['cmd', 'inbox', 'tasks'].map((c) => `actor-cluster:agent_${agent}:${c}`),
    )
  } finally {
    redis.disconnect()
  }
})

test('a broker that accepts connections and never answers fails at start within seconds', async (t) => {
  const silent = createServer((s) => t.after(() => s.destroy()))
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  t.after(() => silent.close())
  const port = (silent.address() as { port: number }).port
  const started = Date.now()
  const outcomes = await Promise.allSettled([
    Cluster.start({ tasks: FIXTURE_TASKS, transport: 'redis', redisUrl: `redis://127.0.0.1:${port}` }),
    Cluster.start({ tasks: FIXTURE_TASKS, transport: 'amqp', amqpUrl: `amqp://guest:guest@127.0.0.1:${port}` }),
  ])
  for (const o of outcomes) {
    assert.equal(o.status, 'rejected')
    const e = o.reason as TransportError
    assert.equal(e.code, 'ERR_BROKER_UNREACHABLE', e.message)
    assert.ok(e.message.includes(`127.0.0.1:${port}`) && /no answer within|ETIMEDOUT/.test(e.message), e.message)
  }
  assert.ok(Date.now() - started < 15_000)
})

test(
  'a broker that hangs mid-run, and past brokerReconnectMs, is taken for lost: pending tasks fail, nothing waits forever',
  { skip: skipReason('amqp+redis') },
  async (t) => {
    await Promise.all(
      (
        [
          ['redis', REDIS_URL, 6379],
          ['amqp', AMQP_URL, 5672],
        ] as const
      ).map(async ([design, url, port]) => {
        // AMQP heartbeats of 1 s (instead of 5) let the client give up on the hung broker sooner.
        const { proxy, cluster } = await behindProxy(t, design, url, port, design === 'amqp' ? '?heartbeat=1' : '')
        const pending = cluster.call('sleep', 100)
        proxy.freeze()
        await assert.rejects(
          pending,
          (e: unknown) => e instanceof TransportError && e.code === 'ERR_BROKER_LOST' && e.message.includes(`127.0.0.1:${proxy.port}`),
        )
      }),
    )
  },
)

test('importing the package loads neither ioredis nor amqplib; choosing a design loads only its client', async () => {
  const script = `
    import { createRequire } from 'node:module'
    const req = createRequire(import.meta.url)
    const has = (n) => Object.keys(req.cache).some((k) => k.includes('/node_modules/' + n + '/'))
    const m = await import(${JSON.stringify(new URL('../../lib/index.js', import.meta.url).href)})
    const before = [has('ioredis'), has('amqplib')]
    let after = null
    if (process.argv[1] === 'redis') {
      const c = await m.Cluster.start({ tasks: ${JSON.stringify(FIXTURE_TASKS.href)}, transport: 'redis', redisUrl: ${JSON.stringify(REDIS_URL)}, threads: 1 })
      after = [has('ioredis'), has('amqplib')]
      await c.close()
    }
    console.log(JSON.stringify({ before, after }))`
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, skipReason('redis') ? 'none' : 'redis'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let s = ''
    child.stdout.on('data', (d: Buffer) => (s += d.toString()))
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve(s) : reject(new Error(`exit ${code}: ${s}`))))
  })
  const r = JSON.parse(out) as { before: boolean[]; after: boolean[] | null }
  assert.deepEqual(r.before, [false, false])
  if (r.after) assert.deepEqual(r.after, [true, false])
})
