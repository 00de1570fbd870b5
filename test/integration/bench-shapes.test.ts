import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runCli } from '../helpers.js'

const SHAPES = [
  'single_client_tasks_sync',
  'single_client_tasks_async',
  '1_1_actor_calls_sync',
  '1_1_actor_calls_async',
  'n_n_actor_calls_async',
  'tasks_1mb_arg',
]

test('bench shapes: every shape measured, Ray’s reference rows beside them', async (t) => {
  const small = ['--calls', '2000', '--sync-calls', '100', '--mb-tasks', '20', '--runs', '2']
  const p = runCli(t, ['bench', 'shapes', ...small, '--json'])
  assert.equal(await p.exited, 0, p.output())
  const r = JSON.parse(p.output()) as {
    threads: number
    actors: number
    inFlight: number
    rows: { shape: string; callsPerSecond: number; runs: number[] }[]
    reference: { rows: { shape: string; callsPerSecond: number }[] }
  }
  assert.equal(r.inFlight, 1000)
  assert.equal(r.actors, r.threads, 'n actors: one per thread of the one agent')
  assert.deepEqual(
    r.rows.map((x) => x.shape),
    [...SHAPES, 'tasks_1mb_arg_with_put'],
  )
  for (const row of r.rows) {
    assert.equal(row.runs.length, 2, row.shape)
    assert.ok(row.runs.every((x) => Number.isFinite(x) && x > 0) && row.callsPerSecond > 0, `${row.shape}: ${JSON.stringify(row)}`)
  }
  assert.deepEqual(
    r.reference.rows.map((x) => [x.shape, x.callsPerSecond]),
    [
      ['single_client_tasks_sync', 981],
      ['single_client_tasks_async', 8041],
      ['1_1_actor_calls_sync', 2012],
      ['1_1_actor_calls_async', 8664],
      ['n_n_actor_calls_async', 27_376],
    ],
  )

  const text = runCli(t, ['bench', 'shapes', ...small])
  assert.equal(await text.exited, 0, text.output())
  const out = text.output()
  assert.match(out, /\| shape \| calls\/s \| Ray 2\.48 calls\/s \|/)
  assert.match(out, /\| 1_1_actor_calls_async \| [\d,]+ \| 8,664 \|/)
  assert.match(out, /\| n_n_actor_calls_async \| [\d,]+ \| 27,376 \|/)
  assert.match(out, /\| tasks_1mb_arg \| [\d,]+ \| — \|/)
  assert.match(out, /Reference \(Ray 2\.48 microbenchmark, m5\.16xlarge \(64 vCPU\)\):/)
  assert.match(out, /Machine: .*\d+ cores; load [\d.]+ before/)
})

test('bench shapes refuses a count that is not a positive integer', async (t) => {
  const p = runCli(t, ['bench', 'shapes', '--calls', '0'])
  assert.equal(await p.exited, 1)
  assert.match(p.output(), /--calls must be a positive integer, got 0/)
})
