/** Which of a thread's requests an agent keeps on its node (lib/actors/routing.ts). */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { RequestWriter } from '../../lib/protocol/bodies.js'
import { decode, encode } from '../../lib/protocol/codec.js'
import { ContextOp } from '../../lib/protocol/messages.js'
import { SharedRef, takeWrittenRefs, withHandlesKept } from '../../lib/protocol/shared-ref.js'
import { isActorRef } from '../../lib/protocol/actor-ref.js'
import { splitRequests, type Placement } from '../../lib/actors/routing.js'
import { makeActorRef } from '../../lib/driver/proxies.js'

const HASH = 'a'.repeat(43)

function placement(here: string[], held: string[] = []): Placement & { stopped: string[] } {
  const placed = new Set(here)
  const stopped: string[] = []
  return {
    stopped,
    here: (id) => placed.has(id) && !stopped.includes(id),
    viaDriver: (id) => stopped.push(id),
    holds: (hash) => held.includes(hash),
  }
}

function body(entries: [number, number, unknown][]): Uint8Array {
  const w = new RequestWriter()
  for (const [reqId, op, args] of entries) w.addRaw(reqId, op, args)
  return w.take()
}

test('asks and tells to placed actors stay, in order; everything else goes to the driver in order', () => {
  const b = body([
    [1, ContextOp.Tell, ['here', 'm', [1]]],
    [2, ContextOp.Ask, ['there', 'm', [2]]],
    [3, ContextOp.Ask, ['here', 'n', [3]]],
    [4, ContextOp.Call, ['task', [4], null]],
    [5, ContextOp.Spawn, ['Node', [], null]],
  ])
  const split = splitRequests(9, b, 5, placement(['here']))!
  assert.deepEqual(split.local, [
    { thread: 9, reqId: 1, tell: true, actorId: 'here', method: 'm', args: [1] },
    { thread: 9, reqId: 3, tell: false, actorId: 'here', method: 'n', args: [3] },
  ])
  assert.equal(split.rest!.count, 3)
  assert.deepEqual(decode(split.rest!.body), [
    2,
    ContextOp.Ask,
    ['there', 'm', [2]],
    4,
    ContextOp.Call,
    ['task', [4], null],
    5,
    ContextOp.Spawn,
    ['Node', [], null],
  ])
})

test('nothing placed here, or a body it cannot read: undefined (the body goes to the driver as it came)', () => {
  assert.equal(splitRequests(1, body([[1, ContextOp.Ask, ['there', 'm', []]]]), 1, placement(['here'])), undefined)
  assert.equal(splitRequests(1, encode([1, 2]), 1, placement(['here'])), undefined)
  assert.equal(splitRequests(1, new Uint8Array([0xc1]), 1, placement(['here'])), undefined)
})

test('everything stays: no rest', () => {
  const split = splitRequests(1, body([[1, ContextOp.Ask, ['here', 'm', []]]]), 1, placement(['here']))!
  assert.equal(split.local.length, 1)
  assert.equal(split.rest, undefined)
})

test('a malformed ask or tell to a placed actor goes to the driver, which says what is wrong', () => {
  const bad: [number, number, unknown][] = [
    [-1, ContextOp.Ask, ['here', 'm', []]],
    [1.5, ContextOp.Tell, ['here', 'm', []]],
    [2, ContextOp.Ask, ['here', 'then', []]],
    [3, ContextOp.Ask, ['here', '', []]],
    [4, ContextOp.Ask, ['here', 7, []]],
    [5, ContextOp.Ask, ['here', 'm', 'x']],
    [6, ContextOp.Ask, ['here', 'm', [], 'extra']],
    [7, ContextOp.Ask, [7, 'm', []]],
    [8, ContextOp.Ask, 'here'],
    [9, 99, ['here', 'm', []]],
  ]
  const split = splitRequests(1, body([...bad, [10, ContextOp.Tell, ['here', 'ok', []]]]), bad.length + 1, placement(['here']))!
  assert.deepEqual(
    split.local.map((m) => m.reqId),
    [10],
  )
  assert.equal(split.rest!.count, bad.length)
  assert.deepEqual(decode(split.rest!.body), bad.flat())
})

test('a Stop of a placed actor sends its later messages through the driver, behind the Stop', () => {
  const p = placement(['here'])
  const split = splitRequests(
    1,
    body([
      [1, ContextOp.Tell, ['here', 'm', []]],
      [2, ContextOp.Stop, ['here']],
      [3, ContextOp.Tell, ['here', 'm', []]],
    ]),
    3,
    p,
  )!
  assert.deepEqual(p.stopped, ['here'])
  assert.deepEqual(
    split.local.map((m) => m.reqId),
    [1],
  )
  assert.deepEqual(decode(split.rest!.body), [2, ContextOp.Stop, ['here'], 3, ContextOp.Tell, ['here', 'm', []]])
})

test('references in the body stay references: shared handles are not replaced by their values', () => {
  const ref = makeActorRef<object>({ id: 'peer-1', name: 'p', node: () => '', send: () => Promise.resolve(), tell: () => {}, stop: () => Promise.resolve() })
  const handle = new SharedRef(HASH, 10, { release: () => Promise.resolve() })
  const b = body([
    [1, ContextOp.Tell, ['here', 'm', [ref, handle]]],
    [2, ContextOp.Call, ['task', [handle, ref], null]],
  ])
  takeWrittenRefs()
  const split = splitRequests(1, b, 2, placement(['here'], [HASH]))!
  const [r, h] = split.local[0]!.args as [unknown, SharedRef]
  assert.ok(isActorRef(r))
  assert.equal((r as { id: string }).id, 'peer-1')
  assert.ok(h instanceof SharedRef)
  assert.equal(h.hash, HASH)
  assert.equal(h.size, 10)
  // The rest carries the same references, and the agent's writing them leaves no handle to send behind.
  assert.equal(takeWrittenRefs().length, 0)
  const rest = withHandlesKept(() => decode(split.rest!.body)) as [number, number, [string, [SharedRef, { id: string }]]]
  const [h2, r2] = rest[2][1]
  assert.ok(h2 instanceof SharedRef && h2.hash === HASH && h2.size === 10)
  assert.ok(isActorRef(r2) && r2.id === 'peer-1')
})

test('a body carrying a shared value this node does not hold stays whole, and its placed actors take later messages through the driver', () => {
  const handle = new SharedRef(HASH, 10, { release: () => Promise.resolve() })
  const b = body([
    [1, ContextOp.Tell, ['here', 'm', []]],
    [2, ContextOp.Tell, ['other', 'm', [handle]]],
    [3, ContextOp.Tell, ['there', 'm', []]],
  ])
  takeWrittenRefs()
  const p = placement(['here', 'other'])
  assert.equal(splitRequests(1, b, 3, p), undefined)
  assert.deepEqual(p.stopped, ['here', 'other'])
  const held = placement(['here', 'other'], [HASH])
  assert.deepEqual(
    splitRequests(1, b, 3, held)!.local.map((m) => m.reqId),
    [1, 2],
  )
  assert.deepEqual(held.stopped, [])
})
