import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Packr } from 'msgpackr'
import { encode, decode, header, parseHeader, parseFlatBody, findUnserializable, assertSerializable, VersionMismatch } from '../../lib/protocol/codec.js'
import { MsgType, PROTOCOL_VERSION } from '../../lib/protocol/messages.js'
import { ProtocolError, SerializationError } from '../../lib/errors.js'

const hello = { agentId: 'a-1', threads: 2, pid: 42, host: 'h', version: '0.1.0', tasks: ['add'], actors: ['Counter'], window: 4 }

test('headers round-trip for every frame type', () => {
  assert.deepEqual(parseHeader(header(MsgType.Hello, hello)), { type: MsgType.Hello, info: hello })
  const welcome = { nodeId: 'n', heartbeatMs: 1000, session: 's1' }
  assert.deepEqual(parseHeader(header(MsgType.Welcome, welcome)), { type: MsgType.Welcome, info: welcome })
  assert.deepEqual(parseHeader(header(MsgType.Tasks, 7)), { type: MsgType.Tasks, count: 7, timeoutMs: undefined })
  assert.deepEqual(parseHeader(header(MsgType.Tasks, 1, 250)), { type: MsgType.Tasks, count: 1, timeoutMs: 250 })
  assert.deepEqual(parseHeader(header(MsgType.Results, 3)), { type: MsgType.Results, count: 3 })
  assert.deepEqual(parseHeader(header(MsgType.ActorResults, 1)), { type: MsgType.ActorResults, count: 1 })
  assert.deepEqual(parseHeader(header(MsgType.Actor, 2)), { type: MsgType.Actor, count: 2 })
  assert.deepEqual(parseHeader(header(MsgType.Credit, 100)), { type: MsgType.Credit, window: 100 })
  assert.deepEqual(parseHeader(header(MsgType.Heartbeat, { busy: 1, done: 2, queued: 3 })), { type: MsgType.Heartbeat, load: { busy: 1, done: 2, queued: 3 } })
  assert.deepEqual(parseHeader(header(MsgType.Heartbeat)), { type: MsgType.Heartbeat, load: undefined })
  assert.deepEqual(parseHeader(header(MsgType.Leave, [1, 2])), { type: MsgType.Leave, returned: [1, 2] })
  assert.deepEqual(parseHeader(header(MsgType.DriverBye)), { type: MsgType.DriverBye })
  assert.deepEqual(parseHeader(header(MsgType.Reject, 'no')), { type: MsgType.Reject, reason: 'no' })
})

test('a header of another protocol version is a VersionMismatch naming both versions', () => {
  const bytes = new Packr().pack([PROTOCOL_VERSION + 98, MsgType.Hello, hello])
  assert.throws(
    () => parseHeader(bytes),
    (err: unknown) => {
      assert.ok(err instanceof VersionMismatch)
      assert.equal(err.code, 'ERR_PROTOCOL_VERSION')
      assert.match(err.message, new RegExp(`version ${PROTOCOL_VERSION + 98}.*speaks ${PROTOCOL_VERSION}`))
      return true
    },
  )
})

test('a rejection is readable whatever version sent it', () => {
  const bytes = new Packr().pack([PROTOCOL_VERSION + 1, MsgType.Reject, 'go away'])
  assert.deepEqual(parseHeader(bytes), { type: MsgType.Reject, reason: 'go away' })
})

test('malformed headers are ProtocolErrors, never crashes', () => {
  const bad: (Uint8Array | undefined)[] = [
    undefined,
    new Uint8Array(0),
    encode('just a string'),
    encode([PROTOCOL_VERSION]),
    encode([PROTOCOL_VERSION, 999]),
    encode([PROTOCOL_VERSION, MsgType.Tasks, -1]),
    encode([PROTOCOL_VERSION, MsgType.Tasks, 'many']),
    encode([PROTOCOL_VERSION, MsgType.Tasks, 1, 0]),
    encode([PROTOCOL_VERSION, MsgType.Tasks, 1, 'soon']),
    encode([PROTOCOL_VERSION, MsgType.Hello, { ...hello, threads: 0 }]),
    encode([PROTOCOL_VERSION, MsgType.Hello, { ...hello, tasks: [1, 2] }]),
    encode([PROTOCOL_VERSION, MsgType.Hello, null]),
    encode([PROTOCOL_VERSION, MsgType.Welcome, { nodeId: 5 }]),
    encode([PROTOCOL_VERSION, MsgType.Credit, 1.5]),
    encode([PROTOCOL_VERSION, MsgType.Leave, ['x']]),
    new Uint8Array((1 << 20) + 1),
  ]
  for (const b of bad) assert.throws(() => parseHeader(b), ProtocolError)
  // Random bytes: each either parses into a valid header or is a ProtocolError.
  for (let i = 0; i < 2000; i++) {
    try {
      parseHeader(randomBytes(1 + (i % 64)))
    } catch (err) {
      assert.ok(err instanceof ProtocolError, `unexpected ${String(err)}`)
    }
  }
})

test('flat bodies must hold exactly count entries of stride fields', () => {
  assert.deepEqual(parseFlatBody(encode([1, 'add', [1, 2]]), 3, 1), [1, 'add', [1, 2]])
  assert.throws(() => parseFlatBody(encode([1, 'add']), 3, 1), /1 entries of 3 fields/)
  assert.throws(() => parseFlatBody(encode({ a: 1 }), 3, 0), ProtocolError)
  assert.throws(() => parseFlatBody(undefined, 3, 1), /no body/)
})

test('typed arrays, maps, sets and dates travel as themselves', () => {
  const value = { f: new Float64Array([1.5, 2.5]), u: new Uint8Array([1, 2]), m: new Map([[1, 'a']]), s: new Set([3]), d: new Date(0) }
  const back = decode(encode(value)) as typeof value
  assert.ok(back.f instanceof Float64Array)
  assert.deepEqual([...back.f], [1.5, 2.5])
  assert.ok(back.m instanceof Map && back.m.get(1) === 'a')
  assert.ok(back.s instanceof Set && back.s.has(3))
  assert.ok(back.d instanceof Date && back.d.getTime() === 0)
})

test('findUnserializable names the first value msgpack cannot carry', () => {
  assert.equal(findUnserializable([1, 'a', { x: [1, 2] }, new Float64Array(2), null, undefined, true]), undefined)
  assert.equal(findUnserializable([1, () => 1], 'args'), 'args[1] is a function')
  assert.equal(findUnserializable({ a: { b: Symbol('s') } }, 'args'), 'args.a.b is a symbol')
  assert.equal(findUnserializable([2n ** 70n], 'args'), 'args[0] is a bigint outside 64 bits')
  assert.equal(findUnserializable([5n], 'args'), undefined)
  assert.match(
    findUnserializable(
      [
        new (class Point {
          x = 1
        })(),
      ],
      'args',
    ) ?? '',
    /instance of Point/,
  )
  const circular: Record<string, unknown> = {}
  circular['self'] = circular
  assert.match(findUnserializable(circular, 'args') ?? '', /deeper than 64|circular/)
  assert.equal(findUnserializable(new Map([[1, new Set([2])]]), 'v'), undefined)
  assert.match(findUnserializable(new Map([[1, () => 0]]), 'v') ?? '', /function/)
  assert.throws(() => assertSerializable('task "x"', [() => 1]), SerializationError)
})
