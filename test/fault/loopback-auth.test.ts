import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { Agent, AuthError, Cluster } from '../../lib/index.js'
import { MsgType, PROTOCOL_VERSION } from '../../lib/protocol/messages.js'
import { helloProof, newKeyPair, writeKeys } from '../../lib/transport/curve.js'
import { FIXTURE_TASKS, runCli, waitFor, within } from '../helpers.js'
import { rawAgent } from '../raw-agent.js'

const V = PROTOCOL_VERSION

/** Local keys go under this file's own runtime directory (the variable is read at each start). */
const runtime = mkdtempSync(join(tmpdir(), 'ac-runtime-'))
chmodSync(runtime, 0o700)
const saved = process.env['XDG_RUNTIME_DIR']
process.env['XDG_RUNTIME_DIR'] = runtime
process.on('exit', () => {
  if (saved === undefined) delete process.env['XDG_RUNTIME_DIR']
  else process.env['XDG_RUNTIME_DIR'] = saved
  rmSync(runtime, { recursive: true, force: true })
})

const portOf = (address: string) => /:(\d+)$/.exec(address)![1]!

/** A raw DEALER that says Hello as `id` (CURVE with a key pair of its own when given the server's key); one connection attempt, so a refused handshake is not retried while the test looks. */
function intruder(t: TestContext, address: string, id: string, curve?: { serverPublicKey: string }) {
  const keys = newKeyPair()
  return rawAgent(t, address, id, {
    hello: { tasks: ['add'], registration: 'x' },
    socket: {
      reconnectInterval: 60_000,
      ...(curve ? { curveServerKey: curve.serverPublicKey, curvePublicKey: keys.publicKey, curveSecretKey: keys.secretKey } : {}),
    },
  })
}

test('a loopback listen authenticates: a DEALER without the key, or with a key of its own, gets no Welcome and no task; the job is exact', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', threads: 1 })
  assert.match(cluster.address, /^tcp:\/\/127\.0\.0\.1:\d+$/)
  assert.equal(cluster.localKeys, join(runtime, 'actor-cluster', `${hostname()}-${portOf(cluster.address)}`))
  const keyless = intruder(t, cluster.address, 'keyless')
  await waitFor(() => keyless.refused.length > 0, 10_000, 'the keyless DEALER to fail its handshake')
  // The server's public key is no secret: a DEALER with it and a key pair of its own is refused by the driver's list.
  const serverPublicKey = readFileSync(join(cluster.localKeys ?? '', 'server.pub'), 'utf8').trim()
  const unlisted = intruder(t, cluster.address, 'unlisted', { serverPublicKey })
  await waitFor(() => unlisted.refused.length > 0, 10_000, 'the unlisted DEALER to be refused')
  assert.equal(cluster.stats().authDenied, 1, 'one refusal by the driver: the unlisted key (the keyless one fails before, on the mechanism)')
  const n = 300
  const results = await Promise.all(Array.from({ length: n }, (_, i) => cluster.call<number>('add', i, 1)))
  assert.deepEqual(
    results,
    Array.from({ length: n }, (_, i) => i + 1),
  )
  assert.deepEqual(keyless.received, [], 'no Welcome, no task, nothing at all reached the keyless DEALER')
  assert.deepEqual(unlisted.received, [], 'nothing reached the unlisted DEALER')
  assert.deepEqual(
    cluster.nodes().map((n) => n.local),
    [true],
    'the local agent is the only member',
  )
  assert.equal(cluster.stats().badFrames, 0)
})

test('the local keys are private: directory 0700, files 0600, ours; removed at close; an agent finds them, or is given them', async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  let closed = false
  t.after(() => (closed ? undefined : cluster.close()))
  const dir = cluster.localKeys!
  const uid = process.getuid!()
  for (const d of [join(runtime, 'actor-cluster'), dir]) {
    const st = statSync(d)
    assert.equal(st.mode & 0o777, 0o700, `${d} is 0700`)
    assert.equal(st.uid, uid)
  }
  assert.deepEqual(readdirSync(dir).sort(), ['agent.json', 'server.pub'])
  for (const f of readdirSync(dir)) {
    const st = statSync(join(dir, f))
    assert.equal(st.mode & 0o777, 0o600, `${f} is 0600`)
    assert.equal(st.uid, uid)
  }
  // An agent told only the address finds the keys; another is given the directory.
  const found = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1, id: 'found' })
  t.after(() => found.close())
  const given = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1, id: 'given', curve: { dir } })
  t.after(() => given.close())
  await Promise.all([found.waitUntilReady(), given.waitUntilReady()])
  // And `cluster agent`, pointed at the driver on this machine.
  const cli = runCli(t, ['agent', '--connect', cluster.address, '--tasks', FIXTURE_TASKS.href, '--threads', '1', '--id', 'cli'], { XDG_RUNTIME_DIR: runtime })
  await waitFor(() => cluster.nodes().length === 3, 15_000, `the three agents to join: ${cli.output()}`)
  assert.deepEqual(
    cluster
      .nodes()
      .map((n) => n.id)
      .sort(),
    ['cli', 'found', 'given'],
  )
  const results = await Promise.all(Array.from({ length: 90 }, (_, i) => cluster.call<number>('add', i, i)))
  assert.deepEqual(
    results,
    Array.from({ length: 90 }, (_, i) => 2 * i),
  )
  assert.equal(cluster.stats().authDenied, 0)
  closed = true
  await cluster.close()
  assert.equal(existsSync(dir), false, 'the keys are gone with their driver')
})

test('insecure: true on loopback behaves as before: no keys made, a plain DEALER registers and gets its task', async (t) => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0, insecure: true })
  assert.equal(cluster.localKeys, undefined)
  assert.equal(existsSync(join(runtime, 'actor-cluster', `${hostname()}-${portOf(cluster.address)}`)), false)
  const plain = intruder(t, cluster.address, 'plain')
  await waitFor(plain.welcomed, 10_000, 'the Welcome of the plain DEALER')
  const call = cluster.call<number>('add', 2, 3)
  await waitFor(() => plain.tasks.length > 0, 10_000, 'the task to reach the plain DEALER')
  await plain.answer([[plain.tasks[0]!.id, 0, 5]])
  assert.equal(await call, 5)
})

test('keys are never kept where another user could have planted something: a symbolic link or another user\u2019s directory is refused', async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('needs root to make a directory that belongs to another user')
    return
  }
  const base = join(runtime, 'actor-cluster')
  const elsewhere = mkdtempSync(join(tmpdir(), 'ac-planted-'))
  t.after(() => rmSync(elsewhere, { recursive: true, force: true }))
  t.after(() => rmSync(base, { recursive: true, force: true }))
  rmSync(base, { recursive: true, force: true })
  symlinkSync(elsewhere, base)
  const start = () => Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  await assert.rejects(
    start,
    (e: unknown) => e instanceof AuthError && e.code === 'ERR_AUTH' && e.message === `refusing to keep keys in ${base}: it is a symbolic link`,
  )
  assert.deepEqual(readdirSync(elsewhere), [], 'nothing was written through the link')

  rmSync(base)
  mkdirSync(base, { mode: 0o700 })
  chownSync(base, 65534, 65534)
  await assert.rejects(
    start,
    (e: unknown) => e instanceof AuthError && e.message === `refusing to keep keys in ${base}: it belongs to another user (uid 65534)`,
  )
  assert.deepEqual(readdirSync(base), [])

  // The agent's side: keys another user left for a port are not used.
  chownSync(base, 0, 0)
  const planted = join(base, `${hostname()}-7199`)
  mkdirSync(planted, { mode: 0o700 })
  const k = newKeyPair()
  writeFileSync(join(planted, 'server.pub'), `${k.publicKey}\n`, { mode: 0o600 })
  writeFileSync(join(planted, 'agent.json'), JSON.stringify(k), { mode: 0o600 })
  chownSync(join(planted, 'agent.json'), 65534, 65534)
  await assert.rejects(
    Agent.start({ connect: 'tcp://127.0.0.1:7199', tasks: FIXTURE_TASKS, threads: 1 }),
    (e: unknown) => e instanceof AuthError && e.message === `refusing the local keys in ${planted}: agent.json belongs to another user (uid 65534)`,
  )
  chownSync(join(planted, 'agent.json'), 0, 0)
  chmodSync(join(planted, 'agent.json'), 0o644)
  await assert.rejects(
    Agent.start({ connect: 'tcp://127.0.0.1:7199', tasks: FIXTURE_TASKS, threads: 1 }),
    (e: unknown) => e instanceof AuthError && e.message === `refusing the local keys in ${planted}: agent.json is readable by other users`,
  )

  // `cluster keys` (and the Slurm launchers, which write keys the same way): a link or another user's directory is refused.
  const linked = join(elsewhere, 'keys-link')
  symlinkSync(planted, linked)
  assert.throws(
    () => writeKeys(linked),
    (e: unknown) => e instanceof AuthError && e.message === `refusing to keep keys in ${linked}: it is a symbolic link`,
  )
  const foreign = join(elsewhere, 'foreign')
  mkdirSync(foreign, { mode: 0o700 })
  chownSync(foreign, 65534, 65534)
  assert.throws(
    () => writeKeys(foreign),
    (e: unknown) => e instanceof AuthError && e.message === `refusing to keep keys in ${foreign}: it belongs to another user (uid 65534)`,
  )
  assert.deepEqual(readdirSync(foreign), [])
})

test('no takeover of an agent id without its key: a peer with another accepted key, or none proven, is refused; the owner may come back', async (t) => {
  const server = newKeyPair()
  const owner = newKeyPair()
  const other = newKeyPair()
  await using cluster = await Cluster.start({
    tasks: FIXTURE_TASKS,
    listen: 'tcp://127.0.0.1:0',
    localAgents: 0,
    curve: { serverPublicKey: server.publicKey, serverSecretKey: server.secretKey, authorizedAgents: [owner.publicKey, other.publicKey] },
  })
  const ownerCurve = { serverPublicKey: server.publicKey, agentKey: owner }
  const victim = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1, id: 'victim', curve: ownerCurve })
  t.after(() => victim.close())
  await victim.waitUntilReady()

  /** A peer holding `key` (accepted by the driver), connecting under the victim's public id, saying Hello as it. */
  const impostor = (routingId: string, key: typeof other, prove: boolean) =>
    rawAgent(t, cluster.address, routingId, {
      hello: {
        agentId: 'victim',
        pid: 1,
        tasks: ['add', 'whoami'],
        registration: 'evil',
        ...(prove ? helloProof({ serverPublicKey: server.publicKey, agentKey: key }, 'victim', 'evil', routingId) : {}),
      },
      socket: { curveServerKey: server.publicKey, curvePublicKey: key.publicKey, curveSecretKey: key.secretKey },
    }).received
  // The ROUTER hands an id over to whoever claims it: the agent's routing id is not its public id, so this is another peer.
  const claimsId = impostor('victim', other, true)
  const unproven = impostor('victim/00000000000000000000000000000000', owner, false)
  await waitFor(() => claimsId.length > 0 && unproven.length > 0, 10_000, 'the driver to answer both impostors')
  assert.deepEqual(claimsId, [[[V, MsgType.Reject, 'agent id victim belongs to another agent key']]])
  assert.deepEqual(unproven, [[[V, MsgType.Reject, 'agent victim did not prove its CURVE key']]])
  assert.equal(cluster.stats().authDenied, 2)
  const pids = await within(Promise.all(Array.from({ length: 100 }, () => cluster.call<number>('whoami'))), 15_000, 'the 100 tasks to run')
  assert.deepEqual(new Set(pids), new Set([process.pid]), 'every task ran on the real agent')
  assert.deepEqual(
    cluster.nodes().map((n) => [n.id, n.host]),
    [['victim', hostname()]],
  )
  assert.equal(claimsId.length + unproven.length, 2, 'the impostors received nothing more')

  // The owner of the key, restarted under the same id (a new connection): it takes its id back.
  const joined = new Promise<void>((resolve) => cluster.once('node:joined', () => resolve()))
  const again = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1, id: 'victim', curve: ownerCurve })
  t.after(() => again.close())
  await again.waitUntilReady()
  await joined
  assert.equal(cluster.nodes().length, 1)
  assert.equal(await cluster.call('add', 20, 22), 42)
})
