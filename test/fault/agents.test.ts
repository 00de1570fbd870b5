import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { Cluster, ActorLostError } from '../../lib/index.js'
import type * as Tasks from '../fixtures/tasks.js'
import { FAST, FIXTURE_TASKS, fastAgentArgs, freePort, runCli, waitFor, within, type Proc } from '../helpers.js'
import { AMQP_URL, REDIS_URL, skipReason } from '../brokers.js'

/**
 * Kills the driver process once both agents have its Welcome (the driver counts an agent when it sends it):
 * `leaves` (--exit-on-driver-loss) must exit 0 saying why, `stays` go idle waiting for the next driver.
 */
async function killDriver(driver: ChildProcess, stays: Proc, leaves: Proc): Promise<void> {
  await waitFor(() => /joined the driver/.test(stays.output()) && /joined the driver/.test(leaves.output()), 15_000, 'both agents to see the Welcome')
  driver.kill('SIGKILL')
  let code: number | null | undefined
  void leaves.exited.then((c) => (code = c))
  await waitFor(() => code !== undefined, 15_000, `the --exit-on-driver-loss agent to exit (it said: ${leaves.output()})`)
  assert.equal(code, 0, leaves.output())
  assert.match(leaves.output(), /lost the driver \(no word from the driver for 1500 ms\); exiting/)
  await waitFor(() => /lost the driver .*waiting for the next one/.test(stays.output()), 10_000, `the other agent to go idle (it said: ${stays.output()})`)
}

/** Resolves with the reason when the node of process `pid` is declared lost. */
function lossOf(cluster: Cluster, pid: number | undefined): Promise<string> {
  return new Promise((resolve) => {
    const on = (node: { pid: number }, reason: string) => {
      if (node.pid !== pid) return
      cluster.off('node:lost', on)
      resolve(reason)
    }
    cluster.on('node:lost', on)
  })
}

async function startAgents(t: Parameters<typeof runCli>[0], cluster: Cluster, n: number): Promise<Proc[]> {
  const procs = Array.from({ length: n }, () => runCli(t, fastAgentArgs(cluster.address)))
  await waitFor(() => cluster.nodes().length === n, 20_000, `${n} agents`)
  return procs
}

test('50,000 tasks over 3 agents, one SIGKILLed mid-run: every result arrives once, correct', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0, ...FAST })
  const agents = await startAgents(t, cluster, 3)
  const n = 50_000
  let done = 0
  const lost = lossOf(cluster, agents[1]!.child.pid)
  const all = Promise.all(
    Array.from({ length: n }, (_, i) =>
      cluster.call<number>('spin', 20, i).then((r) => {
        done++
        return r
      }),
    ),
  )
  await waitFor(() => done >= n * 0.3, 60_000, '30% of the results')
  agents[1]!.child.kill('SIGKILL')
  assert.match(await lost, /no heartbeat/)
  const results = await all
  results.forEach((r, i) => assert.equal(r, i))
  const s = cluster.stats()
  assert.ok(s.nodesLost >= 1)
  assert.ok(s.requeued > 0, 'the lost agent held tasks that went elsewhere')
  assert.equal(s.tasksSucceeded, n)
  assert.ok(!cluster.nodes().some((node) => node.pid === agents[1]!.child.pid), 'the killed agent is gone from nodes()')
})

test('an agent frozen (SIGSTOP) past the timeout, then resumed: no duplicate delivery, and it rejoins', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0, ...FAST })
  const agents = await startAgents(t, cluster, 3)
  const frozen = agents[0]!
  const n = 20_000
  const seen = new Uint8Array(n)
  let count = 0
  let stopped = false
  const lost = lossOf(cluster, frozen.child.pid)
  for await (const i of cluster.map<number>(
    'spin',
    Array.from({ length: n }, (_, i) => [30, i]),
    { ordered: false },
  )) {
    seen[i]!++
    count++
    if (count === n * 0.3) {
      frozen.child.kill('SIGSTOP')
      stopped = true
    }
    if (stopped && count === n * 0.6) {
      await within(lost, 15_000, 'the frozen agent to be declared lost')
      frozen.child.kill('SIGCONT')
    }
  }
  assert.equal(count, n)
  assert.ok(
    seen.every((x) => x === 1),
    'each result delivered exactly once',
  )
  // Resumed, it finds the driver no longer knows it, introduces itself again, and serves.
  await waitFor(() => cluster.nodes().some((node) => node.pid === frozen.child.pid), 15_000, 'the resumed agent to rejoin')
  // It gets work again (bounded: a few rounds of tasks that each hold a thread for a while).
  const pids = new Set<number>()
  for (let round = 0; round < 10 && !pids.has(frozen.child.pid!); round++) {
    for (const pid of await Promise.all(Array.from({ length: 30 }, () => cluster.call<number>('sleepThenWhoami', 20)))) pids.add(pid)
  }
  assert.ok(
    pids.has(frozen.child.pid!),
    `the rejoined agent gets work (tasks ran on ${[...pids].join(', ')}; nodes ${JSON.stringify(cluster.nodes().map((n) => [n.pid, n.window, n.inFlight]))})`,
  )
})

test('actors on a lost node: calls reject with ActorLostError, or with restart: always the actor comes back fresh elsewhere', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0, ...FAST })
  const [first] = await startAgents(t, cluster, 1)
  const plain = await cluster.spawn<Tasks.Counter>('Counter', 10)
  const phoenix = await cluster.with({ restart: 'always' }).spawn<Tasks.Counter>('Counter', 100)
  assert.equal(await plain.inc(1), 11)
  assert.equal(await phoenix.inc(5), 105)
  assert.equal(plain.node, phoenix.node)
  const second = runCli(t, fastAgentArgs(cluster.address))
  await waitFor(() => cluster.nodes().length === 2, 20_000, 'second agent')
  const restarted = once(cluster, 'actor:restarted')
  first!.child.kill('SIGKILL')
  await within(restarted, 15_000, 'actor:restarted after the first node was killed')
  await assert.rejects(plain.inc(1), (e: unknown) => e instanceof ActorLostError && e.code === 'ERR_ACTOR_LOST')
  // Fresh state from the constructor arguments, on the surviving node.
  assert.equal(await phoenix.inc(1), 101)
  assert.equal(cluster.nodes().find((n) => n.id === phoenix.node)?.pid, second.child.pid)
  await phoenix.stop()
})

test('a driver that dies: agents notice, go idle, and serve the next driver; --exit-on-driver-loss exits instead', async (t) => {
  const port = await freePort()
  const address = `tcp://127.0.0.1:${port}`
  const driver = spawn(process.execPath, [new URL('../fixtures/driver.js', import.meta.url).pathname, address], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.after(() => {
    if (driver.exitCode === null) driver.kill('SIGKILL')
  })
  let driverOut = ''
  driver.stdout.on('data', (d: Buffer) => (driverOut += d.toString()))
  await waitFor(() => driverOut.includes('listening'), 15_000, 'driver process')
  const stays = runCli(t, fastAgentArgs(address))
  const leaves = runCli(t, fastAgentArgs(address, '--exit-on-driver-loss'))
  await waitFor(() => (driverOut.match(/joined/g) ?? []).length === 2, 15_000, 'both agents joined')
  await killDriver(driver, stays, leaves)
  await using next = await Cluster.start({ tasks: FIXTURE_TASKS, listen: address, localAgents: 0, ...FAST })
  await waitFor(() => next.nodes().length === 1, 15_000, 'the idle agent to join the next driver')
  assert.equal(await next.call('whoami'), stays.child.pid)
})

for (const design of ['redis', 'amqp', 'amqp+redis'] as const) {
  test(
    `${design}: a driver that dies: agents notice, go idle, and serve the next driver of the same cluster id and secret; --exit-on-driver-loss exits instead`,
    {
      skip: skipReason(design),
    },
    async (t) => {
      const dir = mkdtempSync(join(tmpdir(), 'driver-exit-'))
      t.after(() => rmSync(dir, { recursive: true, force: true }))
      const secretFile = join(dir, 'secret')
      writeFileSync(secretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' })
      const clusterId = `driver-exit-${design.replace('+', '-')}-${randomBytes(4).toString('hex')}`
      // Through the environment: a broker URL may hold a password, and a command line is visible to every user.
      const env = {
        CLUSTER_TRANSPORT: design,
        CLUSTER_REDIS_URL: REDIS_URL,
        CLUSTER_AMQP_URL: AMQP_URL,
        CLUSTER_CLUSTER_ID: clusterId,
        CLUSTER_BROKER_SECRET_FILE: secretFile,
      }
      const driver = spawn(process.execPath, [new URL('../fixtures/driver.js', import.meta.url).pathname], {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, ...env },
      })
      t.after(() => {
        if (driver.exitCode === null && driver.signalCode === null) driver.kill('SIGKILL')
      })
      let driverOut = ''
      driver.stdout.on('data', (d: Buffer) => (driverOut += d.toString()))
      await waitFor(() => driverOut.includes('listening'), 15_000, `the ${design} driver process to start`)
      const stays = runCli(t, fastAgentArgs(undefined), env)
      const leaves = runCli(t, fastAgentArgs(undefined, '--exit-on-driver-loss'), env)
      await waitFor(() => (driverOut.match(/joined/g) ?? []).length === 2, 15_000, `both agents to join the ${design} driver`)
      await killDriver(driver, stays, leaves)
      await using next = await Cluster.start({
        tasks: FIXTURE_TASKS,
        transport: design,
        redisUrl: REDIS_URL,
        amqpUrl: AMQP_URL,
        clusterId,
        brokerSecretFile: secretFile,
        localAgents: 0,
        ...FAST,
      })
      await waitFor(() => next.nodes().length === 1, 15_000, `the idle agent to join the next ${design} driver (it said: ${stays.output()})`)
      // Bounded: an agent that joined but takes nothing from the queue would leave a call pending forever.
      assert.equal(await within(next.call<number>('whoami'), 15_000, () => `whoami from the next driver (the agent said: ${stays.output()})`), stays.child.pid)
      assert.equal(await within(next.call<number>('add', 2, 3), 15_000, 'add(2, 3) from the next driver'), 5)
      assert.equal(stays.child.exitCode, null, 'the agent without --exit-on-driver-loss still runs')
    },
  )
}

test('cluster bench chaos: agents killed and replaced during a job, nothing lost or delivered twice', async (t) => {
  const p = runCli(t, [
    'bench',
    'chaos',
    '--tasks',
    '4000',
    '--agents',
    '3',
    '--kill-every-ms',
    '600',
    '--task-us',
    '500',
    '--heartbeat-ms',
    '200',
    '--node-timeout-ms',
    '800',
    '--json',
  ])
  assert.equal(await p.exited, 0, p.output())
  const r = JSON.parse(p.output()) as { lost: number; duplicates: number; unexpected: number; kills: { recoveryMs?: number }[]; ok: boolean }
  assert.equal(r.lost, 0)
  assert.equal(r.duplicates, 0)
  assert.equal(r.unexpected, 0)
  assert.ok(r.kills.length >= 1)
  assert.equal(r.ok, true)
})
