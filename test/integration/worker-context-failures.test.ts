/**
 * Failures under nested work and conversations between actors: a thread
 * dying under a task that seceded, a node lost while an actor elsewhere waits
 * on its actors' answers, and a parent's node lost while its children run.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { Cluster, WorkerCrashedError } from '../../lib/index.js'
import type * as Tasks from '../fixtures/context-tasks.js'
import { CLI, FAST, waitFor, within } from '../helpers.js'
import { AMQP_URL, REDIS_URL, skipReason } from '../brokers.js'

const TASKS = new URL('../fixtures/context-tasks.js', import.meta.url)

function startAgent(address: string, id: string) {
  const args = ['agent', '--connect', address, '--tasks', TASKS.href, '--threads', '1', '--id', id]
  args.push('--heartbeat-ms', String(FAST.heartbeatMs), '--driver-timeout-ms', String(FAST.nodeTimeoutMs))
  return spawn(process.execPath, [CLI, ...args], { stdio: 'ignore' })
}

test('a thread that dies under a task that seceded answers it once with WorkerCrashedError', async () => {
  await using cluster = await Cluster.start({ tasks: TASKS, threads: 1 })
  await assert.rejects(
    within(cluster.with({ maxRetries: 0 }).call('parentOfCrash'), 60_000, 'parentOfCrash'),
    (e: unknown) => e instanceof WorkerCrashedError && /waiting on work it asked for lost its worker thread/.test(e.message),
  )
  // The node goes on: a fresh thread runs nested work.
  assert.equal(await within(cluster.call('fib', 10), 60_000, 'fib(10) after the crash'), 55)
})

test('a node lost while an actor elsewhere waits on its actor: each outstanding ask settles once, with a value or ActorLostError', async (t) => {
  await using cluster = await Cluster.start({ tasks: TASKS, threads: 1, listen: 'tcp://127.0.0.1:0', ...FAST })
  const far = startAgent(cluster.address, 'ctx-far')
  t.after(() => far.kill('SIGKILL'))
  await waitFor(() => cluster.nodes().length === 2, 20_000, 'the second agent to register')
  const here = cluster.nodes().find((n) => n.id !== 'ctx-far')!.id
  const asker = await cluster.with({ node: here }).spawn<Tasks.Asker>('Asker')
  const echo = await cluster.with({ node: 'ctx-far' }).spawn<Tasks.SlowEcho>('SlowEcho')
  // 200 asks answered 20 ms apart (one mailbox): the node dies part-way through.
  const outcome = asker.askMany(echo, 200, 20)
  await new Promise((r) => setTimeout(r, 1_000))
  far.kill('SIGKILL')
  const r = await within(outcome, 30_000, 'the asks to settle')
  assert.deepEqual(r.other, [])
  assert.equal(r.ok + r.lost, 200)
  assert.ok(r.ok > 0 && r.lost > 0, `some answered before the loss and some were lost: ${JSON.stringify(r)}`)
})

test('a parent whose node is lost runs again elsewhere; the children it had asked for finish and their results are dropped', async (t) => {
  await using cluster = await Cluster.start({ tasks: TASKS, localAgents: 0, listen: 'tcp://127.0.0.1:0', ...FAST })
  const first = startAgent(cluster.address, 'ctx-first')
  t.after(() => first.kill('SIGKILL'))
  await waitFor(() => cluster.nodes().length === 1, 20_000, 'the first agent to register')
  const parent = cluster.call<number>('slowParent', 20, 300)
  await waitFor(() => cluster.stats().tasksSubmitted >= 21, 20_000, 'the children to be asked for')
  first.kill('SIGKILL')
  const second = startAgent(cluster.address, 'ctx-second')
  t.after(() => second.kill('SIGKILL'))
  assert.equal(await within(parent, 60_000, 'the parent, run again'), 20)
  // The first run's children were requeued with their node and ran on the second agent; nobody waits for them.
  await waitFor(() => cluster.stats().queued === 0 && cluster.stats().inFlight === 0, 30_000, 'the orphaned children to finish')
  assert.equal(cluster.stats().badFrames, 0)
})

for (const design of ['redis', 'amqp', 'amqp+redis'] as const) {
  test(`on the ${design} design: nested calls on one thread, and a task spawning and telling an actor`, { skip: skipReason(design) }, async () => {
    await using cluster = await Cluster.start({ tasks: TASKS, threads: 1, transport: design, redisUrl: REDIS_URL, amqpUrl: AMQP_URL })
    assert.equal(await within(cluster.call('fib', 15), 60_000, 'fib(15)'), 610)
    assert.equal(await within(cluster.call('spawnAndCount', 20), 60_000, 'spawnAndCount'), 20)
  })
}
