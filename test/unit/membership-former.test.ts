/**
 * An agent the driver took out, coming back under the registration it had:
 * it still holds work the driver gave to others, so it is not welcomed.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MsgType } from '../../lib/protocol/messages.js'
import { hello, membership } from './fixtures.js'

test('a Hello under the registration of a node taken out gets DriverBye; under a new registration the agent joins again', () => {
  const { m, sent, joined, bad } = membership()
  m.hello('a', hello('a', { registration: 'r1' }))
  m.remove(joined[0]!, 'lost', 'no heartbeat')
  sent.length = 0
  m.hello('a', hello('a', { registration: 'r1' }))
  assert.deepEqual(sent, [{ peer: 'a', h: { type: MsgType.DriverBye } }])
  assert.equal(m.size, 0)
  assert.equal(joined.length, 1)
  sent.length = 0
  m.hello('a', hello('a', { registration: 'r2' }))
  assert.equal(sent[0]?.h.type, MsgType.Welcome)
  assert.equal(joined.length, 2)
  assert.equal(m.size, 1)
  assert.equal(bad(), 0, 'no bad frame')
})

test('every node taken out is remembered, not only the last: each gets DriverBye under its old registration', () => {
  const { m, sent, joined, bad } = membership()
  m.hello('a', hello('a', { registration: 'ra' }))
  m.hello('b', hello('b', { registration: 'rb' }))
  m.remove(joined[0]!, 'lost', 'no heartbeat')
  m.remove(joined[1]!, 'left')
  sent.length = 0
  m.hello('a', hello('a', { registration: 'ra' }))
  m.hello('b', hello('b', { registration: 'rb' }))
  assert.deepEqual(sent, [
    { peer: 'a', h: { type: MsgType.DriverBye } },
    { peer: 'b', h: { type: MsgType.DriverBye } },
  ])
  assert.equal(m.size, 0)
  assert.equal(bad(), 0, 'no bad frame')
})
