/**
 * A broker restart loses nothing. Each test starts brokers of its own (a
 * redis-server with its append-only file, a RabbitMQ node) on free loopback
 * ports — never the machine's — and restarts them in the middle of a job run
 * by two agent processes: the driver and the agents dial again, and every
 * task settles once, with its value. Only a broker gone longer than
 * `brokerReconnectMs` fails the pending tasks, with a TransportError.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { TestContext } from 'node:test'
import { Cluster, TransportError } from '../../lib/index.js'
import { usesAmqp, usesRedis, type TransportKind } from '../../lib/transport/options.js'
import { FAST, FIXTURE_TASKS, runCli, waitFor, within } from '../helpers.js'
import { ownBrokerSkip, ownRabbit, ownRedis, type OwnBroker } from '../brokers.js'

const DESIGNS: TransportKind[] = ['redis', 'amqp', 'amqp+redis']

function skipFor(design: TransportKind): string | false {
  return (usesRedis(design) && ownBrokerSkip('redis')) || (usesAmqp(design) && ownBrokerSkip('rabbitmq')) || false
}

interface Brokers {
  all: OwnBroker[]
  urls: { redisUrl?: string; amqpUrl?: string }
  /** For agent processes: the URLs carry passwords, so they go through the environment, not the command line. */
  env: Record<string, string>
}

async function brokersFor(t: TestContext, design: TransportKind): Promise<Brokers> {
  const [redis, rabbit] = await Promise.all([usesRedis(design) ? ownRedis(t) : undefined, usesAmqp(design) ? ownRabbit(t) : undefined])
  const urls = { ...(redis && { redisUrl: redis.url }), ...(rabbit && { amqpUrl: rabbit.url }) }
  const env: Record<string, string> = {}
  if (redis) env['CLUSTER_REDIS_URL'] = redis.url
  if (rabbit) env['CLUSTER_AMQP_URL'] = rabbit.url
  return { all: [redis, rabbit].filter((b) => b !== undefined), urls, env }
}

for (const design of DESIGNS) {
  test(
    `${design}: the brokers restart mid-job; driver and agents reconnect, every result arrives once, correct, no node lost`,
    { skip: skipFor(design) },
    async (t) => {
      const brokers = await brokersFor(t, design)
      const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, transport: design, ...brokers.urls, localAgents: 0, ...FAST, brokerReconnectMs: 30_000 })
      t.after(() => cluster.close())
      const errors: Error[] = []
      const lost: string[] = []
      cluster.on('transport:error', (e) => errors.push(e))
      cluster.on('node:lost', (_n, reason) => lost.push(reason))
      const args = ['agent', '--transport', design, '--cluster-id', cluster.id, '--tasks', FIXTURE_TASKS.href, '--threads', '2']
      const timing = ['--heartbeat-ms', String(FAST.heartbeatMs), '--driver-timeout-ms', String(FAST.nodeTimeoutMs)]
      const agents = [runCli(t, [...args, ...timing], brokers.env), runCli(t, [...args, ...timing], brokers.env)]
      await waitFor(() => cluster.nodes().length === 2, 20_000, 'two agents to join')
      const pids = new Set(agents.map((a) => a.child.pid))

      const n = 4000
      const times = new Array<number>(n).fill(0)
      let done = 0
      const all = Promise.all(
        Array.from({ length: n }, (_, i) =>
          cluster.call<[number, number]>('sleepThenWhoamiWith', 2, i).then((r) => {
            times[i]!++
            done++
            return r
          }),
        ),
      )
      // Awaited after the restart: a rejection meanwhile must not end the test while its brokers restart.
      all.catch(() => {})
      await waitFor(() => done >= n / 4, 30_000, 'a quarter of the job to be done')
      const before = done
      const stopped = performance.now()
      await Promise.all(brokers.all.map((b) => b.stop()))
      await Promise.all(brokers.all.map((b) => b.start()))
      const outageMs = performance.now() - stopped
      const results = await within(all, 45_000, `all ${n} results after the restart`)

      assert.ok(before < n, `the restart came before the job ended (${before} of ${n} done)`)
      assert.deepEqual(
        results.map(([i]) => i),
        Array.from({ length: n }, (_, i) => i),
      )
      for (const [, pid] of results) assert.ok(pids.has(pid), `a result from pid ${pid}, not one of the agents`)
      assert.deepEqual(
        times.filter((x) => x !== 1),
        [],
        'every promise settled exactly once',
      )
      assert.deepEqual(errors, [])
      assert.deepEqual(lost, [], 'no node declared lost during the outage')
      const s = cluster.stats()
      assert.equal(s.tasksSucceeded, n)
      assert.equal(s.tasksFailed, 0)
      assert.equal(s.tasksRetried, 0)
      assert.equal(s.nodesLost, 0)
      assert.equal(cluster.nodes().length, 2)
      const ran = cluster.nodes().reduce((sum, node) => sum + node.tasksDone, 0)
      t.diagnostic(`${design}: outage ${Math.round(outageMs)} ms; ${before} of ${n} done before; runs ${ran}; late results dropped ${s.lateResultsDropped}`)
      // The job goes on after the outage: the agents run new work.
      assert.deepEqual(await cluster.call('add', 2, 3), 5)
    },
  )

  test(
    `${design}: brokers gone longer than brokerReconnectMs fail the pending tasks with TransportError ERR_BROKER_LOST, in bounded time`,
    { skip: skipFor(design) },
    async (t) => {
      const brokers = await brokersFor(t, design)
      const limit = 1500
      const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, transport: design, ...brokers.urls, threads: 1, ...FAST, brokerReconnectMs: limit })
      t.after(() => cluster.close())
      assert.equal(await cluster.call('add', 1, 1), 2)
      const failed = new Promise<Error>((resolve) => cluster.once('transport:error', resolve))
      const pending = Array.from({ length: 20 }, () => cluster.call('sleep', 200))
      await waitFor(() => (cluster.nodes()[0]?.inFlight ?? 0) > 0, 10_000, 'the agent to take tasks')
      const stopped = performance.now()
      await Promise.all(brokers.all.map((b) => b.stop()))
      const outcomes = await within(Promise.allSettled(pending), limit + 15_000, 'the pending tasks to settle')
      const tookMs = performance.now() - stopped
      const err = await within(failed, 1000, 'transport:error')
      assert.ok(err instanceof TransportError, String(err))
      assert.equal(err.code, 'ERR_BROKER_LOST')
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:(${brokers.all.map((b) => b.port).join('|')}).*gone for more than ${limit} ms`))
      assert.ok(!/:[0-9a-f]{32}@/.test(err.message), `the password is masked: ${err.message}`)
      const rejected = outcomes.filter((o) => o.status === 'rejected')
      assert.ok(rejected.length > 0, 'tasks were pending when the brokers went')
      for (const o of rejected) assert.equal(o.reason, err)
      assert.ok(tookMs >= limit - 100 && tookMs < limit + 8000, `failed after ${Math.round(tookMs)} ms, with a limit of ${limit} ms`)
    },
  )
}
