import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { Cluster } from '../../lib/index.js'
import { CLI, FIXTURE_TASKS, freePort, runCli, runProcess, waitFor } from '../helpers.js'

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' })

/** Why this machine cannot make a network namespace, or undefined if it can. */
function netnsUnavailable(): string | undefined {
  const probe = `ac-probe-${process.pid}`
  const r = spawnSync('ip', ['netns', 'add', probe], { stdio: 'pipe' })
  if (r.error) return `no ip command (${r.error.message})`
  if (r.status !== 0) return `cannot create network namespaces: ${r.stderr.toString().trim()}`
  spawnSync('ip', ['netns', 'del', probe])
  return undefined
}

const unavailable = netnsUnavailable()
const skip = unavailable && process.env['REQUIRE_NETNS'] !== '1' ? `skipped: ${unavailable}` : false

test('network partition: an agent in its own namespace loses its link mid-run; the job finishes elsewhere; healed, it rejoins', { skip }, async (t) => {
  if (unavailable) assert.fail(`REQUIRE_NETNS=1 but ${unavailable}`)
  const tag = `${process.pid % 10000}${Math.floor(Math.random() * 100)}`
  const ns = `ac-part-${tag}`
  const hostIf = `acp${tag}h`
  const nsIf = `acp${tag}n`
  const octet = 1 + (process.pid % 250)
  const driverIp = `10.78.${octet}.1`
  const agentIp = `10.78.${octet}.2`
  const keys = mkdtempSync(join(tmpdir(), 'ac-part-keys-'))
  t.after(() => {
    spawnSync('ip', ['netns', 'pids', ns])
      .stdout?.toString()
      .split('\n')
      .filter(Boolean)
      .forEach((pid) => spawnSync('kill', ['-9', pid]))
    spawnSync('ip', ['link', 'del', hostIf])
    spawnSync('ip', ['netns', 'del', ns])
    rmSync(keys, { recursive: true, force: true })
  })
  ip('netns', 'add', ns)
  ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf)
  ip('link', 'set', nsIf, 'netns', ns)
  ip('addr', 'add', `${driverIp}/24`, 'dev', hostIf)
  ip('link', 'set', hostIf, 'up')
  ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${agentIp}/24`, 'dev', nsIf)
  ip('netns', 'exec', ns, 'ip', 'link', 'set', nsIf, 'up')
  ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up')

  assert.equal(await runCli(t, ['keys', '--out', keys]).exited, 0)
  const port = await freePort()
  // Beyond loopback, with CURVE keys: no --insecure needed.
  await using cluster = await Cluster.start({
    tasks: FIXTURE_TASKS,
    listen: `tcp://${driverIp}:${port}`,
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
  // `ip netns exec` execs the command, so the agent keeps this pid.
  const agent = runProcess(t, 'ip', ['netns', 'exec', ns, process.execPath, ...remoteArgs]).child as { pid: number }
  await waitFor(() => cluster.nodes().length === 2, 20_000, 'the namespaced agent to join')

  const n = 6000
  let done = 0
  const lost = once(cluster, 'node:lost')
  const job = Promise.all(Array.from({ length: n }, (_, i) => cluster.call<number>('spin', 200, i).then((r) => (done++, r))))
  await waitFor(() => done >= n * 0.25, 60_000, 'a quarter of the job')
  ip('link', 'set', hostIf, 'down')
  const [node] = (await lost) as [{ host: string; pid: number }]
  assert.equal(node.pid, agent.pid)
  const results = await job
  results.forEach((r, i) => assert.equal(r, i))
  assert.ok(cluster.stats().requeued > 0)

  ip('link', 'set', hostIf, 'up')
  await waitFor(() => cluster.nodes().length === 2, 20_000, 'the agent to rejoin after the partition healed')
  const pids = new Set(await Promise.all(Array.from({ length: 40 }, () => cluster.call<number>('sleepThenWhoami', 20))))
  assert.ok(pids.has(agent.pid), 'the healed agent gets work again')
})
