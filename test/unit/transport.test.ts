import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { FrameAuth, packParts, TAG_BYTES, unpackParts } from '../../lib/transport/frames.js'
import { maskUrl, resolveTransportOptions, TRANSPORT_DEFAULTS } from '../../lib/transport/options.js'
import { ProtocolError } from '../../lib/errors.js'

test('brokered messages carry their parts intact', () => {
  const parts = [Buffer.from('agent-1'), randomBytes(17), Buffer.alloc(0), randomBytes(70_000)]
  const back = unpackParts(packParts(parts))
  assert.equal(back.length, parts.length)
  for (let i = 0; i < parts.length; i++) assert.deepEqual(Buffer.from(back[i]!), parts[i])
  assert.deepEqual(unpackParts(packParts([])), [])
  assert.throws(() => packParts(Array.from({ length: 9 }, () => Buffer.alloc(1))), RangeError)
})

test('an authenticated message opens only with its key, cluster, direction and recipient, and still starts with its part count (Redis marks a redelivery with 0xff)', () => {
  const key = randomBytes(32)
  const auth = new FrameAuth(key, 'c1', 'to-agent')
  for (let i = 0; i < 2000; i++) {
    const parts = [randomBytes(i % 50), randomBytes(3)]
    const sealed = auth.seal(parts, 'a1')
    assert.equal(sealed[0], 2, 'the first byte is the part count')
    assert.equal(sealed.byteLength, packParts(parts).byteLength + TAG_BYTES)
    assert.deepEqual(
      unpackParts(auth.open(sealed, 'a1')!).map((p) => Buffer.from(p)),
      parts,
    )
  }
  const sealed = auth.seal([Buffer.from('x')], 'a1')
  assert.equal(auth.open(sealed, 'a2'), undefined, 'another recipient')
  assert.equal(new FrameAuth(key, 'c2', 'to-agent').open(sealed, 'a1'), undefined, 'another cluster')
  assert.equal(new FrameAuth(key, 'c1', 'task').open(sealed, 'a1'), undefined, 'another direction')
  assert.equal(new FrameAuth(randomBytes(32), 'c1', 'to-agent').open(sealed, 'a1'), undefined, 'another key')
  const flipped = Buffer.from(sealed)
  flipped[3]! ^= 1
  assert.equal(auth.open(flipped, 'a1'), undefined, 'a changed byte')
  assert.equal(auth.open(sealed.subarray(0, TAG_BYTES - 1), 'a1'), undefined, 'shorter than a tag')
})

test('malformed brokered messages are ProtocolErrors, never a crash or an overrun', () => {
  const good = packParts([Buffer.from('abc'), Buffer.from('defg')])
  const cases: [Uint8Array, RegExp][] = [
    [Buffer.alloc(0), /empty/],
    [Buffer.from([200]), /claims 200 parts/],
    [good.subarray(0, 3), /truncated/],
    [good.subarray(0, good.length - 1), /overruns/],
    [Buffer.concat([good, Buffer.from([0])]), /trailing/],
    [Buffer.from([1, 0xff, 0xff, 0xff, 0xff, 1]), /overruns/],
  ]
  for (const [bytes, re] of cases)
    assert.throws(
      () => unpackParts(bytes),
      (e: unknown) => e instanceof ProtocolError && re.test(e.message),
    )
  for (let i = 0; i < 2000; i++) {
    try {
      unpackParts(randomBytes(i % 40))
    } catch (e) {
      assert.ok(e instanceof ProtocolError)
    }
  }
})

test('URLs are printed with their password masked', () => {
  assert.equal(maskUrl('amqp://guest:guest@127.0.0.1:5672'), 'amqp://guest:***@127.0.0.1:5672')
  assert.equal(maskUrl('redis://:pw@h:1/0'), 'redis://:***@h:1/0')
  assert.equal(maskUrl('redis://h:1'), 'redis://h:1')
  assert.equal(maskUrl('redis://u:p@[::1'), 'redis:… (unparsable)')
  assert.equal(maskUrl('garbage with secret'), '(unparsable URL)')
})

test('transport options: defaults, and bad fields named', () => {
  assert.deepEqual(resolveTransportOptions({}), { ...TRANSPORT_DEFAULTS, clusterId: undefined, brokerSecret: undefined, brokerSecretFile: undefined })
  assert.equal(resolveTransportOptions({ transport: 'amqp+redis', clusterId: 'a.b-c_1' }).clusterId, 'a.b-c_1')
  const cases: [object, RegExp][] = [
    [{ transport: 'nats' }, /options\.transport must be one of/],
    [{ redisUrl: 'amqp://h:1' }, /options\.redisUrl must be a redis: or rediss: URL/],
    [{ redisUrl: '' }, /options\.redisUrl/],
    [
      { redisUrl: 'redis://:pw@h:1/abc' },
      /options\.redisUrl's path must be a database number \(redis:\/\/host:port\/N\), got "\/abc" in "redis:\/\/:\*\*\*@h:1\/abc"/,
    ],
    [{ redisUrl: 'redis://h:1/1/2' }, /options\.redisUrl's path/],
    [{ amqpUrl: 'not a url' }, /options\.amqpUrl/],
    [{ amqpUrl: 42 }, /options\.amqpUrl/],
    [{ clusterId: '' }, /options\.clusterId must be 1 to 64/],
    [{ clusterId: 'x'.repeat(65) }, /options\.clusterId/],
    [{ clusterId: 'a:b' }, /options\.clusterId/],
    [{ clusterId: 7 }, /options\.clusterId/],
    [{ brokerSecret: '' }, /options\.brokerSecret must be a non-empty string, got string/],
    [{ brokerSecretFile: 3 }, /options\.brokerSecretFile must be a non-empty string, got number/],
  ]
  for (const [o, re] of cases) assert.throws(() => resolveTransportOptions(o), re)
  for (const url of ['redis://h:1', 'redis://h:1/', 'redis://h:1/7']) assert.equal(resolveTransportOptions({ redisUrl: url }).redisUrl, url)
})
