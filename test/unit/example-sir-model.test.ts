import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DAYS, INITIAL_INFECTED, OBSERVED, OBSERVED_SEED, POPULATION, TRUTH, distance, simulate, trajectory } from '../../examples/parameter-sweep/model.js'
import { DEFAULT_PRIOR, latinHypercube } from '../../examples/parameter-sweep/main.js'

test('the same parameters and seed give the same outbreak; another seed gives another', () => {
  const a = trajectory(0.3, 0.1, 7)
  assert.deepEqual(trajectory(0.3, 0.1, 7), a)
  assert.notDeepEqual(trajectory(0.3, 0.1, 8).i, a.i)
})

test('the population is conserved and flows only S -> I -> R', () => {
  for (const [beta, gamma, seed] of [
    [0.3, 0.1, 1],
    [0.9, 0.05, 2],
    [0.1, 0.4, 3],
    [0.5, 0.5, 4],
  ] as const) {
    const { s, i, r } = trajectory(beta, gamma, seed)
    assert.equal(i.length, DAYS + 1)
    assert.deepEqual([s[0], i[0], r[0]], [POPULATION - INITIAL_INFECTED, INITIAL_INFECTED, 0])
    for (let d = 0; d <= DAYS; d++) {
      assert.equal(s[d]! + i[d]! + r[d]!, POPULATION, `day ${d}`)
      assert.ok(i[d]! >= 0)
      if (d > 0) assert.ok(s[d]! <= s[d - 1]! && r[d]! >= r[d - 1]!, `day ${d}`)
    }
  }
})

test('without transmission nobody new is infected', () => {
  const { s, i } = trajectory(0, 0.1, 1)
  assert.ok(s.every((x) => x === POPULATION - INITIAL_INFECTED))
  assert.ok(i[DAYS]! < INITIAL_INFECTED)
})

test('the observed data is the truth simulated with the observed seed, and is a real outbreak', () => {
  assert.deepEqual(OBSERVED, trajectory(TRUTH.beta, TRUTH.gamma, OBSERVED_SEED).i)
  assert.equal(distance(OBSERVED), 0)
  assert.ok(Math.max(...OBSERVED) > 100, 'the epidemic takes off')
})

test('simulate echoes its tag and scores the truth better than a wrong guess', () => {
  const mean = (beta: number, gamma: number) => {
    let sum = 0
    for (let seed = 1; seed <= 8; seed++) {
      const [tag, loss] = simulate(seed * 10, beta, gamma, seed)
      assert.equal(tag, seed * 10)
      sum += loss
    }
    return sum / 8
  }
  assert.ok(mean(TRUTH.beta, TRUTH.gamma) < mean(0.6, 0.1))
  assert.ok(mean(TRUTH.beta, TRUTH.gamma) < mean(0.3, 0.2))
})

test('bad parameters are refused', () => {
  assert.throws(() => trajectory(-0.1, 0.1, 1), RangeError)
  assert.throws(() => trajectory(0.3, Number.NaN, 1), RangeError)
  assert.throws(() => trajectory(Infinity, 0.1, 1), RangeError)
})

test('the Latin hypercube puts exactly one point in each stratum of each parameter', () => {
  const n = 64
  const design = latinHypercube(n, DEFAULT_PRIOR, 3)
  for (const key of ['beta', 'gamma'] as const) {
    const { min, max } = DEFAULT_PRIOR[key]
    const strata = new Set(Array.from(design[key], (x) => Math.floor(((x - min) / (max - min)) * n)))
    assert.equal(strata.size, n)
    assert.ok(design[key].every((x) => x >= min && x < max))
  }
  assert.deepEqual(latinHypercube(n, DEFAULT_PRIOR, 3), design)
})
