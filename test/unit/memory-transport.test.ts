/** What the in-memory transport does beyond the contract suite: the ZeroMQ behaviours it stands in for. */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { MemoryAgentTransport, MemoryDriverTransport, MemoryHub } from '../../lib/transport/memory.js'
import { TransportError } from '../../lib/errors.js'
import type { Parts } from '../../lib/transport/transport.js'
import { waitFor } from '../helpers.js'

const LIMIT = 1024

async function pair(t: TestContext, hub = new MemoryHub(), onSendError?: (peer: string, err: Error) => void) {
  const driver = new MemoryDriverTransport({ hub, listen: 'memory://*', maxFrameBytes: LIMIT, onSendError })
  t.after(() => driver.close())
  await driver.bind()
  const agent = (identity: string) => {
    const a = new MemoryAgentTransport({ hub, connect: driver.address, identity, maxFrameBytes: LIMIT })
    t.after(() => a.close())
    return a
  }
  return { hub, driver, agent }
}

const text = (parts: Parts) => parts.map((p) => Buffer.from(p).toString())

test('addresses: memory://* picks a name, a taken one is ERR_ADDRESS_IN_USE until its driver closes, other schemes are refused', async (t) => {
  const { hub, driver } = await pair(t)
  assert.match(driver.address, /^memory:\/\/\d+$/)
  const named = new MemoryDriverTransport({ hub, listen: 'memory://x', maxFrameBytes: LIMIT })
  await named.bind()
  const again = new MemoryDriverTransport({ hub, listen: 'memory://x', maxFrameBytes: LIMIT })
  await assert.rejects(again.bind(), (e: unknown) => e instanceof TransportError && e.code === 'ERR_ADDRESS_IN_USE')
  assert.deepEqual(hub.addresses.sort(), [driver.address, 'memory://x'].sort())
  await named.close()
  await again.bind()
  await again.close()
  assert.throws(() => new MemoryDriverTransport({ hub, listen: 'tcp://127.0.0.1:1', maxFrameBytes: LIMIT }), TransportError)
  assert.equal(new MemoryHub().driverAt(driver.address), undefined, 'hubs are apart')
})

test('delivery is never within send(), waits for start(), and hands over copies', async (t) => {
  const { driver, agent } = await pair(t)
  const a = agent('a1')
  await a.connect()
  const sent = Buffer.from('abc')
  a.send([sent])
  sent.fill(0x7a) // the sender reuses its buffer
  await nextTurn()
  const got: Parts[] = []
  driver.start((_peer, parts) => got.push(parts))
  assert.equal(got.length, 0, 'not within start() either')
  await waitFor(() => got.length === 1, 2000, 'the message sent before start()')
  assert.deepEqual(text(got[0]!), ['abc'])
  got[0]![0]!.fill(0x41)
  assert.equal(sent.toString(), 'zzz', 'the receiver cannot reach into the sender')
})

test('a send to a peer that is not connected fails, is counted and reported; an agent with no driver bound counts its sends as failed', async (t) => {
  const failures: string[] = []
  const { hub, driver, agent } = await pair(t, undefined, (peer, err) => failures.push(`${peer}: ${err.message}`))
  driver.send('nobody', [Buffer.from('x')])
  assert.equal(driver.stats.sendErrors, 1)
  assert.match(failures[0]!, /^nobody: no agent "nobody" is connected/)
  const lonely = new MemoryAgentTransport({ hub, connect: 'memory://unbound', identity: 'l', maxFrameBytes: LIMIT })
  t.after(() => lonely.close())
  lonely.send([Buffer.from('before connect')])
  await lonely.connect()
  lonely.send([Buffer.from('no driver')])
  assert.deepEqual([lonely.stats.framesOut, lonely.stats.sendErrors], [2, 2])
  const a = agent('a1')
  a.send([Buffer.from('not connected yet')])
  assert.equal(a.stats.sendErrors, 1)
})

test('an agent connecting with a connected identity takes its place (handover), and redial takes it back', async (t) => {
  const { driver, agent } = await pair(t)
  const first = agent('same')
  const second = agent('same')
  const got = { first: [] as string[], second: [] as string[] }
  await first.connect()
  first.start((p) => got.first.push(...text(p)))
  await second.connect()
  second.start((p) => got.second.push(...text(p)))
  driver.send('same', [Buffer.from('one')])
  await waitFor(() => got.second.length === 1, 2000, 'the message to the newer connection')
  first.redial()
  driver.send('same', [Buffer.from('two')])
  await waitFor(() => got.first.length === 1, 2000, 'the message after redial')
  assert.deepEqual(got, { first: ['two'], second: ['one'] })
})

test("a message with a part over the receiver's maxFrameBytes is dropped and counted as a send error; parts under it pass, however many", async (t) => {
  const { driver, agent } = await pair(t)
  const a = agent('a1')
  await a.connect()
  const atDriver: string[] = []
  const atAgent: string[] = []
  driver.start((_p, parts) => atDriver.push(...text(parts)))
  a.start((parts) => atAgent.push(...text(parts)))
  a.send([Buffer.from('head'), Buffer.alloc(LIMIT + 1, 'b')])
  a.send([Buffer.from('small'), Buffer.alloc(LIMIT, 'c')])
  await waitFor(() => atDriver.length > 0, 2000, 'the message whose parts fit')
  assert.deepEqual(atDriver, ['small', 'c'.repeat(LIMIT)])
  assert.equal(a.stats.sendErrors, 1)
  driver.send('a1', [Buffer.alloc(LIMIT + 1)])
  driver.send('a1', [Buffer.from('fits')])
  await waitFor(() => atAgent.length > 0, 2000, 'the message that fits')
  assert.deepEqual(atAgent, ['fits'])
  assert.deepEqual([driver.stats.sendErrors, driver.stats.framesIn, a.stats.framesIn], [1, 1, 1])
})

test('a handler that throws stops receiving and is reported, never thrown into the event loop', async (t) => {
  const { driver, agent } = await pair(t)
  const a = agent('a1')
  await a.connect()
  const failures: Error[] = []
  let calls = 0
  driver.start(
    () => {
      calls++
      throw new Error('handler bug')
    },
    (err) => failures.push(err),
  )
  a.send([Buffer.from('1')])
  a.send([Buffer.from('2')])
  await waitFor(() => failures.length === 1, 2000, 'the failure report')
  await nextTurn()
  assert.equal(calls, 1)
  assert.ok(failures[0] instanceof TransportError)
  assert.match(failures[0].message, /receiving failed: handler bug/)
})
