/**
 * The schedulers without sockets: what goes to which node, in frames of what
 * size, read back from the frames they put on the wire.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Ledger, type TaskEntry } from '../../lib/driver/ledger.js'
import {
  CreditScheduler,
  FRAME_HEADROOM,
  FrameSizer,
  levelShares,
  SharedQueue,
  SharedQueueScheduler,
  TaskFrames,
  type Placement,
} from '../../lib/driver/scheduler.js'
import type { ResolvedTaskOptions } from '../../lib/driver/task-options.js'
import { SerializationError, TaskCancelledError } from '../../lib/errors.js'
import { decodeTaskBody, encodeTaskBody } from '../../lib/protocol/bodies.js'
import { header, parseHeader } from '../../lib/protocol/codec.js'
import { SharedRef, setSharedResolver } from '../../lib/protocol/shared-ref.js'
import { MsgType } from '../../lib/protocol/messages.js'
import type { Parts } from '../../lib/transport/transport.js'
import { addCall, node } from './fixtures.js'

/** One frame as it went out: where, the header's count and timeout, the task names in the body. */
interface Sent {
  to: string
  count: number
  timeoutMs: number | undefined
  /** The frame's number (brokered designs). */
  frameId: number | undefined
  names: string[]
  bytes: number
}

function decodeFrame(to: string, parts: Parts): Sent {
  assert.equal(parts.length, 2)
  const h = parseHeader(parts[0])
  assert.equal(h.type, MsgType.Tasks)
  if (h.type !== MsgType.Tasks) throw new Error('unreachable')
  const items = decodeTaskBody(parts[1]!)
  assert.equal(items.length, h.count, 'the header counts the tasks of the body')
  return { to, count: h.count, timeoutMs: h.timeoutMs, frameId: h.frameId, names: items.map((i) => i.name), bytes: parts[1]!.length }
}

function timed(timeoutMs: number): ResolvedTaskOptions {
  return { timeoutMs, retries: 0, maxRetries: 3, signal: undefined }
}

/** A ledger whose entries are queued on `scheduler`; failures are recorded. */
function harness<S extends CreditScheduler | SharedQueueScheduler>(
  make: (ledger: Ledger, put: (h: Placement, parts: Parts) => void, fail: (e: TaskEntry, err: Error) => void) => S,
) {
  const failures: { name: string; err: Error }[] = []
  const ledger = new Ledger({ succeeded() {}, failed() {}, retried() {} }, 3)
  const sent: Sent[] = []
  const put = (h: Placement, parts: Parts) => sent.push(decodeFrame(h.nodeId ?? 'shared', parts))
  const fail = (e: TaskEntry, err: Error) => {
    failures.push({ name: ledger.name(e), err })
    ledger.fail(e, err)
  }
  const scheduler = make(ledger, put, fail)
  const submit = (name: string, args: unknown[] = [], options?: ResolvedTaskOptions): TaskEntry => {
    const e = addCall(ledger, name, args, options)
    scheduler.enqueue(e)
    return e
  }
  const submitMany = (n: number, prefix = 't'): TaskEntry[] => Array.from({ length: n }, (_, i) => submit(`${prefix}${i}`))
  return { ledger, scheduler, sent, failures, submit, submitMany }
}

const credit = (batch: 'auto' | number, maxFrameBytes = 64 * 1024 * 1024) =>
  harness((ledger, put, fail) => new CreditScheduler(ledger, { batch, maxFrameBytes }, put, fail))
const shared = (batch: 'auto' | number, maxFrameBytes = 64 * 1024 * 1024) =>
  harness((ledger, put, fail) => new SharedQueueScheduler(ledger, { batch, maxFrameBytes }, put, fail))

const perNode = (sent: Sent[]) => {
  const out: Record<string, number> = {}
  for (const s of sent) out[s.to] = (out[s.to] ?? 0) + s.count
  return out
}

test('credit: a queue that fills every node gives each all its free credit, in queue order', () => {
  const { scheduler, sent, submitMany } = credit(1000)
  const a = node('a', 1, 30)
  const b = node('b', 1, 10)
  submitMany(40)
  scheduler.flush([a, b])
  assert.deepEqual(perNode(sent), { a: 30, b: 10 })
  assert.deepEqual(
    sent.flatMap((s) => s.names),
    Array.from({ length: 40 }, (_, i) => `t${i}`),
  )
  assert.equal(a.inFlight, 30)
  assert.equal(b.inFlight, 10)
  assert.equal(scheduler.inFlight([a, b]), 40)
  assert.equal(scheduler.queued(), 0)
})

test('credit: a queue smaller than the free credit is spread by threads, not in proportion to the windows, in queue order', () => {
  const { scheduler, sent, submitMany } = credit(1000)
  // Windows sized on tiny tasks, uneven by noise: a burst of long tasks must not follow them.
  const a = node('a', 1, 3339)
  const b = node('b', 1, 1957)
  submitMany(40)
  scheduler.flush([a, b])
  assert.deepEqual(perNode(sent), { a: 20, b: 20 })
  assert.deepEqual(
    sent.flatMap((s) => s.names),
    Array.from({ length: 40 }, (_, i) => `t${i}`),
  )
  assert.equal(scheduler.queued(), 0)
})

test('credit: within the credit, shares follow the threads of each node', () => {
  const { scheduler, sent, submitMany } = credit(1000)
  const a = node('a', 3, 1000)
  const b = node('b', 1, 1000)
  submitMany(40)
  scheduler.flush([a, b])
  assert.deepEqual(perNode(sent), { a: 30, b: 10 })
})

test('credit: tasks submitted one at a time go where they leave the least load per thread, equals taking turns', () => {
  const { scheduler, sent, submit } = credit(1000)
  const a = node('a', 1, 4096)
  const b = node('b', 1, 4096)
  const c = node('c', 2, 4096)
  for (let i = 0; i < 8; i++) {
    submit(`t${i}`)
    scheduler.flush([a, b, c])
  }
  // Load per thread once placed: c (two threads) reaches 0.5 with its first, then takes turns with a and b; two for c per one each.
  assert.deepEqual(
    sent.map((s) => s.to),
    ['c', 'a', 'b', 'c', 'c', 'a', 'b', 'c'],
  )
})

test('credit: a node whose credit runs out takes what it can; the rest level the others', () => {
  const { scheduler, sent, submitMany } = credit(1000)
  const a = node('a', 1, 2)
  const b = node('b', 1, 1000)
  const c = node('c', 1, 1000)
  submitMany(40)
  scheduler.flush([a, b, c])
  assert.deepEqual(perNode(sent), { a: 2, b: 19, c: 19 })
})

test('levelShares: water-fills tasks in flight per thread within each free credit; what rounding leaves goes where one more stands lowest, the first of equals', () => {
  const load = (inFlight: number, free: number, threads: number) => ({ inFlight, free, info: { threads } })
  // Levels 2/1 = 2, 3/3 = 1, 0/2 = 0: the third fills to 1, then the second and third to 2, then all rise together.
  assert.deepEqual(levelShares([load(2, 100, 1), load(3, 100, 3), load(0, 100, 2)], 2), [0, 0, 2])
  // Level 7/3: 0.33, 4 and 4.67 cut to 0, 4, 4; the one left goes to the third (5/2), not the first (3/1).
  assert.deepEqual(levelShares([load(2, 100, 1), load(3, 100, 3), load(0, 100, 2)], 9), [0, 4, 5])
  // Level 2.5: 0.5, 4.5 and 5 cut to 0, 4, 5; the one left goes to the second (8/3).
  assert.deepEqual(levelShares([load(2, 100, 1), load(3, 100, 3), load(0, 100, 2)], 10), [0, 5, 5])
  // One each to the two lowest of three equals; none beyond a node's free credit.
  assert.deepEqual(levelShares([load(0, 9, 1), load(0, 9, 1), load(0, 9, 1)], 2), [1, 1, 0])
  assert.deepEqual(levelShares([load(0, 1, 1), load(5, 10, 1), load(0, 100, 1)], 12), [1, 3, 8])
  // A node of two threads runs out of credit at level 2; the rest goes to the other.
  assert.deepEqual(levelShares([load(0, 4, 2), load(0, 100, 1)], 10), [4, 6])
  // What rounding leaves never goes to a node out of credit, though one more would leave it lowest (2/4).
  assert.deepEqual(levelShares([load(0, 1, 4), load(0, 100, 1), load(0, 100, 1)], 4), [1, 2, 1])
  // A node whose load is above the level takes nothing, however much credit it has.
  assert.deepEqual(levelShares([load(50, 1000, 1), load(0, 3, 1), load(0, 1000, 1)], 20), [0, 3, 17])
})

test('credit: shares rounded up past the queue stop when the queue is empty', () => {
  const { scheduler, sent, submitMany } = credit(1000)
  const a = node('a', 1, 2)
  const b = node('b', 1, 2)
  submitMany(3) // shares ceil(3*2/4)=2 each: 4 for 3 tasks
  scheduler.flush([a, b])
  assert.deepEqual(perNode(sent), { a: 2, b: 1 })
  assert.equal(scheduler.queued(), 0)
})

test('credit: a node over its window (it shrank) takes no share and does not enlarge the others\u2019', () => {
  const { scheduler, sent, submitMany } = credit(1000)
  const a = node('a', 1, 4)
  const b = node('b', 1, 4)
  const c = node('c', 1, 2)
  c.inFlight = 6 // free -4
  submitMany(4)
  scheduler.flush([a, b, c])
  assert.deepEqual(perNode(sent), { a: 2, b: 2 })
})

test('credit: the split levels the tasks in flight per thread, counting what each node holds already', () => {
  const { scheduler, sent, submitMany } = credit(1000)
  const a = node('a', 1, 40)
  const b = node('b', 1, 40)
  a.inFlight = 30 // free 10
  submitMany(40) // b first takes 30 to reach a's 30, then 5 each: 35 in flight on both
  scheduler.flush([a, b])
  assert.deepEqual(perNode(sent), { a: 5, b: 35 })
  assert.equal(a.inFlight, b.inFlight)
})

test("credit: never more than a node's window in flight", () => {
  const { scheduler, sent, submitMany } = credit(1000)
  const a = node('a', 2, 30)
  const b = node('b', 1, 10)
  a.inFlight = 25
  submitMany(100)
  scheduler.flush([a, b])
  assert.deepEqual(perNode(sent), { a: 5, b: 10 })
  assert.equal(a.inFlight, 30)
  assert.equal(b.inFlight, 10)
  assert.equal(scheduler.queued(), 85)
  // No credit left: a second flush sends nothing.
  const frames = sent.length
  scheduler.flush([a, b])
  assert.equal(sent.length, frames)
  assert.deepEqual(perNode(sent), { a: 5, b: 10 })
  // Credit returns (a Results frame): only that much goes out.
  b.inFlight = 7
  scheduler.flush([a, b])
  assert.deepEqual(perNode(sent), { a: 5, b: 13 })
  assert.equal(scheduler.queued(), 82)
})

test("credit: a frame holds at most one thread's share of the window, and at most `batch`", () => {
  /** The sizes of the frames one flush sends a node of `threads` and `window` with `queued` tasks waiting. */
  const frameSizes = (batch: number, threads: number, window: number, queued: number) => {
    const { scheduler, sent, submitMany } = credit(batch)
    submitMany(queued)
    scheduler.flush([node('a', threads, window)])
    return sent.map((s) => s.count)
  }
  assert.deepEqual(frameSizes(1000, 4, 20, 20), [5, 5, 5, 5])
  assert.deepEqual(frameSizes(1000, 3, 10, 10), [4, 4, 2]) // ceil(10 / 3) = 4
  assert.deepEqual(frameSizes(3, 1, 100, 10), [3, 3, 3, 1])
  // A short queue is spread over the threads too: one thread's share of what there is.
  assert.deepEqual(frameSizes(1000, 4, 1000, 8), [2, 2, 2, 2])
})

test('credit: a task with timeoutMs travels alone, its header carrying the timeout; the rest are batched without one', () => {
  const { scheduler, sent, submit } = credit(1000)
  const a = node('a', 1, 10)
  submit('a0')
  submit('slow', [], timed(500))
  submit('a1')
  submit('a2')
  submit('slow2', [], timed(750))
  scheduler.flush([a])
  assert.deepEqual(
    sent.map(({ count, timeoutMs, names }) => ({ count, timeoutMs, names })),
    [
      { count: 1, timeoutMs: 500, names: ['slow'] },
      { count: 1, timeoutMs: 750, names: ['slow2'] },
      { count: 3, timeoutMs: undefined, names: ['a0', 'a1', 'a2'] },
    ],
  )
  assert.equal(a.inFlight, 5)
  assert.equal(scheduler.framesSent, 3)
})

test('credit: a task that travels alone (a chunk of a reduce) goes in a frame of its own, without a timeout, and counts against the credit', () => {
  const { scheduler, sent, submit } = credit(1000)
  const a = node('a', 1, 4)
  const alone: ResolvedTaskOptions = { timeoutMs: undefined, retries: 0, maxRetries: 3, signal: undefined, alone: true }
  submit('a0')
  submit('r0', [], alone)
  submit('r1', [], alone)
  submit('a1')
  submit('a2')
  submit('a3', [], { ...alone, alone: false })
  scheduler.flush([a])
  assert.deepEqual(
    sent.map(({ count, timeoutMs, names }) => ({ count, timeoutMs, names })),
    [
      { count: 1, timeoutMs: undefined, names: ['r0'] },
      { count: 1, timeoutMs: undefined, names: ['r1'] },
      { count: 2, timeoutMs: undefined, names: ['a0', 'a1'] },
    ],
  )
  assert.equal(a.inFlight, 4)
  assert.equal(scheduler.framesSent, 3)
  assert.equal(scheduler.queued(), 2)
})

test('credit: timed tasks count against the credit', () => {
  const { scheduler, sent, submit } = credit(1000)
  const a = node('a', 1, 2)
  for (let i = 0; i < 3; i++) submit(`slow${i}`, [], timed(100))
  scheduler.flush([a])
  assert.deepEqual(
    sent.map((s) => [s.count, s.timeoutMs, s.names[0]]),
    [
      [1, 100, 'slow0'],
      [1, 100, 'slow1'],
    ],
  )
  assert.equal(a.inFlight, 2)
  assert.equal(scheduler.queued(), 1)
})

test('credit: withdrawn entries still in the queue are skipped and not counted', () => {
  const { ledger, scheduler, sent, submitMany } = credit(1000)
  const a = node('a', 1, 3)
  const tasks = submitMany(6)
  ledger.withdraw(tasks[1]!, new TaskCancelledError('x'))
  ledger.withdraw(tasks[3]!, new TaskCancelledError('x'))
  assert.equal(scheduler.queued(), 4)
  scheduler.flush([a])
  assert.deepEqual(
    sent.flatMap((s) => s.names),
    ['t0', 't2', 't4'],
  )
  assert.equal(a.inFlight, 3)
  assert.equal(scheduler.queued(), 1)
  assert.equal(ledger.holder(tasks[1]!), undefined)
})

test('credit: a node that is leaving, or has no free credit, gets nothing', () => {
  const { scheduler, sent, submitMany } = credit(1000)
  const leaving = node('leaving', 1, 50)
  leaving.state = 'leaving'
  const full = node('full', 1, 5)
  full.inFlight = 5
  const open = node('open', 1, 4)
  submitMany(10)
  scheduler.flush([leaving, full, open])
  assert.deepEqual(perNode(sent), { open: 4 })
  assert.equal(leaving.inFlight, 0)
  // Nobody has room: nothing is sent, nothing is lost.
  scheduler.flush([leaving, full, open])
  assert.equal(sent.length, 1)
  assert.equal(scheduler.queued(), 6)
})

test('credit: requeued tasks go first, in the order they had', () => {
  const { scheduler, sent, submitMany } = credit(1000)
  const tasks = submitMany(4)
  const a = node('a', 1, 2)
  scheduler.flush([a])
  assert.deepEqual(sent[0]!.names, ['t0', 't1'])
  scheduler.requeue([tasks[0]!, tasks[1]!])
  assert.equal(scheduler.queued(), 4)
  const b = node('b', 1, 10)
  scheduler.flush([b])
  assert.deepEqual(sent[1]!.names, ['t0', 't1', 't2', 't3'])
  assert.equal(scheduler.queued(), 0)
  assert.equal(scheduler.framesSent, 2)
})

test('clear drops the whole queue and frees the slots of the withdrawn entries in it', () => {
  const { ledger, scheduler, submitMany } = credit(1000)
  const tasks = submitMany(3)
  ledger.withdraw(tasks[1]!, new TaskCancelledError('x'))
  assert.equal(scheduler.queued(), 2)
  assert.equal(ledger.withdrawnInQueue, 1)
  for (const e of [tasks[0]!, tasks[2]!]) ledger.withdraw(e, new TaskCancelledError('x'))
  scheduler.clear()
  assert.equal(scheduler.queued(), 0)
  assert.equal(ledger.withdrawnInQueue, 0)
})

test("FrameSizer: a fixed batch is what it says; 'auto' starts at 1024 per frame and aims at about 256 KiB", () => {
  assert.equal(new FrameSizer(7).max(), 7)
  const auto = new FrameSizer('auto')
  assert.equal(auto.max(), 1024)
  for (let i = 0; i < 100; i++) auto.measured(8 * 500, 500) // tiny tasks: capped
  assert.equal(auto.max(), 1024)
  for (let i = 0; i < 100; i++) auto.measured(64 * 1024 * 3, 3)
  assert.equal(auto.max(), 4, '256 KiB / 64 KiB per task')
  for (let i = 0; i < 100; i++) auto.measured(1024 * 1024, 1)
  assert.equal(auto.max(), 1, 'never below one task')
})

test("credit, batch 'auto': frames shrink once big arguments are measured", () => {
  const { scheduler, sent, submit } = credit('auto')
  const big = 'x'.repeat(16 * 1024)
  for (let i = 0; i < 3000; i++) submit(`t${i}`, [big])
  const a = node('a', 1, 1024)
  scheduler.flush([a]) // first frame sized before anything was measured
  assert.deepEqual(
    sent.map((s) => s.count),
    [1024],
  )
  for (let round = 0; round < 40 && scheduler.queued() > 0; round++) {
    a.inFlight = 0
    scheduler.flush([a])
  }
  const last = sent.at(-1)!
  assert.ok(sent.length > 20, `${sent.length} frames`)
  for (const s of sent.slice(1)) assert.ok(s.count < 1024)
  assert.ok(last.count <= 16, `last frame holds ${last.count} tasks`)
  assert.ok(last.bytes <= 256 * 1024 + 16 * 1024 + 64, `last frame of ${last.bytes} bytes`)
})

/** TaskFrames alone, over a placement that records what it was given. */
function frames(maxFrameBytes: number) {
  const place: Placement & { left: number } = {
    nodeId: 'p',
    inFlight: 0,
    left: 0,
    taskLeft() {
      this.left++
    },
  }
  const sent: Sent[] = []
  const failures: { name: string; err: Error }[] = []
  const ledger = new Ledger({ succeeded() {}, failed() {}, retried() {} }, 3)
  const tf = new TaskFrames<Placement>(
    ledger,
    new FrameSizer(1000),
    maxFrameBytes,
    (h, parts) => sent.push(decodeFrame(h.nodeId ?? '', parts)),
    (e, err) => failures.push({ name: ledger.name(e), err }),
  )
  const entry = (name: string, args: unknown[]) => addCall(ledger, name, args)
  /** The body the entries would make, encoded as the agent's runner encodes tasks. */
  const body = (chunk: readonly TaskEntry[]) => encodeTaskBody(chunk.map((e) => ({ id: ledger.id(e), name: ledger.name(e), args: ledger.args(e) })))
  return { ledger, place, sent, failures, tf, entry, body }
}

test('TaskFrames: a frame over maxFrameBytes is split in halves until each fits', () => {
  const kb = 'k'.repeat(1000)
  {
    const { ledger, place, sent, failures, tf, entry, body } = frames(FRAME_HEADROOM + 4500)
    const chunk = Array.from({ length: 8 }, (_, i) => entry(`t${i}`, [kb]))
    assert.ok(body(chunk).length > 4500)
    assert.equal(tf.send(place, chunk, undefined), 8)
    assert.deepEqual(
      sent.map((s) => s.count),
      [4, 4],
    )
    assert.deepEqual(
      sent.flatMap((s) => s.names),
      chunk.map((e) => ledger.name(e)),
    )
    assert.ok(sent.every((s) => s.bytes <= 4500))
    assert.equal(place.inFlight, 8)
    assert.ok(chunk.every((e) => ledger.holder(e) === place))
    assert.deepEqual(failures, [])
  }
  {
    const { place, sent, tf, entry } = frames(FRAME_HEADROOM + 3000)
    const chunk = Array.from({ length: 8 }, (_, i) => entry(`t${i}`, [kb]))
    assert.equal(tf.send(place, chunk, 250), 8)
    assert.deepEqual(
      sent.map((s) => [s.count, s.timeoutMs]),
      [
        [2, 250],
        [2, 250],
        [2, 250],
        [2, 250],
      ],
    )
  }
})

test('TaskFrames: a single task over maxFrameBytes fails with SerializationError naming it and its size; its neighbours go', () => {
  const { ledger, place, sent, failures, tf, entry, body } = frames(FRAME_HEADROOM + 5000)
  const a = entry('small', [1])
  const big = entry('huge', ['h'.repeat(8000)])
  const c = entry('small2', [2])
  const bytes = body([big]).length
  assert.equal(tf.send(place, [a, big, c], undefined), 2)
  assert.deepEqual(
    sent.flatMap((s) => s.names),
    ['small', 'small2'],
  )
  assert.equal(failures.length, 1)
  const { name, err } = failures[0]!
  assert.equal(name, 'huge')
  assert.ok(err instanceof SerializationError)
  assert.equal(err.code, 'ERR_SERIALIZATION')
  assert.equal(err.message, `arguments of task "huge" encode to ${bytes} bytes, over maxFrameBytes (${FRAME_HEADROOM + 5000})`)
  assert.equal(ledger.holder(big), undefined)
  assert.equal(place.inFlight, 2)
})

test('TaskFrames: an argument msgpack cannot encode fails just that task; the rest go in one frame', () => {
  const { ledger, place, sent, failures, tf, entry, body } = frames(1024 * 1024)
  const a = entry('a', [1])
  const bad = entry('bad', [Symbol('no')])
  const c = entry('c', [3])
  assert.throws(() => body([bad]))
  assert.equal(tf.send(place, [a, bad, c], undefined), 2)
  assert.deepEqual(
    sent.map((s) => s.names),
    [['a', 'c']],
  )
  assert.equal(failures.length, 1)
  assert.equal(failures[0]!.name, 'bad')
  const err = failures[0]!.err
  assert.ok(err instanceof SerializationError)
  assert.equal(err.code, 'ERR_SERIALIZATION')
  assert.equal(err.message, 'cannot send task "bad": args[0] is a symbol; msgpack cannot carry it')
  assert.equal(place.inFlight, 2)
  assert.equal(ledger.holder(bad), undefined)
})

test('TaskFrames: frames of number arguments and frames of anything else carry the bytes encodeTaskBody makes', () => {
  const ledger = new Ledger({ succeeded() {}, failed() {}, retried() {} }, 3)
  const bodies: Buffer[] = []
  const place: Placement = { nodeId: 'p', inFlight: 0, taskLeft() {} }
  const tf = new TaskFrames<Placement>(
    ledger,
    new FrameSizer(1000),
    64 * 1024 * 1024,
    (_h, parts) => bodies.push(parts[1] as Buffer),
    () => assert.fail('nothing fails'),
  )
  const chunks: unknown[][][] = [
    // All numbers, every argument count: the direct writer.
    [[], [1], [2, -3.5], [2 ** 40, -(2 ** 31) - 1, 0x40], [NaN, Infinity, -0]],
    // A string, an object, four numbers, a bigint among numbers: the general encoder, for the whole frame.
    [[1, 2], ['s'], [3]],
    [[1], [{ a: [1, 2] }]],
    [[1, 2, 3, 4], [5]],
    [[1n], [2]],
  ]
  for (const argLists of chunks) {
    const chunk = argLists.map((args, i) => addCall(ledger, `t${i}`, args))
    const expected = encodeTaskBody(chunk.map((e) => ({ id: ledger.id(e), name: ledger.name(e), args: ledger.args(e) })))
    assert.equal(tf.send(place, chunk, undefined), chunk.length)
    assert.deepEqual(bodies.pop(), expected, `arguments ${argLists.map(String).join(' | ')}`)
  }
})

test('TaskFrames: a chunk where nothing can be encoded sends no frame', () => {
  const { place, sent, failures, tf, entry } = frames(1024 * 1024)
  const chunk = [entry('x', [Symbol('1')]), entry('y', [Symbol('2')])]
  assert.equal(tf.send(place, chunk, undefined), 0)
  assert.deepEqual(sent, [])
  assert.deepEqual(
    failures.map((f) => f.name),
    ['x', 'y'],
  )
  assert.equal(place.inFlight, 0)
})

/** An argument whose first read throws (a getter over state that changes), and every later read gives 1. */
function throwsOnFirstRead() {
  let reads = 0
  return {
    get v() {
      if (reads++ === 0) throw new Error('not ready')
      return 1
    },
  }
}

test('TaskFrames: a batch that fails to encode while each task encodes alone is split until every task is sent or failed', () => {
  const { place, sent, failures, tf, entry } = frames(1024 * 1024)
  // An argument whose first read throws (a getter over state that changes): the batch encode fails, the retry alone succeeds.
  const flaky = throwsOnFirstRead()
  const chunk = [entry('a', [1]), entry('b', [flaky])]
  const placed = tf.send(place, chunk, undefined)
  const accounted = sent.reduce((n, s) => n + s.count, 0) + failures.length
  assert.equal(placed + failures.length, 2)
  assert.equal(accounted, 2, 'every task is either sent or failed')
  // Every task encoded alone, so the batch is halved (not sent again whole): a frame each.
  assert.deepEqual(
    sent.map((s) => s.names),
    [['a'], ['b']],
  )
  assert.deepEqual(failures, [])
})

test('TaskFrames: a single task that fails to encode in its frame, though it encodes alone, fails with SerializationError naming it; no frame is sent', () => {
  const { place, sent, failures, tf, entry } = frames(1024 * 1024)
  const flaky = throwsOnFirstRead()
  assert.equal(tf.send(place, [entry('once', [flaky])], undefined), 0)
  assert.deepEqual(sent, [], 'no frame, not even an empty one')
  assert.equal(failures.length, 1)
  assert.equal(failures[0]!.name, 'once')
  assert.ok(failures[0]!.err instanceof SerializationError)
  assert.equal(failures[0]!.err.message, 'cannot send task "once": its arguments failed to encode in a frame')
  assert.equal(place.inFlight, 0)
})

test("TaskFrames: a single task that fails to encode again alone, where the walk finds nothing, fails with the encoder's message and cause", () => {
  const { place, sent, failures, tf, entry } = frames(1024 * 1024)
  // Reads: the frame's encode throws, the walk reads 1, the encode alone throws again.
  let reads = 0
  const flaky = {
    get v() {
      if (reads++ !== 1) throw new Error('not ready')
      return 1
    },
  }
  assert.equal(tf.send(place, [entry('twice', [flaky])], undefined), 0)
  assert.deepEqual(sent, [])
  assert.equal(tf.sent, 0)
  assert.equal(failures.length, 1)
  const err = failures[0]!.err
  assert.ok(err instanceof SerializationError)
  assert.equal(err.message, 'cannot send task "twice": not ready')
  assert.ok(err.cause instanceof Error)
  assert.equal(err.cause.message, 'not ready')
  assert.equal(reads, 3)
})

test('TaskFrames: a body of exactly maxFrameBytes less the headroom goes as one frame', () => {
  const kb = 'k'.repeat(1000)
  const probe = frames(1024 * 1024)
  const bytes = probe.body(Array.from({ length: 4 }, (_, i) => probe.entry(`t${i}`, [kb]))).length
  const { place, sent, tf, entry, body } = frames(FRAME_HEADROOM + bytes)
  const chunk = Array.from({ length: 4 }, (_, i) => entry(`t${i}`, [kb]))
  assert.equal(body(chunk).length, bytes)
  assert.equal(tf.send(place, chunk, undefined), 4)
  assert.deepEqual(
    sent.map((s) => s.count),
    [4],
  )
})

test('shared queue: published-not-settled is capped at twice the windows of the up nodes', () => {
  const { ledger, scheduler, sent, submitMany } = shared(1000)
  const a = node('a', 1, 3)
  const b = node('b', 1, 2)
  const leaving = node('c', 4, 100)
  leaving.state = 'leaving'
  const tasks = submitMany(25)
  scheduler.flush([a, b, leaving])
  // cap 2 × (3 + 2) = 10; a frame is one thread's share of the windows: ceil(5 / 2) = 3.
  assert.deepEqual(
    sent.map((s) => s.count),
    [3, 3, 3, 1],
  )
  assert.ok(sent.every((s) => s.to === 'shared'))
  assert.equal(scheduler.inFlight([]), 10)
  assert.equal(scheduler.queue.inFlight, 10)
  assert.equal(scheduler.queued(), 15)
  assert.ok(tasks.slice(0, 10).every((e) => ledger.holder(e) === scheduler.queue))
  scheduler.flush([a, b, leaving])
  assert.equal(sent.length, 4, 'at the cap nothing more goes out')

  // Four settle (results, a failure, a withdrawal): the queue is told and four more go.
  ledger.succeed(tasks[0]!, 0, 0)
  ledger.succeed(tasks[1]!, 1, 0)
  ledger.fail(tasks[2]!, new Error('threw'))
  ledger.withdraw(tasks[3]!, new TaskCancelledError('x'))
  assert.equal(scheduler.inFlight([]), 6)
  scheduler.flush([a, b, leaving])
  assert.deepEqual(
    sent.slice(4).map((s) => s.count),
    [3, 1],
  )
  assert.equal(scheduler.inFlight([]), 10)
  assert.equal(scheduler.queued(), 11)
})

test('shared queue: no up node, nothing is published', () => {
  const { scheduler, sent, submitMany } = shared(1000)
  const gone = node('a', 1, 5)
  gone.state = 'leaving'
  submitMany(3)
  scheduler.flush([])
  scheduler.flush([gone])
  assert.deepEqual(sent, [])
  assert.equal(scheduler.queued(), 3)
  assert.equal(scheduler.inFlight([]), 0)
})

test('shared queue: timed tasks go alone and count against the cap; withdrawn ones are skipped', () => {
  const { ledger, scheduler, sent, submit } = shared(1000)
  const a = node('a', 1, 1) // cap 2
  const w = submit('withdrawn')
  submit('slow', [], timed(300))
  submit('plain')
  submit('late')
  ledger.withdraw(w, new TaskCancelledError('x'))
  assert.equal(scheduler.queued(), 3)
  scheduler.flush([a])
  assert.deepEqual(
    sent.map(({ count, timeoutMs, names }) => ({ count, timeoutMs, names })),
    [
      { count: 1, timeoutMs: 300, names: ['slow'] },
      { count: 1, timeoutMs: undefined, names: ['plain'] },
    ],
  )
  assert.equal(scheduler.inFlight([]), 2)
  assert.equal(scheduler.queued(), 1)
})

test('shared queue: a retried task leaves the queue count', () => {
  const { ledger, scheduler, submit } = shared(1000)
  const a = node('a', 1, 4)
  const e = submit('t', [], { timeoutMs: undefined, retries: 1, maxRetries: 0, signal: undefined })
  scheduler.flush([a])
  assert.equal(scheduler.inFlight([]), 1)
  assert.equal(ledger.retry(e, 'user', new Error('threw')), true)
  assert.equal(scheduler.inFlight([]), 0)
  assert.equal(new SharedQueue().nodeId, undefined)
})

test('shared queue: each frame carries a number of its own; a claim gives its size and the tasks still on the queue, once', () => {
  const { ledger, scheduler, sent, submitMany } = shared(2)
  const a = node('a', 1, 3)
  const tasks = submitMany(5)
  scheduler.flush([a])
  // cap 2 × 3 = 6; frames of 2 (batch 2): 2, 2, 1.
  assert.deepEqual(
    sent.map((s) => s.count),
    [2, 2, 1],
  )
  const [f1, f2, f3] = sent.map((s) => s.frameId!)
  assert.ok(Number.isSafeInteger(f1) && f1! > 0)
  assert.deepEqual([f2, f3], [f1! + 1, f1! + 2], 'consecutive numbers')
  // Routed frames carry none.
  const routed = credit(2)
  routed.submitMany(1)
  routed.scheduler.flush([node('z', 1, 2)])
  assert.equal(routed.sent[0]!.frameId, undefined)
  // A task of the second frame settles before an agent says it took the frame: the claim leaves it out.
  ledger.withdraw(tasks[3]!, new TaskCancelledError('x'))
  const claim = scheduler.claim(f2!)
  assert.equal(claim?.size, 2)
  assert.deepEqual(
    claim?.entries.map((e) => ledger.name(e)),
    ['t2'],
  )
  assert.equal(scheduler.claim(f2!), undefined, 'a frame is claimed once')
  assert.equal(scheduler.claim(f3! + 1000), undefined, 'an unknown number claims nothing')
  // Taken by a node: it holds them now, and the cap still counts them.
  for (const e of claim.entries) ledger.move(e, a)
  a.inFlight += claim.size
  assert.equal(ledger.holder(tasks[2]!), a)
  assert.equal(scheduler.queue.inFlight, 3)
  assert.equal(scheduler.inFlight([a]), 5)
  // A task of the third frame already held by a node (taken back and sent again): the claim leaves it out.
  ledger.move(tasks[4]!, a)
  assert.deepEqual(scheduler.claim(f3!), { size: 1, entries: [] })
})

test('shared queue: tasks held by nodes count against the cap, and a node taken out no longer does', () => {
  const { scheduler, sent, submitMany } = shared(1000)
  const a = node('a', 1, 2)
  const b = node('b', 1, 2)
  submitMany(20)
  a.inFlight = 6
  // cap 2 × (2 + 2) = 8, 6 held by a: two more go out.
  scheduler.flush([a, b])
  assert.equal(
    sent.reduce((n, s) => n + s.count, 0),
    2,
  )
  // a is gone (not among the nodes any more): its six no longer hold the queue back.
  scheduler.flush([b])
  assert.equal(
    sent.reduce((n, s) => n + s.count, 0),
    4,
  )
})

test("shared queue: a frame lists its handles' distinct hashes in the header, and the list counts against maxFrameBytes", (t) => {
  setSharedResolver(() => 0)
  t.after(() => setSharedResolver(undefined))
  const owner = { release: async () => {} }
  const refs = Array.from({ length: 10 }, (_, i) => new SharedRef(String.fromCharCode(65 + i).repeat(43), 8, owner))
  const ledger = new Ledger({ succeeded() {}, failed() {}, retried() {} }, 3)
  const frames: Parts[] = []
  // The bodies of the 20 tasks fit in 1,500 bytes; with 20 hashes in the header (~900 bytes more) they do not.
  const scheduler = new SharedQueueScheduler(
    ledger,
    { batch: 1000, maxFrameBytes: FRAME_HEADROOM + 1500 },
    (_queue, parts) => frames.push(parts),
    () => assert.fail('no task fails'),
  )
  // Two tasks per value: the header lists each hash once.
  for (let i = 0; i < 20; i++) scheduler.enqueue(addCall(ledger, 'f', [refs[i >> 1]]))
  scheduler.flush([node('a', 1, 40)])
  const heads = frames.map((parts) => parseHeader(parts[0]))
  assert.deepEqual(
    heads.map((h) => (h.type === MsgType.Tasks ? [h.count, h.shared] : undefined)),
    [
      [10, refs.slice(0, 5).map((r) => r.hash)],
      [10, refs.slice(5).map((r) => r.hash)],
    ],
    'split in two by the hash lists; each hash listed once',
  )
  const bodies = frames.reduce((n, parts) => n + parts[1]!.length, 0)
  assert.ok(bodies < 1500, `the bodies alone (${bodies} bytes) would fit in one frame`)
})

test('ZeroMQ: a frame that carries handles lists their distinct hashes in the header, with no frame number; one without lists none', (t) => {
  setSharedResolver(() => 0)
  t.after(() => setSharedResolver(undefined))
  const owner = { release: async () => {} }
  const [a, b] = ['A', 'B'].map((c) => new SharedRef(c.repeat(43), 8, owner))
  const ledger = new Ledger({ succeeded() {}, failed() {}, retried() {} }, 3)
  const frames: { parts: Parts; refs: readonly SharedRef[] }[] = []
  const scheduler = new CreditScheduler(
    ledger,
    { batch: 1000, maxFrameBytes: 64 * 1024 },
    (_node, parts, refs) => frames.push({ parts, refs }),
    () => assert.fail('no task fails'),
  )
  for (const ref of [a, b, a]) scheduler.enqueue(addCall(ledger, 'f', [ref]))
  scheduler.flush([node('a', 1, 40)])
  scheduler.enqueue(addCall(ledger, 'g', [1, 'x']))
  scheduler.enqueue(addCall(ledger, 't', [a], timed(500)))
  scheduler.flush([node('a', 1, 40)])
  assert.deepEqual(
    frames.map(({ parts }) => parseHeader(parts[0])),
    [
      { type: MsgType.Tasks, count: 3, timeoutMs: undefined, frameId: undefined, shared: [a!.hash, b!.hash] },
      { type: MsgType.Tasks, count: 1, timeoutMs: 500, frameId: undefined, shared: [a!.hash] },
      { type: MsgType.Tasks, count: 1, timeoutMs: undefined, frameId: undefined, shared: undefined },
    ],
  )
  assert.deepEqual(
    frames.map(({ refs }) => refs.length),
    [3, 1, 0],
  )
  // A frame without handles keeps the short header (the hot path's bytes).
  assert.equal(Buffer.from(frames[2]!.parts[0]!).toString('hex'), header(MsgType.Tasks, 1).toString('hex'))
})
