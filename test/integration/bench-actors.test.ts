import { test } from 'node:test'
import assert from 'node:assert/strict'
import { runCli } from '../helpers.js'

interface Result {
  agents: number
  spawn: { actors: number; seconds: number; actorsPerSecond: number; driverBytesPerActor: number; runs: unknown[] } | undefined
  rates: { part: string; messages: number; messagesPerSecond: number; runs: number[] }[]
  reference: { source: string; figure: string }[]
}

test('bench actors: spawns on two agents, counts the driver’s bytes per actor, prints the published figures', async (t) => {
  const p = runCli(t, ['bench', 'actors', '--spawn', '3000', '--messages', '0', '--ring-size', '0', '--runs', '2', '--json'])
  assert.equal(await p.exited, 0, p.output())
  const r = JSON.parse(p.output()) as Result
  assert.equal(r.agents, 2)
  assert.ok(r.spawn, 'the spawn part ran')
  assert.equal(r.spawn.actors, 3000)
  assert.equal(r.spawn.runs.length, 2)
  assert.ok(r.spawn.actorsPerSecond > 0 && r.spawn.seconds > 0)
  // A Spawn message and its answer: tens of bytes, and never nothing (the counters are read).
  assert.ok(r.spawn.driverBytesPerActor > 10 && r.spawn.driverBytesPerActor < 500, `${r.spawn.driverBytesPerActor} B per actor`)
  assert.deepEqual(r.rates, [])
  assert.deepEqual(
    r.reference.map((x) => x.figure),
    ['~550 actors/s', '8,664 calls/s', '2.4–2.7M msg/s'],
  )

  const text = runCli(t, ['bench', 'actors', '--spawn', '500', '--messages', '0', '--ring-size', '0', '--runs', '1'])
  assert.equal(await text.exited, 0, text.output())
  assert.match(text.output(), /\| spawn \| 500 actors \| [\d,]+ actors\/s \([\d.]+ s\) \| ≤ 5 s for 100,000 \|/)
  assert.match(text.output(), /\| driver bytes per actor \| 500 actors \| [\d.]+ B \| ≤ 500 B \|/)
  assert.match(text.output(), /Ray many_actors \(release test, cluster\): ~550 actors\/s/)
})

test('bench actors: ping-pong by tell on one node and across two, and a token around a ring, every message counted', async (t) => {
  const args = ['--spawn', '0', '--messages', '4000', '--balls', '20', '--ring-size', '50', '--ring-hops', '2000', '--runs', '2', '--timeout-ms', '60000']
  const p = runCli(t, ['bench', 'actors', ...args, '--json'])
  assert.equal(await p.exited, 0, p.output())
  const r = JSON.parse(p.output()) as Result
  assert.equal(r.spawn, undefined)
  assert.deepEqual(
    r.rates.map((x) => [x.part, x.messages, x.runs.length]),
    [
      ['ping-pong same node', 4000, 2],
      ['ping-pong cross node', 4000, 2],
      ['ring', 2000, 2],
    ],
  )
  for (const row of r.rates) assert.ok(row.messagesPerSecond > 0 && row.runs.every((x) => x > 0), JSON.stringify(row))
})

test('bench actors refuses sizes that are not integers', async (t) => {
  const p = runCli(t, ['bench', 'actors', '--spawn', '-1'])
  assert.equal(await p.exited, 1)
  assert.match(p.output(), /--spawn must be a non-negative integer, got -1/)
  const q = runCli(t, ['bench', 'actors', '--balls', '0'])
  assert.equal(await q.exited, 1)
  assert.match(q.output(), /--balls must be a positive integer, got 0/)
})
