/**
 * `reduce` on a real cluster, over every design: exact aggregates, input
 * order for a non-commutative combiner, one partial per task frame, the
 * errors, and early stops.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster, CombinerError, InvalidArgumentError, RemoteTaskError, TaskCancelledError, UnknownTaskError } from '../../lib/index.js'
import type { TransportKind } from '../../lib/transport/options.js'
import * as R from '../fixtures/reduce-tasks.js'
import { waitFor, within } from '../helpers.js'
import { AMQP_URL, REDIS_URL, skipReason } from '../brokers.js'

const REDUCE_TASKS = new URL('../fixtures/reduce-tasks.js', import.meta.url)
const DESIGNS: TransportKind[] = ['zmq', 'redis', 'amqp', 'amqp+redis']
const range = (n: number) => Array.from({ length: n }, (_, i) => i)

for (const design of DESIGNS) {
  describe(`reduce over ${design}`, { skip: skipReason(design) }, () => {
    let cluster: Cluster

    before(async () => {
      cluster = await Cluster.start({ tasks: REDUCE_TASKS, threads: 2, transport: design, redisUrl: REDIS_URL, amqpUrl: AMQP_URL })
    })
    after(async () => {
      await cluster?.close()
    })

    test('sums equal the driver-side sums exactly; one task frame and one partial per chunk, no more result frames than task frames', async () => {
      const xs = range(20_000)
      const before = cluster.stats()
      assert.equal(
        await cluster.reduce('square', xs, 'sum', 0, { chunk: 300 }),
        xs.reduce((a, x) => a + x * x, 0),
      )
      const after = cluster.stats()
      const chunks = Math.ceil(xs.length / 300)
      assert.equal(after.tasksSubmitted - before.tasksSubmitted, chunks)
      assert.equal(after.tasksSucceeded - before.tasksSucceeded, chunks)
      assert.equal(after.taskFrames - before.taskFrames, chunks)
      const resultFrames = after.resultFrames - before.resultFrames
      assert.ok(resultFrames >= 1 && resultFrames <= chunks, `${resultFrames} result frames for ${chunks} task frames`)
      // Monte Carlo: integers, so the aggregate is exact whatever the chunking; with the seed per input, it is the local one.
      const seeds = range(2_000).map((i) => [i + 1, 500])
      const local = seeds.reduce((a, [seed, n]) => a + R.darts(seed!, n!), 0)
      assert.equal(await cluster.reduce('darts', seeds, 'sum', 0), local)
      assert.equal(await cluster.reduce('darts', seeds, 'sum', 0, { ordered: false, chunk: 17 }), local)
      assert.equal(await cluster.reduce('squareLater', range(500), 'sum', 7, { chunk: 33 }), 7 + range(500).reduce((a, x) => a + x * x, 0))
      assert.equal(await cluster.reduce('square', [], 'sum', 42), 42)
      assert.equal(cluster.stats().lateResultsDropped, before.lateResultsDropped)
    })

    test('a non-commutative associative combiner, in order, equals the fold on the driver in input order', async () => {
      const xs = range(3_001)
      const expected = xs.reduce((a, i) => R.concat(a, R.label(i)), 'start:')
      for (const chunk of [7, 256, undefined]) {
        assert.equal(await cluster.reduce('label', xs, 'concat', 'start:', { chunk }), expected, `chunk ${chunk}`)
      }
      const few = xs.slice(0, 300)
      assert.equal(await cluster.reduce('label', few, 'concat', '', { chunk: 1 }), few.map((i) => R.label(i)).join(''))
      const identity = [1, 0, 0, 1]
      const product = xs.reduce((a, i) => R.matmul(a, R.matrix(i)), identity)
      assert.deepEqual(await cluster.reduce('matrix', xs, 'matmul', identity, { chunk: 13 }), product)
      // Chunks that finish out of order: the early ones are the slow ones.
      const slow = range(40).map((i) => [i, i < 8 ? 20 : 0])
      assert.equal(
        await cluster.reduce('slowly', slow, 'sum', 0, { chunk: 4 }),
        range(40).reduce((a, x) => a + x, 0),
      )
      const labels = await cluster.reduce(
        'label',
        slow.map(([i]) => i),
        'concat',
        '',
        { chunk: 4 },
      )
      assert.equal(
        labels,
        range(40)
          .map((i) => `${i};`)
          .join(''),
      )
    })

    test('unknown task or combiner, bad options: rejected before anything runs', async () => {
      const before = cluster.stats().tasksSubmitted
      await assert.rejects(cluster.reduce('square', [1, 2], 'nosuch', 0), (e: unknown) => {
        assert.ok(e instanceof UnknownTaskError)
        assert.equal(e.code, 'ERR_UNKNOWN_TASK')
        assert.match(e.message, /^unknown combiner "nosuch"; the tasks module exports the functions .*"sum"/)
        return true
      })
      await assert.rejects(
        cluster.reduce('nosuch', [1, 2], 'sum', 0),
        (e: unknown) => e instanceof UnknownTaskError && /^unknown task "nosuch"/.test(e.message),
      )
      await assert.rejects(
        cluster.reduce('square', [1], 'sum', 0, { chunk: 0 }),
        (e: unknown) => e instanceof InvalidArgumentError && /options\.chunk must be a positive integer, got 0/.test(e.message),
      )
      await assert.rejects(
        cluster.reduce('square', [1], 'sum', 0, { until: 5 as unknown as () => boolean }),
        (e: unknown) => e instanceof InvalidArgumentError && /options\.until must be a function/.test(e.message),
      )
      await assert.rejects(
        cluster.reduce('square', 5 as unknown as number[], 'sum', 0),
        (e: unknown) => e instanceof InvalidArgumentError && /reduce inputs must be an iterable/.test(e.message),
      )
      assert.equal(cluster.stats().tasksSubmitted, before)
    })

    test('a task that throws rejects the reduce with its error (retries re-run its chunk); a throwing combiner is a CombinerError naming it', async () => {
      await assert.rejects(
        cluster.reduce(
          'failAt',
          range(1000).map((i) => [i, 700]),
          'sum',
          0,
          { chunk: 100 },
        ),
        (e: unknown) => {
          assert.ok(e instanceof RemoteTaskError)
          assert.equal(e.message, 'input 700 is bad')
          assert.equal(e.remoteName, 'RangeError')
          return true
        },
      )
      const retried = cluster.stats().tasksRetried
      await assert.rejects(
        cluster.reduce(
          'failAt',
          range(10).map((i) => [i, 3]),
          'sum',
          0,
          { chunk: 10, retries: 1 },
        ),
        RemoteTaskError,
      )
      assert.equal(cluster.stats().tasksRetried - retried, 1)
      // The same through a view's options.
      await assert.rejects(
        cluster.with({ retries: 2 }).reduce(
          'failAt',
          range(10).map((i) => [i, 3]),
          'sum',
          0,
          { chunk: 10 },
        ),
        RemoteTaskError,
      )
      assert.equal(cluster.stats().tasksRetried - retried, 3)
      assert.equal(
        await cluster.with({ timeoutMs: 10_000 }).reduce('square', range(100), 'sum', 0, { chunk: 30 }),
        range(100).reduce((a, x) => a + x * x, 0),
      )
      // On the agent: the chunk's own fold goes over 100.
      await assert.rejects(cluster.reduce('square', range(50), 'explodingCombiner', 0, { chunk: 50 }), (e: unknown) => {
        assert.ok(e instanceof CombinerError)
        assert.equal(e.code, 'ERR_COMBINER')
        assert.equal(e.message, 'combiner "explodingCombiner" threw while folding results of task "square": the sum went over 100')
        assert.match(e.stack ?? '', /at explodingCombiner \(.*fixtures\/reduce-tasks\.js/)
        return true
      })
      // On the driver: chunks of one input are never folded on an agent.
      await assert.rejects(cluster.reduce('square', range(50), 'explodingCombiner', 0, { chunk: 1 }), (e: unknown) => {
        assert.ok(e instanceof CombinerError)
        assert.match(e.message, /^combiner "explodingCombiner" threw on the driver while folding partial aggregates of task "square": the sum went over 100$/)
        assert.ok(e.cause instanceof TypeError)
        return true
      })
      // A combiner that returns a promise, on the agent and on the driver: never folded on as a value.
      const promised = (where: RegExp) => (e: unknown) =>
        e instanceof CombinerError && where.test(e.message) && /a combiner must return its value synchronously/.test(e.message)
      await assert.rejects(
        cluster.reduce('square', range(50), 'sumLater', 0, { chunk: 50 }),
        promised(/^combiner "sumLater" of task "square" returned a promise;/),
      )
      await assert.rejects(cluster.reduce('square', range(50), 'sumLater', 0, { chunk: 1 }), promised(/returned a promise on the driver/))
    })

    test('early stop by predicate: resolves with the aggregate of a prefix of whole chunks; the rest is withdrawn', async () => {
      // A cluster of its own: the shared one's nodes, having run fast tasks, ask for so much work that every chunk could be on them already.
      await using fresh = await Cluster.start({ tasks: REDUCE_TASKS, threads: 2, transport: design, redisUrl: REDIS_URL, amqpUrl: AMQP_URL })
      // 400 inputs of 20 ms each: seconds of work, far more than the prefix takes even on a loaded machine.
      const inputs = range(400).map((i) => [i, 20])
      const acc = await within(fresh.reduce('slowly', inputs, 'sum', 0, { chunk: 5, until: (a) => a >= 100 }), 30_000, 'the reduce to stop')
      // The first prefix of whole chunks whose sum reaches 100: 0..14 (105).
      assert.equal(acc, 105)
      assert.ok(fresh.stats().tasksCancelled > 0)
      await waitFor(() => fresh.stats().inFlight === 0 && fresh.stats().queued === 0, 30_000, 'the withdrawn chunks to leave the nodes')
    })

    test('map with reduce is reduce: the same aggregate, in order for a non-commutative combiner, one partial per chunk, early stop; typed', async () => {
      const xs = range(1_001)
      const before = cluster.stats()
      const sum: number = await cluster.map('square', xs, { reduce: { combiner: 'sum', initial: 0, chunk: 100 } })
      assert.equal(
        sum,
        xs.reduce((a, x) => a + x * x, 0),
      )
      assert.equal(cluster.stats().taskFrames - before.taskFrames, 11, 'one task frame per chunk')
      const expected = xs.reduce((a, i) => R.concat(a, R.label(i)), 'start:')
      assert.equal(await cluster.map('label', xs, { reduce: { combiner: 'concat', initial: 'start:', chunk: 7 } }), expected)
      // Through a view, with its options; `until` stops it as reduce's does.
      const inputs = range(400).map((i) => [i, 2])
      const acc = await within(
        cluster.with({ retries: 1 }).map('slowly', inputs, { reduce: { combiner: 'sum', initial: 0, chunk: 5, until: (a: number) => a >= 100 } }),
        30_000,
        'the reduce to stop',
      )
      assert.equal(acc, 105)
      await waitFor(() => cluster.stats().inFlight === 0 && cluster.stats().queued === 0, 30_000, 'the withdrawn chunks to leave the nodes')
      // Errors are reduce's.
      await assert.rejects(
        cluster.map('square', [1], { reduce: { combiner: 'nope', initial: 0 } }),
        (e: unknown) => e instanceof UnknownTaskError && /nope/.test(e.message),
      )
      await assert.rejects(
        cluster.map('square', [1], { reduce: 5 as unknown as { combiner: string; initial: number } }),
        (e: unknown) => e instanceof InvalidArgumentError && /options\.reduce must be an object/.test(e.message),
      )
      // Without reduce it still yields results.
      const yielded: number[] = []
      for await (const r of cluster.map<number>('square', [1, 2, 3])) yielded.push(r)
      assert.deepEqual(yielded, [1, 4, 9])
      if (false as boolean) {
        // @ts-expect-error -- with reduce, map is a promise of the aggregate, not an iterable of results
        for await (const r of cluster.map('square', xs, { reduce: { combiner: 'sum', initial: 0 } })) void r // eslint-disable-line @typescript-eslint/await-thenable
        // @ts-expect-error -- the aggregate has the type of initial
        const s: string = await cluster.map('square', xs, { reduce: { combiner: 'sum', initial: 0 } })
        void s
      }
    })

    test('early stop by signal: rejects with TaskCancelledError and withdraws the rest', async () => {
      const before = cluster.stats()
      const ac = new AbortController()
      const p = cluster.reduce(
        'slowly',
        range(400).map((i) => [i, 2]),
        'sum',
        0,
        { chunk: 5, signal: ac.signal },
      )
      await waitFor(() => cluster.stats().tasksSucceeded > before.tasksSucceeded, 30_000, 'a first chunk')
      ac.abort(new Error('enough'))
      await assert.rejects(p, (e: unknown) => {
        assert.ok(e instanceof TaskCancelledError)
        assert.match(e.message, /^reduce of "slowly" with "sum" was cancelled after \d+ of 400 inputs were folded$/)
        assert.equal((e.cause as Error).message, 'enough')
        return true
      })
      assert.ok(cluster.stats().tasksCancelled - before.tasksCancelled > 0)
      await waitFor(() => cluster.stats().inFlight === 0 && cluster.stats().queued === 0, 30_000, 'the withdrawn chunks to leave the nodes')
    })
  })
}

test('a driver without the tasks module cannot fold partials: it says what to set', async () => {
  // The agents know the combiner; the driver has no copy to fold with.
  await using cluster = await Cluster.start({ localAgents: 0 })
  await assert.rejects(cluster.reduce('square', [1], 'sum', 0), (e: unknown) => e instanceof InvalidArgumentError && /options\.tasks/.test(e.message))
})
