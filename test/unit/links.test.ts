/**
 * The agent's end of its threads' links: with no driver to send them to, a
 * thread's requests are answered at once, each with WorkerCrashedError —
 * also a request that carries a shared value this node does not hold.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { BroadcastChannel } from 'node:worker_threads'
import { Links } from '../../lib/agent/links.js'
import { RequestWriter, readResultsBody } from '../../lib/protocol/bodies.js'
import { ContextOp, Status } from '../../lib/protocol/messages.js'
import { SharedRef, takeWrittenRefs } from '../../lib/protocol/shared-ref.js'
import { channelNames, type DownMessage, type UpMessage } from '../../lib/worker/link.js'
import type { Parts } from '../../lib/transport/transport.js'

test('with no driver, every request of a thread is refused with WorkerCrashedError, one carrying a value the node lacks too', async (t) => {
  const sent: Parts[] = []
  const links = new Links({
    send: (parts) => sent.push(parts),
    session: () => ({ driver: undefined, registration: 'r1' }),
    secededChanged: () => {},
    options: { threads: 1, maxFrameBytes: 1 << 20, transport: 'zmq' },
    sendAhead: 0,
  })
  const thread = 4242
  links.open(thread)
  t.after(() => links.closeAll())
  // The thread's end of its channels, played here.
  const up = new BroadcastChannel(channelNames.up(links.key, thread))
  const down = new BroadcastChannel(channelNames.down(links.key, thread))
  t.after(() => {
    up.close()
    down.close()
  })
  const answered = new Promise<DownMessage>((resolve) => (down.onmessage = (e) => resolve((e as unknown as { data: DownMessage }).data)))

  const held = new SharedRef('A'.repeat(43), 8, { release: () => Promise.resolve() })
  const w = new RequestWriter()
  w.add(7, ContextOp.Call, ['add', [1, 2]])
  w.add(8, ContextOp.Call, ['sum', [held]])
  const body = w.take()
  takeWrittenRefs()
  const message: UpMessage = { kind: 'requests', thread, body, count: 2 }
  up.postMessage(message)

  let timer: NodeJS.Timeout | undefined
  const reply = await Promise.race([
    answered,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no answer came down the link within 5 s')), 5000))),
  ]).finally(() => clearTimeout(timer))
  assert.equal(reply.count, 2)
  const got: [unknown, unknown, unknown][] = []
  readResultsBody(reply.body, reply.count, (id, status, value) => got.push([id, status, value]))
  assert.deepEqual(
    got.map(([id, status]) => [id, status]),
    [
      [7, Status.Failed],
      [8, Status.Failed],
    ],
  )
  for (const [, , value] of got) {
    const wire = value as { code?: unknown; message?: unknown }
    assert.equal(wire.code, 'ERR_WORKER_CRASHED')
    assert.match(String(wire.message), /the agent has no driver now/)
  }
  assert.equal(sent.length, 0, 'nothing goes to a driver that is not there')
})
