import { test } from 'node:test'
import assert from 'node:assert/strict'
import { decode, encode, findUnserializable, header, parseHeader } from '../../lib/protocol/codec.js'
import { MsgType } from '../../lib/protocol/messages.js'
import { SharedRef, setSharedResolver, takeWrittenRefs } from '../../lib/protocol/shared-ref.js'
import { ProtocolError, SerializationError } from '../../lib/errors.js'

const HASH = 'A'.repeat(42) + '_'
const owner = { release: async () => {} }

test('a handle travels as its hash and size, is recorded when written, and decodes to what the resolver holds', (t) => {
  t.after(() => setSharedResolver(undefined))
  const ref = new SharedRef(HASH, 8, owner)
  takeWrittenRefs()
  const bytes = encode([1, { obs: ref }, ref])
  assert.deepEqual(
    takeWrittenRefs().map((r) => r.hash),
    [HASH, HASH],
  )
  assert.deepEqual(takeWrittenRefs(), [], 'the list starts again')
  assert.ok(bytes.length < 120, `${bytes.length} bytes`)
  setSharedResolver((hash, size) => (hash === HASH && size === 8 ? 'the value' : undefined))
  assert.deepEqual(decode(bytes), [1, { obs: 'the value' }, 'the value'])
  setSharedResolver(() => undefined)
  assert.throws(
    () => decode(bytes),
    (err: unknown) => err instanceof ProtocolError && /is not held on this node/.test(err.message),
  )
  assert.equal(findUnserializable([ref], 'args'), undefined, 'a handle is carriable')
})

test('a released handle cannot be encoded', async () => {
  const ref = new SharedRef(HASH, 8, owner)
  await ref.release()
  assert.equal(ref.released, true)
  assert.throws(
    () => encode([ref]),
    (err: unknown) => err instanceof SerializationError && /was released/.test(err.message),
  )
  takeWrittenRefs()
})

test('Put and Drop headers are checked field by field', () => {
  assert.deepEqual(parseHeader(header(MsgType.Put, HASH, 'Float64Array', 16)), { type: MsgType.Put, hash: HASH, kind: 'Float64Array', size: 16 })
  assert.deepEqual(parseHeader(header(MsgType.Drop, [HASH])), { type: MsgType.Drop, hashes: [HASH] })
  // A ZeroMQ task frame lists its values with no frame number.
  assert.deepEqual(parseHeader(header(MsgType.Tasks, 2, null, null, [HASH])), {
    type: MsgType.Tasks,
    count: 2,
    timeoutMs: undefined,
    frameId: undefined,
    shared: [HASH],
  })
  for (const bad of [
    header(MsgType.Tasks, 2, null, null, ['short']),
    header(MsgType.Put, 'short', 'msgpack', 1),
    header(MsgType.Put, HASH, 'Date', 1),
    header(MsgType.Put, HASH, 'msgpack', -1),
    header(MsgType.Put, HASH, 'msgpack'),
    header(MsgType.Drop, HASH),
    header(MsgType.Drop, [HASH, 7]),
  ]) {
    assert.throws(() => parseHeader(bad), ProtocolError)
  }
  const hello = { agentId: 'a', threads: 1, pid: 1, host: 'h', version: '1', tasks: [], actors: [], window: 1 }
  assert.equal(parseHeader(header(MsgType.Hello, { ...hello, sharedCacheBytes: 1024 })).type, MsgType.Hello)
  assert.throws(() => parseHeader(header(MsgType.Hello, { ...hello, sharedCacheBytes: -1 })), ProtocolError)
})
