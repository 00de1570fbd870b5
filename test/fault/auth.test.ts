import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, statSync, readFileSync, writeFileSync, cpSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Cluster, AuthError, InvalidArgumentError } from '../../lib/index.js'
import { FIXTURE_TASKS, runCli, waitFor } from '../helpers.js'

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'ac-keys-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

const agentArgs = (address: string, ...more: string[]) => ['agent', '--connect', address, '--tasks', FIXTURE_TASKS.href, '--threads', '1', ...more]

test('cluster keys writes the key files, secrets private, and refuses to overwrite them', async (t) => {
  const dir = tempDir(t)
  const p = runCli(t, ['keys', '--out', dir])
  assert.equal(await p.exited, 0, p.output())
  assert.equal(statSync(join(dir, 'server.json')).mode & 0o777, 0o600)
  assert.equal(statSync(join(dir, 'agent.json')).mode & 0o777, 0o600)
  const server = JSON.parse(readFileSync(join(dir, 'server.json'), 'utf8')) as { publicKey: string }
  assert.equal(readFileSync(join(dir, 'server.pub'), 'utf8').trim(), server.publicKey)
  const again = runCli(t, ['keys', '--out', dir])
  assert.equal(await again.exited, 1)
  assert.match(again.output(), /refusing to overwrite .*server\.json/)
})

test('with CURVE keys: a listed agent joins and works; wrong, unlisted or missing keys cannot join or receive a task', async (t) => {
  const dir = tempDir(t)
  const other = tempDir(t)
  assert.equal(await runCli(t, ['keys', '--out', dir]).exited, 0)
  assert.equal(await runCli(t, ['keys', '--out', other, '--force']).exited, 0)
  // The embedded agent gets keys of its own, accepted by this driver only.
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, curve: { dir }, threads: 1, listen: 'tcp://127.0.0.1:0' })
  assert.equal(await cluster.call('add', 1, 2), 3)

  const good = runCli(t, agentArgs(cluster.address, '--keys', dir))
  await waitFor(() => cluster.nodes().length === 2, 15_000, 'the keyed agent')

  // An agent key the driver does not list (the other directory's), with the right server key.
  const mixed = join(tempDir(t), 'mixed')
  cpSync(other, mixed, { recursive: true })
  writeFileSync(join(mixed, 'server.pub'), readFileSync(join(dir, 'server.pub')))
  const unlisted = runCli(t, agentArgs(cluster.address, '--keys', mixed))
  // The right agent key, but the wrong server key.
  const wrongServer = runCli(t, agentArgs(cluster.address, '--keys', dir, '--server-key', readFileSync(join(other, 'server.pub'), 'utf8').trim()))
  // No keys at all.
  const plain = runCli(t, agentArgs(cluster.address))

  await waitFor(() => cluster.stats().authDenied >= 1, 15_000, 'the unlisted agent to be refused')
  await waitFor(() => /authentication refused/.test(unlisted.output()), 15_000, 'the refused agent to say so')
  // Work keeps flowing only to the two authorized nodes.
  const pids = new Set(await Promise.all(Array.from({ length: 100 }, () => cluster.call<number>('sleepThenWhoami', 5))))
  assert.ok(
    [...pids].every((pid) => pid === process.pid || pid === good.child.pid),
    `tasks ran on ${[...pids].join(', ')}`,
  )
  assert.equal(cluster.nodes().length, 2)
  for (const p of [unlisted, wrongServer, plain]) {
    assert.doesNotMatch(p.output(), /joined the driver/)
    // Refused, not crashed: each is still running and trying (an agent that died at start would pass the checks above).
    assert.equal(p.child.exitCode, null, `agent exited: ${p.output()}`)
    assert.equal(p.child.signalCode, null, `agent killed: ${p.output()}`)
  }
  assert.equal(good.child.exitCode, null)
})

test('CURVE options are checked: bad keys and missing files are clear errors', async (t) => {
  const dir = tempDir(t)
  await assert.rejects(
    Cluster.start({ tasks: FIXTURE_TASKS, curve: { dir } }),
    (e: unknown) => e instanceof AuthError && /cannot read the server key at .*server\.json/.test(e.message),
  )
  await assert.rejects(
    Cluster.start({ tasks: FIXTURE_TASKS, curve: { serverPublicKey: 'short', serverSecretKey: 'x', authorizedAgents: [] } }),
    (e: unknown) => e instanceof InvalidArgumentError && /curve\.serverPublicKey must be a 40-character Z85 CURVE key/.test(e.message),
  )
  writeFileSync(join(dir, 'server.json'), '{not json')
  await assert.rejects(Cluster.start({ tasks: FIXTURE_TASKS, curve: { dir } }), /server key at .* is not valid JSON/)
  const p = runCli(t, agentArgs('tcp://127.0.0.1:9', '--keys', dir))
  assert.equal(await p.exited, 1)
  assert.match(p.output(), /cannot read the server's public key at .*server\.pub/)
})
