/**
 * The command line of bench/slurm.ts: sections by name (so the seed
 * comparison runs alone), sizes by flag, anything else refused by name; and
 * how it reads registration from the agents’ log lines.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseSlurmBenchArgs, registeredAt } from '../../bench/slurm.js'
import { InvalidArgumentError } from '../../lib/errors.js'

test('no arguments: every section, the default sizes', () => {
  assert.deepEqual(parseSlurmBenchArgs([]), { sections: ['up', 'recovery', 'seed'], reps: 3, pairs: 4, seedRuns: 8, tasks: 100_000 })
})

test('sections by name run alone, in the benchmark’s order whatever the order given', () => {
  assert.deepEqual(parseSlurmBenchArgs(['seed']).sections, ['seed'])
  assert.deepEqual(parseSlurmBenchArgs(['seed', 'up', 'seed']).sections, ['up', 'seed'])
})

test('sizes by flag', () => {
  assert.deepEqual(parseSlurmBenchArgs(['recovery', '--reps', '2', '--pairs=6', '--seed-runs', '3', '--tasks', '20000']), {
    sections: ['recovery'],
    reps: 2,
    pairs: 6,
    seedRuns: 3,
    tasks: 20_000,
  })
})

test('a bad argument is an InvalidArgumentError naming it', () => {
  const refused = (argv: string[], message: RegExp) =>
    assert.throws(
      () => parseSlurmBenchArgs(argv),
      (err: unknown) => err instanceof InvalidArgumentError && err.code === 'ERR_INVALID_ARGUMENT' && message.test(err.message),
      argv.join(' '),
    )
  refused(['ssh'], /^unknown section "ssh": the sections are up, recovery, seed$/)
  refused(['--pairs', '0'], /^--pairs must be a positive integer, got "0"$/)
  refused(['--tasks', '1e5'], /^--tasks must be a positive integer, got "1e5"$/)
  refused(['--seed-runs=-2'], /^--seed-runs must be a positive integer, got "-2"$/)
  refused(['--reps', '99999999999999999999'], /^--reps must be a positive integer, got "99999999999999999999"$/)
  refused(['--seed-only'], /Unknown option '--seed-only'.*\(usage: \[up\|recovery\|seed\]… /)
  refused(['--pairs'], /Option '--pairs <value>' argument missing/)
})

test('registration from the agents’ log lines: each agent’s first join, the latest of them, once enough agents joined', () => {
  const line = (time: number, msg: string) => JSON.stringify({ level: 30, time, pid: 1, hostname: 'vm', name: 'actor-cluster', msg })
  const output = [
    'srun: some line of Slurm’s own',
    line(1000, 'slurm-7-node1: joined the driver at tcp://10.79.1.1:20001'),
    line(1500, 'slurm-7-node2: waiting for a driver'),
    line(1600, 'slurm-7-node2: joined the driver at tcp://10.79.1.1:20001'),
    '{"time": 1650, "msg": "slurm-7-node3: joined the driver at tcp://10.79.1.1:20001"', // cut short: skipped
    line(1700, 'slurm-7-node1: joined the driver at tcp://10.79.1.1:20001'), // node1 again: its first join counts
    line(1800, 'slurm-7-node3: joined the driver at tcp://10.79.1.1:20001'),
    '',
  ].join('\n')
  assert.equal(registeredAt(output, 3), 1800)
  assert.equal(registeredAt(output, 2), 1800)
  assert.equal(registeredAt(output, 4), undefined)
  assert.equal(registeredAt('', 1), undefined)
})
