/**
 * Every benchmark refuses a size that is not a usable integer before it
 * starts anything, naming the flag; `cluster bench` names every benchmark.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runCli } from '../helpers.js'

const BAD: [args: string[], message: RegExp][] = [
  [['seed', '--tasks', 'abc'], /--tasks must be a number, got "abc"/],
  [['seed', '--dashboard', '-1'], /--dashboard must be a non-negative integer, got -1/],
  [['latency', '--calls', 'abc'], /--calls must be a number, got "abc"/],
  [['put', '--bytes', '3'], /--bytes must be an integer ≥ 8, got 3/],
  [['put', '--bytes', '8001'], /--bytes must be a multiple of 8 \(a Float64Array's element\), got 8001/],
  [['balance', '--tasks', '1.5'], /--tasks must be a positive integer, got 1.5/],
  [['map', '--inputs', '0'], /--inputs must be a positive integer, got 0/],
  [['reduce', '--chunk', 'x'], /--chunk must be a number, got "x"/],
  [['monitor', '--tasks', '-3'], /--tasks must be a positive integer, got -3/],
  [['chaos', '--task-us', '-1'], /--task-us must be a non-negative integer, got -1/],
  [['scale', '--agents', '0'], /--agents must be a positive integer, got 0/],
  [['actors', '--messages', '10', '--balls', '100'], /--balls \(100\) must not exceed --messages \(10\)/],
]

for (const [args, message] of BAD) {
  test(`bench ${args.join(' ')}: refused before it starts`, async (t) => {
    const p = runCli(t, ['bench', ...args])
    assert.equal(await p.exited, 1, p.output())
    assert.match(p.output(), message)
    assert.doesNotMatch(p.output(), /\n\s+at /, 'no stack trace')
  })
}

const BENCHMARKS = ['seed', 'latency', 'balance', 'map', 'put', 'reduce', 'shapes', 'actors', 'chaos', 'scale', 'monitor']

test('bench with an unknown name says which name and lists every benchmark, in one line', async (t) => {
  const p = runCli(t, ['bench', 'nope', '--tasks', '5'])
  assert.equal(await p.exited, 1)
  assert.match(p.output(), /^cluster: unknown benchmark "nope": name one of seed, .* or monitor \[ERR_INVALID_ARGUMENT\]\n$/)
  for (const name of BENCHMARKS) assert.match(p.output(), new RegExp(`name one of .*\\b${name}\\b`))
})

test('bench without a name asks for one and lists every benchmark', async (t) => {
  const p = runCli(t, ['bench'])
  assert.equal(await p.exited, 1)
  assert.doesNotMatch(p.output(), /non-option arguments/)
  for (const name of BENCHMARKS) assert.match(p.output(), new RegExp(`^cluster: name a benchmark: .*\\b${name}\\b`, 'm'))
})

test('each benchmark’s help lists its own flags, also those named like a CLUSTER_* setting (--tasks, --threads, --batch…)', async (t) => {
  const FLAGS: [name: string, flags: string[]][] = [
    ['seed', ['--tasks', '--threads', '--batch', '--local-transport', '--transport', '--dashboard', '--runs']],
    ['latency', ['--calls', '--local-transport']],
    ['balance', ['--tasks', '--agents', '--threads']],
    ['monitor', ['--tasks', '--via']],
    ['shapes', ['--threads', '--calls']],
  ]
  for (const [name, flags] of FLAGS) {
    const p = runCli(t, ['bench', name, '--help'])
    assert.equal(await p.exited, 0, p.output())
    for (const flag of flags) assert.match(p.output(), new RegExp(`^\\s+${flag}\\s`, 'm'), `bench ${name} --help lists ${flag}`)
  }
  // Settings variables a benchmark has no flag for stay accepted, and out of its help.
  const p = runCli(t, ['bench', 'latency', '--help'], { CLUSTER_HEARTBEAT_MS: '200' })
  assert.equal(await p.exited, 0, p.output())
  assert.doesNotMatch(p.output(), /heartbeat/i)
})

test('a settings flag a benchmark does not use is refused on the command line, and its variable still tolerated', async (t) => {
  const REFUSED: [args: string[], message: string][] = [
    [['seed', '--tasks', '10', '--runs', '1', '--no-warmup', '--heartbeat-ms', '50'], 'unknown flag --heartbeat-ms for cluster bench seed'],
    [['seed', '--tasks', '10', '--runs', '1', '--no-warmup', '--heartbeatMs=50'], 'unknown flag --heartbeatMs for cluster bench seed'],
    [['balance', '--tasks', '10', '--runs', '1', '--node-timeout-ms', '500'], 'unknown flag --node-timeout-ms for cluster bench balance'],
    [['map', '--inputs', '10', '--no-insecure'], 'unknown flag --no-insecure for cluster bench map'],
  ]
  for (const [args, message] of REFUSED) {
    const p = runCli(t, ['bench', ...args])
    assert.equal(await p.exited, 1, p.output())
    assert.equal(p.output(), `cluster: ${message} [ERR_INVALID_ARGUMENT]\n`, args.join(' '))
  }
  // The same setting from the environment (e.g. set by `cluster dashboard --`) runs.
  const env = runCli(t, ['bench', 'map', '--inputs', '2000', '--json'], { CLUSTER_HEARTBEAT_MS: '200', CLUSTER_NODE_TIMEOUT_MS: '1000' })
  assert.equal(await env.exited, 0, env.output())
  // chaos has flags of its own for them.
  const chaos = runCli(t, ['bench', 'chaos', '--heartbeat-ms', '50', '--node-timeout-ms', '10', '--tasks', '10'])
  assert.equal(await chaos.exited, 1, chaos.output())
  assert.match(chaos.output(), /^cluster: --node-timeout-ms \(10\) must exceed --heartbeat-ms \(50\) \[ERR_INVALID_ARGUMENT\]$/m)
})
