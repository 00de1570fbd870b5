/**
 * Requests from threads are input from the network: a raw agent sends
 * Submit frames by hand. A well-formed request is served; a malformed one is
 * answered with an error naming what was wrong; a body that is not a request
 * list, or an entry without a usable id, is a bad frame; the driver goes on.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Packr } from 'msgpackr'
import { MsgType, PROTOCOL_VERSION, REQUEST_THREAD_FACTOR, ContextOp, Status } from '../../lib/protocol/messages.js'
import { openDriver, welcomedRawAgent } from '../raw-agent.js'
import { waitFor } from '../helpers.js'

const packr = new Packr()
const V = PROTOCOL_VERSION

test('a raw agent’s Submit: good requests served, malformed ones answered with what was wrong, bad bodies counted', async (t) => {
  await using cluster = await openDriver()
  const raw = await welcomedRawAgent(t, cluster.address, 'raw-submit', 100)
  const thread = 7
  const id = (n: number) => thread * REQUEST_THREAD_FACTOR + n
  const submit = (flat: unknown[], count = flat.length / 3) => raw.socket.send([packr.pack([V, MsgType.Submit, count]), packr.pack(flat)])
  const replies = () =>
    raw.received
      .filter((m) => (m[0] as unknown[])[1] === MsgType.Reply)
      .flatMap((m) => {
        const flat = m[1] as unknown[]
        const out: { thread: unknown; id: unknown; status: unknown; value: unknown }[] = []
        for (let i = 0; i < flat.length; i += 3) out.push({ thread: (m[0] as unknown[])[3], id: flat[i], status: flat[i + 1], value: flat[i + 2] })
        return out
      })
  await submit([
    id(1),
    ContextOp.Lookup,
    ['nobody'],
    id(2),
    99,
    [],
    id(3),
    ContextOp.Call,
    'not a list',
    id(4),
    ContextOp.Call,
    [42, [], null],
    id(5),
    ContextOp.Call,
    ['add', [1, 2], { retries: -1 }],
    id(6),
    ContextOp.Ask,
    ['no-such-actor', 'inc', [1]],
    id(7),
    ContextOp.Ask,
    ['no-such-actor', 'stop', []],
  ])
  await waitFor(() => replies().length === 7, 10_000, 'seven replies')
  const byId = new Map(replies().map((r) => [r.id, r]))
  for (const r of replies()) {
    assert.equal(r.thread, thread)
    assert.equal(r.status, Status.Failed)
  }
  const message = (n: number) => (byId.get(id(n))!.value as { message: string }).message
  assert.match(message(1), /no live actor is named "nobody"/)
  assert.match(message(2), /malformed request: unknown request op 99/)
  assert.match(message(3), /malformed request: request arguments are not a list/)
  assert.match(message(4), /malformed request: task name is not a non-empty string/)
  assert.match(message(5), /options\.retries/)
  assert.match(message(6), /actor no-such-actor is not running in this cluster/)
  assert.match(message(7), /malformed request: "stop" is not a method an actor reference can call/)
  // Not a request list, a count that does not match, an entry without a usable id: bad frames, no reply.
  const bad = cluster.stats().badFrames
  await raw.socket.send([packr.pack([V, MsgType.Submit, 1]), packr.pack('nonsense')])
  await submit([id(8), ContextOp.Lookup, ['x']], 2)
  await submit([-1, ContextOp.Lookup, ['x'], 'id', ContextOp.Lookup, ['x']])
  await waitFor(() => cluster.stats().badFrames === bad + 3, 10_000, 'three bad frames')
  assert.equal(replies().length, 7)
  // The driver goes on serving.
  await submit([id(9), ContextOp.Lookup, ['still-nobody']])
  await waitFor(() => replies().length === 8, 10_000, 'a reply after the bad frames')
})
