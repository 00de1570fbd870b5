/** Tasks of the reduce benchmark. */

/** Monte Carlo darts: `n` points in the unit square from a generator seeded by `seed`; returns how many fell in the quarter circle. */
export function darts(seed: number, n: number): number {
  let a = Math.imul(seed, 0x9e3779b1) >>> 0
  let hits = 0
  for (let k = 0; k < n; k++) {
    a = (a + 0x6d2b79f5) >>> 0
    let t = Math.imul(a ^ (a >>> 15), a | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    const x = ((t ^ (t >>> 14)) >>> 0) / 4294967296
    a = (a + 0x6d2b79f5) >>> 0
    t = Math.imul(a ^ (a >>> 15), a | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    const y = ((t ^ (t >>> 14)) >>> 0) / 4294967296
    if (x * x + y * y <= 1) hits++
  }
  return hits
}

export function sum(a: number, b: number): number {
  return a + b
}
