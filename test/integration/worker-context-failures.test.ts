/**
 * Failures under nested work and conversations between actors: a thread
 * dying under a task that seceded, a node lost while an actor elsewhere waits
 * on its actors' answers, and a parent's node lost while its children run
 * (they are cancelled).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, AgentPool, Cluster, TaskTimeoutError, WorkerCrashedError } from '../../lib/index.js'
import type * as Tasks from '../fixtures/context-tasks.js'
import { CLI, FAST, waitFor, within } from '../helpers.js'
import { AMQP_URL, REDIS_URL, skipReason } from '../brokers.js'

const TASKS = new URL('../fixtures/context-tasks.js', import.meta.url)

function startAgent(address: string, id: string, threads = 1) {
  const args = ['agent', '--connect', address, '--tasks', TASKS.href, '--threads', String(threads), '--id', id]
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

test('a task that seceded keeps its timeout: past it, it fails once with TaskTimeoutError and the thread goes on', async () => {
  await using cluster = await Cluster.start({ tasks: TASKS, threads: 1 })
  const started = Date.now()
  await assert.rejects(
    within(cluster.with({ timeoutMs: 300, retries: 0 }).call('slowParent', 1, 3_000), 20_000, 'slowParent under a timeout'),
    (e: unknown) => e instanceof TaskTimeoutError && /timeout of 300 ms while it waited on work it asked for/.test(e.message),
  )
  assert.ok(Date.now() - started < 2_500, `timed out after ${Date.now() - started} ms, not when its child ended`)
  // Within its timeout, a seceded task answers as ever; the thread was not stopped.
  assert.equal(await within(cluster.with({ timeoutMs: 10_000 }).call('slowParent', 2, 50), 20_000, 'slowParent in time'), 2)
  assert.equal(await within(cluster.call('fib', 10), 20_000, 'fib(10) after the timeout'), 55)
})

test("a task catching the timeout of a child it asked for gets the child's TaskTimeoutError; it is not retried and its thread goes on", async () => {
  // One thread: the parent seceded on it, so the timed child, stopped at its limit, must not run there.
  await using cluster = await Cluster.start({ tasks: TASKS, threads: 1 })
  const cases = [
    { via: 'map', parent: cluster },
    { via: 'call', parent: cluster },
    // A timed parent (it seceded, its own limit kept by the agent) with a timed child.
    { via: 'call', parent: cluster.with({ timeoutMs: 20_000 }) },
  ] as const
  for (const { via, parent } of cases) {
    const retried = cluster.stats().tasksRetried
    const started = Date.now()
    const text = await within(parent.call<string>('parentOfTimedChild', 5_000, 200, via), 20_000, `parentOfTimedChild via ${via}`)
    assert.match(text, /^TaskTimeoutError: task "blockingChild" ran longer than its timeout of 200 ms/, via)
    assert.equal(cluster.stats().tasksRetried, retried, `the parent (via ${via}) was not retried`)
    assert.ok(Date.now() - started < 4_000, `the child was stopped at its limit, not after its 5 s (${Date.now() - started} ms)`)
  }
  // The node goes on serving, nested work too.
  assert.equal(await within(cluster.call('fib', 10), 20_000, 'fib(10) after the timeouts'), 55)
  assert.equal(await within(cluster.with({ timeoutMs: 5_000 }).call('blockingChild', 10), 20_000, 'a timed task after the timeouts'), 10)
})

test("agents sharing one pool: a task catching the timeout of a child it asked for gets the child's TaskTimeoutError", async (t) => {
  await using pool = await AgentPool.start({ tasks: TASKS, threads: 1 })
  await using cluster = await Cluster.start({ tasks: TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const agents = await Promise.all(['shared-a', 'shared-b'].map((id) => Agent.start({ connect: cluster.address, tasks: TASKS, threads: 1, pool, id })))
  t.after(() => Promise.all(agents.map((a) => a.close())))
  await waitFor(() => cluster.nodes().length === 2, 15_000, 'two agents')
  const retried = cluster.stats().tasksRetried
  const texts = await within(
    Promise.all([1, 2, 3, 4].map((i) => cluster.call<string>('parentOfTimedChild', 5_000, 200, i % 2 === 0 ? 'map' : 'call'))),
    20_000,
    'four parents of timed children',
  )
  for (const text of texts) assert.match(text, /^TaskTimeoutError: task "blockingChild" ran longer than its timeout of 200 ms/)
  assert.equal(cluster.stats().tasksRetried, retried, 'no parent was retried')
  assert.equal(await within(cluster.call('fib', 10), 20_000, 'fib(10) after the timeouts'), 55)
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

test('a parent whose node is lost runs again elsewhere; the children it had asked for are cancelled: queued ones never start', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'actor-cluster-orphans-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'children')
  writeFileSync(file, '')
  await using cluster = await Cluster.start({ tasks: TASKS, localAgents: 0, listen: 'tcp://127.0.0.1:0', ...FAST })
  const doomed = startAgent(cluster.address, 'ctx-doomed')
  t.after(() => doomed.kill('SIGKILL'))
  await waitFor(() => cluster.nodes().length === 1, 20_000, 'the doomed agent to register')
  // The parent runs on the doomed agent (the only one) and asks for 20 children of 3 s each.
  const parent = cluster.call<number>('notedParent', 20, 3_000, file)
  await waitFor(() => cluster.stats().tasksSubmitted >= 21, 20_000, 'the children to be asked for')
  const safe = startAgent(cluster.address, 'ctx-safe', 4)
  t.after(() => safe.kill('SIGKILL'))
  const lines = () =>
    readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' '))
  // Some of them run on the safe agent: the rest wait in the driver's queue, for a thread of either agent.
  await waitFor(() => lines().some(([what, , pid]) => what === 'start' && pid === String(safe.pid)), 20_000, 'a child to start on the safe agent')
  let lostAt = 0
  cluster.on('node:lost', () => (lostAt = Date.now()))
  doomed.kill('SIGKILL')
  assert.equal(await within(parent, 60_000, 'the parent, run again'), 20)
  assert.ok(lostAt > 0, 'the doomed node was lost')
  // The children abandoned on the safe agent finish (a running task is not interrupted); nothing else of the first run does.
  await new Promise((r) => setTimeout(r, 3_500))
  const firstRun = String(doomed.pid)
  const starts = lines().filter(([what, tag]) => what === 'start' && tag === firstRun)
  const ends = lines().filter(([what, tag]) => what === 'end' && tag === firstRun)
  // Sent before the loss was known, and so started at most a moment after it: none of the first run's queued children started later.
  const late = starts.filter(([, , , at]) => Number(at) > lostAt + 500)
  assert.deepEqual(late, [], `first-run children started after the loss (${starts.length} started in all)`)
  assert.ok(starts.length < 20 && ends.length <= starts.length, `${starts.length} of the first run's 20 children started, ${ends.length} ended`)
  assert.ok(cluster.stats().tasksCancelled >= 20 - starts.length, `the ones never started were cancelled: ${JSON.stringify(cluster.stats())}`)
  // The second run's children all ran: 20.
  assert.equal(lines().filter(([what, tag]) => what === 'end' && tag === String(safe.pid)).length, 20)
  assert.equal(cluster.stats().queued, 0)
  assert.equal(cluster.stats().inFlight, 0)
  assert.equal(cluster.stats().badFrames, 0)
})

for (const design of ['redis', 'amqp', 'amqp+redis'] as const) {
  test(`on the ${design} design: nested calls on one thread, and a task spawning and telling an actor`, { skip: skipReason(design) }, async () => {
    await using cluster = await Cluster.start({ tasks: TASKS, threads: 1, transport: design, redisUrl: REDIS_URL, amqpUrl: AMQP_URL })
    assert.equal(await within(cluster.call('fib', 15), 60_000, 'fib(15)'), 610)
    assert.equal(await within(cluster.call('spawnAndCount', 20), 60_000, 'spawnAndCount'), 20)
  })
}
