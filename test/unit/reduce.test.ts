import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ProtocolError, TaskCancelledError } from '../../lib/errors.js'
import { ResultsWriter, readResultsBody } from '../../lib/protocol/bodies.js'
import { Status } from '../../lib/protocol/messages.js'
import { isReduceTaskName, parseReduceTaskName, readReduceChunk, reduceChunkArgs, reduceTaskName } from '../../lib/protocol/reduce.js'
import { runReduceChunk } from '../../lib/agent/reduce-chunk.js'
import { chunkSize, MAX_CHUNK, runReduce, type ReduceSubmitter } from '../../lib/driver/reduce.js'
import { resolveMapOptions } from '../../lib/driver/task-options.js'
import { setImmediate as tick } from 'node:timers/promises'

test('chunk size: as given (at most concurrency); auto up to 1024, a quarter of concurrency, four chunks per thread of a known total', () => {
  assert.equal(chunkSize(50, 16_384, undefined, 2), 50)
  assert.equal(chunkSize(50, 20, undefined, 2), 20)
  assert.equal(chunkSize(undefined, 16_384, undefined, 2), MAX_CHUNK)
  assert.equal(chunkSize(undefined, 16_384, 10_000_000, 2), MAX_CHUNK)
  assert.equal(chunkSize(undefined, 16_384, 1_000, 2), 125)
  assert.equal(chunkSize(undefined, 16_384, 1_000, 0), MAX_CHUNK)
  assert.equal(chunkSize(undefined, 100, undefined, 2), 25)
  assert.equal(chunkSize(undefined, 2, undefined, 2), 1)
  assert.equal(chunkSize(undefined, 16_384, 0, 2), 1)
})

test('a chunk name carries its task and combiner; its arguments are checked against it', () => {
  const name = reduceTaskName('square', 'sum')
  assert.equal(name, 'reduce(square, sum)')
  assert.ok(isReduceTaskName(name))
  assert.ok(!isReduceTaskName('square'))
  assert.deepEqual(parseReduceTaskName(name), { task: 'square', combiner: 'sum' })
  assert.equal(parseReduceTaskName('reduce(square)'), undefined)
  assert.equal(parseReduceTaskName('reduce(, sum)'), undefined)
  assert.deepEqual(readReduceChunk(name, reduceChunkArgs('square', 'sum', [[1], [2]])), { task: 'square', combiner: 'sum', inputs: [[1], [2]] })
  const bad: [unknown, RegExp][] = [
    ['x', /are not \[task, combiner, inputs\]/],
    [['square', 'sum'], /are not \[task, combiner, inputs\]/],
    [['square', 'max', [[1]]], /do not name its task and combiner/],
    [[1, 'sum', [[1]]], /do not name its task and combiner/],
    [['square', 'sum', []], /not a non-empty list of argument lists/],
    [['square', 'sum', [1]], /not a non-empty list of argument lists/],
  ]
  for (const [args, message] of bad)
    assert.throws(
      () => readReduceChunk(name, args),
      (e: unknown) => e instanceof ProtocolError && message.test(e.message),
    )
})

const functions = new Map<string, (...args: unknown[]) => unknown>([
  ['square', (x) => (x as number) ** 2],
  ['later', (x) => Promise.resolve((x as number) ** 2)],
  [
    'throwsAt',
    (x) => {
      if (x === 2) throw new RangeError('two')
      return x
    },
  ],
  ['sum', (a, b) => (a as number) + (b as number)],
  ['cat', (a, b) => `${String(a)}|${String(b)}`],
  ['promise', (a, b) => Promise.resolve((a as number) + (b as number))],
])
const known = [...functions.keys()]

async function run(task: string, combiner: string, inputs: unknown[][]): Promise<[unknown, unknown]> {
  const out = new ResultsWriter()
  const slot = out.add(1)
  const name = reduceTaskName(task, combiner)
  await runReduceChunk(functions, known, name, reduceChunkArgs(task, combiner, inputs), out, slot, (o, s, _n, v) => o.set(s, Status.Ok, v))
  let got: [unknown, unknown] = [undefined, undefined]
  readResultsBody(out.take(), 1, (_id, status, value) => (got = [status, value]))
  return got
}

test('a chunk folds its results in input order into one entry; failures are the first in input order', async () => {
  assert.deepEqual(await run('square', 'sum', [[1], [2], [3]]), [Status.Ok, 14])
  assert.deepEqual(await run('square', 'cat', [[1], [2], [3]]), [Status.Ok, '1|4|9'])
  assert.deepEqual(await run('later', 'cat', [[1], [2], [3]]), [Status.Ok, '1|4|9'])
  assert.deepEqual(await run('square', 'sum', [[5]]), [Status.Ok, 25])
  const [status, err] = await run('throwsAt', 'sum', [[1], [2], [3]])
  assert.equal(status, Status.Threw)
  assert.equal((err as { message: string }).message, 'two')
  const [s2, e2] = await run('square', 'promise', [[1], [2]])
  assert.equal(s2, Status.Failed)
  assert.equal((e2 as { code: string }).code, 'ERR_COMBINER')
  assert.match((e2 as { message: string }).message, /combiner "promise" of task "square" returned a promise/)
  const [s3, e3] = await run('square', 'nosuch', [[1]])
  assert.equal(s3, Status.Failed)
  assert.equal((e3 as { code: string }).code, 'ERR_UNKNOWN_TASK')
  assert.match((e3 as { message: string }).message, /^unknown combiner "nosuch"/)
})

/** A submitter that answers each chunk with the sum of its inputs, at once. */
function summing() {
  const chunks: unknown[][][] = []
  const withdrawn: Error[] = []
  const driver: ReduceSubmitter = {
    enqueue(_name, args, _options, sink, seq) {
      const inputs = args[2] as number[][]
      chunks.push(inputs)
      sink.settled(
        seq,
        true,
        inputs.reduce((a, [x]) => a + x!, 0),
      )
    },
    withdrawAll: (_options, err) => void withdrawn.push(err()),
    checkTask() {},
    resolveMapOptions: (o) => resolveMapOptions(o, 3),
    startProgress() {
      throw new Error('no progress in these tests')
    },
    localFunction: () => (a, b) => (a as number) + (b as number),
    threads: () => 2,
  }
  return { driver, chunks, withdrawn }
}

/** An async source that yields `values` and then waits for an input that never comes. */
function stalled(values: number[]): AsyncIterable<number> {
  let i = 0
  return {
    [Symbol.asyncIterator]: () => ({
      next: () => (i < values.length ? Promise.resolve({ value: values[i++]!, done: false }) : new Promise<never>(() => {})),
    }),
  }
}

test('an async source that waits: the partials that came in are folded meanwhile (until stops), and an abort rejects at once', async () => {
  const { driver, chunks } = summing()
  assert.equal(await runReduce(driver, 'id', stalled([1, 2, 3, 4]), 'sum', 0, { chunk: 2, until: (n) => n >= 10 }), 10)
  assert.deepEqual(chunks, [
    [[1], [2]],
    [[3], [4]],
  ])
  const ac = new AbortController()
  const { driver: d2, chunks: c2 } = summing()
  const pending = runReduce(d2, 'id', stalled([1, 2, 3]), 'sum', 0, { chunk: 2, signal: ac.signal })
  await tick()
  ac.abort(new Error('stop'))
  await assert.rejects(pending, (e: unknown) => e instanceof TaskCancelledError && /cancelled after 2 of 2 inputs were folded/.test(e.message))
  // The third input waits for a fourth to fill its chunk: it was never sent.
  assert.deepEqual(c2, [[[1], [2]]])
})
