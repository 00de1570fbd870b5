/**
 * The contract: the whole public API behaves the same on every design. One
 * suite, run over zmq, redis, amqp and amqp+redis.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  Cluster,
  RemoteTaskError,
  UnknownTaskError,
  UnknownActorError,
  UnknownMethodError,
  SerializationError,
  ClusterClosedError,
  ActorStoppedError,
  InvalidArgumentError,
} from '../../lib/index.js'
import type { TransportKind } from '../../lib/transport/options.js'
import type * as Tasks from '../fixtures/tasks.js'
import { FIXTURE_TASKS, mapAhead, waitFor } from '../helpers.js'
import { AMQP_URL, REDIS_URL, skipReason } from '../brokers.js'

const DESIGNS: TransportKind[] = ['zmq', 'redis', 'amqp', 'amqp+redis']
const start = (transport: TransportKind, threads = 2) => Cluster.start({ tasks: FIXTURE_TASKS, threads, transport, redisUrl: REDIS_URL, amqpUrl: AMQP_URL })

for (const design of DESIGNS) {
  describe(`contract over ${design}`, { skip: skipReason(design) }, () => {
    let cluster: Cluster

    before(async () => {
      cluster = await start(design)
    })
    after(async () => {
      await cluster?.close()
    })

    test('one local agent serves the cluster', () => {
      const nodes = cluster.nodes()
      assert.equal(nodes.length, 1)
      assert.equal(nodes[0]!.threads, 2)
      assert.equal(nodes[0]!.local, true)
      assert.match(cluster.id, /^[0-9a-f]{16}$/)
    })

    test('call and the typed proxy return results, values arrive as sent', async () => {
      assert.equal(await cluster.call('add', 1, 2), 3)
      const t = cluster.tasks<typeof Tasks>()
      assert.equal(await t.add(20, 22), 42)
      assert.equal(await t.addLater(1, 1, 1), 2)
      const value = { a: [1, 'x', null], f: new Float64Array([0.5, -1]), m: new Map([['k', 1]]), d: new Date(5) }
      assert.deepEqual(await t.echo(value), value)
    })

    test('many calls settle, each once, with the right value', async () => {
      const n = 20_000
      const rs = await Promise.all(Array.from({ length: n }, (_, k) => cluster.call<number>('add', 1, k)))
      assert.ok(rs.every((r, k) => r === k + 1))
      const s = cluster.stats()
      assert.equal(s.lateResultsDropped, 0)
      assert.equal(s.badFrames, 0)
      assert.equal(s.inFlight, 0)
    })

    test('errors: remote throw with its stack, unknown task, unserialisable values; nothing else lost', async () => {
      const good = cluster.call('add', 2, 3)
      await assert.rejects(cluster.call('fail', 'it broke'), (err: unknown) => {
        assert.ok(err instanceof RemoteTaskError)
        assert.equal(err.message, 'it broke')
        assert.equal(err.remoteName, 'RangeError')
        assert.match(err.stack ?? '', /at fail \(.*fixtures\/tasks\.js/)
        return true
      })
      await assert.rejects(cluster.call('nope'), (e: unknown) => e instanceof UnknownTaskError && /"nope".*"add"/.test(e.message))
      await assert.rejects(
        cluster.call('echo', () => 1),
        SerializationError,
      )
      await assert.rejects(cluster.call('returnsFunction'), (e: unknown) => e instanceof SerializationError && /returned a value/.test(e.message))
      assert.equal(await good, 5)
    })

    test('map: in order, as completed, and checked', async () => {
      const ordered: number[] = []
      for await (const r of cluster.map<number>('add', [
        [1, 1],
        [2, 2],
        [3, 3],
      ]))
        ordered.push(r)
      assert.deepEqual(ordered, [2, 4, 6])
      const inputs = Array.from({ length: 3000 }, (_, k) => [k, 0])
      const any: number[] = []
      for await (const r of cluster.map<number>('add', inputs, { ordered: false })) any.push(r)
      assert.deepEqual(
        any.sort((a, b) => a - b),
        inputs.map((x) => x[0]),
      )
      await assert.rejects(
        async () => {
          for await (const _ of cluster.map('fail', [['bad one']])) void _
        },
        (e: unknown) => e instanceof RemoteTaskError && e.message === 'bad one',
      )
      await assert.rejects(cluster.map('add', [], { concurrency: 0 }).next(), InvalidArgumentError)
    })

    test('map has backpressure: never more than concurrency ahead of the consumer', async () => {
      const { maxAhead } = await mapAhead(cluster, 32, 1000)
      assert.ok(maxAhead <= 33, `pulled ${maxAhead} ahead`)
    })

    test('actors keep state and take their messages one at a time, in order', async () => {
      const counter = await cluster.spawn<Tasks.Counter>('Counter', 10)
      assert.equal(await counter.inc(5), 15)
      const results = await Promise.all(Array.from({ length: 10 }, () => counter.slowInc(1, 1)))
      assert.deepEqual(
        results,
        Array.from({ length: 10 }, (_, i) => 16 + i),
      )
      await assert.rejects(counter.boom(), (e: unknown) => e instanceof RemoteTaskError && e.remoteName === 'TypeError')
      await assert.rejects((counter as unknown as { missing(): Promise<void> }).missing(), UnknownMethodError)
      assert.equal(await counter.inc(0), 25)
      await counter.stop()
      await assert.rejects(counter.inc(1), ActorStoppedError)
      await assert.rejects(cluster.spawn('Nope'), UnknownActorError)
    })

    test('close rejects what is pending, is idempotent, and later calls fail', async (t) => {
      const c = await start(design, 1)
      t.after(() => c.close())
      const running = c.call('sleep', 300)
      const queued = Promise.allSettled(Array.from({ length: 10 }, () => c.call('sleep', 300)))
      await waitFor(() => (c.nodes()[0]?.inFlight ?? 0) > 0, 10_000, 'the first task to reach the agent')
      const rejected = assert.rejects(running, ClusterClosedError)
      await Promise.all([c.close(), c.close()])
      await rejected
      for (const q of await queued) assert.ok(q.status === 'rejected' && q.reason instanceof ClusterClosedError)
      await assert.rejects(c.call('add', 1, 2), ClusterClosedError)
      assert.deepEqual(c.nodes(), [])
    })
  })
}
