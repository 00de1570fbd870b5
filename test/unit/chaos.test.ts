/**
 * `cluster bench chaos` counts deliveries by the id each result carries: a
 * task delivered twice is an id seen twice, whatever the promises say.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { tallyResults } from '../../bench/chaos.js'
import { runMap, type MapSubmitter } from '../../lib/driver/map.js'
import { resolveMapOptions } from '../../lib/driver/task-options.js'

type Result = [number, number, number]

async function* results(ids: number[]): AsyncGenerator<Result> {
  for (const id of ids) yield [id, 1000 + id, 10 * id]
}

test('ids seen twice are counted as duplicated, ids never seen as lost, ids out of range as unexpected', async () => {
  const t = await tallyResults(results([0, 1, 1, 3, 3, 3, 7, -1]), 5)
  assert.deepEqual([...t.seen], [1, 2, 0, 3, 0])
  assert.equal(t.lost, 2)
  assert.equal(t.duplicated, 2)
  assert.equal(t.unexpected, 2)
  assert.deepEqual([...t.ranOn], [1000, 1001, 0, 1003, 0])
  assert.deepEqual([...t.startedAt], [0, 10, 0, 30, 0])
})

test('every id once: nothing lost, nothing duplicated', async () => {
  const t = await tallyResults(results([2, 0, 1]), 3)
  assert.deepEqual([t.lost, t.duplicated, t.unexpected], [0, 0, 0])
})

test('a map that yields one task’s result twice (as the chaos run consumes it) shows as one duplicated id, and the task it displaced as lost', async () => {
  const driver: MapSubmitter = {
    enqueue(_name, args, _options, sink, seq) {
      const resolve = (v: unknown) => sink.settled(seq, true, v)
      const [i] = args as [number]
      // Task 2's result arrives a second time, in the place of task 4's (the map ends after as many results as inputs).
      if (i === 4) return
      resolve([i, 1, 0] satisfies Result)
      if (i === 2) setImmediate(() => resolve([i, 1, 0] satisfies Result))
    },
    withdrawAll() {},
    checkTask() {},
    resolveMapOptions: (o) => resolveMapOptions(o, 3),
    startProgress() {
      throw new Error('no progress in this test')
    },
  }
  const inputs = Array.from({ length: 5 }, (_, i) => [i, 0])
  const t = await tallyResults(runMap<Result>(driver, 'chaos', inputs, { ordered: false }), 5)
  assert.equal(t.duplicated, 1)
  assert.equal(t.seen[2], 2)
  assert.equal(t.lost, 1)
  assert.equal(t.seen[4], 0)
})
