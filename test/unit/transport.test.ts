import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { packParts, unpackParts } from '../../lib/transport/frames.js'
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
  assert.deepEqual(resolveTransportOptions({}), { ...TRANSPORT_DEFAULTS, clusterId: undefined })
  assert.equal(resolveTransportOptions({ transport: 'amqp+redis', clusterId: 'a.b-c_1' }).clusterId, 'a.b-c_1')
  const cases: [object, RegExp][] = [
    [{ transport: 'nats' }, /options\.transport must be one of/],
    [{ redisUrl: 'amqp://h:1' }, /options\.redisUrl must be a redis: or rediss: URL/],
    [{ redisUrl: '' }, /options\.redisUrl/],
    [{ amqpUrl: 'not a url' }, /options\.amqpUrl/],
    [{ amqpUrl: 42 }, /options\.amqpUrl/],
    [{ clusterId: '' }, /options\.clusterId must be 1 to 64/],
    [{ clusterId: 'x'.repeat(65) }, /options\.clusterId/],
    [{ clusterId: 'a:b' }, /options\.clusterId/],
    [{ clusterId: 7 }, /options\.clusterId/],
  ]
  for (const [o, re] of cases) assert.throws(() => resolveTransportOptions(o), re)
})
