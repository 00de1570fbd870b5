/**
 * The hosts commands where no host is needed: bad input that must fail
 * before any SSH, idempotent status and down, `cluster run` and
 * `Cluster.start({ config })`, agents' status files, agents on a shared pool.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, AgentPool, Cluster, InvalidArgumentError } from '../../lib/index.js'
import type { AgentStatus } from '../../lib/agent/status-file.js'
import { FIXTURE_TASKS, agentArgs, freePort, runCli, waitFor } from '../helpers.js'

const LIB = new URL('../../lib/index.js', import.meta.url).href

async function project(t: { after(fn: () => Promise<void>): void }, config: object | undefined, files: Record<string, string> = {}): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ac-hosts-cli-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  if (config) await writeFile(join(dir, 'cluster.config.mjs'), `export default ${JSON.stringify(config)}\n`)
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text)
  return dir
}

function cli(t: Parameters<typeof runCli>[0], dir: string, args: string[]) {
  return runCli(t, [...args, '--config', join(dir, 'cluster.config.mjs')])
}

test('a malformed or duplicated hosts file fails before any host is touched, naming file, line and reason', async (t) => {
  const dir = await project(
    t,
    { name: 'c', tasks: './t.mjs', listen: 'tcp://127.0.0.1:7100' },
    {
      'hosts.txt': 'good-host\n\nbad:port:x\ngood-host:22 threads=2\nother thread=2\n',
      't.mjs': 'export const f = () => 1\n',
    },
  )
  const p = cli(t, dir, ['up', '--nodes', join(dir, 'hosts.txt')])
  assert.equal(await p.exited, 1)
  const file = join(dir, 'hosts.txt')
  assert.match(
    p.output(),
    new RegExp(
      `cluster: ${file}:3: "bad:port:x": write IPv6 addresses in brackets, \\[addr\\]:port\\n${file}:4: duplicate host good-host:22: already listed on line 1\\n${file}:5: unknown key "thread".*\\[ERR_HOSTS_FILE\\]`,
    ),
  )
  assert.equal(existsSync(join(dir, '.actor-cluster')), false, 'nothing recorded')
})

test('up without a hosts file, a head, or with the tasks outside the project: clear errors', async (t) => {
  const dir = await project(
    t,
    { name: 'c', tasks: '/elsewhere/t.mjs' },
    {
      'hosts.txt': 'h1\n',
      'redis.config.mjs': `export default { tasks: './t.mjs', transport: 'redis', head: 'tcp://127.0.0.1:7100' }\n`,
    },
  )
  const noHosts = cli(t, dir, ['up'])
  assert.equal(await noHosts.exited, 1)
  assert.match(noHosts.output(), /no hosts file: pass --nodes hosts\.txt or set hosts in cluster\.config \[ERR_CONFIG\]/)
  const noHead = cli(t, dir, ['up', '--nodes', join(dir, 'hosts.txt')])
  assert.equal(await noHead.exited, 1)
  assert.match(noHead.output(), /no head address: set listen .* or pass --head tcp:\/\/HOST:PORT \[ERR_CONFIG\]/)
  const outside = cli(t, dir, ['up', '--nodes', join(dir, 'hosts.txt'), '--head', 'tcp://127.0.0.1:7100'])
  assert.equal(await outside.exited, 1)
  assert.match(outside.output(), /tasks module \/elsewhere\/t\.mjs is outside the project directory .*use --no-sync/)
  const brokered = runCli(t, ['up', '--nodes', join(dir, 'hosts.txt'), '--config', join(dir, 'redis.config.mjs')])
  assert.equal(await brokered.exited, 1)
  assert.match(brokered.output(), /cluster up starts agents of the zmq design; transport "redis" agents are started with cluster agent --transport/)
  const insecure = cli(t, dir, ['up', '--nodes', join(dir, 'hosts.txt'), '--head', 'tcp://10.77.0.1:7100', '--no-sync'])
  assert.equal(await insecure.exited, 1)
  assert.match(insecure.output(), /refusing to listen on tcp:\/\/10\.77\.0\.1:7100 without authentication.*--insecure.*\[ERR_INSECURE_BIND\]/)
})

test('up again for another head refuses before touching a host: the agents it started keep their first address', async (t) => {
  const dir = await project(t, { name: 'c', tasks: './t.mjs', listen: 'tcp://127.0.0.1:7400' }, { 'hosts.txt': 'h1\n', 't.mjs': 'export const f = () => 1\n' })
  const host = { label: 'h1', host: 'h1', agentId: 'c@h1', state: 'up', pid: 4242, updatedAt: 1 }
  const state = JSON.stringify({ version: 1, name: 'c', updatedAt: 1, head: 'tcp://127.0.0.1:7311', hosts: [host] })
  await mkdir(join(dir, '.actor-cluster'))
  await writeFile(join(dir, '.actor-cluster', 'c.json'), state)
  const p = runCli(t, ['up', '--nodes', join(dir, 'hosts.txt'), '--config', join(dir, 'cluster.config.mjs'), '--state-dir', join(dir, '.actor-cluster')])
  assert.equal(await p.exited, 1)
  assert.match(
    p.output(),
    /^cluster: cluster c's agents were started for the head tcp:\/\/127\.0\.0\.1:7311, not tcp:\/\/127\.0\.0\.1:7400, and keep that address: cluster down first, then up again \(or up with --head tcp:\/\/127\.0\.0\.1:7311\) \[ERR_CONFIG\]\n$/,
  )
  assert.equal(await readFile(join(dir, '.actor-cluster', 'c.json'), 'utf8'), state, 'the state file is left as it was')
})

test('status and down with nothing started are calm and idempotent; down --host names the hosts it knows', async (t) => {
  const dir = await project(t, { name: 'idle' })
  const st = cli(t, dir, ['status'])
  assert.equal(await st.exited, 0, st.output())
  assert.match(st.output(), /cluster idle has no hosts \(cluster up --nodes hosts\.txt starts them\)/)
  const js = cli(t, dir, ['status', '--json'])
  assert.equal(await js.exited, 0)
  assert.deepEqual(JSON.parse(js.output()), { name: 'idle', head: null, hosts: [] })
  for (let i = 0; i < 2; i++) {
    const down = cli(t, dir, ['down'])
    assert.equal(await down.exited, 0, down.output())
    assert.match(down.output(), /cluster idle has no hosts to stop/)
  }
  const which = cli(t, dir, ['down', '--host', 'nowhere'])
  assert.equal(await which.exited, 1)
  assert.match(which.output(), /no host "nowhere" in cluster idle \(it has: no hosts\)/)
  await writeFile(join(dir, '.state-corrupt.json'), '{')
  const corrupt = runCli(t, ['status', '--config', join(dir, 'cluster.config.mjs'), '--state-dir', dir, '--name', '.state-corrupt'])
  assert.equal(await corrupt.exited, 1)
  assert.match(corrupt.output(), /the state file .*\.state-corrupt\.json is not valid JSON/)
})

test('cluster run gives the driver the config: Cluster.start() binds the head and waits for agents', async (t) => {
  const port = await freePort()
  const dir = await project(
    t,
    { tasks: FIXTURE_TASKS.pathname, listen: `tcp://127.0.0.1:${port}`, localAgents: 0, heartbeatMs: 200, nodeTimeoutMs: 1000 },
    {
      'driver.mjs': `import { Cluster } from ${JSON.stringify(LIB)}
const c = await Cluster.start()
console.log('listening ' + c.address + ' ' + c.options.heartbeatMs + ' ' + process.argv.slice(2).join(','))
while (c.nodes().length < 1) await new Promise((r) => setTimeout(r, 20))
console.log('sum ' + (await c.call('add', 40, 2)))
await c.close()
`,
    },
  )
  const driver = runCli(t, ['run', join(dir, 'driver.mjs'), '--config', join(dir, 'cluster.config.mjs'), '--', 'a', '007'])
  await waitFor(() => /listening/.test(driver.output()), 10_000, 'the driver')
  assert.match(driver.output(), new RegExp(`listening tcp://127\\.0\\.0\\.1:${port} 200 a,007`))
  runCli(t, ['agent', '--connect', `tcp://127.0.0.1:${port}`, '--tasks', FIXTURE_TASKS.href, '--threads', '1'])
  assert.equal(await driver.exited, 0, driver.output())
  assert.match(driver.output(), /sum 42/)
  const failing = runCli(t, ['run', join(dir, 'missing.mjs'), '--config', join(dir, 'cluster.config.mjs')])
  assert.equal(await failing.exited, 1)
  assert.match(failing.output(), /^cluster: cannot run .*missing\.mjs: no such file \[ERR_INVALID_ARGUMENT\]\n$/)
  const none = runCli(t, ['run', join(dir, 'driver.mjs'), '--config', join(dir, 'nope.mjs')])
  assert.equal(await none.exited, 1)
  assert.match(none.output(), /nope\.mjs does not exist/)
})

test('cluster run without a script, or given a directory, says which in one line', async (t) => {
  const dir = await project(t, {}, { 'driver.mjs': "console.log('driver ran')\n" })
  const none = cli(t, dir, ['run'])
  assert.equal(await none.exited, 1)
  assert.equal(none.output(), 'cluster: cluster run needs a driver script: cluster run driver.js [-- args] [ERR_INVALID_ARGUMENT]\n')
  const folder = cli(t, dir, ['run', dir])
  assert.equal(await folder.exited, 1)
  assert.equal(folder.output(), `cluster: cannot run ${dir}: it is a directory (name the driver script in it) [ERR_INVALID_ARGUMENT]\n`)
  // A directory node can run (an index.js in it) still runs.
  await writeFile(join(dir, 'index.js'), "console.log('index ran')\n")
  const runnable = cli(t, dir, ['run', dir])
  assert.equal(await runnable.exited, 0, runnable.output())
  assert.equal(runnable.output(), 'index ran\n')
})

test('cluster run: --no-slurm runs the driver alone in an allocation; a driver killed by a signal exits 128 + its number; a bad config fails before the driver', async (t) => {
  const dir = await project(
    t,
    {},
    { 'driver.mjs': "console.log('driver ran ' + process.argv.slice(2).join(','))\n", 'killed.mjs': "process.kill(process.pid, 'SIGKILL')\n" },
  )
  // In an allocation (SLURM_JOB_ID) cluster run would start agents with srun: --no-slurm, as docs/slurm.md says, turns that off.
  const alone = runCli(t, ['run', join(dir, 'driver.mjs'), '--no-slurm', '--config', join(dir, 'cluster.config.mjs'), '--', 'x'], {
    SLURM_JOB_ID: '4242',
    SLURM_JOB_NUM_NODES: '2',
  })
  assert.equal(await alone.exited, 0, alone.output())
  assert.equal(alone.output(), 'driver ran x\n')
  const killed = cli(t, dir, ['run', join(dir, 'killed.mjs')])
  assert.equal(await killed.exited, 137, killed.output())
  await writeFile(join(dir, 'cluster.config.mjs'), 'export default { thread: 4 }\n')
  const typo = cli(t, dir, ['run', join(dir, 'driver.mjs')])
  assert.equal(await typo.exited, 1)
  assert.match(typo.output(), /^cluster: .*cluster\.config\.mjs: unknown field "thread" .*\[ERR_CONFIG\]\n$/)
  assert.doesNotMatch(typo.output(), /driver ran/)
})

test('Cluster.start({ config }) takes options from a config; explicit options win', async (t) => {
  const dir = await project(t, { tasks: FIXTURE_TASKS.pathname, threads: 1, heartbeatMs: 300, name: 'ignored-by-the-driver', hosts: 'h.txt' })
  await using a = await Cluster.start({ config: join(dir, 'cluster.config.mjs') })
  assert.equal(a.options.heartbeatMs, 300)
  assert.equal(a.nodes()[0]!.threads, 1)
  assert.equal(await a.call('add', 1, 2), 3)
  await using b = await Cluster.start({ config: { tasks: FIXTURE_TASKS, threads: 1, heartbeatMs: 300 }, heartbeatMs: 250 })
  assert.equal(b.options.heartbeatMs, 250)
})

test('cluster agent --status-file tells its state, load and tasks done, and follows its driver', async (t) => {
  const dir = await project(t, undefined)
  const file = join(dir, 'agent.json')
  const port = await freePort()
  const address = `tcp://127.0.0.1:${port}`
  const agent = runCli(t, agentArgs(address, 1, '--id', 'status-agent', '--status-file', file, '--heartbeat-ms', '100'))
  const read = async () => JSON.parse(await readFile(file, 'utf8')) as AgentStatus
  await waitFor(() => existsSync(file), 10_000, 'the status file')
  let s = await read()
  assert.equal(s.state, 'connecting')
  assert.equal(s.id, 'status-agent')
  assert.equal(s.pid, agent.child.pid)
  assert.equal(s.threads, 1)
  assert.equal(s.driverAgeMs, null)
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: address, localAgents: 0, heartbeatMs: 100, nodeTimeoutMs: 1000 })
  t.after(() => cluster.close())
  await waitFor(() => cluster.nodes().length === 1, 10_000, 'the agent joining')
  await Promise.all(Array.from({ length: 50 }, (_, i) => cluster.call('add', i, 1)))
  let ready: AgentStatus | undefined
  for (let i = 0; i < 100 && !ready; i++) {
    s = await read().catch(() => s)
    if (s.state === 'ready' && s.tasksDone === 50) ready = s
    else await new Promise((r) => setTimeout(r, 50))
  }
  assert.ok(ready, JSON.stringify(s))
  assert.ok(ready.driverAgeMs !== null && ready.driverAgeMs < 1000)
  await cluster.close()
  for (let i = 0; i < 100; i++) {
    s = await read().catch(() => s)
    if (s.state === 'connecting') break
    await new Promise((r) => setTimeout(r, 50))
  }
  assert.equal(s.state, 'connecting', 'back to waiting for a driver')
  agent.child.kill('SIGTERM')
  assert.equal(await agent.exited, 0)
  assert.equal((await read()).state, 'closed')
})

test('many agents in one process share one pool: each its own identity and credit, all get work', async (t) => {
  await using pool = await AgentPool.start({ tasks: FIXTURE_TASKS, threads: 1 })
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  const agents = await Promise.all(
    Array.from({ length: 20 }, (_, i) => Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1, pool, id: `light-${i}` })),
  )
  t.after(() => Promise.all(agents.map((a) => a.close())))
  await waitFor(() => cluster.nodes().length === 20, 15_000, 'twenty agents')
  const sums = await Promise.all(Array.from({ length: 4000 }, (_, k) => cluster.call<number>('add', 1, k)))
  assert.equal(
    sums.reduce((a, b) => a + b, 0),
    4000 + (3999 * 4000) / 2,
  )
  const nodes = cluster.nodes()
  assert.deepEqual(nodes.map((n) => n.id).sort(), agents.map((a) => a.id).sort())
  assert.ok(
    nodes.every((n) => n.tasksDone > 0),
    JSON.stringify(nodes.map((n) => n.tasksDone)),
  )
  assert.equal(agents[0]!.activity().state, 'ready')
  assert.equal(agents[0]!.activity().busy, 0)
  // An agent's close leaves the shared pool running for the others.
  await agents[0]!.close()
  assert.equal(await cluster.call('add', 2, 2), 4)
  await assert.rejects(
    Agent.start({ connect: cluster.address, tasks: new URL('./broken-tasks.js', FIXTURE_TASKS), pool }),
    (e: unknown) => e instanceof InvalidArgumentError && /options\.pool runs the tasks module .*tasks\.js, not .*broken-tasks\.js/.test(e.message),
  )
  await assert.rejects(AgentPool.start({ tasks: FIXTURE_TASKS, threads: 0 }), /options\.threads must be an integer from 1 to 4096, got 0/)
})

test('up names a missing ssh or rsync on this machine before touching any host', async (t) => {
  const dir = await project(
    t,
    { name: 'tools', tasks: './t.mjs', head: 'tcp://127.0.0.1:7100' },
    { 'hosts.txt': 'h1\n', 't.mjs': 'export const f = () => 1\n' },
  )
  const noSsh = runCli(t, ['up', '--nodes', join(dir, 'hosts.txt'), '--config', join(dir, 'cluster.config.mjs')], { PATH: join(dir, 'empty-bin') })
  assert.equal(await noSsh.exited, 1)
  assert.match(noSsh.output(), /ssh is not installed on this machine; it is needed to reach the hosts \(install the OpenSSH client\) \[ERR_CONFIG\]/)
  const bin = join(dir, 'bin')
  await mkdir(bin)
  await symlink(execFileSync('sh', ['-c', 'command -v ssh']).toString().trim(), join(bin, 'ssh'))
  const noRsync = runCli(t, ['up', '--nodes', join(dir, 'hosts.txt'), '--config', join(dir, 'cluster.config.mjs')], { PATH: bin })
  assert.equal(await noRsync.exited, 1)
  assert.match(noRsync.output(), /rsync is not installed on this machine; it is needed to sync the project to the hosts \(install it, or use --no-sync\)/)
  assert.equal(existsSync(join(dir, '.actor-cluster')), false)
})

/** Records, as an earlier `up` of cluster `name` would have, one host now refusing connections (port 1 on loopback: nothing listens there). */
async function recordUnreachableHost(dir: string, name: string): Promise<void> {
  await mkdir(join(dir, '.actor-cluster'))
  const state = {
    version: 1,
    name,
    updatedAt: 1,
    hosts: [{ label: '127.0.0.1:1', host: '127.0.0.1', port: 1, agentId: `${name}@127.0.0.1:1`, state: 'up', updatedAt: 1 }],
  }
  await writeFile(join(dir, '.actor-cluster', `${name}.json`), JSON.stringify(state))
}

test('a host that cannot be reached: status says why, down keeps it listed until --forget', async (t) => {
  const dir = await project(t, { name: 'gone', ssh: { connectTimeoutS: 2 } })
  await recordUnreachableHost(dir, 'gone')
  const st = cli(t, dir, ['status', '--json'])
  assert.equal(await st.exited, 0, st.output())
  const s = JSON.parse(st.output()) as { hosts: { host: string; state: string; error: string }[] }
  assert.equal(s.hosts[0]!.state, 'unreachable')
  assert.match(s.hosts[0]!.error, /127\.0\.0\.1:1: status: connection refused: no SSH server listening on that port/)
  const table = cli(t, dir, ['status'])
  assert.equal(await table.exited, 0)
  assert.match(table.output(), /127\.0\.0\.1:1\s+unreachable[\s\S]*127\.0\.0\.1:1: status: connection refused/)
  for (let i = 0; i < 2; i++) {
    const down = cli(t, dir, ['down'])
    assert.equal(await down.exited, 1)
    assert.match(down.output(), /127\.0\.0\.1:1\s+failed[\s\S]*could not be reached; they stay listed \(run cluster down again, or --forget\)/)
  }
  const forget = cli(t, dir, ['down', '--forget', '--host', '127.0.0.1'])
  assert.equal(await forget.exited, 1)
  assert.match(forget.output(), /could not be reached and was forgotten; an agent may still run there/)
  assert.equal(existsSync(join(dir, '.actor-cluster', 'gone.json')), false)
  const after = cli(t, dir, ['down'])
  assert.equal(await after.exited, 0)
  assert.match(after.output(), /has no hosts to stop/)
})

test('status --dashboard adds the running driver’s view; a dashboard that does not answer is said, not fatal', async (t) => {
  const dir = await project(t, { name: 'viewed', ssh: { connectTimeoutS: 2 } })
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, dashboard: 0, listen: 'tcp://127.0.0.1:0' })
  assert.equal(await cluster.call('add', 1, 1), 2)
  await recordUnreachableHost(dir, 'viewed')
  const js = cli(t, dir, ['status', '--json', '--dashboard', cluster.dashboardUrl!])
  assert.equal(await js.exited, 0, js.output())
  const s = JSON.parse(js.output()) as {
    hosts: { state: string; driver: unknown }[]
    driver: { nodes: number; otherNodes: string[]; tasks: { succeeded: number }; error: null }
  }
  assert.equal(s.driver.error, null)
  assert.equal(s.driver.nodes, 1)
  assert.deepEqual(s.driver.otherNodes, [cluster.nodes()[0]!.id], 'the local agent is a node up did not start')
  assert.equal(s.driver.tasks.succeeded, 1)
  assert.deepEqual([s.hosts[0]!.state, s.hosts[0]!.driver], ['unreachable', null])
  const table = cli(t, dir, ['status', '--dashboard', cluster.dashboardUrl!])
  assert.equal(await table.exited, 0)
  assert.match(
    table.output(),
    /driver at tcp:\/\/127\.0\.0\.1:\d+ \(dashboard http:\/\/127\.0\.0\.1:\d+\/\): 1 nodes; tasks 0 pending, 0 running, 1 done, 0 failed/,
  )
  assert.match(table.output(), /nodes not started by cluster up: /)
  assert.match(table.output(), /IN FLIGHT[\s\S]*127\.0\.0\.1:1\s+unreachable.*not a node/)
  const port = await freePort()
  const none = cli(t, dir, ['status', '--dashboard', `http://127.0.0.1:${port}/`])
  assert.equal(await none.exited, 0)
  assert.match(none.output(), /no driver view: no cluster dashboard answers at http:\/\/127\.0\.0\.1:\d+/)
  const bad = cli(t, dir, ['status', '--dashboard', 'not a url'])
  assert.equal(await bad.exited, 1)
  assert.match(bad.output(), /--dashboard must be a URL like http:\/\/127\.0\.0\.1:8265\/, got "not a url"/)
})
