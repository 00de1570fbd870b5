import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI, runCli } from '../helpers.js'

test('cluster bench seed --json prints one JSON object with the checked result', async (t) => {
  const p = runCli(t, ['bench', 'seed', '--tasks', '5000', '--runs', '1', '--json'])
  assert.equal(await p.exited, 0, p.output())
  const r = JSON.parse(p.output()) as Record<string, unknown>
  assert.equal(r['design'], 'zmq')
  assert.equal(r['tasks'], 5000)
  assert.equal(r['ok'], true)
  for (const k of ['submitSeconds', 'roundTripSeconds', 'tasksPerSecond']) assert.ok(typeof r[k] === 'number' && r[k] > 0, k)
})

test('cluster bench seed prints a readable report; batch 1 and map work too', async (t) => {
  const p = runCli(t, ['bench', 'seed', '--tasks', '3000', '--runs', '1', '--batch', '1', '--via', 'map', '--no-warmup'])
  assert.equal(await p.exited, 0, p.output())
  assert.match(p.output(), /seed benchmark — design zmq, 3000 tasks .* batch 1, via map/)
  assert.match(p.output(), /median: submit [\d.]+ s, round trip [\d.]+ s, [\d,]+ tasks\/s, check ok/)
})

test('bad flags are clear errors', async (t) => {
  const p = runCli(t, ['bench', 'seed', '--batch', 'lots'])
  assert.equal(await p.exited, 1)
  assert.match(p.output(), /--batch must be 'auto' or a positive integer, got lots/)
  const q = runCli(t, ['frobnicate'])
  assert.equal(await q.exited, 1)
  assert.match(q.output(), /Unknown argument: frobnicate/)
})

test('a number flag given a word names the flag and the word, in every command (not "got NaN")', async (t) => {
  const CASES: [args: string[], env: Record<string, string>, message: RegExp][] = [
    [
      ['agent', '--connect', 'tcp://127.0.0.1:7100', '--tasks', './tasks.js', '--threads', 'abc'],
      {},
      /^cluster: --threads must be a number, got "abc" \[ERR_INVALID_ARGUMENT\]\n$/,
    ],
    [['agent', '--heartbeat-ms=soon'], {}, /^cluster: --heartbeat-ms must be a number, got "soon" \[ERR_INVALID_ARGUMENT\]\n$/],
    [['status', '--connect-timeout', 'ten'], {}, /^cluster: --connect-timeout must be a number, got "ten" \[ERR_INVALID_ARGUMENT\]\n$/],
    [['dashboard', '--port', 'http'], {}, /^cluster: --port must be a number, got "http" \[ERR_INVALID_ARGUMENT\]\n$/],
    [['bench', 'seed'], { CLUSTER_TASKS: 'many' }, /^cluster: CLUSTER_TASKS must be a number, got "many" \[ERR_INVALID_ARGUMENT\]\n$/],
  ]
  for (const [args, env, message] of CASES) {
    const p = runCli(t, args, env)
    assert.equal(await p.exited, 1, p.output())
    assert.match(p.output(), message)
  }
})

test('a flag value out of range is named by the flag typed (or the variable read), not by the option it sets', async (t) => {
  const agent = ['agent', '--connect', 'tcp://127.0.0.1:7100', '--tasks', './tasks.js']
  const CASES: [args: string[], env: Record<string, string>, message: string][] = [
    [[...agent, '--threads', '0'], {}, '--threads must be an integer from 1 to 4096, got 0'],
    [['agent', '--tasks', './tasks.js', '--connect', 'tcp://127.0.0.1:70000'], {}, '--connect must have a port from 0 to 65535, got "tcp://127.0.0.1:70000"'],
    [[...agent, '--heartbeat-ms', '0'], {}, '--heartbeat-ms must be a positive integer, got 0'],
    [[...agent, '--heartbeat-ms', '10', '--driver-timeout-ms', '5'], {}, '--driver-timeout-ms (5) must exceed --heartbeat-ms (10)'],
    [
      ['agent', '--tasks', './tasks.js', '--transport', 'redis', '--cluster-id', 'c', '--redis', 'foo'],
      {},
      '--redis must be a redis: or rediss: URL, got "(unparsable URL)"',
    ],
    [agent, { CLUSTER_THREADS: '5000' }, 'CLUSTER_THREADS must be an integer from 1 to 4096, got 5000'],
    [['dashboard', '--port', '70000'], {}, '--port must be an integer from 0 to 65535, got 70000'],
    [['dashboard', '--update-ms', '5'], {}, '--update-ms must be an integer from 20 to 1000, got 5'],
    [['dashboard'], { CLUSTER_DASHBOARD_TOKEN: 'short' }, 'CLUSTER_DASHBOARD_TOKEN must be a string of at least 16 printable characters without spaces'],
    [
      ['dashboard', '--listen', 'tcp://127.0.0.1:0', '--tasks', './tasks.js', '--local-agents', '1', '--threads', '0'],
      {},
      '--threads must be an integer from 1 to 4096, got 0',
    ],
    [
      ['bench', 'seed', '--tasks', '10', '--runs', '1', '--no-warmup', '--transport', 'redis', '--redis', 'foo'],
      {},
      '--redis must be a redis: or rediss: URL, got "(unparsable URL)"',
    ],
    [['bench', 'seed', '--tasks', '10', '--runs', '1', '--no-warmup', '--dashboard', '70000'], {}, '--dashboard must be an integer from 0 to 65535, got 70000'],
  ]
  for (const [args, env, message] of CASES) {
    const p = runCli(t, args, env)
    assert.equal(await p.exited, 1, p.output())
    assert.equal(p.output().trimEnd().split('\n').at(-1), `cluster: ${message} [ERR_INVALID_ARGUMENT]`, args.join(' '))
  }
})

test('cluster agent --server-key without --keys says that --keys is needed, and for what', async (t) => {
  const p = runCli(t, ['agent', '--connect', 'tcp://10.0.0.1:7100', '--tasks', './tasks.js', '--server-key', 'K'])
  assert.equal(await p.exited, 1, p.output())
  assert.equal(
    p.output(),
    "cluster: --server-key needs --keys: the directory from `cluster keys` with this agent's key pair (agent.json); --server-key stands for its server.pub [ERR_INVALID_ARGUMENT]\n",
  )
})

test('a value outside a flag’s choices is one line naming the flag, the choices and the value', async (t) => {
  const p = runCli(t, ['bench', 'seed', '--transport', 'carrier-pigeon'])
  assert.equal(await p.exited, 1)
  const last = p.output().trimEnd().split('\n').at(-1)
  assert.equal(last, 'cluster: --transport must be one of "zmq", "redis", "amqp", "amqp+redis", "all", "naive-zmq", got "carrier-pigeon"')
})

test('a command failing before its first await says why in one line, without a stack', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ac-cli-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'a-file')
  writeFileSync(file, '')
  const under = runCli(t, ['keys', '--out', join(file, 'keys')])
  assert.equal(await under.exited, 1)
  assert.match(under.output(), /^cluster: cannot create .*a-file\/keys: E(EXIST|NOTDIR).* \[ERR_AUTH\]\n$/)
  assert.equal(await runCli(t, ['keys', '--out', join(dir, 'keys')]).exited, 0)
  const again = runCli(t, ['keys', '--out', join(dir, 'keys')])
  assert.equal(await again.exited, 1)
  assert.match(again.output(), /^cluster: refusing to overwrite .*server\.json.* \(use --force\) \[ERR_INVALID_ARGUMENT\]\n$/)
  // In a directory of its own: an empty --out used to write the keys into the working directory.
  const empty = spawnSync(process.execPath, [CLI, 'keys', '--out', ''], { cwd: dir, encoding: 'utf8' })
  assert.equal(empty.status, 1)
  assert.equal(empty.stderr, 'cluster: --out must name a directory, got "" [ERR_INVALID_ARGUMENT]\n')
  assert.equal(existsSync(join(dir, 'server.json')), false, 'nothing written into the working directory')
})

test('flags can come from CLUSTER_* environment variables', async (t) => {
  const p = runCli(t, ['bench', 'seed', '--runs', '1', '--json', '--no-warmup'], { CLUSTER_TASKS: '1234' })
  assert.equal(await p.exited, 0, p.output())
  assert.equal((JSON.parse(p.output()) as { tasks: number }).tasks, 1234)
})

test('other benchmarks run and report', async (t) => {
  const l = runCli(t, ['bench', 'latency', '--calls', '200', '--runs', '1', '--json', '--local-transport', 'inproc'])
  assert.equal(await l.exited, 0, l.output())
  const lr = JSON.parse(l.output()) as { p50Us: number; p99Us: number }
  assert.ok(lr.p50Us > 0 && lr.p99Us >= lr.p50Us)
  const b = runCli(t, ['bench', 'balance', '--tasks', '100', '--runs', '1', '--json'])
  assert.equal(await b.exited, 0, b.output())
  assert.ok((JSON.parse(b.output()) as { ratio: number }).ratio >= 0.9)
  const m = runCli(t, ['bench', 'map', '--inputs', '20000', '--json'])
  assert.equal(await m.exited, 0, m.output())
  assert.equal((JSON.parse(m.output()) as { ok: boolean }).ok, true)
})
