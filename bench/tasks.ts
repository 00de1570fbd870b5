/** Tasks the benchmarks run on the cluster. */

/** The seed benchmark's task: add the pair. */
export function add(a: number, b: number): number {
  return a + b
}

/** Reads one element of a (shared or sent) array: the shape of a task whose cost is its input, not its work. */
export function pick(values: Float64Array, i: number): number {
  return values[i % values.length]!
}

/** Holds its thread for `ms` (Atomics.wait: occupied like a compute task, without contending for the CPU). */
export function hold(ms: number): number {
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
  return ms
}

/** Busy-waits `us` microseconds; returns the input, the process that ran it and when it started (epoch ms). */
export function chaos(i: number, us: number): [number, number, number] {
  const started = Date.now()
  const end = performance.now() + us / 1000
  while (performance.now() < end) {
    // work
  }
  return [i, process.pid, started]
}

/** The length of a typed array: a task whose cost is its argument's trip (the 1 MB shape). */
export function byteLength(xs: Float64Array): number {
  return xs.byteLength
}

/** The actor of the call shapes: each call returns the number of calls so far. */
export class Pinger {
  private n = 0
  ping(): number {
    return ++this.n
  }
}
