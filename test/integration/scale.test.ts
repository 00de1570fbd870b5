import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runCli } from '../helpers.js'

test('cluster bench scale attaches many lightweight agents: all register, all get work, nothing lost', async (t) => {
  const p = runCli(t, ['bench', 'scale', '--agents', '40', '--procs', '2', '--tasks', '4000', '--runs', '1', '--json'])
  assert.equal(await p.exited, 0, p.output())
  const r = JSON.parse(p.output()) as Record<string, unknown>
  assert.equal(r['agents'], 40)
  assert.equal(r['procs'], 2)
  assert.equal(r['registered'], 40)
  assert.equal(r['withWork'], 40)
  assert.equal(r['lost'], 0)
  assert.equal(r['ok'], true)
  for (const k of ['registerSeconds', 'tasksPerSecond', 'driverBaseRssMB', 'driverRegisteredRssMB', 'driverPeakRssMB'])
    assert.ok(typeof r[k] === 'number' && r[k] > 0, k)
})

test('cluster bench scale: bad sizes are clear errors', async (t) => {
  const p = runCli(t, ['bench', 'scale', '--agents', '3', '--procs', '5'])
  assert.equal(await p.exited, 1)
  assert.match(p.output(), /--procs must be an integer from 1 to --agents \(3\), got 5/)
  const q = runCli(t, ['bench', 'scale', '--agents', '0'])
  assert.equal(await q.exited, 1)
  assert.match(q.output(), /--agents must be a positive integer, got 0/)
})
