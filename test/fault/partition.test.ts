import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Cluster } from '../../lib/index.js'
import { CLI, FIXTURE_TASKS, fastAgentArgs, freePort, runCli, runProcess, waitFor } from '../helpers.js'
import { createNamespace, createVethNamespace, leftovers, namespacesUnavailable } from '../netns.js'

const unavailable = await namespacesUnavailable()
const skip = unavailable && process.env['REQUIRE_NETNS'] !== '1' ? `skipped: ${unavailable}` : false

test('network partition: an agent in its own namespace loses its link mid-run; the job finishes elsewhere; healed, it rejoins', { skip }, async (t) => {
  if (unavailable) assert.fail(`REQUIRE_NETNS=1 but ${unavailable}`)
  const keys = mkdtempSync(join(tmpdir(), 'ac-part-keys-'))
  t.after(() => rmSync(keys, { recursive: true, force: true }))
  // The agent's namespace, joined to this one by a veth pair whose end here is removed with it, also on failure.
  const link = await createVethNamespace(t)
  const { ns } = link

  assert.equal(await runCli(t, ['keys', '--out', keys]).exited, 0)
  const port = await freePort()
  // Beyond loopback, with CURVE keys: no --insecure needed.
  const cluster = await Cluster.start({
    tasks: FIXTURE_TASKS,
    listen: `tcp://${link.hostAddress}:${port}`,
    curve: { dir: keys },
    threads: 1,
    heartbeatMs: 200,
    nodeTimeoutMs: 1000,
  })
  const remoteArgs = [
    CLI,
    'agent',
    '--connect',
    cluster.address,
    '--tasks',
    FIXTURE_TASKS.href,
    '--keys',
    keys,
    '--threads',
    '1',
    '--heartbeat-ms',
    '200',
    '--driver-timeout-ms',
    '1000',
  ]
  t.after(() => cluster.close())
  // `ip netns exec` execs the command, so the agent keeps this pid.
  const agent = runProcess(t, 'ip', ['netns', 'exec', ns, process.execPath, ...remoteArgs]).child as { pid: number }
  await waitFor(() => cluster.nodes().length === 2, 20_000, 'the namespaced agent to join')

  const n = 6000
  let done = 0
  let lostNode: { host: string; pid: number } | undefined
  cluster.once('node:lost', (node: { host: string; pid: number }) => (lostNode = node))
  const job = Promise.all(Array.from({ length: n }, (_, i) => cluster.call<number>('spin', 200, i).then((r) => (done++, r))))
  await waitFor(() => done >= n * 0.25, 60_000, 'a quarter of the job')
  await link.setLink(false)
  await waitFor(() => lostNode !== undefined, 20_000, 'the partitioned agent to be declared lost')
  assert.equal(lostNode!.pid, agent.pid)
  const results = await job
  results.forEach((r, i) => assert.equal(r, i))
  assert.ok(cluster.stats().requeued > 0)

  await link.setLink(true)
  await waitFor(() => cluster.nodes().length === 2, 20_000, 'the agent to rejoin after the partition healed')
  const pids = new Set(await Promise.all(Array.from({ length: 40 }, () => cluster.call<number>('sleepThenWhoami', 20))))
  assert.ok(pids.has(agent.pid), 'the healed agent gets work again')
  await cluster.close()
  await link.close()
  assert.deepEqual(await leftovers(link.prefix), [], 'no namespace or link of this test is left')
})

/** Runs `argv` inside namespace `ns` and returns its output. */
const inNs = (ns: string, ...argv: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8' })

test('an agent whose dial to a silent driver port connected to itself dials again, and reaches the driver that comes up there', { skip }, async (t) => {
  if (unavailable) assert.fail(`REQUIRE_NETNS=1 but ${unavailable}`)
  // In a namespace of its own, the only source port a connection may take is the driver's
  // port: the agent's dial to it, with nothing listening, connects the socket to itself.
  const { ns, prefix, close } = await createNamespace(t)
  const port = 40_000 + Math.floor(Math.random() * 20_000)
  const range = (low: number, high: number) => inNs(ns, 'sh', '-c', `echo "${low} ${high}" > /proc/sys/net/ipv4/ip_local_port_range`)
  range(port, port)
  // And no TIME_WAIT kept for the closed connection to itself, so the driver can bind the port at once.
  inNs(ns, 'sh', '-c', 'echo 0 > /proc/sys/net/ipv4/tcp_max_tw_buckets')
  const address = `tcp://127.0.0.1:${port}`
  runProcess(t, 'ip', ['netns', 'exec', ns, process.execPath, CLI, ...fastAgentArgs(address)])
  // /proc/net/tcp in the namespace: an established connection (01) from 127.0.0.1:port to itself.
  const hex = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`
  const selfConnected = () =>
    inNs(ns, 'cat', '/proc/net/tcp')
      .split('\n')
      .some((l) => l.includes(`${hex} ${hex} 01`))
  await waitFor(selfConnected, 15_000, `the agent's connection to itself on port ${port}`)
  // Ordinary source ports again. The agent hears no driver on that connection and dials again:
  // the connection to itself goes (while it stays, no driver can even bind the port).
  range(port + 1, port + 1000)
  await waitFor(() => !selfConnected(), 15_000, 'the agent to drop its connection to itself and dial again')
  const driver = runProcess(t, 'ip', ['netns', 'exec', ns, process.execPath, new URL('../fixtures/driver.js', import.meta.url).pathname, address])
  await waitFor(() => driver.output().includes('listening') || driver.child.exitCode !== null, 15_000, `the driver to listen on ${address}`)
  assert.match(driver.output(), /^listening /m)
  await waitFor(() => /^joined /m.test(driver.output()), 15_000, 'the agent to join the driver')
  await close()
  assert.deepEqual(await leftovers(prefix), [], 'no namespace of this test is left')
})
