import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  binomial,
  checkParams,
  DEFAULT_PARAMS,
  EXACT_BINOMIAL_MEAN,
  gridNeighbours,
  initialState,
  mulberry32,
  simulateInProcess,
  split,
  streamSeed,
  tick,
  type InitialConditions,
} from '../../examples/metapopulation/model.js'

const SMALL: InitialConditions = { width: 6, height: 5, seed: 7, minPopulation: 200, maxPopulation: 800, infected: 10 }

/** Mean and variance of `n` draws. */
function moments(n: number, draw: () => number): { mean: number; variance: number } {
  let sum = 0
  let sq = 0
  for (let k = 0; k < n; k++) {
    const x = draw()
    sum += x
    sq += x * x
  }
  const mean = sum / n
  return { mean, variance: sq / n - mean * mean }
}

test('each (seed, patch, tick) has its own stream', () => {
  const seeds = new Set<number>()
  for (let patch = 0; patch < 50; patch++) for (let t = 0; t < 50; t++) seeds.add(streamSeed(1, patch, t))
  assert.equal(seeds.size, 2500, 'no two (patch, tick) pairs share a seed')
  assert.equal(streamSeed(1, 3, 4), streamSeed(1, 3, 4))
  assert.notEqual(streamSeed(1, 3, 4), streamSeed(2, 3, 4))
  assert.notEqual(streamSeed(1, 3, 4), streamSeed(1, 4, 3))
})

test('binomial draws stay in [0, n] and have the right mean and variance, exact and approximated', () => {
  const rand = mulberry32(11)
  for (const [n, p] of [
    [10, 0.3],
    [50, 0.02],
    [1000, 0.01],
    [40, 0.9],
    [5000, 0.2],
    [100_000, 0.5],
  ] as const) {
    const { mean, variance } = moments(20_000, () => {
      const x = binomial(n, p, rand)
      assert.ok(Number.isInteger(x) && x >= 0 && x <= n, `Binomial(${n}, ${p}) gave ${x}`)
      return x
    })
    const m = n * p
    const v = n * p * (1 - p)
    // 20,000 draws: the mean's standard error is sqrt(v / 20000) < 1% of sqrt(v).
    assert.ok(Math.abs(mean - m) < 5 * Math.sqrt(v / 20_000), `Binomial(${n}, ${p}) mean ${mean}, expected ${m}`)
    assert.ok(Math.abs(variance - v) < 0.1 * v, `Binomial(${n}, ${p}) variance ${variance}, expected ${v}`)
  }
  // Both regimes are covered above.
  assert.ok(10 * 0.3 < EXACT_BINOMIAL_MEAN && 5000 * 0.2 > EXACT_BINOMIAL_MEAN)
})

test('binomial edge cases and bad arguments', () => {
  const rand = mulberry32(1)
  assert.equal(binomial(0, 0.5, rand), 0)
  assert.equal(binomial(10, 0, rand), 0)
  assert.equal(binomial(10, 1, rand), 10)
  assert.throws(() => binomial(-1, 0.5, rand), /n must be a non-negative integer, got -1/)
  assert.throws(() => binomial(2.5, 0.5, rand), /n must be a non-negative integer, got 2.5/)
  assert.throws(() => binomial(3, 1.5, rand), /p must be in \[0, 1\], got 1.5/)
  assert.throws(() => binomial(3, Number.NaN, rand), /p must be in \[0, 1\], got NaN/)
})

test('split shares a total among destinations: sums to it, each about equal', () => {
  const rand = mulberry32(3)
  const totals = [0, 0, 0, 0]
  for (let k = 0; k < 2000; k++) {
    const parts = split(100, 4, rand)
    assert.equal(parts.length, 4)
    assert.equal(
      parts.reduce((a, b) => a + b, 0),
      100,
    )
    parts.forEach((x, j) => (totals[j]! += x))
  }
  for (const x of totals) assert.ok(Math.abs(x / 2000 - 25) < 1, `mean share ${x / 2000}, expected 25`)
  assert.deepEqual(split(7, 1, rand), [7])
  assert.throws(() => split(7, 0, rand), /ways must be a positive integer, got 0/)
})

test('grid neighbours: corners have 2, edges 3, the inside 4, and the relation is symmetric', () => {
  const [w, h] = [5, 4]
  assert.deepEqual(gridNeighbours(0, w, h), [1, 5])
  assert.deepEqual(gridNeighbours(4, w, h), [3, 9])
  assert.deepEqual(gridNeighbours(2, w, h), [1, 3, 7])
  assert.deepEqual(gridNeighbours(7, w, h), [2, 6, 8, 12])
  assert.deepEqual(gridNeighbours(19, w, h), [14, 18])
  for (let k = 0; k < w * h; k++) for (const j of gridNeighbours(k, w, h)) assert.ok(gridNeighbours(j, w, h).includes(k), `${k} ~ ${j}`)
  assert.deepEqual(gridNeighbours(0, 1, 1), [])
})

test('initial state: populations in range, the infected only in the centre patch', () => {
  let infected = 0
  for (let k = 0; k < SMALL.width * SMALL.height; k++) {
    const p = initialState(k, SMALL)
    const n = p.s + p.i + p.r
    assert.ok(n >= SMALL.minPopulation && n <= SMALL.maxPopulation, `patch ${k} has ${n}`)
    if (p.i > 0) assert.equal(k, 2 * SMALL.width + 3, 'the centre of a 6 × 5 grid')
    infected += p.i
  }
  assert.equal(infected, SMALL.infected)
})

test('a tick conserves people, moves them only S -> I -> R, and depends only on (seed, patch, tick)', () => {
  const start = { index: 4, s: 900, i: 100, r: 0 }
  const a = { ...start }
  const out = tick(a, 3, DEFAULT_PARAMS, 1, 5)
  assert.equal(out.before.s + out.before.i + out.before.r, 1000)
  assert.ok(out.before.s <= start.s && out.before.r >= start.r)
  const gone = out.travellers.reduce((n, c) => n + c.s + c.i + c.r, 0)
  assert.ok(gone > 0, 'with mobility 2% of 1000 someone travels')
  assert.equal(a.s + a.i + a.r + gone, 1000, 'those left plus the travellers are everyone')
  assert.equal(out.travellers.length, 3)

  assert.deepEqual(tick({ ...start }, 3, DEFAULT_PARAMS, 1, 5), out, 'the same seed, patch and tick: the same outcome')
  assert.notDeepEqual(tick({ ...start }, 3, DEFAULT_PARAMS, 1, 6), out)
  assert.notDeepEqual(tick({ ...start, index: 5 }, 3, DEFAULT_PARAMS, 1, 5), out)

  const alone = { ...start }
  assert.deepEqual(tick(alone, 0, DEFAULT_PARAMS, 1, 5).travellers, [], 'a patch without neighbours sends nobody')
  assert.equal(alone.s + alone.i + alone.r, 1000)
})

test('the in-process simulation conserves the population and the epidemic spreads beyond the first patch', () => {
  const ticks = 120
  const curve = simulateInProcess(SMALL, DEFAULT_PARAMS, ticks)
  let population = 0
  for (let k = 0; k < SMALL.width * SMALL.height; k++) {
    const p = initialState(k, SMALL)
    population += p.s + p.i + p.r
  }
  for (let t = 0; t < ticks; t++) assert.equal(curve.s[t]! + curve.i[t]! + curve.r[t]!, population, `tick ${t}`)
  for (let t = 1; t < ticks; t++) assert.ok(curve.r[t]! >= curve.r[t - 1]!, 'recovered never decrease')
  assert.ok(curve.r[ticks - 1]! > SMALL.maxPopulation, `recovered ${curve.r[ticks - 1]} exceed any one patch`)
  assert.deepEqual(simulateInProcess(SMALL, DEFAULT_PARAMS, ticks), curve)
})

test('bad parameters are named', () => {
  assert.throws(() => checkParams({ ...DEFAULT_PARAMS, beta: -1 }), /beta must be a finite non-negative number, got -1/)
  assert.throws(() => checkParams({ ...DEFAULT_PARAMS, gamma: Infinity }), /gamma must be a finite non-negative number, got Infinity/)
  assert.throws(() => checkParams({ ...DEFAULT_PARAMS, mobility: 2 }), /mobility must be in \[0, 1\], got 2/)
})
