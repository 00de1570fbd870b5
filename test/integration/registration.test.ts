import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as zmq from 'zeromq'
import { Cluster } from '../../lib/index.js'
import { decode, encode, header, parseHeader } from '../../lib/protocol/codec.js'
import { MsgType } from '../../lib/protocol/messages.js'
import { FIXTURE_TASKS, waitFor } from '../helpers.js'

test('a Hello repeated before the Welcome arrived is a duplicate; one with a new session re-registers the agent', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', insecure: true, localAgents: 0 })
  const joined: string[] = []
  const lost: string[] = []
  cluster.on('node:joined', (n) => joined.push(n.id))
  cluster.on('node:lost', (n) => lost.push(n.id))
  const dealer = new zmq.Dealer({ routingId: 'busy-agent', linger: 0, receiveTimeout: 5000 })
  t.after(() => dealer.close())
  dealer.connect(cluster.address)
  const info = { agentId: 'busy-agent', threads: 1, pid: 1, host: 'h', version: '0.0.0', tasks: ['add'], actors: [], window: 4 }
  const next = async (type: number): Promise<Buffer[]> => {
    for (;;) {
      const parts = await dealer.receive()
      if (parseHeader(parts[0]).type === type) return parts
    }
  }
  await dealer.send([header(MsgType.Hello, { ...info, registration: 's1' })])
  await next(MsgType.Welcome)
  const call = cluster.call('add', 1, 2)
  await next(MsgType.Tasks)
  assert.equal(cluster.stats().inFlight, 1)

  // The same session again: welcomed again, nothing else changes — the task stays with the agent.
  await dealer.send([header(MsgType.Hello, { ...info, registration: 's1' })])
  await next(MsgType.Welcome)
  assert.deepEqual([joined, lost], [['busy-agent'], []])
  assert.equal(cluster.stats().requeued, 0)
  assert.equal(cluster.stats().inFlight, 1)

  // A new session means the agent lost us and dropped its work: the task is requeued and handed out again.
  await dealer.send([header(MsgType.Hello, { ...info, registration: 's2' })])
  await next(MsgType.Welcome)
  await waitFor(() => lost.length === 1, 5000, 'the old registration dropped')
  assert.deepEqual(joined, ['busy-agent', 'busy-agent'])
  assert.equal(cluster.stats().requeued, 1)
  const [, body] = await next(MsgType.Tasks)
  const [id, name, args] = decode(body!) as [number, string, number[]]
  assert.deepEqual([name, args], ['add', [1, 2]])
  // Answer it, so the call settles once.
  await dealer.send([header(MsgType.Results, 1), encode([id, 0, 3])])
  assert.equal(await call, 3)
  // A session that is not a short string is a malformed Hello: counted, dropped.
  const bad = cluster.stats().badFrames
  await dealer.send([header(MsgType.Hello, { ...info, registration: 'x'.repeat(100) })])
  await waitFor(() => cluster.stats().badFrames > bad, 5000, 'the malformed hello counted')
})

test('results of an earlier registration of an agent are late: they settle nothing and leave the new registration\u2019s in-flight count alone', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', insecure: true, localAgents: 0 })
  const dealer = new zmq.Dealer({ routingId: 'rejoining', linger: 0 })
  t.after(() => dealer.close())
  dealer.connect(cluster.address)
  const welcomes: number[] = []
  const taskIds: number[] = []
  void (async () => {
    try {
      for await (const [h, body] of dealer) {
        const parsed = parseHeader(h)
        if (parsed.type === MsgType.Welcome) welcomes.push(1)
        if (parsed.type === MsgType.Tasks) {
          const flat = decode(body!) as unknown[]
          for (let i = 0; i < flat.length; i += 3) taskIds.push(flat[i] as number)
        }
      }
    } catch {
      // closed
    }
  })()
  const info = { agentId: 'rejoining', threads: 1, pid: 1, host: 'h', version: '0.0.0', tasks: ['add'], actors: [], window: 2 }
  await dealer.send([header(MsgType.Hello, { ...info, registration: 'r1' })])
  await waitFor(() => welcomes.length === 1, 5000, 'the Welcome of registration r1')
  const calls = [cluster.call('add', 1, 2), cluster.call('add', 3, 4)]
  await waitFor(() => taskIds.length === 2, 5000, 'both tasks sent to registration r1')
  const ids = [...taskIds]
  // The agent registers again: its tasks are taken back and sent to the new registration.
  await dealer.send([header(MsgType.Hello, { ...info, registration: 'r2' })])
  await waitFor(() => taskIds.length === 4, 5000, 'both tasks sent again, to registration r2')
  assert.deepEqual(taskIds.slice(2).sort(), [...ids].sort())
  assert.equal(cluster.nodes()[0]?.inFlight, 2)

  // Registration r1 answers what it was given: late, so nothing settles with its values and r2 keeps its count.
  const before = cluster.stats()
  await dealer.send([header(MsgType.Results, 2, 'r1'), encode(ids.flatMap((id) => [id, 0, 999]))])
  await waitFor(() => cluster.stats().lateResultsDropped === before.lateResultsDropped + 2, 5000, 'the two results of r1 counted as late')
  assert.equal(cluster.stats().badFrames, before.badFrames)
  assert.equal(cluster.nodes()[0]?.inFlight, 2, 'the new registration still holds both tasks')
  assert.equal(cluster.nodes()[0]?.tasksDone, 0)

  // Registration r2 answers: these settle the calls.
  await dealer.send([header(MsgType.Results, 2, 'r2'), encode(ids.flatMap((id, i) => [id, 0, i === 0 ? 3 : 7]))])
  assert.deepEqual(await Promise.all(calls), [3, 7])
  assert.equal(cluster.nodes()[0]?.inFlight, 0)
})
