import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Cluster } from '../../lib/index.js'
import { runSweep, type SweepOptions } from '../../examples/parameter-sweep/main.js'
import { TRUTH } from '../../examples/parameter-sweep/model.js'
import { runProcess } from '../helpers.js'

// A small sweep (about 8,000 simulations, under a second of compute on 2 cores).
const SMALL: SweepOptions = { samples: 1000, replicates: 4, refineSamples: 500, refineReplicates: 8 }

test('a small sweep recovers beta and gamma from the observed outbreak', async () => {
  const r = await runSweep(SMALL)
  assert.equal(r.evaluations, 1000 * 4 + 500 * 8)
  assert.equal(r.rounds.length, 2)
  // The prior spans beta 0.05..1 and gamma 0.02..0.5; the fit must land within
  // 15% of the truth (the observed outbreak is one noisy realization, so the
  // best possible estimate is not the truth itself).
  for (const [name, fit] of [
    ['estimate', r.estimate],
    ['best', r.best],
  ] as const) {
    const beta = Math.abs(fit.beta - TRUTH.beta) / TRUTH.beta
    const gamma = Math.abs(fit.gamma - TRUTH.gamma) / TRUTH.gamma
    assert.ok(beta < 0.15, `${name} beta ${fit.beta} is ${(beta * 100).toFixed(1)}% off ${TRUTH.beta}`)
    assert.ok(gamma < 0.15, `${name} gamma ${fit.gamma} is ${(gamma * 100).toFixed(1)}% off ${TRUTH.gamma}`)
  }
  const [first, second] = r.rounds
  assert.ok(first && second)
  // Round 2 searches a box inside the prior around round 1's best fits, and that box holds the truth.
  assert.ok(second.box.beta.min >= first.box.beta.min && second.box.beta.max <= first.box.beta.max)
  assert.ok(second.box.beta.max - second.box.beta.min < (first.box.beta.max - first.box.beta.min) / 2)
  assert.ok(second.box.beta.min < TRUTH.beta && TRUTH.beta < second.box.beta.max)
  assert.ok(second.box.gamma.min < TRUTH.gamma && TRUTH.gamma < second.box.gamma.max)
  for (const round of r.rounds) {
    for (let k = 1; k < round.top.length; k++) assert.ok(round.top[k - 1]!.loss <= round.top[k]!.loss, 'top fits are sorted by loss')
  }
})

test('the sweep result does not depend on how the cluster schedules the simulations', async () => {
  await using cluster = await Cluster.start({ tasks: new URL('../../examples/parameter-sweep/model.js', import.meta.url) })
  const options: SweepOptions = { samples: 300, replicates: 3, refineSamples: 200, refineReplicates: 4, cluster }
  const a = await runSweep(options)
  const b = await runSweep(options)
  assert.deepEqual(b.rounds, a.rounds)
  assert.deepEqual(b.best, a.best)
  assert.equal(cluster.stats().tasksFailed, 0)
})

test('runSweep rejects bad options before starting a cluster', async () => {
  await assert.rejects(runSweep({ samples: 0 }), RangeError)
  await assert.rejects(runSweep({ replicates: 1000 }), RangeError)
  await assert.rejects(runSweep({ refineSamples: -1 }), RangeError)
  await assert.rejects(runSweep({ seed: Number.NaN }), RangeError)
})

test('the example run with a bad flag says what is wrong in one line', async (t) => {
  const main = new URL('../../examples/parameter-sweep/main.js', import.meta.url).pathname
  for (const [args, message] of [
    [['--samples', 'abc'], /^error: samples must be an integer in \[1, \d+\], got NaN$/m],
    [['--sample', '5'], /^error: Unknown option '--sample'/m],
  ] as const) {
    const p = runProcess(t, process.execPath, [main, ...args])
    assert.equal(await p.exited, 1, p.output())
    assert.match(p.output(), message)
    assert.doesNotMatch(p.output(), /\n\s+at /, 'no stack trace')
  }
})
