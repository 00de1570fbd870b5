import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Packr } from 'msgpackr'
import {
  encode,
  encodeStrict,
  decode,
  header,
  parseHeader,
  parseFlatBody,
  findUnserializable,
  assertSerializable,
  messageShapeProblem,
  VersionMismatch,
} from '../../lib/protocol/codec.js'
import { MsgType, PROTOCOL_VERSION, SHARED_KINDS, SHARED_UNAVAILABLE_CODES } from '../../lib/protocol/messages.js'
import { ProtocolError, SerializationError } from '../../lib/errors.js'

const hello = { agentId: 'a-1', threads: 2, pid: 42, host: 'h', version: '0.1.0', tasks: ['add'], actors: ['Counter'], window: 4 }

test('headers round-trip for every frame type', () => {
  assert.deepEqual(parseHeader(header(MsgType.Hello, hello)), { type: MsgType.Hello, info: hello })
  const welcome = { nodeId: 'n', heartbeatMs: 1000, session: 's1' }
  assert.deepEqual(parseHeader(header(MsgType.Welcome, welcome)), { type: MsgType.Welcome, info: welcome })
  assert.deepEqual(parseHeader(header(MsgType.Tasks, 7)), { type: MsgType.Tasks, count: 7, timeoutMs: undefined, frameId: undefined, shared: undefined })
  assert.deepEqual(parseHeader(header(MsgType.Tasks, 1, 250)), { type: MsgType.Tasks, count: 1, timeoutMs: 250, frameId: undefined, shared: undefined })
  // Numbered frames (brokered designs) say null for no timeout.
  assert.deepEqual(parseHeader(header(MsgType.Tasks, 7, null, 99)), { type: MsgType.Tasks, count: 7, timeoutMs: undefined, frameId: 99, shared: undefined })
  assert.deepEqual(parseHeader(header(MsgType.Tasks, 1, 250, 100)), { type: MsgType.Tasks, count: 1, timeoutMs: 250, frameId: 100, shared: undefined })
  // A brokered frame lists the hashes of the shared values its tasks carry.
  const hash = 'A'.repeat(42) + '_'
  assert.deepEqual(parseHeader(header(MsgType.Tasks, 7, null, 99, [hash])), {
    type: MsgType.Tasks,
    count: 7,
    timeoutMs: undefined,
    frameId: 99,
    shared: [hash],
  })
  assert.deepEqual(parseHeader(header(MsgType.Taken, 99, false)), { type: MsgType.Taken, frameId: 99, dropped: false })
  assert.deepEqual(parseHeader(header(MsgType.Taken, 0, true)), { type: MsgType.Taken, frameId: 0, dropped: true })
  assert.deepEqual(parseHeader(header(MsgType.Results, 3)), { type: MsgType.Results, count: 3, registration: undefined })
  assert.deepEqual(parseHeader(header(MsgType.Results, 3, 'r-1')), { type: MsgType.Results, count: 3, registration: 'r-1' })
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
  // A bigint of any size arrives as sent.
  assert.equal(findUnserializable([2n ** 70n, -(2n ** 200n), { b: 2n ** 64n }], 'args'), undefined)
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
  assert.equal(findUnserializable(circular, 'args'), 'args.self is circular (it contains itself)')
  // Deeper down, through arrays, maps and sets alike; the same object twice side by side is no cycle.
  const ring: unknown[] = [1]
  ring.push({ inner: new Map([['k', new Set([ring])]]) })
  assert.equal(findUnserializable({ a: [ring] }, 'v'), 'v.a[0][1].inner.get(k) member is circular (it contains itself)')
  const shared = { x: 1 }
  assert.equal(findUnserializable([shared, [shared, { shared }]], 'v'), undefined)
  assert.equal(findUnserializable(new Map([[1, new Set([2])]]), 'v'), undefined)
  assert.match(findUnserializable(new Map([[1, () => 0]]), 'v') ?? '', /function/)
  assert.throws(() => assertSerializable('task "x"', [() => 1]), SerializationError)
})

/** Asserts parseHeader throws a ProtocolError with exactly `message` for `fields` after the version. */
function malformed(fields: unknown[], message: string): void {
  assert.throws(
    () => parseHeader(encode([PROTOCOL_VERSION, ...fields])),
    (err: unknown) => {
      assert.ok(err instanceof ProtocolError, `expected ProtocolError, got ${String(err)}`)
      assert.equal(err.code, 'ERR_PROTOCOL')
      assert.equal(err.message, message)
      return true
    },
  )
}

test('each malformed header says what is wrong', () => {
  assert.throws(() => parseHeader(undefined), { message: 'empty frame' })
  assert.throws(() => parseHeader(new Uint8Array(0)), { message: 'empty frame' })
  assert.throws(() => parseHeader(new Uint8Array((1 << 20) + 1)), { message: `header of ${(1 << 20) + 1} bytes exceeds 1 MiB` })
  assert.throws(() => parseHeader(encode({ a: 1 })), { message: 'frame header is not [version, type, ...]' })
  assert.throws(() => parseHeader(encode([PROTOCOL_VERSION])), { message: 'frame header is not [version, type, ...]' })
  assert.throws(() => parseHeader(new Uint8Array([0x92])), { message: /^malformed msgpack \(1 bytes\): / })
  malformed([MsgType.Hello, { ...hello, threads: 0 }], 'malformed hello')
  malformed([MsgType.Welcome, { nodeId: 'n', heartbeatMs: -1, session: 's' }], 'malformed welcome')
  malformed([MsgType.Tasks, 1, 0], 'malformed task frame header')
  malformed([MsgType.Results, -1], 'malformed results frame header')
  malformed([MsgType.Results, 1, 7], 'malformed results frame header')
  malformed([MsgType.ActorResults, 1.5], `malformed count in frame of type ${MsgType.ActorResults}`)
  malformed([MsgType.Actor, 'x'], `malformed count in frame of type ${MsgType.Actor}`)
  malformed([MsgType.Credit, -1], 'malformed credit')
  malformed([MsgType.Leave, 3], 'malformed leave')
  malformed([MsgType.Leave, [1, -1]], 'malformed leave')
  malformed([MsgType.Tasks, 1, null, -1], 'malformed task frame header')
  malformed([MsgType.Tasks, 1, null, 'f1'], 'malformed task frame header')
  malformed([MsgType.Taken, -1, false], 'malformed taken')
  malformed([MsgType.Taken, 1.5, false], 'malformed taken')
  malformed([MsgType.Taken, 1], 'malformed taken')
  malformed([MsgType.Taken, 1, 0], 'malformed taken')
  malformed([999], 'unknown frame type 999')
})

test('an ActorsLost header carries a non-empty list of actor ids', () => {
  assert.deepEqual(parseHeader(header(MsgType.ActorsLost, ['a', 'b'.repeat(256)])), { type: MsgType.ActorsLost, actorIds: ['a', 'b'.repeat(256)] })
  malformed([MsgType.ActorsLost, []], 'malformed actors-lost')
  malformed([MsgType.ActorsLost, 'a'], 'malformed actors-lost')
  malformed([MsgType.ActorsLost, ['a', 7]], 'malformed actors-lost')
  malformed([MsgType.ActorsLost, ['b'.repeat(257)]], 'malformed actors-lost')
  malformed([MsgType.ActorsLost], 'malformed actors-lost')
})

test('header fields are checked at their bounds', () => {
  const ok = (info: Record<string, unknown>) => assert.deepEqual(parseHeader(header(MsgType.Hello, info)), { type: MsgType.Hello, info })
  const bad = (info: Record<string, unknown>) => malformed([MsgType.Hello, info], 'malformed hello')
  ok({ ...hello, agentId: 'a'.repeat(128), host: 'h'.repeat(1024), version: 'v'.repeat(1024), threads: 1, pid: 0, window: 0 })
  bad({ ...hello, agentId: 'a'.repeat(129) })
  bad({ ...hello, host: 'h'.repeat(1025) })
  bad({ ...hello, version: 'v'.repeat(1025) })
  bad({ ...hello, pid: -1 })
  bad({ ...hello, pid: 1.5 })
  bad({ ...hello, window: -1 })
  bad({ ...hello, agentId: 7 })
  bad({ ...hello, host: 7 })
  bad({ ...hello, version: 7 })
  bad({ ...hello, actors: 'Counter' })
  bad({ ...hello, actors: [7] })
  ok({ ...hello, tasks: ['t'.repeat(256)], registration: 'r'.repeat(64) })
  bad({ ...hello, tasks: ['t'.repeat(257)] })
  bad({ ...hello, registration: 'r'.repeat(65) })
  bad({ ...hello, registration: 5 })
  ok({ ...hello, tasks: new Array<string>(100_000).fill('t') })
  bad({ ...hello, tasks: new Array<string>(100_001).fill('t') })
  malformed([MsgType.Hello, 'hello'], 'malformed hello')

  const welcome = { nodeId: 'n'.repeat(128), heartbeatMs: 0, session: 's'.repeat(128) }
  assert.deepEqual(parseHeader(header(MsgType.Welcome, welcome)), { type: MsgType.Welcome, info: welcome })
  for (const w of [{ ...welcome, nodeId: 'n'.repeat(129) }, { ...welcome, session: 's'.repeat(129) }, { ...welcome, session: 1 }, null, 'welcome']) {
    malformed([MsgType.Welcome, w], 'malformed welcome')
  }

  assert.deepEqual(parseHeader(header(MsgType.Reject, 'r'.repeat(4096))), { type: MsgType.Reject, reason: 'r'.repeat(4096) })
  assert.deepEqual(parseHeader(header(MsgType.Reject, 'r'.repeat(4097))), { type: MsgType.Reject, reason: 'rejected without a reason' })
  assert.deepEqual(parseHeader(header(MsgType.Reject)), { type: MsgType.Reject, reason: 'rejected without a reason' })
  assert.deepEqual(parseHeader(header(MsgType.Tasks, 0)), { type: MsgType.Tasks, count: 0, timeoutMs: undefined, frameId: undefined, shared: undefined })
  assert.deepEqual(parseHeader(header(MsgType.Credit, 0)), { type: MsgType.Credit, window: 0 })
  assert.deepEqual(parseHeader(header(MsgType.Leave, [])), { type: MsgType.Leave, returned: [] })
  // A heartbeat with a partial or bad load still counts as a heartbeat.
  for (const load of [{ busy: 1, done: 2 }, { busy: 1, done: -2, queued: 3 }, { busy: 'x', done: 2, queued: 3 }, null, 5]) {
    assert.deepEqual(parseHeader(header(MsgType.Heartbeat, load)), { type: MsgType.Heartbeat, load: undefined })
  }
  // Only the named fields of a load are kept.
  assert.deepEqual(parseHeader(header(MsgType.Heartbeat, { busy: 0, done: 0, queued: 0, extra: 1 })), {
    type: MsgType.Heartbeat,
    load: { busy: 0, done: 0, queued: 0 },
  })
  assert.throws(() => parseHeader(header(MsgType.Tasks, 1, 1.5)), ProtocolError)
})

test('a header just under 1 MiB is read; the flat body message names count and stride', () => {
  const big = header(MsgType.Reject, 'x'.repeat((1 << 20) - 16))
  assert.ok(big.length <= 1 << 20, String(big.length))
  assert.equal(parseHeader(big).type, MsgType.Reject)
  assert.throws(() => parseFlatBody(encode([1, 2, 3, 4]), 3, 1), { message: 'body does not hold 1 entries of 3 fields' })
  assert.throws(() => parseFlatBody(undefined, 3, 1), { message: 'frame has no body' })
})

test('findUnserializable: paths through maps, sets and objects; errors, dates and regexps travel', () => {
  assert.equal(findUnserializable([new Date(0), /x/g, new Error('e'), Object.create(null) as object], 'v'), undefined)
  assert.equal(findUnserializable(new Map([[() => 0, 1]]), 'v'), 'v key is a function')
  assert.equal(findUnserializable(new Map([['k', Symbol('s')]]), 'v'), 'v.get(k) is a symbol')
  assert.equal(findUnserializable(new Set([1, () => 0]), 'v'), 'v member is a function')
  assert.equal(findUnserializable({ a: [1, { b: () => 0 }] }, 'v'), 'v.a[1].b is a function')
  assert.equal(
    findUnserializable(() => 0),
    'value is a function',
  )
  assert.equal(findUnserializable([-(2n ** 63n)], 'v'), undefined)
  assert.equal(findUnserializable([2n ** 63n - 1n], 'v'), undefined)
  assert.equal(findUnserializable([2n ** 63n], 'v'), undefined)
  assert.equal(findUnserializable([-(2n ** 63n) - 1n], 'v'), undefined)
  // ...as both encoders write them.
  for (const big of [2n ** 63n, 2n ** 64n, -(2n ** 70n), 2n ** 1000n]) {
    assert.deepEqual(decode(encode([big])), [big])
    assert.deepEqual(decode(encodeStrict([big])), [big])
  }
  class Point {}
  assert.equal(findUnserializable({ p: new Point() }, 'v'), 'v.p is an instance of Point, which would arrive as a plain object')
  // An object whose prototype has no constructor is still named as an instance.
  assert.equal(findUnserializable([Object.create(Object.create(null) as object)], 'v'), 'v[0] is an instance of a class, which would arrive as a plain object')
  // Nesting as deep as msgpackr packs (1,001 arrays) is fine, one more is not; a bad value below 64 levels is found either way.
  const nest = (n: number): unknown => (n === 0 ? 1 : [nest(n - 1)])
  assert.equal(findUnserializable(nest(64), 'v'), undefined)
  assert.equal(findUnserializable(nest(1001), 'v'), undefined)
  assert.deepEqual(decode(encodeStrict(nest(1001))), nest(1001))
  assert.equal(findUnserializable([() => 0, nest(70)], 'v'), 'v[0] is a function')
  assert.equal(findUnserializable([nest(70), () => 0], 'v'), 'v[1] is a function')
  assert.match(findUnserializable(nest(1002), 'v') ?? '', /^v(\[0\]){1001} is nested deeper than 1000 levels$/)
  assert.throws(() => assertSerializable('task "x"', [1, () => 1]), {
    name: 'SerializationError',
    message: 'task "x": args[1] is a function; msgpack cannot carry it',
  })
  assert.doesNotThrow(() => assertSerializable('task "x"', [1, 'a']))
})

test('the walk finds a bad value after good ones, in maps and objects; a hello lists names only', () => {
  assert.equal(
    findUnserializable(
      new Map<unknown, unknown>([
        [1, 1],
        [2, () => 0],
      ]),
      'v',
    ),
    'v.get(2) is a function',
  )
  assert.equal(findUnserializable({ a: 1, b: new Map([[1, () => 0]]) }, 'v'), 'v.b.get(1) is a function')
  assert.equal(findUnserializable([new Set([1]), { a: Symbol('s') }], 'v'), 'v[1].a is a symbol')
  malformed([MsgType.Hello, { ...hello, tasks: ['add', 7] }], 'malformed hello')
})

test('messageShapeProblem: at most a header and a body, and at most maxBytes in all (exactly maxBytes is fine)', () => {
  const part = (n: number) => new Uint8Array(n)
  assert.equal(messageShapeProblem([], 10), undefined)
  assert.equal(messageShapeProblem([part(4)], 10), undefined)
  assert.equal(messageShapeProblem([part(4), part(6)], 10), undefined)
  assert.equal(messageShapeProblem([part(4), part(7)], 10), '11 bytes (at most 10)')
  assert.equal(messageShapeProblem([part(11)], 10), '11 bytes (at most 10)')
  assert.equal(messageShapeProblem([part(1), part(1), part(1)], 10), '3 parts (at most 2)')
  // The part count is checked first, whatever the size.
  assert.equal(messageShapeProblem([part(1), part(1), part(100)], 10), '3 parts (at most 2)')
})

test('encodeStrict: the bytes of encode for what arrives as sent; a function or a class instance throws naming it', () => {
  const plain = { a: 1, b: [new Float32Array([1.5]), new Map([['k', new Set([2])]]), new Date(0)] }
  const bare = Object.assign(Object.create(null) as object, { x: 1 })
  assert.deepEqual(encodeStrict(plain), encode(plain))
  assert.deepEqual(encodeStrict(bare), encode(bare))
  assert.deepEqual(decode(encodeStrict(plain)), plain)
  assert.throws(() => encodeStrict({ f: () => 1 }), { name: 'TypeError', message: 'a function would not arrive as sent' })
  class Point {
    x = 1
  }
  assert.throws(() => encodeStrict([new Point()]), { name: 'TypeError', message: 'an instance of a class would not arrive as sent' })
  // A toJSON does not hide the instance.
  class Stamp {
    toJSON(): string {
      return 'stamp'
    }
  }
  assert.throws(() => encodeStrict(new Stamp()), { name: 'TypeError', message: 'an instance of a class would not arrive as sent' })
})

test('hello: key, proof and sharedCacheBytes are checked when present', () => {
  const ok = (info: Record<string, unknown>) => assert.deepEqual(parseHeader(header(MsgType.Hello, info)), { type: MsgType.Hello, info })
  const bad = (info: Record<string, unknown>) => malformed([MsgType.Hello, info], 'malformed hello')
  ok({ ...hello, key: 'k'.repeat(40), proof: 'p'.repeat(64), sharedCacheBytes: 0 })
  bad({ ...hello, key: 'k'.repeat(41) })
  bad({ ...hello, key: 7 })
  ok({ ...hello, proof: '', sharedCacheBytes: 1 << 30 })
  bad({ ...hello, proof: 'p'.repeat(65) })
  bad({ ...hello, proof: 7 })
  bad({ ...hello, sharedCacheBytes: -1 })
  bad({ ...hello, sharedCacheBytes: 1.5 })
  bad({ ...hello, sharedCacheBytes: '1' })
  ok({ ...hello, maxFrameBytes: 1 << 20 })
  bad({ ...hello, maxFrameBytes: -1 })
  bad({ ...hello, maxFrameBytes: '1' })
})

test('Put and Drop headers: a shared hash, a known kind and a size', () => {
  const h = 'A'.repeat(42) + '_'
  const h2 = 'z'.repeat(42) + '-'
  for (const kind of SHARED_KINDS) {
    assert.deepEqual(parseHeader(header(MsgType.Put, h, kind, 0)), { type: MsgType.Put, hash: h, kind, size: 0 })
  }
  assert.deepEqual(parseHeader(header(MsgType.Put, h, 'Float64Array', 1024)), { type: MsgType.Put, hash: h, kind: 'Float64Array', size: 1024 })
  malformed([MsgType.Put, 'A'.repeat(42), 'msgpack', 1], 'malformed put')
  malformed([MsgType.Put, 'A'.repeat(44), 'msgpack', 1], 'malformed put')
  malformed([MsgType.Put, h, 'Array', 1], 'malformed put')
  malformed([MsgType.Put, h, 'msgpack', -1], 'malformed put')
  malformed([MsgType.Put, h, 'msgpack', 1.5], 'malformed put')
  malformed([MsgType.Put, h, 'msgpack'], 'malformed put')

  assert.deepEqual(parseHeader(header(MsgType.Drop, [])), { type: MsgType.Drop, hashes: [] })
  assert.deepEqual(parseHeader(header(MsgType.Drop, [h, h2])), { type: MsgType.Drop, hashes: [h, h2] })
  // 100,000 hashes would not fit in a header of 1 MiB: the header's own bound refuses a longer list first.
  assert.throws(() => parseHeader(header(MsgType.Drop, new Array<string>(100_001).fill(h))), {
    code: 'ERR_PROTOCOL',
    message: /^header of \d+ bytes exceeds 1 MiB$/,
  })
  malformed([MsgType.Drop, h], 'malformed drop')
  malformed([MsgType.Drop, [h, 'short']], 'malformed drop')
  malformed([MsgType.Drop, ['short', h]], 'malformed drop')
})

test('Fetch and Unavailable headers, and the shared list of a task frame: shared hashes, a known code, a message', () => {
  const h = 'A'.repeat(42) + '_'
  assert.deepEqual(parseHeader(header(MsgType.Fetch, [h])), { type: MsgType.Fetch, hashes: [h] })
  malformed([MsgType.Fetch, []], 'malformed fetch')
  malformed([MsgType.Fetch, ['short']], 'malformed fetch')
  malformed([MsgType.Fetch, h], 'malformed fetch')
  for (const code of SHARED_UNAVAILABLE_CODES) {
    assert.deepEqual(parseHeader(header(MsgType.Unavailable, h, code, 'why')), { type: MsgType.Unavailable, hash: h, code, message: 'why' })
  }
  malformed([MsgType.Unavailable, h, 'ERR_SHARED_IN_USE', 'why'], 'malformed unavailable')
  malformed([MsgType.Unavailable, 'short', 'ERR_SHARED_RELEASED', 'why'], 'malformed unavailable')
  malformed([MsgType.Unavailable, h, 'ERR_SHARED_RELEASED', 'x'.repeat(4097)], 'malformed unavailable')
  malformed([MsgType.Unavailable, h, 'ERR_SHARED_RELEASED'], 'malformed unavailable')
  malformed([MsgType.Tasks, 1, null, 5, h], 'malformed task frame header')
  malformed([MsgType.Tasks, 1, null, 5, ['short']], 'malformed task frame header')
})
