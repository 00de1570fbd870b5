/**
 * The map engine over an in-test submitter: order, the concurrency bound on
 * pulled inputs, and withdrawal of what is left when the map ends early.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setImmediate as tick } from 'node:timers/promises'
import { runMap, type MapSubmitter } from '../../lib/driver/map.js'
import { resolveMapOptions, type ResolvedTaskOptions } from '../../lib/driver/task-options.js'
import { InvalidArgumentError, TaskCancelledError, UnknownTaskError } from '../../lib/errors.js'

interface Submitted {
  name: string
  args: unknown[]
  options: ResolvedTaskOptions
  resolve: (v: unknown) => void
  reject: (e: Error) => void
}

/** A submitter that holds every task until the test settles it (or settles at once with `auto`). */
function submitter(auto?: (args: unknown[]) => unknown) {
  const submitted: Submitted[] = []
  const withdrawn: { options: ResolvedTaskOptions; err: Error }[] = []
  const driver: MapSubmitter = {
    enqueue(name, args, options, sink, seq) {
      const resolve = (v: unknown) => sink.settled(seq, true, v)
      submitted.push({ name, args, options, resolve, reject: (e) => sink.settled(seq, false, e) })
      if (auto) resolve(auto(args))
    },
    withdrawAll(options, err) {
      withdrawn.push({ options, err: err() })
    },
    checkTask(name) {
      if (name !== 'sq') throw UnknownTaskError.of(name, ['sq'])
    },
    resolveMapOptions: (o) => resolveMapOptions(o, 3),
    startProgress() {
      throw new Error('no progress in these tests')
    },
  }
  return { driver, submitted, withdrawn }
}

/** An iterable of 0..n-1 that counts how many were pulled and whether it was closed. */
function counted(n: number) {
  const state = { pulled: 0, closed: false }
  function* gen() {
    try {
      for (let i = 0; i < n; i++) {
        state.pulled++
        yield i
      }
    } finally {
      state.closed = true
    }
  }
  return { inputs: gen(), state }
}

async function collect<R>(it: AsyncIterable<R>): Promise<R[]> {
  const out: R[] = []
  for await (const v of it) out.push(v)
  return out
}

test('ordered: results come in input order whatever order they settle in', async () => {
  const { driver, submitted, withdrawn } = submitter()
  const done = collect(runMap<number>(driver, 'sq', [[1], [2], [3], [4]], {}))
  await tick()
  assert.equal(submitted.length, 4)
  assert.deepEqual(
    submitted.map((s) => s.args),
    [[1], [2], [3], [4]],
  )
  for (const i of [3, 1, 2, 0]) submitted[i]!.resolve((i + 1) ** 2)
  assert.deepEqual(await done, [1, 4, 9, 16])
  assert.deepEqual(withdrawn, [])
  // Every task of one map shares one options object.
  assert.ok(submitted.every((s) => s.options === submitted[0]!.options))
})

test('unordered: results come as they settle', async () => {
  const { driver, submitted } = submitter()
  const done = collect(runMap<string>(driver, 'sq', ['a', 'b', 'c', 'd'], { ordered: false }))
  await tick()
  assert.deepEqual(
    submitted.map((s) => s.args),
    [['a'], ['b'], ['c'], ['d']],
  )
  for (const i of [2, 0]) submitted[i]!.resolve(`r${i}`)
  await tick()
  for (const i of [3, 1]) submitted[i]!.resolve(`r${i}`)
  assert.deepEqual(await done, ['r2', 'r0', 'r3', 'r1'])
})

test('concurrency bounds the inputs taken and not yet yielded', async () => {
  const { driver, submitted } = submitter()
  const { inputs, state } = counted(5)
  const it = runMap<number>(driver, 'sq', inputs, { concurrency: 2 })
  const first = it.next()
  await tick()
  assert.equal(state.pulled, 2)
  assert.equal(submitted.length, 2)
  submitted[1]!.resolve(1) // out of order: nothing to yield yet, nothing more pulled
  await tick()
  assert.equal(state.pulled, 2)
  submitted[0]!.resolve(0)
  assert.deepEqual(await first, { value: 0, done: false })
  assert.equal(state.pulled, 2, 'paused at the yield: no input taken')
  assert.deepEqual(await it.next(), { value: 1, done: false })
  const third = it.next()
  await tick()
  assert.equal(state.pulled, 4)
  assert.equal(submitted.length, 4)
  submitted[2]!.resolve(2)
  submitted[3]!.resolve(3)
  assert.deepEqual(await third, { value: 2, done: false })
  assert.deepEqual(await it.next(), { value: 3, done: false })
  assert.equal(state.pulled, 4)
  const fifth = it.next()
  await tick()
  assert.equal(submitted.length, 5)
  submitted[4]!.resolve(4)
  assert.deepEqual(await fifth, { value: 4, done: false })
  assert.deepEqual(await it.next(), { value: undefined, done: true })
  assert.equal(state.pulled, 5)
})

test('an early break withdraws what is left under the map options, and closes the inputs', async () => {
  const { driver, submitted, withdrawn } = submitter()
  const { inputs, state } = counted(100)
  const got: number[] = []
  const run = (async () => {
    for await (const v of runMap<number>(driver, 'sq', inputs, { concurrency: 3, retries: 1 })) {
      got.push(v)
      break
    }
  })()
  await tick()
  assert.equal(submitted.length, 3)
  submitted[0]!.resolve(10)
  await run
  assert.deepEqual(got, [10])
  assert.equal(withdrawn.length, 1)
  const { options, err } = withdrawn[0]!
  assert.equal(options, submitted[0]!.options, "withdrawn by the map's own options object")
  assert.equal(options.retries, 1)
  assert.ok(err instanceof TaskCancelledError)
  assert.equal(err.code, 'ERR_CANCELLED')
  assert.equal(err.message, 'map of "sq" was cancelled after 1 of 3 results')
  assert.equal(state.closed, true)
  assert.equal(state.pulled, 3)
})

test('a failed task ends the map with its error and withdraws the rest', async () => {
  const { driver, submitted, withdrawn } = submitter()
  const it = runMap<number>(driver, 'sq', [1, 2, 3], {})
  const first = it.next()
  await tick()
  const boom = new Error('boom')
  submitted[0]!.reject(boom)
  await assert.rejects(first, (e) => e === boom)
  assert.equal(withdrawn.length, 1)
  assert.equal(withdrawn[0]!.options, submitted[0]!.options)
  assert.equal(withdrawn[0]!.err.message, 'map of "sq" was cancelled after 1 of 3 results')
})

test('all results yielded: nothing is withdrawn, even when tasks settle inside enqueue', async () => {
  const { driver, withdrawn } = submitter((args) => (args[0] as number) * 2)
  assert.deepEqual(await collect(runMap<number>(driver, 'sq', [1, 2, 3], { concurrency: 1 })), [2, 4, 6])
  assert.deepEqual(withdrawn, [])
})

test('async inputs are pulled lazily too', async () => {
  const { driver, submitted } = submitter()
  let pulled = 0
  async function* inputs() {
    for (let i = 0; i < 4; i++) {
      pulled++
      yield [i]
    }
  }
  const it = runMap<number>(driver, 'sq', inputs(), { concurrency: 2, ordered: false })
  const first = it.next()
  await tick()
  await tick()
  assert.equal(pulled, 2)
  submitted[0]!.resolve('x')
  assert.deepEqual(await first, { value: 'x', done: false })
  await it.return()
})

test('an aborted signal cancels the map and withdraws its tasks', async () => {
  const { driver, submitted, withdrawn } = submitter()
  const ac = new AbortController()
  const it = runMap<number>(driver, 'sq', [1, 2], { signal: ac.signal })
  const first = it.next()
  await tick()
  assert.equal(submitted.length, 2)
  ac.abort(new Error('stop'))
  await assert.rejects(first, (e: unknown) => e instanceof TaskCancelledError && e.message === 'map of "sq" was cancelled after 0 of 2 results')
  assert.equal(withdrawn.length, 1)
  assert.equal(withdrawn[0]!.options, submitted[0]!.options)
})

test('checks happen on the first next(): bad inputs, unknown task, bad options', async () => {
  const { driver, submitted } = submitter()
  await assert.rejects(runMap(driver, 'sq', 42 as unknown as number[], {}).next(), InvalidArgumentError)
  await assert.rejects(runMap(driver, 'nope', [], {}).next(), UnknownTaskError)
  await assert.rejects(runMap(driver, 'sq', [], { concurrency: 0 }).next(), /options\.concurrency must be a positive integer/)
  assert.deepEqual(submitted, [])
  assert.deepEqual(await collect(runMap(driver, 'sq', [], {})), [])
})

/** An async source that yields `values` and then waits for an input that never comes; `closed` once its return() ran. */
function stalled(values: unknown[]) {
  const state = { pulled: 0, closed: false }
  const source: AsyncIterableIterator<unknown> = {
    [Symbol.asyncIterator]: () => source,
    next: () => (state.pulled < values.length ? Promise.resolve({ value: values[state.pulled++], done: false }) : new Promise<never>(() => {})),
    return: () => {
      state.closed = true
      return Promise.resolve({ value: undefined, done: true })
    },
  }
  return { source, state }
}

test('an async source that waits: results that came in are yielded meanwhile, and an abort ends the map at once', async () => {
  const { driver, submitted, withdrawn } = submitter()
  const ac = new AbortController()
  const { source, state } = stalled([[1], [2]])
  const it = runMap<number>(driver, 'sq', source, { signal: ac.signal, ordered: false })
  const first = it.next()
  await tick()
  assert.equal(submitted.length, 2)
  submitted[1]!.resolve(4)
  assert.deepEqual(await first, { value: 4, done: false })
  const second = it.next()
  await tick()
  ac.abort(new Error('stop'))
  await assert.rejects(second, (e: unknown) => e instanceof TaskCancelledError && e.message === 'map of "sq" was cancelled after 1 of 2 results')
  assert.equal(withdrawn.length, 1)
  await tick()
  assert.ok(state.closed)
})

test('an async generator that waits is closed without waiting for it when the map stops', async () => {
  const { driver, submitted } = submitter()
  let closed = false
  async function* inputs() {
    try {
      yield [1]
      await new Promise(() => {})
    } finally {
      closed = true
    }
  }
  const it = runMap<number>(driver, 'sq', inputs(), {})
  const first = it.next()
  await tick()
  submitted[0]!.resolve(1)
  assert.deepEqual(await first, { value: 1, done: false })
  // The generator is suspended in its await: its return() waits for that, but leaving the map does not.
  assert.deepEqual(await it.return(), { value: undefined, done: true })
  assert.equal(closed, false)
})
