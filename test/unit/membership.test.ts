/**
 * Membership without sockets: Hellos of every kind, strangers, heartbeats and
 * loss on a clock the test moves by hand.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ClusterNode } from '../../lib/driver/membership.js'
import { MsgType } from '../../lib/protocol/messages.js'
import { hello, membership } from './fixtures.js'

test('hello: the peer gets a Welcome with its id, the heartbeat and the session; the node joins', () => {
  const { m, clock, sent, joined, removed } = membership({ localIds: ['a'] })
  m.hello('a', hello('a', { registration: 'r1' }))
  assert.deepEqual(sent, [{ peer: 'a', h: { type: MsgType.Welcome, info: { nodeId: 'a', heartbeatMs: 100, session: 'session-xyz' } } }])
  assert.equal(joined.length, 1)
  const node = joined[0]!
  assert.equal(m.get('a'), node)
  assert.equal(m.has(node), true)
  assert.equal(m.size, 1)
  assert.deepEqual([...m], [node])
  assert.equal(node.nodeId, 'a')
  assert.equal(node.free, 8)
  assert.deepEqual(removed, [])
  clock.t += 250
  assert.deepEqual(m.list(), [
    {
      id: 'a',
      host: 'host-1',
      pid: 100,
      threads: 2,
      version: '1.2.3',
      state: 'up',
      local: true,
      window: 8,
      inFlight: 0,
      tasksDone: 0,
      busyThreads: 0,
      actors: 0,
      heartbeatAgeMs: 250,
    },
  ])
})

test('hello whose agent id differs from its socket identity: Reject, badFrame, nobody joins', () => {
  const { m, sent, joined, bad } = membership()
  m.hello('peer-1', hello('someone-else'))
  assert.equal(bad(), 1)
  assert.equal(sent.length, 1)
  assert.equal(sent[0]!.peer, 'peer-1')
  assert.deepEqual(sent[0]!.h, { type: MsgType.Reject, reason: 'agent id someone-else does not match its socket identity' })
  assert.deepEqual(joined, [])
  assert.equal(m.size, 0)
  assert.equal(m.get('peer-1'), undefined)
})

test('a Hello repeated with the same registration is welcomed again and changes nothing else', () => {
  const { m, clock, sent, joined, removed } = membership()
  m.hello('a', hello('a', { registration: 'r1' }))
  const node = joined[0]!
  node.inFlight = 3
  clock.t += 400
  m.hello('a', hello('a', { registration: 'r1' }))
  assert.deepEqual(
    sent.map((s) => s.h.type),
    [MsgType.Welcome, MsgType.Welcome],
  )
  assert.equal(joined.length, 1)
  assert.deepEqual(removed, [])
  assert.equal(m.get('a'), node)
  assert.equal(node.inFlight, 3)
  assert.equal(node.lastSeen, clock.t, 'the repeat counts as hearing from it')
  assert.equal(m.nodesLost, 0)
})

test('a Hello with a new registration replaces the node: the old one is removed as lost', () => {
  const { m, sent, joined, removed } = membership()
  m.hello('a', hello('a', { registration: 'r1' }))
  const old = joined[0]!
  m.hello('a', hello('a', { registration: 'r2', window: 16 }))
  assert.equal(joined.length, 2)
  const fresh = joined[1]!
  assert.notEqual(fresh, old)
  assert.equal(removed.length, 1)
  assert.equal(removed[0]!.node, old)
  assert.equal(removed[0]!.how, 'lost')
  assert.match(removed[0]!.reason, /registered again/)
  assert.equal(m.nodesLost, 1)
  assert.equal(m.get('a'), fresh)
  assert.equal(m.has(old), false)
  assert.equal(m.has(fresh), true)
  assert.equal(fresh.window, 16)
  assert.equal(m.size, 1)
  assert.deepEqual(
    sent.map((s) => s.h.type),
    [MsgType.Welcome, MsgType.Welcome],
  )
  // The replaced node cannot be removed again.
  assert.equal(m.remove(old, 'lost', 'late'), false)
  assert.equal(removed.length, 1)
})

test('a Hello without registration from a known peer is a re-registration (older agents)', () => {
  const { m, joined, removed } = membership()
  m.hello('a', hello('a'))
  m.hello('a', hello('a'))
  assert.equal(joined.length, 2)
  assert.equal(removed.length, 1)
  assert.equal(removed[0]!.how, 'lost')
})

test('heard(): a member is marked alive; a stranger is told DriverBye at most once a second', () => {
  const { m, clock, sent, joined, types } = membership()
  m.hello('a', hello('a'))
  sent.length = 0
  clock.t += 300
  assert.equal(m.heard('a'), joined[0])
  assert.equal(joined[0]!.lastSeen, clock.t)
  assert.equal(sent.length, 0)

  assert.equal(m.heard('stranger'), undefined)
  assert.deepEqual(sent, [{ peer: 'stranger', h: { type: MsgType.DriverBye } }])
  clock.t += 500
  assert.equal(m.heard('stranger'), undefined)
  clock.t += 500 // exactly a second later: still quiet
  assert.equal(m.heard('stranger'), undefined)
  assert.equal(sent.length, 1)
  // Another stranger has its own allowance.
  assert.equal(m.heard('other'), undefined)
  assert.equal(sent.length, 2)
  clock.t += 1
  assert.equal(m.heard('stranger'), undefined)
  assert.deepEqual(types(), [
    ['stranger', MsgType.DriverBye],
    ['other', MsgType.DriverBye],
    ['stranger', MsgType.DriverBye],
  ])
  assert.equal(m.size, 1, 'strangers do not join')
})

test('heard(): a removed node is a stranger again', () => {
  const { m, sent, joined } = membership()
  m.hello('a', hello('a'))
  m.remove(joined[0]!, 'left')
  sent.length = 0
  assert.equal(m.heard('a'), undefined)
  assert.deepEqual(sent, [{ peer: 'a', h: { type: MsgType.DriverBye } }])
})

test('tick(): a node silent past nodeTimeoutMs is lost; live nodes get a Heartbeat', () => {
  const { m, clock, sent, joined, removed, types } = membership({ heartbeatMs: 100, nodeTimeoutMs: 500 })
  m.hello('live', hello('live'))
  m.hello('silent', hello('silent'))
  const [live, silent] = joined as [ClusterNode, ClusterNode]
  const joinedAt = clock.t
  sent.length = 0
  for (let i = 1; i <= 5; i++) {
    clock.t = joinedAt + 100 * i
    m.heard('live')
    m.tick()
  }
  // 500 ms of silence is not yet past the timeout.
  assert.deepEqual(removed, [])
  assert.equal(types().filter(([p]) => p === 'silent').length, 5)
  sent.length = 0
  clock.t = joinedAt + 600
  m.heard('live')
  m.tick()
  assert.equal(removed.length, 1)
  assert.deepEqual(removed[0], { node: silent, how: 'lost', reason: 'no heartbeat for 600 ms' })
  assert.equal(m.has(silent), false)
  assert.equal(m.has(live), true)
  assert.equal(m.nodesLost, 1)
  assert.deepEqual(types(), [['live', MsgType.Heartbeat]])
  assert.deepEqual(sent[0]!.h, { type: MsgType.Heartbeat, load: undefined })
})

test('tick(): after a stall of the driver no verdict is passed, and silence is counted afresh', () => {
  const { m, clock, sent, joined, removed, types } = membership({ heartbeatMs: 100, nodeTimeoutMs: 250 })
  m.hello('a', hello('a'))
  const a = joined[0]!
  const t0 = clock.t
  clock.t = t0 + 100
  m.tick()
  sent.length = 0
  // The event loop was blocked for 5 s: the agent's heartbeats are still unread.
  clock.t = t0 + 5100
  m.tick()
  assert.deepEqual(removed, [])
  assert.equal(a.lastSeen, clock.t)
  assert.deepEqual(types(), [['a', MsgType.Heartbeat]])
  // Regular ticks again: the silence counts from the stall.
  clock.t = t0 + 5200
  m.tick()
  clock.t = t0 + 5300
  m.tick()
  assert.deepEqual(removed, [])
  clock.t = t0 + 5400
  m.tick()
  assert.equal(removed.length, 1)
  assert.deepEqual(removed[0], { node: a, how: 'lost', reason: 'no heartbeat for 300 ms' })
})

test('tick(excused): while the broker is being reconnected no verdict is passed; silence counts afresh after', () => {
  const { m, clock, joined, removed } = membership({ heartbeatMs: 100, nodeTimeoutMs: 250 })
  m.hello('a', hello('a'))
  const a = joined[0]!
  const t0 = clock.t
  // Regular ticks for 2 s, the agent unheard: excused, no verdict.
  for (let i = 1; i <= 20; i++) {
    clock.t = t0 + 100 * i
    m.tick(true)
  }
  assert.deepEqual(removed, [])
  assert.equal(a.lastSeen, t0 + 2000)
  clock.t = t0 + 2200
  m.tick()
  assert.deepEqual(removed, [])
  clock.t = t0 + 2300
  m.tick()
  assert.deepEqual(removed[0], { node: a, how: 'lost', reason: 'no heartbeat for 300 ms' })
})

test('tick(): a gap of exactly twice the heartbeat is not a stall', () => {
  const { m, clock, joined, removed } = membership({ heartbeatMs: 100, nodeTimeoutMs: 150 })
  m.hello('a', hello('a'))
  const t0 = clock.t
  clock.t = t0 + 200
  m.tick()
  assert.equal(removed.length, 1)
  assert.equal(removed[0]!.node, joined[0])
  assert.equal(removed[0]!.reason, 'no heartbeat for 200 ms')
})

test('tick(): the first tick counts from construction, so a late first tick is a stall', () => {
  const { m, clock, removed } = membership({ heartbeatMs: 100, nodeTimeoutMs: 150 })
  m.hello('a', hello('a'))
  clock.t += 201
  m.tick()
  assert.deepEqual(removed, [])
})

test('remove(): once only; nodesLost counts losses, not leaves', () => {
  const { m, joined, removed } = membership()
  m.hello('a', hello('a'))
  m.hello('b', hello('b'))
  m.hello('c', hello('c'))
  const [a, b, c] = joined as [ClusterNode, ClusterNode, ClusterNode]
  assert.equal(m.remove(a, 'left'), true)
  assert.equal(m.remove(a, 'left'), false)
  assert.equal(m.remove(a, 'lost', 'again'), false)
  assert.equal(m.remove(b, 'lost', 'connection reset'), true)
  assert.equal(m.remove(c, 'lost'), true)
  assert.deepEqual(
    removed.map((r) => [r.node.nodeId, r.how, r.reason]),
    [
      ['a', 'left', 'left'],
      ['b', 'lost', 'connection reset'],
      ['c', 'lost', 'lost'],
    ],
  )
  assert.equal(m.nodesLost, 2)
  assert.equal(m.size, 0)
})

test('leastLoaded(): fewest actors per thread among the nodes that are up', () => {
  const { m, joined } = membership()
  assert.equal(m.leastLoaded(), undefined)
  m.hello('a', hello('a', { threads: 4 }))
  m.hello('b', hello('b', { threads: 1 }))
  m.hello('c', hello('c', { threads: 2 }))
  const [a, b, c] = joined as [ClusterNode, ClusterNode, ClusterNode]
  a.actors = 1 // 0.25
  b.actors = 0 // 0, but leaving
  b.state = 'leaving'
  c.actors = 1 // 0.5
  assert.equal(m.leastLoaded(), a)
  a.actors = 3 // 0.75
  assert.equal(m.leastLoaded(), c)
  b.state = 'up'
  assert.equal(m.leastLoaded(), b)
  b.state = 'leaving'
  a.state = 'leaving'
  c.state = 'leaving'
  assert.equal(m.leastLoaded(), undefined)
})

test('offered(): the union of what the nodes offer; undefined with no node', () => {
  const { m } = membership()
  assert.equal(
    m.offered((n) => n.tasks),
    undefined,
  )
  m.hello('a', hello('a', { tasks: ['x', 'y'], actors: ['A'] }))
  m.hello('b', hello('b', { tasks: ['y', 'z'], actors: [] }))
  assert.deepEqual([...m.offered((n) => n.tasks)!].sort(), ['x', 'y', 'z'])
  assert.deepEqual([...m.offered((n) => n.actorClasses)!], ['A'])
})

test('clear(): DriverBye to the remote nodes only, and the list is emptied', () => {
  const { m, sent } = membership({ localIds: ['local-1'] })
  m.hello('local-1', hello('local-1'))
  m.hello('remote-1', hello('remote-1'))
  m.hello('remote-2', hello('remote-2'))
  assert.deepEqual(
    m.list().map((n) => [n.id, n.local]),
    [
      ['local-1', true],
      ['remote-1', false],
      ['remote-2', false],
    ],
  )
  sent.length = 0
  m.clear()
  assert.deepEqual(
    sent.map((s) => [s.peer, s.h.type]),
    [
      ['remote-1', MsgType.DriverBye],
      ['remote-2', MsgType.DriverBye],
    ],
  )
  assert.equal(m.size, 0)
  assert.deepEqual(m.list(), [])
})

test('ClusterNode: free credit is the window less what is in flight, none while leaving', () => {
  const n = new ClusterNode('p', hello('p', { window: 10 }), false, 0)
  n.inFlight = 4
  assert.equal(n.free, 6)
  n.window = 2 // a Credit frame shrank the window below what is in flight
  assert.ok(n.free <= 0)
  n.state = 'leaving'
  n.inFlight = 0
  assert.equal(n.free, 0)
  n.taskLeft()
  assert.equal(n.inFlight, 0, 'credit comes back with Results frames, not per task')
})

test('wasMember(): a removed node until it joins again; never a stranger or a member', () => {
  const { m, joined } = membership()
  assert.equal(m.wasMember('a'), false)
  m.hello('a', hello('a'))
  assert.equal(m.wasMember('a'), false)
  m.remove(joined[0]!, 'lost')
  assert.equal(m.wasMember('a'), true)
  assert.equal(m.wasMember('b'), false)
  m.hello('a', hello('a'))
  assert.equal(m.wasMember('a'), false)
})

test('with keys: an agent id is bound to the key that registered it first; another key, or none, is refused; the same key over a new connection replaces the node', () => {
  // The test's "proof" is the key itself, "none" proves nothing.
  const { m, sent, joined, removed, bad } = membership({ verifyKey: (_peer, i) => (i.key === 'none' ? undefined : i.key) })
  const secret = (c: string) => c.repeat(32)
  m.hello(`a/${secret('1')}`, hello('a', { registration: 'r1', key: 'K1' }))
  assert.equal(joined.length, 1)
  m.hello(`a/${secret('2')}`, hello('a', { registration: 'r2', key: 'K2' }))
  m.hello(`a/${secret('3')}`, hello('a', { registration: 'r3', key: 'none' }))
  // A peer id that is not the agent id (with or without its secret part) is a bad frame, as before.
  m.hello(`b/${secret('4')}`, hello('a', { registration: 'r4', key: 'K1' }))
  assert.deepEqual(
    sent.slice(1).map((s) => [s.peer, s.h]),
    [
      [`a/${secret('2')}`, { type: MsgType.Reject, reason: 'agent id a belongs to another agent key' }],
      [`a/${secret('3')}`, { type: MsgType.Reject, reason: 'agent a did not prove its CURVE key' }],
      [`b/${secret('4')}`, { type: MsgType.Reject, reason: 'agent id a does not match its socket identity' }],
    ],
  )
  assert.equal(m.keysRefused, 2)
  assert.equal(bad(), 1)
  assert.deepEqual([joined.length, removed.length, m.size], [1, 0, 1])
  // The owner of K1, over a new connection: the old node goes (its tasks are requeued), the new one joins.
  m.hello(`a/${secret('5')}`, hello('a', { registration: 'r5', key: 'K1' }))
  assert.deepEqual(
    removed.map((r) => [r.node.peer, r.how, r.reason]),
    [[`a/${secret('1')}`, 'lost', 'it registered again over a new connection']],
  )
  assert.deepEqual([joined.length, m.size, m.get(`a/${secret('5')}`)?.nodeId], [2, 1, 'a'])
  // The binding outlives the node: gone, the id still belongs to K1.
  m.remove(m.get(`a/${secret('5')}`)!, 'left')
  m.hello(`a/${secret('6')}`, hello('a', { registration: 'r6', key: 'K2' }))
  assert.deepEqual(sent.at(-1), { peer: `a/${secret('6')}`, h: { type: MsgType.Reject, reason: 'agent id a belongs to another agent key' } })
  assert.equal(m.size, 0)
})
