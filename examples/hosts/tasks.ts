/** The tasks of this example: one Monte Carlo estimate of π per call. */
export function estimatePi(samples: number, seed: number): number {
  let s = seed >>> 0 || 1
  let inside = 0
  for (let i = 0; i < samples; i++) {
    // xorshift32: a fast, seeded generator, so every run draws the same points.
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    const x = (s >>> 0) / 4294967296
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    const y = (s >>> 0) / 4294967296
    if (x * x + y * y <= 1) inside++
  }
  return (4 * inside) / samples
}
