import { test } from 'node:test'
import assert from 'node:assert/strict'
import { SharedValues } from '../../lib/driver/shared.js'
import { ClusterNode } from '../../lib/driver/membership.js'
import { parseHeader } from '../../lib/protocol/codec.js'
import { MsgType, type HelloInfo } from '../../lib/protocol/messages.js'
import type { Parts } from '../../lib/transport/transport.js'

const hello = (over: Partial<HelloInfo>): HelloInfo => ({
  agentId: 'node-a',
  threads: 1,
  pid: 1,
  host: 'h',
  version: '0',
  tasks: [],
  actors: [],
  window: 4,
  ...over,
})

function setup(info: Partial<HelloInfo> = {}) {
  const node = new ClusterNode('node-a', hello(info), false, 0)
  const sent: { peer: string; parts: Parts }[] = []
  const values = new SharedValues({
    send: (peer, parts) => sent.push({ peer, parts }),
    node: (peer) => (peer === node.peer ? node : undefined),
    nodes: () => [],
    unsettled: () => [],
    heldBy: () => [],
    maxFrameBytes: 1 << 20,
    routed: true,
  })
  return { node, sent, values, headers: () => sent.map((s) => parseHeader(s.parts[0])) }
}

test('a Fetch is answered with a Put, sent again even where the record says the node holds it', async () => {
  const { values, sent, headers } = setup()
  const ref = values.put(new Float64Array(4))
  values.fetch('node-a', [ref.hash])
  values.fetch('node-a', [ref.hash])
  assert.deepEqual(headers(), [
    { type: MsgType.Put, hash: ref.hash, kind: 'Float64Array', size: 32 },
    { type: MsgType.Put, hash: ref.hash, kind: 'Float64Array', size: 32 },
  ])
  assert.equal(sent[0]!.parts[1]!.byteLength, 32)
  assert.equal(values.stats().puts, 2)
  await ref.release()
})

test('a Fetch of a value released meanwhile, or one the node cannot hold, is answered with Unavailable naming it', async () => {
  const { values, headers } = setup({ sharedCacheBytes: 100, maxFrameBytes: 8192 })
  const gone = values.put(new Float64Array(2))
  const hash = gone.hash
  await gone.release()
  const big = values.put(new Float64Array(20))
  const wide = values.put(new Uint8Array(5000))
  values.fetch('node-a', [hash, big.hash])
  values.fetch('stranger', [big.hash])
  const h = headers()
  assert.equal(h.length, 2, 'nothing for a peer that is not a member')
  assert.deepEqual(h[0], {
    type: MsgType.Unavailable,
    hash,
    code: 'ERR_SHARED_RELEASED',
    message: `shared value ${hash} was released before node node-a fetched it`,
  })
  assert.deepEqual(h[1], {
    type: MsgType.Unavailable,
    hash: big.hash,
    code: 'ERR_SHARED_TOO_LARGE',
    message: `shared value ${big.hash} of 160 bytes exceeds the shared cache of node node-a (sharedCacheBytes 100)`,
  })
  const node = new ClusterNode('node-b', hello({ agentId: 'node-b', maxFrameBytes: 8192 }), false, 0)
  assert.deepEqual(
    [...(values.unfit(node, [big, wide]) ?? [])],
    [[wide.hash, `shared value ${wide.hash} of 5000 bytes exceeds the largest message node node-b accepts (maxFrameBytes 8192, less 4096 bytes of headroom)`]],
  )
  assert.equal(values.unfit(node, [big]), undefined)
})
