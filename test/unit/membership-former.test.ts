/**
 * An agent the driver took out, coming back under the registration it had:
 * it still holds work the driver gave to others, so it is not welcomed.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Membership, type ClusterNode } from '../../lib/driver/membership.js'
import { parseHeader, type Header } from '../../lib/protocol/codec.js'
import { MsgType, type HelloInfo } from '../../lib/protocol/messages.js'

function info(agentId: string, registration: string): HelloInfo {
  return { agentId, threads: 1, pid: 1, host: 'h', version: '1.0.0', tasks: ['add'], actors: [], window: 4, registration }
}

test('a Hello under the registration of a node taken out gets DriverBye; under a new registration the agent joins again', () => {
  const sent: { peer: string; h: Header }[] = []
  const joined: ClusterNode[] = []
  const m = new Membership(
    { heartbeatMs: 100, nodeTimeoutMs: 500, session: 's', localIds: new Set(), now: () => 0 },
    {
      send: (peer, parts) => sent.push({ peer, h: parseHeader(parts[0]) }),
      joined: (node) => joined.push(node),
      removed: () => {},
      badFrame: () => assert.fail('no bad frame'),
    },
  )
  m.hello('a', info('a', 'r1'))
  m.remove(joined[0]!, 'lost', 'no heartbeat')
  sent.length = 0
  m.hello('a', info('a', 'r1'))
  assert.deepEqual(sent, [{ peer: 'a', h: { type: MsgType.DriverBye } }])
  assert.equal(m.size, 0)
  assert.equal(joined.length, 1)
  sent.length = 0
  m.hello('a', info('a', 'r2'))
  assert.equal(sent[0]?.h.type, MsgType.Welcome)
  assert.equal(joined.length, 2)
  assert.equal(m.size, 1)
})

test('every node taken out is remembered, not only the last: each gets DriverBye under its old registration', () => {
  const sent: { peer: string; h: Header }[] = []
  const joined: ClusterNode[] = []
  const m = new Membership(
    { heartbeatMs: 100, nodeTimeoutMs: 500, session: 's', localIds: new Set(), now: () => 0 },
    {
      send: (peer, parts) => sent.push({ peer, h: parseHeader(parts[0]) }),
      joined: (node) => joined.push(node),
      removed: () => {},
      badFrame: () => assert.fail('no bad frame'),
    },
  )
  m.hello('a', info('a', 'ra'))
  m.hello('b', info('b', 'rb'))
  m.remove(joined[0]!, 'lost', 'no heartbeat')
  m.remove(joined[1]!, 'left')
  sent.length = 0
  m.hello('a', info('a', 'ra'))
  m.hello('b', info('b', 'rb'))
  assert.deepEqual(sent, [
    { peer: 'a', h: { type: MsgType.DriverBye } },
    { peer: 'b', h: { type: MsgType.DriverBye } },
  ])
  assert.equal(m.size, 0)
})
