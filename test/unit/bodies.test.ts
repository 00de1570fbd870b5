/**
 * The body layouts: each writer and reader of a Tasks, Results or Actor body,
 * field by field, and what each reader does with a body of the wrong shape.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Packr } from 'msgpackr'
import {
  ActorBodyWriter,
  decodeTaskBody,
  encodeActorBody,
  encodeTaskBody,
  NumberTaskBodyWriter,
  readActorBody,
  readRawRequestBody,
  readResultsBody,
  RequestWriter,
  readTaskBody,
  ResultsWriter,
  type ActorItem,
  type TaskItem,
} from '../../lib/protocol/bodies.js'
import { decode, encode } from '../../lib/protocol/codec.js'
import { ProtocolError } from '../../lib/errors.js'
import { ActorOp, ContextOp, Status } from '../../lib/protocol/messages.js'

const tasks = [
  { id: 1, name: 'add', args: [1, 2] },
  { id: 2, name: 'mul', args: [] },
]

test('a Tasks body is [id, name, args] per task, flat', () => {
  assert.deepEqual(decode(encodeTaskBody(tasks)), [1, 'add', [1, 2], 2, 'mul', []])
  assert.deepEqual(decode(encodeTaskBody([])), [])
  assert.deepEqual(decodeTaskBody(encodeTaskBody(tasks)), tasks)
  assert.deepEqual(decodeTaskBody(encodeTaskBody([])), [])
})

/** A number at each edge of msgpack's encodings (fixints, 8, 16, 32 bits, floats), and the values that are not integers. */
const EDGES = [
  0,
  1,
  0x1f,
  0x20,
  0x3f,
  0x40,
  0x7f,
  0x80,
  0xff,
  0x100,
  0xffff,
  0x10000,
  2 ** 32 - 1,
  2 ** 32,
  2 ** 53 - 1,
  -1,
  -0x20,
  -0x21,
  -0x80,
  -0x81,
  -0x8000,
  -0x8001,
  -(2 ** 31),
  -(2 ** 31) - 1,
  0.5,
  -0.5,
  1e-300,
  1e300,
  NaN,
  Infinity,
  -Infinity,
  -0,
]

/** `n` tasks of 0 to 3 number arguments drawn from EDGES, with ids and names of every length class. */
function numberTasks(n: number, name: (i: number) => string = () => 'add'): TaskItem[] {
  return Array.from({ length: n }, (_, i) => ({
    id: i % 2 === 0 ? i : 2 ** 31 + i * 977,
    name: name(i),
    args: [EDGES[i % EDGES.length]!, EDGES[(i * 7 + 3) % EDGES.length]!, EDGES[(i * 13 + 5) % EDGES.length]!].slice(0, i % 4),
  }))
}

function writeNumbers(tasks: readonly TaskItem[]): Buffer {
  const w = new NumberTaskBodyWriter(tasks.length)
  for (const t of tasks) {
    const a = t.args as number[]
    w.add(t.id, t.name, a.length, a[0] ?? 0, a[1] ?? 0, a[2] ?? 0)
  }
  return w.encode()
}

test('NumberTaskBodyWriter: the same bytes as encodeTaskBody, at every edge of the number, string and list encodings', () => {
  // Every value as an id and as each argument, a task of every argument count.
  for (const v of EDGES) {
    for (let argc = 0; argc <= 3; argc++) {
      const t: TaskItem = { id: v, name: 'f', args: [v, -v, v / 3].slice(0, argc) }
      assert.deepEqual(writeNumbers([t]), encodeTaskBody([t]), `id and arguments ${v}, ${argc} arguments`)
    }
  }
  // Names: fixstr, str8, str16, not ASCII, longer than the writer reserves per task (it grows).
  const names = ['', 'a', 'x'.repeat(31), 'x'.repeat(32), 'y'.repeat(255), 'z'.repeat(256), 'w'.repeat(70_000), 'é名🙂']
  for (const name of names) assert.deepEqual(writeNumbers(numberTasks(3, () => name)), encodeTaskBody(numberTasks(3, () => name)), `name of ${name.length}`)
  // The list's own header: fixarray up to 15 fields, array16 up to 65,535, array32 past it (3 fields a task).
  for (const n of [0, 1, 5, 6, 21_845, 21_846]) {
    const tasks = numberTasks(n, (i) => names[i % names.length]!.slice(0, 300))
    const bytes = writeNumbers(tasks)
    assert.deepEqual(bytes, encodeTaskBody(tasks), `${n} tasks`)
    // msgpackr writes -0 as the integer 0, by either writer.
    assert.deepEqual(
      decodeTaskBody(bytes),
      tasks.map((t) => ({ ...t, args: t.args.map((a) => (Object.is(a, -0) ? 0 : a)) })),
    )
  }
})

test('NumberTaskBodyWriter: many more names than it caches are each written right', () => {
  const tasks = numberTasks(3000, (i) => `task${i}`)
  assert.deepEqual(writeNumbers(tasks), encodeTaskBody(tasks))
  assert.deepEqual(
    decodeTaskBody(writeNumbers(tasks)).map((t) => t.name),
    tasks.map((t) => t.name),
  )
})

test('decodeTaskBody: anything but a list of whole entries is a ProtocolError', () => {
  for (const body of [encode({ a: 1 }), encode([1, 'add']), encode([1, 'add', [], 2]), encode('x')]) {
    assert.throws(
      () => decodeTaskBody(body),
      (err: unknown) => err instanceof ProtocolError && err.message === 'task body is not a list of [id, name, args]',
    )
  }
})

test('readTaskBody hands every entry raw to the callback; false for a body that is not a task list', () => {
  const packr = new Packr({ useRecords: false })
  const seen: unknown[][] = []
  assert.equal(
    readTaskBody(packr, encodeTaskBody(tasks), (...e) => seen.push(e)),
    true,
  )
  assert.deepEqual(seen, [
    [1, 'add', [1, 2]],
    [2, 'mul', []],
  ])
  const none = () => assert.fail('no entry expected')
  assert.equal(readTaskBody(packr, encode([]), none), true)
  assert.equal(readTaskBody(packr, encode([1, 'add']), none), false)
  assert.equal(readTaskBody(packr, encode({ 0: 1, 1: 'a', 2: [] }), none), false)
  assert.equal(readTaskBody(packr, new Uint8Array([0x92]), none), false)
  assert.equal(readTaskBody(packr, new Uint8Array(0), none), false)
})

test('ResultsWriter: slots set later, count by entries, take empties it', () => {
  const w = new ResultsWriter()
  assert.equal(w.count, 0)
  const a = w.add(10)
  const b = w.add(11, Status.Threw, 'boom')
  assert.equal(a, 0)
  assert.equal(b, 3)
  assert.equal(w.count, 2)
  w.set(a, Status.Failed, { code: 'X' })
  assert.deepEqual(decode(w.take()), [10, Status.Failed, { code: 'X' }, 11, Status.Threw, 'boom'])
  assert.equal(w.count, 0)
  w.add(12)
  assert.deepEqual(decode(w.take(new Packr({ useRecords: false }))), [12, Status.Ok, null])
  assert.deepEqual(decode(w.take()), [])
})

test('readResultsBody: count entries of [id, status, value], else a ProtocolError', () => {
  const seen: unknown[][] = []
  readResultsBody(encode([1, 0, 'a', 2, 1, null]), 2, (...e) => seen.push(e))
  assert.deepEqual(seen, [
    [1, 0, 'a'],
    [2, 1, null],
  ])
  assert.throws(() => readResultsBody(encode([1, 0, 'a']), 2, () => {}), ProtocolError)
  assert.throws(() => readResultsBody(undefined, 1, () => {}), ProtocolError)
})

test('an Actor body is [id, op, actorId, name, args] per message; malformed entries are counted and skipped', () => {
  const messages: ActorItem[] = [
    { id: 1, op: ActorOp.Spawn, actorId: 'a', name: 'Counter', args: [0] },
    { id: 2, op: ActorOp.Call, actorId: 'a', name: 'inc', args: [] },
    { id: 3, op: ActorOp.Stop, actorId: 'a', name: '', args: [] },
    { id: 4, op: ActorOp.Respawn, actorId: 'a', name: 'Counter', args: [1] },
    { id: 5, op: ActorOp.Kill, actorId: 'a', name: '', args: [] },
  ]
  const body = encodeActorBody(messages)
  assert.deepEqual(decode(body), [1, 0, 'a', 'Counter', [0], 2, 1, 'a', 'inc', [], 3, 2, 'a', '', [], 4, 3, 'a', 'Counter', [1], 5, 4, 'a', '', []])
  const seen: ActorItem[] = []
  assert.equal(
    readActorBody(body, 5, (id, op, actorId, name, args) => seen.push({ id, op, actorId, name, args })),
    0,
  )
  assert.deepEqual(seen, messages)
  const entries: number[] = []
  readActorBody(body, 5, (_id, _op, _actorId, _name, _args, entry) => entries.push(entry))
  assert.deepEqual(entries, [0, 1, 2, 3, 4])

  const bad = [
    [1.5, 0, 'a', 'n', []],
    ['1', 0, 'a', 'n', []],
    [1, 5, 'a', 'n', []],
    [1, -1, 'a', 'n', []],
    [1, '1', 'a', 'n', []],
    [1, 1, 5, 'n', []],
    [1, 1, 'a', null, []],
    [1, 1, 'a', 'n', {}],
  ]
  for (const entry of bad) {
    const got: ActorItem[] = []
    assert.equal(
      readActorBody(encode([...entry, 9, ActorOp.Call, 'b', 'm', [1]]), 2, (id, op, actorId, name, args) => got.push({ id, op, actorId, name, args })),
      1,
      JSON.stringify(entry),
    )
    assert.deepEqual(got, [{ id: 9, op: ActorOp.Call, actorId: 'b', name: 'm', args: [1] }])
    // A malformed entry is skipped, and the next keeps its own position.
    const at: number[] = []
    readActorBody(encode([...entry, 9, ActorOp.Call, 'b', 'm', [1]]), 2, (_id, _op, _actorId, _name, _args, entry) => at.push(entry))
    assert.deepEqual(at, [1])
  }
  assert.throws(() => readActorBody(encode([1, 0, 'a', 'n']), 1, () => {}), ProtocolError)
})

test('ActorBodyWriter writes the Actor body encodeActorBody writes, counts its entries and starts again empty', () => {
  const w = new ActorBodyWriter()
  assert.equal(w.count, 0)
  w.add(7, ActorOp.Call, 'a', 'inc', [1])
  w.add(8, ActorOp.Stop, 'b', '', [])
  assert.equal(w.count, 2)
  const messages: ActorItem[] = [
    { id: 7, op: ActorOp.Call, actorId: 'a', name: 'inc', args: [1] },
    { id: 8, op: ActorOp.Stop, actorId: 'b', name: '', args: [] },
  ]
  assert.deepEqual(decode(w.take()), decode(encodeActorBody(messages)))
  assert.equal(w.count, 0)
  assert.deepEqual(decode(w.take()), [])
  w.add(1, ActorOp.Call, 'a', 'f', [() => 1])
  assert.throws(() => w.take())
})

test('readRawRequestBody hands every entry as it came, malformed ones too; RequestWriter.addRaw writes them back', () => {
  const w = new RequestWriter()
  w.add(5, ContextOp.Tell, ['a', 'm', [1]])
  w.addRaw(-1, 'op', 'not a list')
  assert.equal(w.count, 2)
  const body = w.take()
  const seen: unknown[][] = []
  readRawRequestBody(body, 2, (reqId, op, args) => seen.push([reqId, op, args]))
  assert.deepEqual(seen, [
    [5, ContextOp.Tell, ['a', 'm', [1]]],
    [-1, 'op', 'not a list'],
  ])
  assert.throws(() => readRawRequestBody(body, 3, () => {}), ProtocolError)
  assert.throws(() => readRawRequestBody(undefined, 0, () => {}), ProtocolError)
})
