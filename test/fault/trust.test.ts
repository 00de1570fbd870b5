import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as zmq from 'zeromq'
import { Packr } from 'msgpackr'
import { pino } from 'pino'
import { Agent, Cluster, InvalidArgumentError } from '../../lib/index.js'
import { startScript } from '../../lib/hosts/remote.js'
import { MsgType, PROTOCOL_VERSION } from '../../lib/protocol/messages.js'
import { newKeyPair } from '../../lib/transport/curve.js'
import { FIXTURE_TASKS, runCli, waitFor, within } from '../helpers.js'
import { openDriver, welcomedRawAgent } from '../raw-agent.js'

const packr = new Packr()
const V = PROTOCOL_VERSION

test('a result counts only from the node the task was sent to: a member answering another node\u2019s tasks is dropped as late', async (t) => {
  await using cluster = await openDriver()
  // The forger asks for one task and never answers it: every later task goes to the real agent.
  const forger = await welcomedRawAgent(t, cluster.address, 'forger', 1)
  const held = cluster.call('sleep', 1, -1).catch((e: unknown) => e)
  await waitFor(() => forger.tasks.length > 0, 10_000, 'the forger to receive its task')
  const heldId = forger.tasks[0]!.id
  const agent = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1 })
  t.after(() => agent.close())
  await agent.waitUntilReady()
  const n = 20
  const calls = Array.from({ length: n }, (_, i) => cluster.call<number>('sleep', 30, i))
  await waitFor(() => agent.stats.tasksDone > 0 || cluster.stats().inFlight > 1, 10_000, 'the real agent to take tasks')
  // The ids that follow the forger's own are the real agent's; the forger answers them all with 999.
  const forged = Array.from({ length: n + 16 }, (_, k): [number, number, unknown] => [heldId + 1 + k, 0, 999])
  const before = cluster.stats().lateResultsDropped
  await forger.answer(forged)
  assert.deepEqual(
    await Promise.all(calls),
    Array.from({ length: n }, (_, i) => i),
    'every result is the real agent\u2019s',
  )
  assert.equal(cluster.stats().lateResultsDropped - before, n + 16, 'every forged result was dropped as late')
  await cluster.close()
  // The silent forger is lost after nodeTimeoutMs and its task runs on the real agent, unless the cluster closed first.
  const h = await held
  assert.ok(h === -1 || (h as Error).name === 'ClusterClosedError', `the forger's task settled once: ${String(h)}`)
})

test('results from a node that is no longer a member are counted as late results, not as bad frames', async (t) => {
  await using cluster = await openDriver({ heartbeatMs: 100, nodeTimeoutMs: 400 })
  const lost = new Promise<string>((resolve) => cluster.once('node:lost', (_n, reason) => resolve(reason)))
  // It never sends a heartbeat: the driver declares it lost.
  const raw = await welcomedRawAgent(t, cluster.address, 'silent', 0)
  assert.match(await lost, /no heartbeat/)
  const before = cluster.stats()
  await raw.answer([
    [1, 0, 5],
    [2, 0, 6],
  ])
  await waitFor(() => cluster.stats().lateResultsDropped > before.lateResultsDropped, 5_000, 'the late results to be counted')
  const after = cluster.stats()
  assert.equal(after.lateResultsDropped - before.lateResultsDropped, 2)
  assert.equal(after.badFrames, before.badFrames)
})

test('timeoutMs beyond Node\u2019s longest timer is refused (it would fire at once)', async () => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1 })
  assert.throws(
    () => cluster.with({ timeoutMs: 2 ** 31 }),
    (e: unknown) => e instanceof InvalidArgumentError && /options\.timeoutMs must be at most 2147483647/.test(e.message),
  )
  assert.equal(await cluster.with({ timeoutMs: 2 ** 31 - 1 }).call('add', 1, 2), 3)
})

test('the dashboard token never reaches the logs: the logged URL masks it, cluster.dashboardUrl keeps it', async () => {
  const token = 'secret-dashboard-token-4f1c9a'
  const lines: string[] = []
  const sink = { write: (line: string) => void lines.push(line) }
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, logger: pino({ level: 'trace' }, sink), dashboard: { port: 0, token } })
  try {
    assert.ok(cluster.dashboardUrl?.includes(`?token=${token}`), 'the program reads the real URL')
    await cluster.call('fail', 'a logged failure').catch(() => {})
  } finally {
    await cluster.close()
  }
  const listening = lines.find((l) => l.includes('dashboard listening'))
  assert.ok(listening, `a "dashboard listening" line: ${lines.join('')}`)
  assert.match(listening, /\?token=\*\*\*/)
  assert.ok(!lines.some((l) => l.includes(token)), `no line holds the token: ${lines.join('')}`)
})

test('cluster dashboard prints its URL with the token masked, and warns that --token shows in ps', async (t) => {
  const token = 'secret-cli-token-8d2e7b10'
  const d = runCli(t, ['dashboard', '--port', '0', '--listen', 'tcp://127.0.0.1:0', '--token', token])
  await waitFor(() => /agents connect to: \S+\n/.test(d.output()), 15_000, 'the standing driver to start')
  assert.match(d.output(), /dashboard: http:\/\/127\.0\.0\.1:\d+\/\?token=\*\*\*/)
  assert.match(d.output(), /--token is visible to every user of this machine/)
  assert.ok(!d.output().includes(token), d.output())
})

test('a message of more parts than the protocol has, or more bytes in all than maxFrameBytes, is dropped as a bad frame; the job runs on', async (t) => {
  const maxFrameBytes = 64 * 1024
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, listen: 'tcp://127.0.0.1:0', insecure: true, maxFrameBytes })
  assert.equal(await cluster.call('add', 1, 2), 3)
  const raw = await welcomedRawAgent(t, cluster.address, 'many-parts', 0)
  const heartbeat = packr.pack([V, MsgType.Heartbeat])
  // Each part fits libzmq's per-part limit; together they are 300 times it.
  const chunk = Buffer.alloc(60 * 1024, 7)
  const before = cluster.stats().badFrames
  await raw.socket.send([heartbeat, ...Array.from({ length: 299 }, () => chunk)])
  await waitFor(() => cluster.stats().badFrames > before, 10_000, 'the 300-part message to be counted as a bad frame')
  // Small, but one part more than a header and a body.
  await raw.socket.send([heartbeat, packr.pack([]), packr.pack([])])
  await waitFor(() => cluster.stats().badFrames > before + 1, 10_000, 'the 3-part message to be counted as a bad frame')
  // Two parts, each under the limit, over it together.
  await raw.socket.send([heartbeat, Buffer.alloc(maxFrameBytes - heartbeat.length + 1)])
  await waitFor(() => cluster.stats().badFrames > before + 2, 10_000, 'the message over maxFrameBytes in all to be counted as a bad frame')
  assert.equal(cluster.stats().badFrames - before, 3)
  assert.deepEqual(await Promise.all([cluster.call('add', 2, 3), cluster.call('add', 4, 5)]), [5, 9], 'the job keeps running')
  assert.ok(
    cluster.nodes().some((n) => n.id === 'many-parts'),
    'the sender stays a member: its message was dropped, not its membership',
  )
})

test('an agent drops a message from its driver of more parts than the protocol has, and counts it', async (t) => {
  const router = new zmq.Router({ linger: 0, sendTimeout: 0 })
  t.after(() => router.close())
  await router.bind('tcp://127.0.0.1:*')
  const agent = await Agent.start({ connect: router.lastEndpoint!, tasks: FIXTURE_TASKS, threads: 1, maxFrameBytes: 64 * 1024 })
  t.after(() => agent.close({ timeoutMs: 1000 }))
  const [id] = await within(router.receive(), 10_000, 'the agent’s Hello')
  const chunk = Buffer.alloc(60 * 1024, 7)
  await router.send([id!, packr.pack([V, MsgType.Heartbeat]), ...Array.from({ length: 299 }, () => chunk)])
  await waitFor(() => agent.stats.badFrames === 1, 10_000, 'the agent to count the 300-part message as a bad frame')
})

/** The inodes of the TCP sockets this process holds in LISTEN state (from /proc: Linux only). */
function listeningTcpInodes(): Set<string> {
  const listening = new Set<string>()
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string
    try {
      text = readFileSync(table, 'utf8')
    } catch {
      continue // no IPv6
    }
    // Columns: sl local_address rem_address st ... inode (10th); st 0A is LISTEN.
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols[3] === '0A' && cols[9]) listening.add(cols[9])
    }
  }
  const mine = new Set<string>()
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`)
    } catch {
      continue // closed meanwhile
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1]
    if (inode && listening.has(inode)) mine.add(inode)
  }
  return mine
}

test('a default cluster binds no TCP port: its local agents and cluster.address are in-process', { skip: process.platform !== 'linux' }, async () => {
  const before = listeningTcpInodes()
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, config: {} })
  assert.equal(await cluster.call('add', 1, 2), 3)
  assert.match(cluster.address, /^memory:\/\//)
  const opened = [...listeningTcpInodes()].filter((i) => !before.has(i))
  assert.deepEqual(opened, [], 'no TCP socket listening that was not there before the cluster started')
  // An explicit listen, or local agents over TCP, still bind loopback TCP.
  await using tcp = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, localTransport: 'tcp', config: {} })
  assert.match(tcp.address, /^tcp:\/\/127\.0\.0\.1:\d+$/)
  assert.equal(await tcp.call('add', 2, 3), 5)
  assert.ok(
    [...listeningTcpInodes()].some((i) => !before.has(i)),
    'localTransport tcp listens on loopback TCP',
  )
})

/** Runs the script `cluster up` sends a host to start an agent, here, as `sh -s` does over SSH. */
function startHere(script: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync('sh', ['-s', '--', ...args], { input: script, encoding: 'utf8', timeout: 30_000, env })
  if (r.error) throw r.error
  return r.stdout
}

test(
  'cluster up writes agent keys only into a run directory of its own: another user\u2019s directory is refused, the default is under home',
  { skip: process.platform !== 'linux' || process.getuid?.() !== 0 ? 'needs root on Linux (to add a second user)' : false },
  async (t) => {
    const user = `acx${randomBytes(4).toString('hex')}`
    execFileSync('useradd', ['-M', '-s', '/bin/sh', user])
    t.after(() => spawnSync('userdel', [user]))
    const base = mkdtempSync(join(tmpdir(), 'ac-trust-'))
    t.after(() => rmSync(base, { recursive: true, force: true }))
    chmodSync(base, 0o755)
    // A shared directory like /tmp, and a project with a fake agent that reports ready and leaves.
    const shared = join(base, 'shared')
    mkdirSync(shared)
    chmodSync(shared, 0o1777)
    const project = join(base, 'project')
    mkdirSync(project)
    writeFileSync(join(project, 'tasks.js'), '')
    const fakeCli = join(project, 'fake-agent.mjs')
    writeFileSync(
      fakeCli,
      `import { writeFileSync } from 'node:fs'\nconst a = process.argv\nwriteFileSync(a[a.indexOf('--status-file') + 1], '{"state":"ready"}')\nsetTimeout(() => {}, 1000)\n`,
    )
    const agentKey = newKeyPair()
    const script = startScript({ serverPublicKey: newKeyPair().publicKey, agentKey })
    const args = (runDir: string) => [process.execPath, fakeCli, project, runDir, 'a1', 'tcp://127.0.0.1:1', 'tasks.js', '1', '10', '', '', 'c1']

    // The other user got there first: the run directory and a key file they can read.
    const planted = join(shared, 'actor-cluster-0', 'c1')
    execFileSync('runuser', ['-u', user, '--', 'sh', '-c', 'umask 0 && mkdir -p "$1/a1.keys" && : >"$1/a1.keys/agent.json"', 'sh', planted])
    const refused = startHere(script, args(planted))
    assert.match(refused, /^error=rundir$/m, refused)
    assert.match(refused, /^why=its parent belongs to another user/m, refused)
    assert.equal(readFileSync(join(planted, 'a1.keys', 'agent.json'), 'utf8'), '', 'no key reached the planted file')

    // No run directory given: one under the user's home, private, with the keys in new private files.
    const home = join(base, 'home')
    mkdirSync(home, { mode: 0o700 })
    const ok = startHere(script, args(''), { ...process.env, HOME: home, TMPDIR: shared })
    assert.match(ok, /^status=/m, ok)
    const run = join(home, '.actor-cluster', 'run', 'c1')
    assert.match(ok, new RegExp(`^rundir=${run}$`, 'm'))
    assert.equal(statSync(run).mode & 0o777, 0o700)
    const keyFile = join(run, 'a1.keys', 'agent.json')
    assert.equal(statSync(keyFile).mode & 0o777, 0o600)
    assert.equal((JSON.parse(readFileSync(keyFile, 'utf8')) as { secretKey: string }).secretKey, agentKey.secretKey)
  },
)
