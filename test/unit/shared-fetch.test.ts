import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ProtocolError, SharedValueError } from '../../lib/errors.js'
import { SharedCache, type SharedCacheStats } from '../../lib/agent/shared-cache.js'
import { SharedFetches, type TakenFrame } from '../../lib/agent/shared-fetch.js'
import { decodeTaskBody, encodeTaskBody, readResultsBody } from '../../lib/protocol/bodies.js'
import { parseHeader } from '../../lib/protocol/codec.js'
import { MsgType, Status } from '../../lib/protocol/messages.js'
import { SharedRef, takeWrittenRefs, withHandlesKept } from '../../lib/protocol/shared-ref.js'
import type { Delivery, Parts } from '../../lib/transport/transport.js'

const A = 'A'.repeat(42) + '_'
const B = 'B'.repeat(42) + '_'

function setup() {
  const stats: SharedCacheStats = { sharedValues: 0, sharedBytes: 0, sharedPuts: 0, sharedRefused: 0 }
  const cache = new SharedCache(stats, { nodeId: 'node-x', sharedCacheBytes: 10 })
  const sent: Parts[] = []
  const ran: Delivery[] = []
  const ranFrames: TakenFrame[] = []
  const answered: { parts: Parts | undefined; delivery?: Delivery }[] = []
  const fetches = new SharedFetches(cache, {
    send: (parts) => sent.push(parts),
    run: (f) => {
      ran.push(f.delivery)
      ranFrames.push(f)
    },
    answer: (parts, delivery) => {
      answered.push({ parts, delivery })
      if (delivery !== undefined) fetches.acked([delivery])
    },
    registration: () => 'reg-1',
    nodeId: 'node-x',
    badFrame: () => assert.fail('no bad frame'),
  })
  const put = (hash: string) => cache.put(hash, 'Uint8Array', 4, new Uint8Array(4))
  return { stats, cache, fetches, sent, ran, ranFrames, answered, put }
}

const owner = { release: async () => {} }
function frame(delivery: string, ids: number[], hash = A): TakenFrame {
  const ref = new SharedRef(hash, 4, owner)
  return {
    body: encodeTaskBody(ids.map((id) => ({ id, name: 'sharedInfo', args: [ref, id] }))),
    count: ids.length,
    timeoutMs: undefined,
    delivery,
    taken: Promise.resolve(),
  }
}

test('a frame whose values are held runs at once; one that lacks a value waits for it, fetched once, while later frames run', () => {
  const { fetches, sent, ran, put } = setup()
  put(B)
  fetches.taken(frame('held', [1], B), [B])
  assert.deepEqual(ran, ['held'])
  assert.equal(sent.length, 0, 'nothing to fetch')

  fetches.taken(frame('f1', [2]), [A, B])
  fetches.taken(frame('f2', [3]), [A])
  fetches.taken(frame('other', [4], B), [B])
  assert.deepEqual(ran, ['held', 'other'], 'the frames that wait do not hold up the rest')
  assert.equal(fetches.waitingFrames, 2)
  assert.equal(sent.length, 1, 'one Fetch for a value, however many frames wait for it')
  assert.deepEqual(parseHeader(sent[0]![0]), { type: MsgType.Fetch, hashes: [A] })

  put(A)
  fetches.arrived(A)
  assert.deepEqual(ran, ['held', 'other', 'f1', 'f2'], 'in the order they were taken')
  assert.equal(fetches.waitingFrames, 0)
})

test('a value the driver cannot send fails every task of the frames that wait for it, naming the value and the node', () => {
  const { fetches, ran, answered } = setup()
  fetches.taken(frame('f1', [7, 8]), [A])
  fetches.unavailable(A, 'ERR_SHARED_RELEASED', `shared value ${A} was released before node node-x fetched it`)
  assert.deepEqual(ran, [])
  assert.equal(answered.length, 1)
  const [head, body] = answered[0]!.parts!
  assert.deepEqual(parseHeader(head), { type: MsgType.Results, count: 2, registration: 'reg-1' })
  const got: [unknown, unknown, unknown][] = []
  readResultsBody(body, 2, (id, status, value) => got.push([id, status, value]))
  assert.deepEqual(
    got.map(([id, status]) => [id, status]),
    [
      [7, Status.Failed],
      [8, Status.Failed],
    ],
  )
  const wire = got[0]![2] as { code: string; message: string }
  assert.equal(wire.code, 'ERR_SHARED_RELEASED')
  assert.match(wire.message, /^task "sharedInfo" on node node-x: shared value A+_ was released/)
  assert.equal(answered[0]!.delivery, 'f1')
})

test('a Drop of a value a taken frame needs waits until that frame is answered; reset gives back the waiting frames', () => {
  const { cache, fetches, answered, put, stats } = setup()
  put(A)
  fetches.taken(frame('f1', [1]), [A])
  cache.drop([A])
  assert.equal(cache.has(A), true, 'kept while the frame needs it')
  fetches.acked(['f1'])
  assert.equal(cache.has(A), false, 'dropped once the frame was answered')
  assert.equal(stats.sharedValues, 0)

  // A Put after the Drop was put off cancels it.
  put(A)
  fetches.taken(frame('f2', [2]), [A])
  cache.drop([A])
  put(A)
  fetches.acked(['f2'])
  assert.equal(cache.has(A), true, 'sent again, so held again')

  fetches.taken(frame('f3', [3]), [B])
  fetches.reset()
  assert.deepEqual(answered, [{ parts: undefined, delivery: 'f3' }], 'acknowledged unrun: the driver sends its tasks again')
  assert.equal(cache.has(A), false, 'the cache starts empty')
  assert.equal(fetches.waitingFrames, 0)
})

test('the cache keeps its own bound: a Put larger than it, or one that does not fit beside the values held, is refused and not stored', () => {
  const { stats, cache } = setup()
  const C = 'C'.repeat(42) + '_'
  assert.match(
    cache.put(A, 'Uint8Array', 11, new Uint8Array(11)) ?? '',
    /^shared value A+_ of 11 bytes exceeds the shared cache of node node-x \(sharedCacheBytes 10\)$/,
  )
  assert.equal(cache.has(A), false)
  assert.equal(cache.put(B, 'Uint8Array', 4, new Uint8Array(4)), undefined)
  assert.equal(cache.put(C, 'Uint8Array', 4, new Uint8Array(4)), undefined)
  assert.match(cache.put(A, 'Uint8Array', 4, new Uint8Array(4)) ?? '', /sharedCacheBytes 10\) beside the 8 bytes of the 2 value\(s\) it holds in use$/)
  assert.equal(cache.has(A), false)
  assert.deepEqual([stats.sharedValues, stats.sharedBytes, stats.sharedRefused, stats.sharedPuts], [2, 8, 2, 4])
  // Room made by the driver's Drop: it fits now.
  cache.drop([B])
  assert.equal(cache.put(A, 'Uint8Array', 4, new Uint8Array(4)), undefined)
  assert.equal(cache.has(A), true)
  assert.equal(stats.sharedBytes, 8)
})

test('a value the driver cannot send fails only the tasks that carry it: the rest of their frame runs once its other values are here', () => {
  const { fetches, ran, ranFrames, answered, put } = setup()
  const a = new SharedRef(A, 4, owner)
  const b = new SharedRef(B, 4, owner)
  const body = encodeTaskBody([
    { id: 1, name: 'sharedInfo', args: [a, 1] },
    { id: 2, name: 'sharedInfo', args: [b, 2] },
    { id: 3, name: 'echo', args: [3] },
    { id: 4, name: 'echo', args: [{ nested: [a] }] },
  ])
  takeWrittenRefs()
  fetches.taken({ body, count: 4, timeoutMs: 500, delivery: 'f1' }, [A, B])
  fetches.unavailable(A, 'ERR_SHARED_TOO_LARGE', `shared value ${A} of 4 bytes exceeds the shared cache of node node-x (sharedCacheBytes 2)`)
  assert.deepEqual(ran, [], 'still waiting for B')
  assert.equal(answered.length, 0)
  put(B)
  fetches.arrived(B)

  assert.equal(answered.length, 1, 'the tasks that carry A are answered')
  assert.equal(answered[0]!.delivery, undefined, 'not acknowledged: the rest of the frame runs under it')
  const [head, results] = answered[0]!.parts!
  assert.deepEqual(parseHeader(head), { type: MsgType.Results, count: 2, registration: 'reg-1' })
  const got: [unknown, unknown, { code: string; message: string }][] = []
  readResultsBody(results, 2, (id, status, value) => got.push([id, status, value as { code: string; message: string }]))
  assert.deepEqual(
    got.map(([id, status, e]) => [id, status, e.code]),
    [
      [1, Status.Failed, 'ERR_SHARED_TOO_LARGE'],
      [4, Status.Failed, 'ERR_SHARED_TOO_LARGE'],
    ],
  )
  assert.match(got[1]![2].message, /^task "echo" on node node-x: shared value A+_ of 4 bytes exceeds the shared cache of node node-x \(sharedCacheBytes 2\)$/)

  assert.deepEqual(ran, ['f1'], 'the other tasks run under the frame')
  const rest = ranFrames[0]!
  assert.equal(rest.count, 2)
  assert.equal(rest.timeoutMs, 500)
  const tasks = withHandlesKept(() => decodeTaskBody(rest.body))
  assert.deepEqual(
    tasks.map((t) => [t.id, t.name]),
    [
      [2, 'sharedInfo'],
      [3, 'echo'],
    ],
  )
  assert.ok(tasks[0]!.args[0] instanceof SharedRef && tasks[0]!.args[0].hash === B, 'the handle is written again as a handle')
  assert.equal(takeWrittenRefs().length, 0, 'no handle left on the list of written ones')
})

test('why a message cannot read a value: the refusal while it stands, else that the node does not hold it', () => {
  const { cache, put } = setup()
  const what = 'actor call "add"'
  const notHeld = cache.lacking(A, what)
  assert.ok(notHeld instanceof ProtocolError)
  assert.equal(notHeld.message, `actor call "add" on node node-x: shared value ${A} is not held there`)
  assert.ok(cache.put(A, 'Uint8Array', 11, new Uint8Array(11)) !== undefined)
  const refused = cache.lacking(A, what)
  assert.ok(refused instanceof SharedValueError && refused.code === 'ERR_SHARED_TOO_LARGE')
  assert.equal(refused.message, `actor call "add" on node node-x: shared value ${A} of 11 bytes exceeds the shared cache of node node-x (sharedCacheBytes 10)`)
  // Sent again and stored: held, nothing to say.
  put(A)
  assert.equal(cache.lacking(A, what), undefined)
  // Refused, then dropped by the driver: the refusal is forgotten with it.
  cache.drop([A])
  assert.ok(cache.put(A, 'Uint8Array', 11, new Uint8Array(11)) !== undefined)
  cache.drop([A])
  assert.ok(cache.lacking(A, what) instanceof ProtocolError)
  // A new session starts with none.
  assert.ok(cache.put(B, 'Uint8Array', 11, new Uint8Array(11)) !== undefined)
  cache.clear()
  assert.ok(cache.lacking(B, what) instanceof ProtocolError)
})
