/**
 * The transport contract: one test per feature, run over every transport —
 * ZeroMQ over TCP loopback and over inproc, the in-memory pair, and the
 * brokered designs (redis, amqp, amqp+redis). Below the runtime: raw parts,
 * no protocol. Every wait is bounded and says what it waited for; every
 * transport is closed when its test ends, pass or fail.
 */
import { describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { ZmqAgentTransport, ZmqDriverTransport } from '../../lib/transport/zmq.js'
import { MemoryAgentTransport, MemoryDriverTransport, MemoryHub } from '../../lib/transport/memory.js'
import { BrokeredAgentTransport, BrokeredDriverTransport, type BrokeredOptions } from '../../lib/transport/brokered.js'
import type {
  AgentTransport,
  Delivery,
  DriverTransport,
  Parts,
  SharedQueueAgentTransport,
  SharedQueueDriverTransport,
  TransportFailure,
} from '../../lib/transport/transport.js'
import type { TransportKind } from '../../lib/transport/options.js'
import { Redis } from 'ioredis'
import { waitFor, within } from '../helpers.js'
import { AMQP_URL, REDIS_URL, proxyTo, skipReason, withPort } from '../brokers.js'

/** Small enough to exceed cheaply, large enough for the multi-part message below. */
const LIMIT = 256 * 1024
/** Every wait for something that should happen. */
const WAIT_MS = 5000
/** How long "nothing arrives" is watched. */
const QUIET_MS = 300

interface Harness {
  driver: DriverTransport
  /** A new agent, not connected; closed when the test ends. `via` points its brokers elsewhere (a proxy). */
  agent(id: string, via?: Partial<BrokeredOptions>): AgentTransport
  /** Brokered designs: the namespace of the queues. */
  clusterId?: string
}

interface Design {
  name: string
  kind: 'routed' | 'shared-queue'
  skip: string | false
  /** Why a message over maxFrameBytes is not dropped on this transport, if it is not. */
  noFrameLimit?: string
  /** The design and the URL key of the broker that holds the task queue (brokered designs). */
  brokered?: { transport: TransportKind; taskBroker: 'redisUrl' | 'amqpUrl' }
  setup(t: TestContext): Promise<Harness>
}

/**
 * A ZeroMQ agent's routing id is its id, `/` and 32 hex digits of a secret
 * (so no other peer can claim its connection): the driver sees that as the
 * peer. The contract below speaks of agent ids; this view of the driver
 * checks each peer's form and maps it to and from the agent id.
 */
function agentIdsAsPeers(driver: ZmqDriverTransport): ZmqDriverTransport {
  const full = new Map<string, string>()
  const idOf = (peer: string) => peer.replace(/\/[0-9a-f]{32}$/, '')
  return new Proxy(driver, {
    get(target, prop) {
      if (prop === 'start') {
        return (onMessage: (peer: string, parts: Parts) => void, onFailure?: TransportFailure) =>
          target.start((peer, parts) => {
            assert.match(peer, /^.+\/[0-9a-f]{32}$/, 'a ZeroMQ agent\u2019s peer is its id and a secret part')
            full.set(idOf(peer), peer)
            onMessage(idOf(peer), parts)
          }, onFailure)
      }
      if (prop === 'send') return (peer: string, parts: Parts) => target.send(full.get(peer) ?? peer, parts)
      const v: unknown = Reflect.get(target, prop, target)
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
    },
  })
}

/** Closes `x` when the test ends, pass or fail. */
function closing<T extends { close(): Promise<void> }>(t: TestContext, x: T): T {
  t.after(() => x.close())
  return x
}

let clusters = 0
const brokered = (transport: TransportKind, taskBroker: 'redisUrl' | 'amqpUrl'): Design => ({
  name: transport,
  kind: 'shared-queue',
  skip: skipReason(transport),
  brokered: { transport, taskBroker },
  async setup(t) {
    const options: BrokeredOptions = {
      transport,
      redisUrl: REDIS_URL,
      amqpUrl: AMQP_URL,
      clusterId: `tc-${transport.replace('+', '-')}-${process.pid}-${++clusters}`,
      closeTimeoutMs: 3000,
      reconnectMs: 0,
      secret: randomBytes(32),
    }
    const driver = closing(t, new BrokeredDriverTransport(options))
    await driver.bind()
    return { driver, agent: (id, via) => closing(t, new BrokeredAgentTransport({ ...options, ...via }, id)), clusterId: options.clusterId }
  },
})

/** A ZeroMQ driver transport bound to `listen`, and agent transports connecting to the address it bound. */
async function zmqSetup(t: TestContext, listen: string): Promise<Harness> {
  const driver = closing(t, new ZmqDriverTransport({ listen, maxFrameBytes: LIMIT }))
  await driver.bind()
  return {
    driver: agentIdsAsPeers(driver),
    agent: (id) => closing(t, new ZmqAgentTransport({ connect: driver.address, identity: id, maxFrameBytes: LIMIT })),
  }
}

const DESIGNS: Design[] = [
  {
    name: 'zmq over tcp',
    kind: 'routed',
    skip: false,
    setup: (t) => zmqSetup(t, 'tcp://127.0.0.1:0'),
  },
  {
    name: 'zmq over inproc',
    kind: 'routed',
    skip: false,
    noFrameLimit: 'libzmq enforces maxMessageSize in its wire decoder, which inproc does not use',
    setup: (t) => zmqSetup(t, `inproc://contract-${randomBytes(6).toString('hex')}`),
  },
  {
    name: 'memory',
    kind: 'routed',
    skip: false,
    async setup(t) {
      const hub = new MemoryHub()
      const driver = closing(t, new MemoryDriverTransport({ hub, listen: 'memory://*', maxFrameBytes: LIMIT }))
      await driver.bind()
      return { driver, agent: (id) => closing(t, new MemoryAgentTransport({ hub, connect: driver.address, identity: id, maxFrameBytes: LIMIT })) }
    },
  },
  brokered('redis', 'redisUrl'),
  brokered('amqp', 'amqpUrl'),
  brokered('amqp+redis', 'amqpUrl'),
]

interface Received {
  peer: string
  parts: Parts
}

/** Starts the driver, collecting what it receives. */
function listen(driver: DriverTransport, failures: Error[] = []): Received[] {
  const got: Received[] = []
  driver.start(
    (peer, parts) => got.push({ peer, parts }),
    (err) => failures.push(err),
  )
  return got
}

interface AgentReceived {
  parts: Parts
  /** Undefined on a routed transport (Delivery is an opaque `unknown`, so the type cannot say it). */
  delivery: Delivery
  /** Shared queue: whether the broker handed this frame out before. */
  redelivered: boolean | undefined
}

/** Connects and starts an agent, collecting what it receives. */
async function join(agent: AgentTransport, failures: Error[] = []): Promise<AgentReceived[]> {
  const got: AgentReceived[] = []
  await agent.connect()
  if (agent.kind === 'routed')
    agent.start(
      (parts) => got.push({ parts, delivery: undefined, redelivered: undefined }),
      (err) => failures.push(err),
    )
  else
    agent.start(
      (parts, delivery, redelivered) => got.push({ parts, delivery, redelivered }),
      (err) => failures.push(err),
    )
  return got
}

const msg = (...texts: string[]): Parts => texts.map((s) => Buffer.from(s))
const texts = (parts: Parts): string[] => parts.map((p) => Buffer.from(p).toString())
const size = (parts: Parts): number => parts.reduce((n, p) => n + p.byteLength, 0)

/** Agent says hello and the driver hears it: a routed driver can address an agent only once it has. */
async function greet(agent: AgentTransport, got: Received[], id: string): Promise<void> {
  const before = got.length
  agent.send(msg('hello', id))
  await waitFor(() => got.slice(before).some((r) => r.peer === id), WAIT_MS, `the hello of ${id} at the driver`)
}

const sharedDriver = (h: Harness): SharedQueueDriverTransport => {
  assert.equal(h.driver.kind, 'shared-queue')
  return h.driver
}

/** A shared-queue agent, connected and started, taking up to `window` task frames. */
async function taker(h: Harness, id: string, window: number, via?: Partial<BrokeredOptions>, failures?: Error[]) {
  const agent = h.agent(id, via) as SharedQueueAgentTransport
  const got = await join(agent, failures)
  agent.setWindow(window)
  await agent.flush()
  const tasks = () => got.filter((r) => r.delivery !== undefined)
  return { agent, got, tasks }
}

/** A shared-queue driver and an agent of window 1 that has received the driver's first task frame, A. */
async function firstTaken(t: TestContext, design: Design) {
  const h = await design.setup(t)
  const driver = sharedDriver(h)
  listen(driver)
  const first = await taker(h, 'agent-1', 1)
  driver.publishTasks(msg('task', 'A'))
  await waitFor(() => first.tasks().length === 1, WAIT_MS, 'task frame A at agent-1')
  return { h, driver, first }
}

for (const design of DESIGNS) {
  describe(`transport contract: ${design.name}`, { skip: design.skip }, () => {
    test("bind and connect: an agent's message reaches the driver, with the agent's id as peer", async (t) => {
      const h = await design.setup(t)
      assert.ok(h.driver.address, 'the driver has an address once bound')
      const got = listen(h.driver)
      const agent = h.agent('agent-1')
      await join(agent)
      agent.send(msg('hello'))
      await waitFor(() => got.length === 1, WAIT_MS, 'the message at the driver')
      assert.equal(got[0]!.peer, 'agent-1')
      assert.deepEqual(texts(got[0]!.parts), ['hello'])
    })

    test("agent → driver: messages arrive in the order sent, each with its sender's peer id", async (t) => {
      const h = await design.setup(t)
      const got = listen(h.driver)
      const a = h.agent('agent-a')
      const b = h.agent('agent-b')
      await Promise.all([join(a), join(b)])
      const n = 100
      for (let i = 0; i < n; i++) {
        a.send(msg(`a${i}`))
        b.send(msg(`b${i}`))
      }
      await waitFor(() => got.length >= 2 * n, WAIT_MS, `${2 * n} messages at the driver`)
      for (const [peer, prefix] of [
        ['agent-a', 'a'],
        ['agent-b', 'b'],
      ] as const) {
        const seq = got.filter((r) => r.peer === peer).map((r) => texts(r.parts)[0])
        assert.deepEqual(
          seq,
          Array.from({ length: n }, (_, i) => `${prefix}${i}`),
          `what ${peer} sent`,
        )
      }
      assert.equal(got.length, 2 * n)
    })

    test('driver → agent: a send by peer id reaches that agent, and only it', async (t) => {
      const h = await design.setup(t)
      const atDriver = listen(h.driver)
      const a = h.agent('agent-a')
      const b = h.agent('agent-b')
      const [atA, atB] = await Promise.all([join(a), join(b)])
      await greet(a, atDriver, 'agent-a')
      await greet(b, atDriver, 'agent-b')
      for (let i = 0; i < 10; i++) {
        h.driver.send('agent-a', msg(`to a ${i}`))
        h.driver.send('agent-b', msg(`to b ${i}`))
      }
      await waitFor(() => atA.length === 10 && atB.length === 10, WAIT_MS, 'ten messages at each agent')
      assert.deepEqual(
        atA.map((r) => texts(r.parts)[0]),
        Array.from({ length: 10 }, (_, i) => `to a ${i}`),
      )
      assert.deepEqual(
        atB.map((r) => texts(r.parts)[0]),
        Array.from({ length: 10 }, (_, i) => `to b ${i}`),
      )
      assert.ok(
        [...atA, ...atB].every((r) => r.delivery === undefined),
        'messages come without a delivery',
      )
    })

    test('multi-part messages keep their parts, empty ones included, both ways', async (t) => {
      const h = await design.setup(t)
      const atDriver = listen(h.driver)
      const agent = h.agent('agent-1')
      const atAgent = await join(agent)
      await greet(agent, atDriver, 'agent-1')
      const shapes: Parts[] = [
        [Buffer.alloc(0), Buffer.from([7]), randomBytes(64 * 1024)],
        [randomBytes(3)],
        [Buffer.alloc(0)],
        [randomBytes(10), Buffer.alloc(0), randomBytes(1000), randomBytes(1)],
      ]
      for (const parts of shapes) agent.send(parts)
      for (const parts of shapes) h.driver.send('agent-1', parts)
      await waitFor(() => atDriver.length === 1 + shapes.length && atAgent.length === shapes.length, WAIT_MS, 'every message on both sides')
      const same = (got: Parts, sent: Parts) => got.length === sent.length && got.every((p, i) => Buffer.from(p).equals(sent[i]!))
      shapes.forEach((sent, i) => {
        assert.ok(same(atDriver[1 + i]!.parts, sent), `message ${i} at the driver`)
        assert.ok(same(atAgent[i]!.parts, sent), `message ${i} at the agent`)
      })
    })

    test('stats count frames and bytes of the parts, both ways, the same on both ends', async (t) => {
      const h = await design.setup(t)
      const atDriver = listen(h.driver)
      const agent = h.agent('agent-1')
      const atAgent = await join(agent)
      const up = [msg('hello'), [randomBytes(100), randomBytes(23)], [Buffer.alloc(0)]]
      const down = [[randomBytes(1000)], msg('a', 'bc')]
      for (const parts of up) agent.send(parts)
      await waitFor(() => atDriver.length === up.length, WAIT_MS, "the agent's messages")
      for (const parts of down) h.driver.send('agent-1', parts)
      await waitFor(() => atAgent.length === down.length, WAIT_MS, "the driver's messages")
      const upBytes = up.reduce((n, p) => n + size(p), 0)
      const downBytes = down.reduce((n, p) => n + size(p), 0)
      assert.deepEqual(agent.stats, { framesOut: up.length, bytesOut: upBytes, framesIn: down.length, bytesIn: downBytes, sendErrors: 0 })
      assert.deepEqual(h.driver.stats, { framesOut: down.length, bytesOut: downBytes, framesIn: up.length, bytesIn: upBytes, sendErrors: 0 })
    })

    test('close is idempotent and bounded, opened or not; Symbol.asyncDispose is the same close', async (t) => {
      const h = await design.setup(t)
      listen(h.driver)
      const agent = h.agent('agent-1')
      await join(agent)
      const never = h.agent('never-connected')
      for (const [name, x] of [
        ['agent', agent],
        ['unconnected agent', never],
        ['driver', h.driver],
      ] as const) {
        const first = x.close()
        assert.equal(x.close(), first, `${name}: a second close() is the same promise`)
        assert.equal(x[Symbol.asyncDispose](), first, `${name}: asyncDispose is the same close`)
        await within(first, 10_000, `the ${name} close`)
      }
    })

    test('sends after close are dropped without throwing, and counted nowhere', async (t) => {
      const h = await design.setup(t)
      const atDriver = listen(h.driver)
      const agent = h.agent('agent-1')
      await join(agent)
      await greet(agent, atDriver, 'agent-1')
      await agent.close()
      const agentStats = { ...agent.stats }
      agent.send(msg('late'))
      assert.deepEqual(agent.stats, agentStats)
      await h.driver.close()
      const driverStats = { ...h.driver.stats }
      h.driver.send('agent-1', msg('late'))
      if (h.driver.kind === 'shared-queue') {
        h.driver.publishTasks(msg('late task'))
        h.driver.peerGone('agent-1')
      }
      assert.deepEqual(h.driver.stats, driverStats)
      await new Promise((r) => setTimeout(r, 50))
      assert.deepEqual([h.driver.stats, agent.stats], [driverStats, agentStats], 'nothing counted later either')
      assert.equal(atDriver.length, 1)
    })

    test('receiving ends cleanly on close: no failure report, no unhandled rejection, nothing delivered after', async (t) => {
      const unhandled: unknown[] = []
      const onUnhandled = (reason: unknown) => void unhandled.push(reason)
      process.on('unhandledRejection', onUnhandled)
      t.after(() => void process.off('unhandledRejection', onUnhandled))
      const h = await design.setup(t)
      const failures: Error[] = []
      const atDriver = listen(h.driver, failures)
      const agent = h.agent('agent-1')
      const atAgent = await join(agent, failures)
      await greet(agent, atDriver, 'agent-1')
      h.driver.send('agent-1', msg('welcome'))
      await waitFor(() => atAgent.length === 1, WAIT_MS, 'the reply at the agent')
      agent.send(msg('in flight'))
      await Promise.all([agent.close(), h.driver.close()])
      const seen = [atDriver.length, atAgent.length]
      await new Promise((r) => setTimeout(r, QUIET_MS))
      assert.deepEqual([atDriver.length, atAgent.length], seen, 'nothing delivered after close')
      assert.deepEqual(
        failures.map((e) => e.message),
        [],
      )
      assert.deepEqual(unhandled, [])
    })

    if (design.kind === 'routed') {
      test('a send to a peer that is not connected fails as a counted send error, never a throw', async (t) => {
        const h = await design.setup(t)
        listen(h.driver)
        h.driver.send('nobody', msg('lost'))
        await waitFor(() => h.driver.stats.sendErrors === 1, WAIT_MS, 'the send error')
        assert.equal(h.driver.stats.framesOut, 1)
      })

      test('a message with a part over maxFrameBytes never arrives, and the link keeps working', { skip: design.noFrameLimit ?? false }, async (t) => {
        const h = await design.setup(t)
        const got = listen(h.driver)
        const agent = h.agent('agent-1')
        await join(agent)
        agent.send([Buffer.from('head'), Buffer.alloc(LIMIT + 1)])
        // ZeroMQ drops the connection of a peer that sends too much; the agent dials again on its own.
        const end = Date.now() + WAIT_MS
        while (got.length === 0 && Date.now() < end) {
          agent.send(msg('small'))
          await new Promise((r) => setTimeout(r, 50))
        }
        assert.ok(got.length > 0, `timed out after ${WAIT_MS} ms waiting for a small message after the large one`)
        // The limit is per part (libzmq's maxMessageSize): parts that each fit pass, together over it.
        const before = got.length
        agent.send([Buffer.alloc(LIMIT / 2, 1), Buffer.alloc(LIMIT / 2 + 1, 2)])
        await waitFor(() => got.slice(before).some((r) => size(r.parts) > LIMIT), WAIT_MS, 'two parts that each fit')
        assert.ok(
          got.every((r) => r.parts.every((p) => p.byteLength <= LIMIT)),
          'no part over the limit delivered',
        )
      })
    }

    if (design.kind === 'shared-queue') {
      test('publishTasks: an agent with room receives the frame with a delivery; ack takes it off the queue', async (t) => {
        const { h, driver, first } = await firstTaken(t, design)
        const [a] = first.tasks()
        assert.deepEqual(texts(a!.parts), ['task', 'A'])
        assert.equal(a!.redelivered, false, 'a first delivery is not marked')
        first.agent.ack([a!.delivery])
        await first.agent.flush()
        await first.agent.close()
        // Had A gone back to the queue, it would reach the next agent before B.
        const second = await taker(h, 'agent-2', 1)
        driver.publishTasks(msg('task', 'B'))
        await waitFor(() => second.tasks().length === 1, WAIT_MS, 'a task frame at agent-2')
        assert.deepEqual(texts(second.tasks()[0]!.parts), ['task', 'B'])
      })

      test('release gives a frame back to the queue, for another agent', async (t) => {
        const { h, first } = await firstTaken(t, design)
        first.agent.setWindow(0)
        await first.agent.flush()
        const second = await taker(h, 'agent-2', 1)
        first.agent.release([first.tasks()[0]!.delivery])
        await waitFor(() => second.tasks().length === 1, WAIT_MS, 'the released frame at agent-2')
        // The same parts, marked as handed out before (the mark is not part of the message).
        assert.deepEqual(texts(second.tasks()[0]!.parts), ['task', 'A'])
        assert.equal(second.tasks()[0]!.redelivered, true)
        assert.equal(first.tasks().length, 1, 'agent-1, at window 0, took nothing more')
        // Given back twice, it is marked once: the parts stay the same.
        second.agent.setWindow(0)
        await second.agent.flush()
        second.agent.release([second.tasks()[0]!.delivery])
        first.agent.setWindow(1)
        await waitFor(() => first.tasks().length === 2, WAIT_MS, 'the frame released again at agent-1')
        assert.deepEqual(texts(first.tasks()[1]!.parts), ['task', 'A'])
        assert.equal(first.tasks()[1]!.redelivered, true)
      })

      test('setWindow(0) stops taking; a window again resumes', async (t) => {
        const { driver, first: one } = await firstTaken(t, design)
        one.agent.setWindow(0)
        await one.agent.flush()
        one.agent.ack([one.tasks()[0]!.delivery])
        await one.agent.flush()
        driver.publishTasks(msg('task', 'B'))
        await new Promise((r) => setTimeout(r, QUIET_MS))
        assert.equal(one.tasks().length, 1, 'nothing taken at window 0')
        one.agent.setWindow(1)
        await waitFor(() => one.tasks().length === 2, WAIT_MS, 'task frame B once the window opened')
        assert.deepEqual(texts(one.tasks()[1]!.parts), ['task', 'B'])
      })

      test("a lost agent's frames go to another: Redis when the driver calls peerGone, RabbitMQ when the connection drops", async (t) => {
        const h = await design.setup(t)
        const driver = sharedDriver(h)
        listen(driver)
        const key = design.brokered!.taskBroker
        const url = key === 'redisUrl' ? REDIS_URL : AMQP_URL
        const proxy = await proxyTo(t, url, key === 'redisUrl' ? 6379 : 5672)
        const failures: Error[] = []
        const lost = await taker(h, 'agent-lost', 1, { [key]: withPort(url, proxy.port) }, failures)
        driver.publishTasks(msg('task', 'A'))
        await waitFor(() => lost.tasks().length === 1, WAIT_MS, 'task frame A at the agent about to be lost')
        await proxy.cut()
        await waitFor(() => failures.length > 0, WAIT_MS, "the lost agent's failure report")
        assert.match(failures[0]!.message, /lost its connection|failed/)
        const other = await taker(h, 'agent-2', 1)
        driver.peerGone('agent-lost')
        await waitFor(() => other.tasks().length === 1, WAIT_MS, "the lost agent's frame at agent-2")
        assert.deepEqual(texts(other.tasks()[0]!.parts), ['task', 'A'])
        assert.equal(other.tasks()[0]!.redelivered, true, 'marked as handed out before')
        await within(lost.agent.close(), 10_000, 'closing the agent whose broker is gone')
      })

      if (design.brokered?.taskBroker === 'redisUrl')
        test("a frame a lost agent's pending BLMOVE takes after peerGone is moved back too, marked", async (t) => {
          const h = await design.setup(t)
          const driver = sharedDriver(h)
          listen(driver)
          const other = await taker(h, 'agent-2', 0)
          // A frozen agent's BLMOVE, sent before it froze: Redis serves it whatever its client does.
          const frozen = new Redis(REDIS_URL, { connectionName: `frozen-${h.clusterId!}` })
          t.after(() => frozen.disconnect())
          const prefix = `ac:{${h.clusterId!}}:`
          const taking = frozen.blmoveBuffer(`${prefix}tasks`, `${prefix}processing:ghost`, 'RIGHT', 'LEFT', 5)
          const probe = new Redis(REDIS_URL)
          t.after(() => probe.disconnect())
          // Wait (bounded) until Redis has it blocked, so it is first in line for the next frame.
          for (let i = 0; ; i++) {
            const list = (await probe.client('LIST')) as string
            if (list.split('\n').some((l) => l.includes(`name=frozen-${h.clusterId!}`) && / cmd=blmove/.test(l) && / flags=b/.test(l))) break
            if (i >= 250) assert.fail(`the frozen client's BLMOVE was not blocked within 5 s`)
            await new Promise((r) => setTimeout(r, 20))
          }
          driver.peerGone('ghost')
          driver.publishTasks(msg('task', 'A'))
          assert.ok(await taking, 'the frozen client took the frame into its list after peerGone')
          other.agent.setWindow(1)
          await waitFor(() => other.tasks().length === 1, WAIT_MS, 'the frame moved back by the second look')
          assert.deepEqual(texts(other.tasks()[0]!.parts), ['task', 'A'])
          assert.equal(other.tasks()[0]!.redelivered, true)
          assert.equal(await probe.llen(`${prefix}processing:ghost`), 0)
        })
    }
  })
}
