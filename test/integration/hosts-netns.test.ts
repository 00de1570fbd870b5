/**
 * `cluster up`, a job, `cluster status` and `cluster down` across real hosts:
 * network namespaces with their own addresses and sshd (test/netns.ts).
 * Skipped with the reason where namespaces cannot be made, unless
 * REQUIRE_NETNS=1, where that is a failure.
 */
import { userInfo } from 'node:os'
import { test, before, after, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { cp, mkdir, readFile, rm, symlink, writeFile, readdir, stat } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createLab, netnsUnavailable, HEAD_ADDRESS, type Lab, type NsProc, type NetHost } from '../netns.js'
import { CLI, waitFor } from '../helpers.js'

const exec = promisify(execFile)
const unavailable = await netnsUnavailable()
if (unavailable && process.env['REQUIRE_NETNS'] === '1') {
  test('network namespaces are available (REQUIRE_NETNS=1)', () => assert.fail(unavailable))
}
const skip = unavailable ? `no network namespaces here: ${unavailable}` : false

/** The head lives in its own namespace: this port is free there by construction. */
const HEAD = `tcp://${HEAD_ADDRESS}:7100`
const REPO = fileURLToPath(new URL('../../../', import.meta.url))
const LIB = new URL('../../lib/index.js', import.meta.url).href
const TASKS = 20_000

let lab: Lab
let proj: string

const TASKS_MODULE = `
export function add(a, b) { return a + b }
export function hold(ms, i) { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms); return [i, process.pid] }
export function whereami() { return import.meta.url }
`

/**
 * The driver: waits for N agents, then maps over the tasks with a bounded
 * window, reporting progress, node events and the checked result. Tasks hold
 * their thread `ms` until the test creates the file "release" (so the job is
 * surely running while the test acts on it), then none.
 */
const DRIVER = `
import { existsSync } from 'node:fs'
import { Cluster } from ${JSON.stringify(LIB)}
const [want, tasks, ms] = process.argv.slice(2).map(Number)
const cluster = await Cluster.start()
for (const e of ['node:joined', 'node:left']) cluster.on(e, (n) => console.log('event', e, n.id))
cluster.on('node:lost', (n, why) => console.log('event node:lost', n.id, why))
while (cluster.nodes().length < want) await new Promise((r) => setTimeout(r, 20))
function* inputs() { for (let i = 0; i < tasks; i++) yield [existsSync('release') ? 0 : ms, i] }
const seen = new Uint8Array(tasks)
const byPid = {}
let count = 0
for await (const [i, pid] of cluster.map('hold', inputs(), { ordered: false, concurrency: 256 })) {
  seen[i]++
  byPid[pid] = (byPid[pid] ?? 0) + 1
  if (++count % 500 === 0) console.log('progress', count)
}
console.log('result ' + JSON.stringify({ count, exactlyOnce: seen.every((c) => c === 1), byPid, stats: cluster.stats() }))
await cluster.close()
`

async function waitForLine(p: NsProc, re: RegExp, ms: number, what: string): Promise<RegExpMatchArray> {
  await waitFor(() => re.test(p.output()) || p.child.exitCode !== null, ms, what)
  const m = re.exec(p.output())
  if (!m) throw new Error(`${what}: process ended first:\n${p.output()}`)
  return m
}

const T0 = Date.now()
const mark = (what: string) => process.env['LAB_TRACE'] && process.stderr.write(`# ${((Date.now() - T0) / 1000).toFixed(1)} s ${what}\n`)

async function ok(p: NsProc, code = 0): Promise<string> {
  mark(`done: ${p.child.spawnargs.slice(4).join(' ')}`)
  assert.equal(await p.exited, code, p.output())
  return p.stdout()
}

function json<T>(text: string): T {
  return JSON.parse(text) as T
}

interface UpJson {
  hosts: {
    host: string
    state: string
    threads: number | null
    version: string | null
    pid: number | null
    error: { code: string; reason: string | null; message: string } | null
  }[]
}
interface StatusJson {
  hosts: {
    host: string
    state: string
    threads: number | null
    tasksDone: number | null
    heartbeatAgeMs: number | null
    version: string | null
    pid: number | null
    error: string | null
    driver: { inFlight: number; tasksDone: number } | null
  }[]
  driver?: { nodes: number; error: string | null }
}
/**
 * `cluster status --json`, asked again (every 200 ms, for at most `ms`) while `busy` holds: an agent
 * notices a driver leave (its Bye, or else its silence) a moment after the driver's process has gone.
 */
async function statusWhile(t: TestContext, busy: (st: StatusJson) => boolean, ms: number): Promise<StatusJson> {
  const end = Date.now() + ms
  let st = json<StatusJson>(await ok(lab.cli(t, ['status', '--json'], proj)))
  while (busy(st) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 200))
    st = json<StatusJson>(await ok(lab.cli(t, ['status', '--json'], proj)))
  }
  return st
}

interface DownJson {
  hosts: { host: string; result: string; agents: { pid?: number; how: string }[] }[]
}

/** Agent processes of actor-cluster running inside a namespace. */
async function agentsIn(h: NetHost): Promise<number[]> {
  const { stdout } = await exec('ip', ['netns', 'pids', h.ns])
  const pids: number[] = []
  for (const pid of stdout.split(/\s+/).filter(Boolean)) {
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
    if (cmd.includes(CLI) && cmd.includes('\0agent\0')) pids.push(Number(pid))
  }
  return pids
}

/** Whatever a test leaves running on the lab's hosts (after a failure) must not leak into the next one. */
async function killAgents(): Promise<void> {
  for (const h of lab.hosts) for (const pid of await agentsIn(h)) process.kill(pid, 'SIGKILL')
}

before(async () => {
  if (skip) return
  lab = await createLab(3)
  proj = join(lab.dir, 'proj')
  await mkdir(proj)
  await writeFile(join(proj, 'tasks.mjs'), TASKS_MODULE)
  await writeFile(join(proj, 'driver.mjs'), DRIVER)
  // CURVE keys for the driver and the agents; `cluster up` hands the agents their half.
  await exec(process.execPath, [CLI, 'keys', '--out', join(lab.dir, 'keys')])
  const config = {
    name: 'lab',
    tasks: './tasks.mjs',
    listen: HEAD,
    curve: { dir: join(lab.dir, 'keys') },
    localAgents: 0,
    heartbeatMs: 500,
    nodeTimeoutMs: 2000,
    registerTimeoutS: 20,
    stopTimeoutS: 5,
    // The driver's dashboard (in the head's namespace): cluster status adds the driver's view.
    dashboard: { port: 8265 },
    ssh: { configFile: lab.sshConfig, identity: lab.key, connectTimeoutS: 2 },
    // A run directory of this lab's own: two test runs at once never share agent files.
    remote: { node: process.execPath, cli: CLI, runDir: join(lab.dir, 'run') },
  }
  await writeFile(join(proj, 'cluster.config.mjs'), `export default ${JSON.stringify(config)}\n`)
  const { curve: _, ...insecure } = config
  await writeFile(join(proj, 'insecure.config.mjs'), `export default ${JSON.stringify({ ...insecure, insecure: true })}\n`)
})

after(async () => {
  await lab?.close()
})

test('up, a job of 20,000 tasks across hosts, status, hosts added and removed mid-job, a link cut, down', { skip, timeout: 120_000 }, async (t) => {
  t.after(killAgents)
  const [h1, h2, h3] = lab.hosts as [NetHost, NetHost, NetHost]
  await writeFile(join(proj, 'hosts.txt'), `# two hosts to start with\n${h1.address} threads=1\n\nroot@${h2.address}:22 threads=1   # with user and port\n`)
  await writeFile(join(proj, 'hosts3.txt'), `${h1.address} threads=1\nroot@${h2.address}:22 threads=1\n${h3.address} threads=2\n`)
  const labels = [h1.address, `root@${h2.address}:22`, h3.address]

  // Up: both agents register; the table names host, threads, version, state.
  const upText = await ok(lab.cli(t, ['up', '--nodes', 'hosts.txt', '--no-sync'], proj))
  assert.match(upText, /HOST\s+THREADS\s+VERSION\s+STATE/)
  for (const l of labels.slice(0, 2)) assert.match(upText, new RegExp(`${l.replace(/[.[\]]/g, '\\$&')}\\s+1\\s+\\d+\\.\\d+\\.\\d+\\s+up\\s`))
  assert.match(upText, /2 of 2 hosts up; agents connect to tcp:\/\/10\.77\.0\.1:7100/)

  // The agents got their CURVE keys (never the driver's secret), readable by their user only.
  const keyDir = join(lab.dir, 'run', `lab@${h1.address}.keys`)
  assert.deepEqual((await readdir(keyDir)).sort(), ['agent.json', 'server.pub'])
  assert.equal((await stat(join(keyDir, 'agent.json'))).mode & 0o777, 0o600)
  assert.equal((await readFile(join(keyDir, 'server.pub'), 'utf8')).trim(), (await readFile(join(lab.dir, 'keys', 'server.pub'), 'utf8')).trim())

  // Status with no driver: agents run and wait (once they have seen up's registrar leave).
  let st = await statusWhile(t, (s) => s.hosts.some((h) => h.state === 'up'), 10_000)
  assert.deepEqual(
    st.hosts.map((h) => [h.host, h.state, h.threads]),
    [
      [labels[0], 'waiting', 1],
      [labels[1], 'waiting', 1],
    ],
  )

  // A driver started with the same config gets both agents and runs the job: its tasks hold their thread 10 ms each
  // until the test writes "release", so the job outlasts the steps below however slowly a loaded machine runs them.
  const driver = lab.cli(t, ['run', 'driver.mjs', '--', '2', String(TASKS), '10'], proj)
  await waitForLine(driver, /progress 1000\b/, 30_000, 'the job under way')

  // Up again with a longer list: the running agents are kept, the new host joins the running driver.
  const up3 = json<UpJson>(await ok(lab.cli(t, ['up', '--nodes', 'hosts3.txt', '--no-sync', '--json'], proj)))
  assert.deepEqual(
    up3.hosts.map((h) => [h.host, h.state]),
    [
      [labels[0], 'already up'],
      [labels[1], 'already up'],
      [labels[2], 'up'],
    ],
  )
  await waitForLine(driver, /event node:joined lab@10\.77\.0\.13/, 10_000, 'the third host joining the running job')

  // Status during the job: every host serves the driver, with load, tasks done, heartbeat age, version.
  st = json<StatusJson>(await ok(lab.cli(t, ['status', '--json'], proj)))
  assert.deepEqual(
    st.hosts.map((h) => h.state),
    ['up', 'up', 'up'],
  )
  assert.deepEqual(
    st.hosts.map((h) => h.threads),
    [1, 1, 2],
  )
  for (const h of st.hosts) {
    assert.ok(h.heartbeatAgeMs !== null && h.heartbeatAgeMs < 3000, `heartbeat age of ${h.host}: ${h.heartbeatAgeMs}`)
    assert.match(h.version ?? '', /^\d+\.\d+\.\d+/)
  }
  assert.ok(st.hosts[0]!.tasksDone! > 0 && st.hosts[1]!.tasksDone! > 0, JSON.stringify(st.hosts))
  assert.equal(st.driver?.error, null, JSON.stringify(st.driver))
  assert.equal(st.driver?.nodes, 3)
  assert.ok(
    st.hosts.every((h) => h.driver !== null && h.driver.tasksDone >= 0),
    JSON.stringify(st.hosts),
  )
  const table = await ok(lab.cli(t, ['status'], proj))
  assert.match(table, /HOST\s+STATE\s+THREADS\s+LOAD\s+TASKS DONE\s+HEARTBEAT\s+VERSION\s+PID/)
  assert.match(table, /3 of 3 hosts serving a driver, 4 threads/)

  // Remove a host mid-job: it finishes its running tasks and hands the queued ones back.
  const down2 = json<DownJson>(await ok(lab.cli(t, ['down', '--host', labels[1]!, '--json'], proj)))
  assert.deepEqual(
    down2.hosts.map((h) => [h.host, h.result]),
    [[labels[1], 'stopped']],
  )
  await waitForLine(driver, /event node:left lab@root@10\.77\.0\.12:22/, 10_000, 'the removed host leaving')

  // Cut a host's link mid-job: the driver loses it, requeues its tasks, the others finish.
  await lab.setLink(h1, false)
  await waitForLine(driver, /event node:lost lab@10\.77\.0\.11 no heartbeat/, 15_000, 'the cut host declared lost')
  await writeFile(join(proj, 'release'), '')
  const result = json<{ count: number; exactlyOnce: boolean; byPid: Record<string, number>; stats: { requeued: number; tasksSucceeded: number } }>(
    (await waitForLine(driver, /^result (.*)$/m, 60_000, 'the job result'))[1]!,
  )
  assert.equal(await driver.exited, 0, driver.output())
  assert.equal(result.count, TASKS)
  assert.equal(result.exactlyOnce, true, 'every task answered exactly once')
  assert.equal(result.stats.tasksSucceeded, TASKS)
  assert.ok(result.stats.requeued > 0, 'the lost and the removed host had tasks, requeued')
  const [p1, p2, p3] = st.hosts.map((h) => String(h.pid))
  for (const pid of [p1, p2, p3]) assert.ok((result.byPid[pid!] ?? 0) > 0, `agent ${pid} did work: ${JSON.stringify(result.byPid)}`)

  // The cut host cannot be asked or stopped: reported, kept; the others are stopped. The driver has
  // exited; its agent notices (its Bye, or else its silence) a moment later, and then waits for the next.
  st = await statusWhile(t, (s) => s.hosts.find((h) => h.host === labels[2])?.state === 'up', 15_000)
  assert.deepEqual(
    st.hosts.map((h) => [h.host, h.state]),
    [
      [labels[0], 'unreachable'],
      [labels[2], 'waiting'],
    ],
  )
  assert.match(st.hosts[0]!.error!, /10\.77\.0\.11: status: the host did not answer/)
  const down = lab.cli(t, ['down'], proj)
  const downText = await ok(down, 1)
  assert.match(downText, /10\.77\.0\.11\s+failed/)
  assert.match(downText, /10\.77\.0\.13\s+stopped/)
  assert.match(downText, /could not be reached; they stay listed/)
  assert.deepEqual(await agentsIn(h3), [])
  assert.equal((await agentsIn(h1)).length, 1, 'the agent behind the cut link still runs')

  // Link back: down again stops it; once more, there is nothing to do. No agent, no file is left.
  await lab.setLink(h1, true)
  const again = json<DownJson>(await ok(lab.cli(t, ['down', '--json'], proj)))
  assert.deepEqual(
    again.hosts.map((h) => [h.host, h.result]),
    [[labels[0], 'stopped']],
  )
  assert.match(await ok(lab.cli(t, ['down'], proj)), /has no hosts to stop/)
  for (const h of lab.hosts) assert.deepEqual(await agentsIn(h), [])
  assert.equal(existsSync(join(lab.dir, 'run')), false, 'the remote run directory is removed')
  assert.equal(existsSync(join(proj, '.actor-cluster', 'lab.json')), false)
})

test('every bad host is reported with its cause; the good one comes up; nothing half-started stays', { skip, timeout: 60_000 }, async (t) => {
  t.after(killAgents)
  const [h1, h2, h3] = lab.hosts as [NetHost, NetHost, NetHost]
  // Another version of actor-cluster, installed as a host would have it.
  const old = join(lab.dir, 'old')
  await mkdir(join(old, 'dist'), { recursive: true })
  for (const d of ['lib', 'bin', 'bench']) await cp(join(REPO, 'dist', d), join(old, 'dist', d), { recursive: true })
  const pkg = json<{ version: string }>(await readFile(join(REPO, 'package.json'), 'utf8'))
  await writeFile(join(old, 'package.json'), JSON.stringify({ ...pkg, version: '0.0.1-old' }))
  await symlink(join(REPO, 'node_modules'), join(old, 'node_modules'))
  // A host whose project has no tasks module, and one whose tasks module throws on import.
  const empty = join(lab.dir, 'empty')
  const broken = join(lab.dir, 'broken')
  await mkdir(empty)
  await mkdir(broken)
  await writeFile(join(broken, 'tasks.mjs'), 'throw new Error("tasks module broken on purpose")\n')
  await writeFile(
    join(proj, 'hosts-bad.txt'),
    [
      `${h3.address} threads=1`,
      `${'10.77.0.99'}                      # no such host`,
      `${h1.address} key=${lab.wrongKey}`,
      `${h2.address}:2222 node=/nonexistent/node`,
      `${h1.address}:2222 cli=${join(old, 'dist', 'bin', 'cluster.js')}`,
      `${h2.address} dir=${empty}`,
      `root@${h2.address} dir=${broken}`,
      `${h3.address}:2222                   # its host key is not in known_hosts`,
      `root@${h3.address} dir=/nonexistent/project`,
      '',
    ].join('\n'),
  )
  const p = lab.cli(t, ['up', '--nodes', 'hosts-bad.txt', '--no-sync', '--name', 'bad', '--json', '--config', 'insecure.config.mjs'], proj)
  const r = json<UpJson>(await ok(p, 1))
  const by = new Map(r.hosts.map((h) => [h.host, h]))
  assert.equal(by.get(h3.address)!.state, 'up')
  const expect: [string, string, string, RegExp][] = [
    ['10.77.0.99', 'ERR_SSH', 'unreachable', /did not answer/],
    [h1.address, 'ERR_SSH', 'auth', /refused the SSH key.*Permission denied \(publickey\)/],
    [`${h2.address}:2222`, 'ERR_HOST_SETUP', 'no-node', /Node\.js not found: "\/nonexistent\/node" does not exist/],
    [
      `${h1.address}:2222`,
      'ERR_HOST_SETUP',
      'version',
      /actor-cluster 0\.0\.1-old is installed at .*old\/dist\/bin\/cluster\.js, this machine runs \d+\.\d+\.\d+/,
    ],
    [h2.address, 'ERR_HOST_SETUP', 'no-tasks', /the tasks module .*empty\/tasks\.mjs does not exist there/],
    [`root@${h2.address}`, 'ERR_AGENT_START', 'exited', /the agent exited at once:[\s\S]*tasks module broken on purpose/],
    [`${h3.address}:2222`, 'ERR_SSH', 'host-key', /host key is not in known_hosts/],
    [`root@${h3.address}`, 'ERR_HOST_SETUP', 'dir', /cannot use the directory \/nonexistent\/project/],
  ]
  for (const [host, code, reason, message] of expect) {
    const h = by.get(host)
    assert.ok(h, `${host} reported`)
    assert.equal(h.state, 'failed', host)
    assert.equal(h.error?.code, code, `${host}: ${h.error?.message}`)
    assert.equal(h.error?.reason, reason, `${host}: ${h.error?.message}`)
    assert.match(h.error.message, message)
  }
  // Only the good host is recorded and runs an agent of this cluster.
  const state = json<{ hosts: { label: string }[] }>(await readFile(join(proj, '.actor-cluster', 'bad.json'), 'utf8'))
  assert.deepEqual(
    state.hosts.map((h) => h.label),
    [h3.address],
  )
  assert.equal((await agentsIn(h1)).length + (await agentsIn(h2)).length, 0)
  assert.equal((await agentsIn(h3)).length, 1)

  // An agent that cannot reach the head is stopped, with the reason, after the registration timeout.
  await writeFile(join(proj, 'hosts-one.txt'), `${h2.address}\n`)
  const nr = json<UpJson>(
    await ok(
      lab.cli(
        t,
        [
          'up',
          '--nodes',
          'hosts-one.txt',
          '--no-sync',
          '--name',
          'unreg',
          '--listen',
          `tcp://${HEAD_ADDRESS}:7101`,
          '--head',
          `tcp://${HEAD_ADDRESS}:7102`,
          '--register-timeout',
          '2',
          '--json',
        ],
        proj,
      ),
      1,
    ),
  )
  assert.equal(nr.hosts[0]!.error?.code, 'ERR_AGENT_START')
  assert.match(nr.hosts[0]!.error.message, /did not register with tcp:\/\/10\.77\.0\.1:7102 within 2 s \(stopped it\)/)
  assert.deepEqual(await agentsIn(h2), [])
  assert.equal(existsSync(join(proj, '.actor-cluster', 'unreg.json')), false)

  // CURVE keys the head does not accept: the agent's handshake is refused, and the log says so.
  const wrong = join(lab.dir, 'wrong-keys')
  await exec(process.execPath, [CLI, 'keys', '--out', wrong])
  await writeFile(join(wrong, 'authorized_agents'), `${(await readFile(join(lab.dir, 'keys', 'server.pub'), 'utf8')).trim()}\n`)
  const refused = json<UpJson>(
    await ok(lab.cli(t, ['up', '--nodes', 'hosts-one.txt', '--no-sync', '--name', 'refused', '--keys', wrong, '--register-timeout', '3', '--json'], proj), 1),
  )
  assert.equal(refused.hosts[0]!.error?.reason, 'not-registered', refused.hosts[0]!.error?.message)
  assert.match(refused.hosts[0]!.error.message, /did not register[\s\S]*check the keys/)
  assert.deepEqual(await agentsIn(h2), [])
  assert.deepEqual(
    (await readdir(join(lab.dir, 'run')).catch(() => [])).filter((f) => f.startsWith('refused@')),
    [],
    'its keys and files are removed',
  )

  // The head port taken by another program: refused before any host is touched.
  const squatter = lab.exec(t, lab.head.ns, [
    process.execPath,
    '-e',
    `require('net').createServer().listen(7100, '${HEAD_ADDRESS}', () => console.log('listening'))`,
  ])
  await waitForLine(squatter, /listening/, 10_000, 'a program on the head port')
  const taken = lab.cli(t, ['up', '--nodes', 'hosts-one.txt', '--no-sync', '--name', 'taken', '--config', 'insecure.config.mjs'], proj)
  assert.equal(await taken.exited, 1)
  assert.match(taken.output(), /tcp:\/\/10\.77\.0\.1:7100 is in use by a program that is not an actor-cluster driver.*\[ERR_ADDRESS_IN_USE\]/)
  assert.deepEqual(await agentsIn(h2), [])
  squatter.child.kill('SIGKILL')

  // Not run on the head: the address cannot be bound here and no driver answers there.
  const elsewhere = lab.cli(
    t,
    ['up', '--nodes', 'hosts-one.txt', '--no-sync', '--name', 'elsewhere', '--config', 'insecure.config.mjs', '--listen', 'tcp://10.77.0.200:7100'],
    proj,
  )
  assert.equal(await elsewhere.exited, 1)
  assert.match(
    elsewhere.output(),
    /cannot listen on tcp:\/\/10\.77\.0\.200:7100 here \(.*\) and no driver answers at tcp:\/\/10\.77\.0\.200:7100: run cluster up on the head machine/,
  )
  assert.deepEqual(await agentsIn(h2), [])

  // A frozen agent: status calls it stale; down kills it after the grace period.
  const [frozen] = await agentsIn(h3)
  process.kill(frozen!, 'SIGSTOP')
  let stale: StatusJson | undefined
  for (let i = 0; i < 10 && stale?.hosts[0]?.state !== 'stale'; i++) {
    await new Promise((r) => setTimeout(r, 1000))
    stale = json<StatusJson>(await ok(lab.cli(t, ['status', '--name', 'bad', '--json', '--config', 'insecure.config.mjs'], proj)))
  }
  assert.equal(stale?.hosts[0]?.state, 'stale', JSON.stringify(stale))
  const down = json<DownJson>(await ok(lab.cli(t, ['down', '--name', 'bad', '--json', '--config', 'insecure.config.mjs', '--stop-timeout', '1'], proj)))
  assert.deepEqual(
    down.hosts.map((h) => [h.host, h.result]),
    [[h3.address, 'killed']],
  )
  for (const h of lab.hosts) assert.deepEqual(await agentsIn(h), [])
})

test('sync copies the project (without .git and node_modules) and the agent runs the copy', { skip, timeout: 60_000 }, async (t) => {
  t.after(killAgents)
  const h2 = lab.hosts[1]!
  await mkdir(join(proj, '.git'), { recursive: true })
  await writeFile(join(proj, '.git', 'HEAD'), 'ref: refs/heads/main\n')
  await mkdir(join(proj, 'node_modules', 'dep'), { recursive: true })
  await writeFile(join(proj, 'node_modules', 'dep', 'index.js'), '')
  await mkdir(join(proj, 'data'), { recursive: true })
  await writeFile(join(proj, 'data', 'input.csv'), 'a,b\n1,2\n')
  const remote = join(lab.dir, 'remote-h2', 'proj')
  await writeFile(join(proj, 'hosts-sync.txt'), `${h2.address} threads=1 dir=${remote}\n`)
  // The default run directory (under the SSH user's home, per cluster name), with a name of this run's own.
  const name = `synced-${lab.prefix}`
  const defaultRun = join(userInfo().homedir, '.actor-cluster', 'run', name)
  const up = await ok(lab.cli(t, ['up', '--nodes', 'hosts-sync.txt', '--name', name, '--run-dir', ''], proj))
  assert.ok(existsSync(defaultRun))
  assert.match(up, /1 of 1 host up/)
  const local = (await readdir(proj)).filter((f) => !['.git', 'node_modules', '.actor-cluster'].includes(f)).sort()
  assert.ok(local.includes('data') && local.includes('tasks.mjs'))
  assert.deepEqual((await readdir(remote)).sort(), local, 'everything but .git, node_modules and the state directory')
  assert.equal(await readFile(join(remote, 'data', 'input.csv'), 'utf8'), 'a,b\n1,2\n')
  await writeFile(
    join(proj, 'where.mjs'),
    `import { Cluster } from ${JSON.stringify(LIB)}\nconst c = await Cluster.start()\nwhile (c.nodes().length < 1) await new Promise((r) => setTimeout(r, 20))\nconsole.log('where ' + await c.call('whereami'))\nawait c.close()\n`,
  )
  const where = await ok(lab.cli(t, ['run', 'where.mjs'], proj))
  assert.match(where, new RegExp(`where file://${remote.replace(/[.[\]/]/g, '\\$&')}/tasks\\.mjs`))
  // Without the state file (lost, or another machine), down --nodes still finds this cluster's agents.
  await rm(join(proj, '.actor-cluster', `${name}.json`))
  assert.match(await ok(lab.cli(t, ['down', '--name', name, '--run-dir', ''], proj)), /has no hosts to stop/)
  assert.equal((await agentsIn(h2)).length, 1)
  const down = json<DownJson>(await ok(lab.cli(t, ['down', '--name', name, '--json', '--run-dir', '', '--nodes', 'hosts-sync.txt'], proj)))
  assert.deepEqual(
    down.hosts.map((h) => h.result),
    ['stopped'],
  )
  assert.deepEqual(await agentsIn(h2), [])
  assert.equal(existsSync(defaultRun), false)
})
