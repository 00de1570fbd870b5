import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes, randomInt } from 'node:crypto'
import * as zmq from 'zeromq'
import { Packr } from 'msgpackr'
import { Cluster, Agent } from '../../lib/index.js'
import { MsgType, PROTOCOL_VERSION } from '../../lib/protocol/messages.js'
import { FIXTURE_TASKS, freePort, waitFor, within } from '../helpers.js'

const packr = new Packr()
const V = PROTOCOL_VERSION
const FRAMES_PER_SOCKET = 1500
const DEADLINE_MS = 8000

/** One hostile frame: random bytes, truncations, oversize, other versions, and well-formed frames of the wrong shape. */
function hostileFrame(i: number): Buffer[] {
  const hello = { agentId: 'x', threads: 1, pid: 1, host: 'h', version: '0', tasks: [], actors: [], window: 1 }
  const valid = packr.pack([V, MsgType.Results, 2])
  switch (i % 13) {
    case 0:
      return [randomBytes(randomInt(1, 200))]
    case 1:
      return [valid.subarray(0, randomInt(0, valid.length))]
    case 3:
      return [packr.pack([V + 7, MsgType.Hello, hello])]
    case 4:
      return [packr.pack([V, MsgType.Hello, { ...hello, threads: 'many' }])]
    case 5:
      return [packr.pack([V, MsgType.Results, 3]), packr.pack(['not', 'a', 'result'])]
    case 6:
      return [packr.pack([V, MsgType.Results, 1]), packr.pack([randomBytes(8).toString('hex'), 0, 1])]
    case 7:
      return [packr.pack([V, MsgType.Tasks, 1]), packr.pack([1, 'add', [1, 2]])]
    case 8:
      return [packr.pack([V, MsgType.Credit, -5])]
    case 9:
      return [packr.pack([V, MsgType.Leave, 'everything'])]
    case 10:
      return [packr.pack([V, 999, {}])]
    case 11:
      return [packr.pack([V, MsgType.Results, 1]), randomBytes(randomInt(1, 100))]
    case 12:
      return [packr.pack({ version: V, type: MsgType.Hello })]
    default:
      return [Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff])]
  }
}

test('the driver survives a fuzzer while a job runs: bad frames counted and dropped, the job completes, memory bounded', async () => {
  const maxFrameBytes = 64 * 1024
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2, maxFrameBytes, localTransport: 'tcp', insecure: true })
  global.gc?.()
  const heapBefore = process.memoryUsage().heapUsed
  const n = 30_000
  const job = (async () => {
    let sum = 0
    for await (const r of cluster.map<number>(
      'add',
      (function* () {
        for (let k = 0; k < n; k++) yield [k, 1]
      })(),
      { ordered: false },
    ))
      sum += r
    return sum
  })()
  let sent = 0
  const sockets = Array.from({ length: 3 }, (_, s) => new zmq.Dealer({ routingId: `fuzz-${s}-${randomBytes(4).toString('hex')}`, linger: 0, sendTimeout: 0 }))
  // Oversized frames make ZeroMQ drop the sender's connection, so they get a socket of their own.
  const oversize = new zmq.Dealer({ routingId: 'fuzz-big', linger: 0, sendTimeout: 0 })
  const deadline = Date.now() + DEADLINE_MS
  try {
    oversize.connect(cluster.address)
    const big = (async () => {
      for (let i = 0; i < 20 && Date.now() < deadline; i++) {
        await oversize.send([Buffer.alloc(maxFrameBytes + 1024, 0xdc)]).catch(() => {})
        await new Promise((r) => setTimeout(r, 20))
      }
    })()
    await Promise.all(
      sockets.map(async (sock, s) => {
        sock.connect(cluster.address)
        for (let i = 0; i < FRAMES_PER_SOCKET && Date.now() < deadline; i++) {
          try {
            await sock.send(hostileFrame(i + s))
            sent++
          } catch {
            // a full queue: not sent, not counted
          }
          if (i % 50 === 0) await new Promise((r) => setImmediate(r))
        }
      }),
    )
    await big
    assert.equal(await job, n + (n * (n - 1)) / 2)
  } finally {
    for (const sock of sockets) sock.close()
    oversize.close()
  }
  assert.ok(sent >= 1000, `sent ${sent} frames`)
  // Every hostile frame that reached the driver is counted (an oversized one never reaches it: ZeroMQ drops it).
  await waitFor(() => cluster.stats().badFrames >= sent, 5000, `all ${sent} bad frames to be counted (${cluster.stats().badFrames})`)
  // Exactly those: each once, and none of the oversized ones (which would count too, had one reached the driver).
  assert.equal(cluster.stats().badFrames, sent)
  assert.equal(cluster.nodes().length, 1, 'only the real agent is a node')
  assert.equal(await cluster.call('add', 2, 2), 4)
  global.gc?.()
  const grownMb = (process.memoryUsage().heapUsed - heapBefore) / 1048576
  assert.ok(grownMb < 64, `heap grew by ${grownMb.toFixed(1)} MB`)
})

test('a registered peer that sends malformed frames: each is counted once, the node and the job are unharmed', async (t) => {
  await using cluster = await Cluster.start({
    tasks: FIXTURE_TASKS,
    threads: 1,
    listen: 'tcp://127.0.0.1:0',
    insecure: true,
    nodeTimeoutMs: 10_000,
    heartbeatMs: 1000,
  })
  const id = `member-${randomBytes(4).toString('hex')}`
  const sock = new zmq.Dealer({ routingId: id, linger: 0, sendTimeout: 0 })
  t.after(() => sock.close())
  sock.connect(cluster.address)
  const hello = { agentId: id, threads: 1, pid: 1, host: 'h', version: '0', tasks: ['add'], actors: [], window: 0 }
  await sock.send([packr.pack([V, MsgType.Hello, hello])])
  const [welcome] = await within(sock.receive(), 10_000, 'a Welcome')
  assert.equal((packr.unpack(welcome!) as unknown[])[1], MsgType.Welcome)
  assert.equal(cluster.nodes().length, 2)
  const before = cluster.stats()
  const hostile: Buffer[][] = [
    [packr.pack([V, MsgType.Results, 3]), packr.pack(['not', 'a', 'result'])],
    [packr.pack([V, MsgType.Results, 1])],
    [packr.pack([V, MsgType.Results, 2]), randomBytes(40)],
    [packr.pack([V, MsgType.ActorResults, 1]), packr.pack([1, 0])],
    [packr.pack([V, MsgType.Credit, -5])],
    [packr.pack([V, MsgType.Credit, 'lots'])],
    [packr.pack([V, MsgType.Tasks, 1]), packr.pack([1, 'add', [1, 2]])],
    [packr.pack([V, MsgType.Leave, 'everything'])],
    [packr.pack([V, 999, {}])],
    [randomBytes(25)],
  ]
  for (const frame of hostile) await sock.send(frame)
  await waitFor(() => cluster.stats().badFrames - before.badFrames >= hostile.length, 5000, `the ${hostile.length} frames to be counted`)
  const after = cluster.stats()
  assert.equal(after.badFrames - before.badFrames, hostile.length)
  assert.equal(after.lateResultsDropped, before.lateResultsDropped)
  assert.equal(cluster.nodes().length, 2, 'the peer is still a member')
  assert.deepEqual(
    await Promise.all(Array.from({ length: 100 }, (_, k) => cluster.call<number>('add', k, 1))),
    Array.from({ length: 100 }, (_, k) => k + 1),
  )
})

test('an agent survives a hostile driver, then serves a real one on the same address', async () => {
  const port = await freePort()
  const address = `tcp://127.0.0.1:${port}`
  const fake = new zmq.Router({ linger: 0, sendTimeout: 0, mandatory: false })
  await fake.bind(address)
  const agent = await Agent.start({ connect: address, tasks: FIXTURE_TASKS, threads: 1, driverTimeoutMs: 1500, heartbeatMs: 300 })
  try {
    const [id] = await fake.receive()
    const peer = id!
    await fake.send([peer, packr.pack([V, MsgType.Welcome, { nodeId: 'fake', heartbeatMs: 300, session: 'fake-session' }])])
    await waitFor(() => agent.state === 'ready', 5000, 'the agent to accept the fake welcome')
    const garbage: Buffer[][] = [
      [randomBytes(30)],
      [packr.pack([V, MsgType.Tasks, 2]), randomBytes(64)],
      [packr.pack([V, MsgType.Tasks, 1]), packr.pack([7, 'add', 'not a list'])],
      [packr.pack([V, MsgType.Tasks, 1]), packr.pack([8, 12345, [1]])],
      [packr.pack([V, MsgType.Tasks, 1])],
      [packr.pack([V, MsgType.Actor, 1]), packr.pack([1, 9, 'a', 'Counter', []])],
      [packr.pack([V, MsgType.Actor, 5]), packr.pack([1])],
      [packr.pack([V + 3, MsgType.Tasks, 1]), packr.pack([1, 'add', [1, 2]])],
      [packr.pack([V, MsgType.Results, 1]), packr.pack([1, 0, 1])],
      [packr.pack([V, 200])],
    ]
    for (let i = 0; i < 300; i++) await fake.send([peer, ...garbage[i % garbage.length]!])
    await waitFor(() => agent.stats.badFrames >= 100, 5000, 'the agent to count bad frames')
  } finally {
    await fake.unbind(address).catch(() => {})
    fake.close()
  }
  try {
    await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: address, localAgents: 0, heartbeatMs: 300, nodeTimeoutMs: 1500 })
    await waitFor(() => cluster.nodes().length === 1, 15_000, 'the agent to join the real driver')
    const rs = await Promise.all(Array.from({ length: 2000 }, (_, k) => cluster.call<number>('add', k, 1)))
    assert.ok(rs.every((r, k) => r === k + 1))
  } finally {
    await agent.close()
  }
})

test('an agent the driver rejects says why, fails waitUntilReady with the reason, and closes', async () => {
  const fake = new zmq.Router({ linger: 0, sendTimeout: 0, mandatory: false })
  await fake.bind('tcp://127.0.0.1:*')
  const address = fake.lastEndpoint!
  const agent = await Agent.start({ connect: address, tasks: FIXTURE_TASKS, threads: 1, heartbeatMs: 300 })
  try {
    const reasons: string[] = []
    agent.on('rejected', (reason) => reasons.push(reason))
    const ready = agent.waitUntilReady().then(
      () => assert.fail('a rejected agent must not become ready'),
      (e: unknown) => e,
    )
    const [id] = await fake.receive()
    await fake.send([id!, packr.pack([V, MsgType.Reject, 'not on the list'])])
    const err = (await ready) as Error
    assert.equal(err.name, 'ProtocolError')
    assert.match(err.message, new RegExp(`^driver rejected agent ${agent.id}: not on the list$`))
    assert.deepEqual(reasons, ['not on the list'])
    await waitFor(() => agent.state === 'closed', 5000, 'the rejected agent to close')
  } finally {
    await agent.close()
    fake.close()
  }
})
