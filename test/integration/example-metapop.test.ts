import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster } from '../../lib/index.js'
import { PATCHES_MODULE, runMetapopulation, type MetapopOptions, type MetapopResult } from '../../examples/metapopulation/main.js'
import { DEFAULT_PARAMS, simulateInProcess } from '../../examples/metapopulation/model.js'
import { runCli, runProcess, waitFor } from '../helpers.js'

// 12 × 10 patches, 60 ticks: the epidemic leaves the centre patch and reaches the edges.
const SMALL = { width: 12, height: 10, ticks: 60, seed: 42, minPopulation: 300, maxPopulation: 900, infected: 20 } satisfies MetapopOptions

function checkCurve(r: MetapopResult): void {
  assert.equal(r.patches, 120)
  assert.equal(r.curve.i.length, SMALL.ticks)
  for (let t = 0; t < SMALL.ticks; t++) assert.equal(r.curve.s[t]! + r.curve.i[t]! + r.curve.r[t]!, r.population, `S + I + R at tick ${t}`)
  const last = SMALL.ticks - 1
  assert.ok(r.curve.r[last]! > SMALL.maxPopulation, `the epidemic spread beyond one patch (recovered ${r.curve.r[last]})`)
  // The same curve as the whole grid simulated in one thread without actors.
  const reference = simulateInProcess({ ...SMALL }, DEFAULT_PARAMS, SMALL.ticks)
  assert.deepEqual(r.curve, reference)
}

test('the metapopulation gives the same epidemic curve on one agent and on three agent processes', async (t) => {
  let one: MetapopResult
  {
    await using single = await Cluster.start({ tasks: PATCHES_MODULE, threads: 1 })
    one = await runMetapopulation({ ...SMALL, cluster: single })
  }
  assert.equal(one.nodes, 1)
  checkCurve(one)
  assert.ok(one.ticksPerSecond > 0)

  await using cluster = await Cluster.start({ tasks: PATCHES_MODULE, listen: 'tcp://127.0.0.1:0', localAgents: 0 })
  for (let k = 0; k < 3; k++) runCli(t, ['agent', '--connect', cluster.address, '--tasks', PATCHES_MODULE.href, '--threads', '1'])
  await waitFor(() => cluster.nodes().length === 3, 20_000, 'three agents')
  const three = await runMetapopulation({ ...SMALL, cluster })
  assert.equal(three.nodes, 3, 'the patches were spread over the three agents')
  checkCurve(three)
  assert.deepEqual(three.curve, one.curve)
  // The run stopped its patches on the cluster it was given.
  assert.equal(cluster.liveActors().length, 0)
})

test('runMetapopulation names a bad option before starting a cluster', async () => {
  await assert.rejects(runMetapopulation({ width: 0 }), /width must be an integer in \[1, \d+\], got 0/)
  await assert.rejects(runMetapopulation({ ticks: 1.5 }), /ticks must be an integer/)
  await assert.rejects(runMetapopulation({ minPopulation: 10, maxPopulation: 5 }), /maxPopulation must be at least minPopulation/)
  await assert.rejects(runMetapopulation({ params: { mobility: 3 } }), /mobility must be in \[0, 1\], got 3/)
})

test('the example run with a bad flag says what is wrong in one line', async (t) => {
  const p = runProcess(t, process.execPath, [new URL('../../examples/metapopulation/main.js', import.meta.url).pathname, '--width', 'wide'])
  assert.equal(await p.exited, 1, p.output())
  assert.match(p.output(), /^error: width must be an integer in \[1, \d+\], got NaN$/m)
  assert.doesNotMatch(p.output(), /\n\s+at /, 'no stack trace')
})
