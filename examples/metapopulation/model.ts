/**
 * The pure model of the metapopulation example: a stochastic SIR epidemic in
 * each patch of a grid, with travellers moving between neighbouring patches.
 * Nothing here knows about actors or the cluster: the patch actor
 * (`patches.ts`) holds a {@link PatchState} and calls these functions, and the
 * unit tests call them directly.
 *
 * Every random draw of patch `k` at tick `t` comes from its own stream,
 * seeded by `(seed, k, t)`: the epidemic does not depend on which node runs a
 * patch, nor on the order messages arrive in.
 */
import { mulberry32 } from '../parameter-sweep/prng.js'

// The generator the parameter-sweep example draws from (mulberry32), one stream per patch and tick here.
export { mulberry32 }

/** The epidemic and travel parameters, the same in every patch. */
export interface ModelParams {
  /** Infections per infected individual per tick, in a fully susceptible patch. */
  beta: number
  /** Probability per tick that an infected individual recovers is `1 - exp(-gamma)`. */
  gamma: number
  /** Probability per tick that an individual travels to a neighbouring patch. */
  mobility: number
}

/** The size of each compartment of one patch. */
export interface Compartments {
  s: number
  i: number
  r: number
}

/** One patch: its place on the grid and its compartments. */
export interface PatchState extends Compartments {
  readonly index: number
}

/** Default parameters: R0 = beta / gamma = 3.2, 2% of people travel each tick. */
export const DEFAULT_PARAMS: Readonly<ModelParams> = Object.freeze({ beta: 0.8, gamma: 0.25, mobility: 0.02 })

/** Mixes 32 bits well (the murmur3 finaliser): neighbouring seeds give unrelated streams. */
function mix32(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** The seed of patch `patch`'s stream at tick `tick` of a run seeded `seed`. */
export function streamSeed(seed: number, patch: number, tick: number): number {
  return mix32(mix32(mix32(seed >>> 0) ^ (patch >>> 0)) ^ Math.imul(tick >>> 0, 0x9e3779b1))
}

/** A standard normal draw (Box–Muller; one of the pair is dropped to keep the stream simple). */
function normal(rand: () => number): number {
  // 1 - rand() is in (0, 1]: the log never sees 0.
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())
}

/** Below this mean (of the rarer outcome) a binomial is drawn exactly; above it by a normal approximation. */
export const EXACT_BINOMIAL_MEAN = 30

/**
 * A Binomial(n, p) draw: exact by inversion of the distribution function
 * when the mean of the rarer outcome is below {@link EXACT_BINOMIAL_MEAN},
 * else the normal approximation (continuity-corrected, clipped to [0, n]),
 * which is then close to the exact distribution and costs O(1) instead of
 * O(np).
 */
export function binomial(n: number, p: number, rand: () => number): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`binomial: n must be a non-negative integer, got ${n}`)
  if (!(p >= 0 && p <= 1)) throw new RangeError(`binomial: p must be in [0, 1], got ${p}`)
  if (n === 0 || p === 0) return 0
  if (p === 1) return n
  // Draw the rarer outcome: the inversion's cost is its mean.
  if (p > 0.5) return n - binomial(n, 1 - p, rand)
  const mean = n * p
  if (mean >= EXACT_BINOMIAL_MEAN) {
    const x = Math.round(mean + Math.sqrt(mean * (1 - p)) * normal(rand))
    return x < 0 ? 0 : x > n ? n : x
  }
  // Inversion: walk up the distribution function from P(0) = (1 - p)^n.
  const q = 1 - p
  const ratio = p / q
  let prob = Math.pow(q, n)
  let cdf = prob
  const u = rand()
  let k = 0
  while (u >= cdf && k < n) {
    prob *= (ratio * (n - k)) / (k + 1)
    k++
    cdf += prob
  }
  return k
}

/**
 * Splits `total` among `ways` equally likely destinations (a multinomial
 * draw, as sequential binomials). The counts sum to `total`.
 */
export function split(total: number, ways: number, rand: () => number): number[] {
  if (!Number.isSafeInteger(ways) || ways < 1) throw new RangeError(`split: ways must be a positive integer, got ${ways}`)
  const out = new Array<number>(ways)
  let left = total
  for (let k = 0; k < ways - 1; k++) {
    const x = binomial(left, 1 / (ways - k), rand)
    out[k] = x
    left -= x
  }
  out[ways - 1] = left
  return out
}

/** The neighbours of cell `index` on a `width` × `height` grid (up, left, right, down; no wrap-around), ascending. */
export function gridNeighbours(index: number, width: number, height: number): number[] {
  const x = index % width
  const y = Math.floor(index / width)
  const out: number[] = []
  if (y > 0) out.push(index - width)
  if (x > 0) out.push(index - 1)
  if (x < width - 1) out.push(index + 1)
  if (y < height - 1) out.push(index + width)
  return out
}

/** How a run starts: every patch's population, and the infected people placed at the start. */
export interface InitialConditions {
  /** Patches, `width` × `height`. */
  width: number
  height: number
  seed: number
  /** Smallest and largest patch population; each patch draws its own from its seed. */
  minPopulation: number
  maxPopulation: number
  /** Infected people at tick 0, in the patch at the centre of the grid. */
  infected: number
}

/** The compartments of patch `index` at tick 0. */
export function initialState(index: number, c: InitialConditions): PatchState {
  const rand = mulberry32(streamSeed(c.seed, index, 0xffffffff))
  const population = c.minPopulation + Math.floor(rand() * (c.maxPopulation - c.minPopulation + 1))
  const centre = Math.floor(c.height / 2) * c.width + Math.floor(c.width / 2)
  const i = index === centre ? Math.min(c.infected, population) : 0
  return { index, s: population - i, i, r: 0 }
}

/** What one tick of a patch produced: its compartments before travel, and the travellers sent to each neighbour. */
export interface TickOutcome {
  /** The patch's compartments after this tick's infections and recoveries, travellers still counted here. */
  before: Compartments
  /** Travellers per neighbour, in the order of the neighbour list. */
  travellers: Compartments[]
}

/**
 * One tick of a patch, in place: infections and recoveries, then the
 * travellers leave (each compartment's movers drawn, then split equally
 * among the neighbours). Arrivals are added by the caller, before the next
 * tick, with {@link arrive}. Uses the patch's stream for (seed, tick) only.
 */
export function tick(state: PatchState, neighbours: number, params: ModelParams, seed: number, t: number): TickOutcome {
  const rand = mulberry32(streamSeed(seed, state.index, t))
  const n = state.s + state.i + state.r
  const force = n === 0 ? 0 : (params.beta * state.i) / n
  const infections = binomial(state.s, 1 - Math.exp(-force), rand)
  const recoveries = binomial(state.i, 1 - Math.exp(-params.gamma), rand)
  state.s -= infections
  state.i += infections - recoveries
  state.r += recoveries
  const before = { s: state.s, i: state.i, r: state.r }
  const travellers: Compartments[] = Array.from({ length: neighbours }, () => ({ s: 0, i: 0, r: 0 }))
  if (neighbours > 0) {
    for (const key of ['s', 'i', 'r'] as const) {
      const movers = binomial(state[key], params.mobility, rand)
      state[key] -= movers
      const parts = split(movers, neighbours, rand)
      for (let k = 0; k < neighbours; k++) travellers[k]![key] = parts[k]!
    }
  }
  return { before, travellers }
}

/** Adds arrived travellers to a patch (or to a tally of arrivals). */
export function arrive(state: Compartments, c: Compartments): void {
  state.s += c.s
  state.i += c.i
  state.r += c.r
}

/** Checks the parameters, naming the bad one. */
export function checkParams(p: ModelParams): ModelParams {
  for (const key of ['beta', 'gamma'] as const) {
    if (!(Number.isFinite(p[key]) && p[key] >= 0)) throw new RangeError(`${key} must be a finite non-negative number, got ${p[key]}`)
  }
  if (!(p.mobility >= 0 && p.mobility <= 1)) throw new RangeError(`mobility must be in [0, 1], got ${p.mobility}`)
  return p
}

/**
 * The whole grid simulated in one thread, patch after patch, with no actors:
 * the curve a run on the cluster must reproduce exactly (the tests compare
 * them). Totals per tick as `runMetapopulation` reports them.
 */
export function simulateInProcess(c: InitialConditions, params: ModelParams, ticks: number): { s: number[]; i: number[]; r: number[] } {
  const patches = c.width * c.height
  const states = Array.from({ length: patches }, (_, k) => initialState(k, c))
  const neighbours = states.map((_, k) => gridNeighbours(k, c.width, c.height))
  const curve = { s: [] as number[], i: [] as number[], r: [] as number[] }
  for (let t = 0; t < ticks; t++) {
    const inbound = states.map(() => ({ s: 0, i: 0, r: 0 }))
    let s = 0
    let i = 0
    let r = 0
    for (let k = 0; k < patches; k++) {
      const { before, travellers } = tick(states[k]!, neighbours[k]!.length, params, c.seed, t)
      s += before.s
      i += before.i
      r += before.r
      for (const [j, to] of neighbours[k]!.entries()) arrive(inbound[to]!, travellers[j]!)
    }
    for (let k = 0; k < patches; k++) arrive(states[k]!, inbound[k]!)
    curve.s.push(s)
    curve.i.push(i)
    curve.r.push(r)
  }
  return curve
}
