import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { CLI, FIXTURE_TASKS, runCli, waitFor } from '../helpers.js'

test('cluster dashboard runs a standing driver: agents join it and show in /api/stats; SIGTERM stops it', async (t) => {
  const d = runCli(t, ['dashboard', '--port', '0', '--listen', 'tcp://127.0.0.1:0'])
  await waitFor(() => /agents connect to: tcp:\/\/\S+\n/.test(d.output()), 15_000, 'the dashboard to start')
  const url = /dashboard: (http:\/\/127\.0\.0\.1:\d+\/)\n/.exec(d.output())![1]!
  const address = /agents connect to: (tcp:\/\/\S+)\n/.exec(d.output())![1]!
  const stats = async () => (await (await fetch(`${url}api/stats`)).json()) as { nodes: { id: string }[]; address: string }
  assert.deepEqual((await stats()).nodes, [])
  assert.equal((await stats()).address, address)
  runCli(t, ['agent', '--connect', address, '--tasks', FIXTURE_TASKS.href, '--threads', '1', '--id', 'joining-agent'])
  const end = Date.now() + 15_000
  while ((await stats()).nodes.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 100))
  assert.deepEqual(
    (await stats()).nodes.map((n) => n.id),
    ['joining-agent'],
  )
  // Structured logs on stderr: one JSON object per line.
  await waitFor(() => d.output().includes('"msg":"node joined"'), 5000, 'the join to be logged')
  const joined = JSON.parse(
    d
      .output()
      .split('\n')
      .find((l) => l.includes('"msg":"node joined"'))!,
  ) as Record<string, unknown>
  assert.equal(joined['node'], 'joining-agent')
  assert.equal(joined['level'], 30)
  d.child.kill('SIGTERM')
  assert.equal(await d.exited, 0, d.output())
})

test('cluster dashboard on a port in use fails with a clear error', async (t) => {
  const blocker = createServer()
  blocker.listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  t.after(() => blocker.close())
  const port = (blocker.address() as { port: number }).port
  const d = runCli(t, ['dashboard', '--port', String(port), '--listen', 'tcp://127.0.0.1:0'])
  assert.equal(await d.exited, 1)
  assert.match(d.output(), new RegExp(`cluster: the dashboard cannot listen on 127\\.0\\.0\\.1:${port}: address already in use .* \\[ERR_ADDRESS_IN_USE\\]`))
  const bad = runCli(t, ['dashboard', '--host', '127.0.0.1', '--token', 'short'])
  assert.equal(await bad.exited, 1)
  // Named by the flag typed, not the option it sets.
  assert.match(bad.output(), /cluster: --token must be a string of at least 16 printable characters/)
})

test('cluster dashboard refuses --token with --token-file, naming both, rather than letting the file win', async (t) => {
  // Refused before the file is read (a missing one would fail anyway, but saying something else).
  const d = runCli(t, ['dashboard', '--port', '0', '--token', 'a-token-of-twenty-chars', '--token-file', './no-such-token'])
  assert.equal(await d.exited, 1, d.output())
  assert.equal(d.output(), 'cluster: --token and --token-file ./no-such-token both give the secret: keep one [ERR_INVALID_ARGUMENT]\n')
})

test('bench: plain progress lines off a terminal, nothing but the report under --json, logs at --log-level', async (t) => {
  const p = runCli(t, ['bench', 'seed', '--tasks', '20000', '--runs', '1', '--no-warmup'])
  assert.equal(await p.exited, 0, p.output())
  assert.match(p.output(), /^seed: 20,000\/20,000 done in \d+\.\d s, [\d,]+\/s$/m)
  const j = runCli(t, ['bench', 'seed', '--tasks', '2000', '--runs', '1', '--json', '--no-warmup'])
  assert.equal(await j.exited, 0, j.output())
  assert.equal((JSON.parse(j.output()) as { ok: boolean }).ok, true)
  const l = runCli(t, ['bench', 'seed', '--tasks', '2000', '--runs', '1', '--json', '--no-warmup', '--log-level', 'info'])
  assert.equal(await l.exited, 0, l.output())
  assert.match(l.output(), /^\{"level":30,.*"msg":"node joined"\}$/m)
  const bad = runCli(t, ['bench', 'seed', '--log-level', 'loud'])
  assert.equal(await bad.exited, 1)
  assert.match(bad.output(), /^cluster: --log-level must be one of "trace", "debug", "info", "warn", "error", "fatal", "silent", got "loud"$/m)
})

const hasScript = spawnSync('script', ['--version']).status === 0

test('bench draws a progress bar with rate and ETA on a terminal', { skip: !hasScript && 'script(1) is not installed' }, () => {
  const r = spawnSync('script', ['-qfec', `${process.execPath} ${CLI} bench seed --tasks 50000 --runs 2 --no-warmup`, '/dev/null'], {
    encoding: 'utf8',
    timeout: 60_000,
  })
  assert.equal(r.status, 0, r.stdout + r.stderr)
  assert.match(r.stdout, /seed \[[█░]+\] 100% \| 100,000\/100,000 \| [\d,]+\/s \| ETA 0 s/)
  assert.match(r.stdout, /median: submit/)
})

test('bench monitor runs the A/B and reports both sides', async (t) => {
  const m = runCli(t, ['bench', 'monitor', '--tasks', '20000', '--runs', '1', '--json'])
  assert.equal(await m.exited, 0, m.output())
  const r = JSON.parse(m.output()) as { ok: boolean; off: number[]; on: number[]; cost: number; rounds: number }
  assert.equal(r.ok, true)
  assert.equal(r.rounds, 1)
  assert.equal(r.off.length, 1)
  assert.equal(r.on.length, 1)
  assert.ok(r.off[0]! > 0 && r.on[0]! > 0 && Number.isFinite(r.cost))
})
