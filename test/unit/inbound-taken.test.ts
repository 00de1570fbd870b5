/**
 * Brokered designs without a broker: what the driver does with an agent's
 * Taken — which node holds a frame's tasks, what a loss or a dropped
 * redelivery sends again, and who may answer.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { dispatch, type Inbound } from '../../lib/driver/inbound.js'
import { Ledger, type ResultSink, type TaskEntry } from '../../lib/driver/ledger.js'
import { Membership } from '../../lib/driver/membership.js'
import { SharedQueueScheduler } from '../../lib/driver/scheduler.js'
import { NodeLostError } from '../../lib/errors.js'
import { ResultsWriter } from '../../lib/protocol/bodies.js'
import { header, parseHeader } from '../../lib/protocol/codec.js'
import { ActorOp, MsgType, Status } from '../../lib/protocol/messages.js'
import type { Parts } from '../../lib/transport/transport.js'
import { hello } from './fixtures.js'

function setup() {
  const ledger = new Ledger({ succeeded() {}, failed() {}, retried() {} }, 1)
  const published: number[] = []
  const scheduler = new SharedQueueScheduler(
    ledger,
    { batch: 2, maxFrameBytes: 1 << 20 },
    (_q, parts) => {
      const h = parseHeader(parts[0])
      if (h.type === MsgType.Tasks) published.push(h.frameId!)
    },
    (e, err) => ledger.fail(e, err),
  )
  let bad = 0
  const membership = new Membership(
    { heartbeatMs: 100, nodeTimeoutMs: 300, session: 's1', localIds: new Set(), now: () => 0 },
    {
      send() {},
      joined() {},
      removed: (node, how, reason) => scheduler.requeue(ledger.reclaim(node, how, () => ({ node: node.nodeId, reason }))),
      badFrame: () => bad++,
    },
  )
  const cx: Inbound = {
    ledger,
    membership,
    scheduler,
    frames: scheduler,
    send() {},
    scheduleFlush() {},
    maxFrameBytes: 1 << 20,
    closing: () => false,
    actorHostLost() {},
    badFrame: () => bad++,
  }
  const outcomes = new Map<number, { value?: unknown; err?: Error }>()
  // Outcomes by id, through one sink as a map's (synchronous, unlike a promise).
  const sink: ResultSink = { settled: (id, ok, value) => outcomes.set(id, ok ? { value } : { err: value as Error }) }
  const submit = (name: string): TaskEntry => {
    const id = ledger.nextId
    const e = ledger.add(id, name, [], sink, id, undefined, ActorOp.Call, undefined, undefined)
    scheduler.enqueue(e)
    return e
  }
  const join = (peer: string) => {
    dispatch(cx, peer, [header(MsgType.Hello, hello(peer, { threads: 1, window: 2, registration: 'r' }))])
    return membership.get(peer)!
  }
  const say = (peer: string, parts: Parts) => dispatch(cx, peer, parts)
  const results = (...entries: TaskEntry[]): Parts => {
    const w = new ResultsWriter()
    for (const e of entries) w.add(ledger.id(e), Status.Ok, `${ledger.name(e)} done`)
    return [header(MsgType.Results, entries.length), w.take()]
  }
  return { ledger, scheduler, membership, published, outcomes, submit, join, say, results, bad: () => bad }
}

test("Taken: the frame's tasks are the node's; only it may answer them; a second Taken of the frame changes nothing", () => {
  const { ledger, scheduler, membership, published, outcomes, submit, join, say, results, bad } = setup()
  const a = join('a')
  const b = join('b')
  const [t1, t2] = [submit('t1'), submit('t2')]
  scheduler.flush(membership)
  assert.equal(published.length, 1)
  say('a', [header(MsgType.Taken, published[0], false)])
  assert.equal(ledger.holder(t1), a)
  assert.equal(ledger.holder(t2), a)
  assert.equal(a.inFlight, 2)
  assert.equal(scheduler.queue.inFlight, 0)
  // b took the same frame again (a redelivery it should have dropped): nothing moves.
  say('b', [header(MsgType.Taken, published[0], false)])
  assert.equal(ledger.holder(t1), a)
  assert.equal(b.inFlight, 0)
  // b answers a's tasks: late, dropped; a's answer counts.
  say('b', results(t1))
  assert.equal(outcomes.get(ledger.id(t1)), undefined)
  say('a', results(t1, t2))
  assert.deepEqual(outcomes.get(ledger.id(t1)), { value: 't1 done' })
  assert.deepEqual(outcomes.get(ledger.id(t2)), { value: 't2 done' })
  assert.equal(a.inFlight, 0)
  assert.equal(bad(), 0)
})

test('a lost node: the tasks it took are charged and sent again in a new frame; past the budget they fail with NodeLostError', () => {
  const { ledger, scheduler, membership, published, outcomes, submit, join, say } = setup()
  const a = join('a')
  join('b')
  const t = submit('t')
  scheduler.flush(membership)
  say('a', [header(MsgType.Taken, published[0], false)])
  membership.remove(a, 'lost', 'no heartbeat for 400 ms')
  assert.equal(ledger.retries(t).infra, 1)
  assert.equal(ledger.holder(t), undefined)
  assert.equal(ledger.counters.requeued, 1)
  scheduler.flush(membership)
  assert.equal(published.length, 2)
  assert.notEqual(published[1], published[0], 'sent again as a new frame')
  // Taken by b, which is lost too: maxRetries 1 is spent, the task fails.
  const b = membership.get('b')!
  say('b', [header(MsgType.Taken, published[1], false)])
  membership.remove(b, 'lost', 'no heartbeat for 400 ms')
  const err = outcomes.get(ledger.id(t))?.err
  assert.ok(err instanceof NodeLostError, String(err))
  assert.equal(err.message, 'task "t" was on node b when it was lost (no heartbeat for 400 ms), after 1 earlier infrastructure failures')
})

test('a dropped redelivery sends again, uncharged, only what no one took; a Taken from a node already out is charged at once', () => {
  const { ledger, scheduler, membership, published, submit, join, say, bad } = setup()
  const a = join('a')
  join('b')
  const [t1, t2] = [submit('t1'), submit('t2'), submit('t3'), submit('t4')]
  scheduler.flush(membership)
  assert.equal(published.length, 2)
  // The first frame: its first taker died before saying so; b dropped the redelivery.
  say('b', [header(MsgType.Taken, published[0], true)])
  assert.equal(ledger.holder(t1), undefined)
  assert.equal(ledger.retries(t1).infra, 0)
  assert.deepEqual(
    [...scheduler.pending].map((e) => ledger.name(e)),
    ['t1', 't2'],
  )
  assert.equal(ledger.retries(t2).infra, 0)
  // The second frame: a says it took it after it was taken out.
  membership.remove(a, 'lost', 'no heartbeat for 400 ms')
  say('a', [header(MsgType.Taken, published[1], false)])
  assert.deepEqual(
    [...scheduler.pending].map((e) => [ledger.name(e), ledger.retries(e).infra]),
    [
      ['t3', 1],
      ['t4', 1],
      ['t1', 0],
      ['t2', 0],
    ],
  )
  // A Taken from a peer that never joined is a bad frame and moves nothing.
  say('stranger', [header(MsgType.Taken, 12345, false)])
  assert.equal(bad(), 1)
})

test('a Taken from an agent that never joined (it still serves an earlier driver of the cluster id): the frame is sent again, uncharged', () => {
  const { ledger, scheduler, membership, published, submit, join, say, bad } = setup()
  join('a')
  const [t1, t2] = [submit('t1'), submit('t2')]
  scheduler.flush(membership)
  assert.equal(published.length, 1)
  // The stranger answers its own driver, never this one: what it took goes back to the queue at once.
  say('stranger', [header(MsgType.Taken, published[0], false)])
  assert.equal(bad(), 0)
  assert.deepEqual(
    [...scheduler.pending].map((e) => [ledger.name(e), ledger.retries(e).infra, ledger.holder(e)]),
    [
      ['t1', 0, undefined],
      ['t2', 0, undefined],
    ],
  )
  assert.equal(scheduler.queue.inFlight, 0)
  scheduler.flush(membership)
  assert.equal(published.length, 2)
  assert.notEqual(published[1], published[0], 'sent again as a new frame')
  assert.equal(ledger.holder(t1), scheduler.queue)
  assert.equal(ledger.holder(t2), scheduler.queue)
  // The same frame said again, or one that is not ours: a bad frame, nothing moves.
  say('stranger', [header(MsgType.Taken, published[0], false)])
  say('stranger', [header(MsgType.Taken, 12345, false)])
  assert.equal(bad(), 2)
  assert.equal(ledger.holder(t1), scheduler.queue)
})
