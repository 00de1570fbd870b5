/**
 * The tasks module of the parameter-sweep example: a stochastic SIR epidemic
 * (exact Gillespie simulation) and the synthetic "observed" outbreak it is
 * fitted to.
 *
 * Every exported function is a task the cluster can run on its worker
 * threads, so helpers that are not meant to be called remotely stay private
 * or live in other modules (the PRNG is in prng.ts).
 */
import { mulberry32 } from './prng.js'

/** Size of the simulated population. */
export const POPULATION = 1000
/** Infected individuals on day 0. */
export const INITIAL_INFECTED = 10
/** Days observed after day 0; the curves have `DAYS + 1` points. */
export const DAYS = 100
/** The parameters the observed outbreak was generated with: R0 = beta / gamma = 3. */
export const TRUTH: Readonly<{ beta: number; gamma: number }> = Object.freeze({ beta: 0.3, gamma: 0.1 })
/**
 * Seed of the observed outbreak. It lies far above the small replicate seeds
 * the driver uses, so no simulation can replay the observed realization
 * exactly and make the fit look better than it is.
 */
export const OBSERVED_SEED = 0x5eed_0b5e

/** One simulated outbreak: the size of each compartment at times t = 0, 1, ..., DAYS. */
export interface Trajectory {
  s: Int32Array
  i: Int32Array
  r: Int32Array
}

/**
 * Simulates one outbreak with Gillespie's direct method: infection at rate
 * `beta * S * I / N`, recovery at rate `gamma * I`, sampled once a day.
 * The same `(beta, gamma, seed)` always gives the same trajectory.
 */
export function trajectory(beta: number, gamma: number, seed: number): Trajectory {
  if (!(Number.isFinite(beta) && beta >= 0 && Number.isFinite(gamma) && gamma >= 0)) {
    throw new RangeError(`beta and gamma must be finite non-negative numbers, got ${beta}, ${gamma}`)
  }
  const s = new Int32Array(DAYS + 1)
  const i = new Int32Array(DAYS + 1)
  const r = new Int32Array(DAYS + 1)
  const rand = mulberry32(seed)
  let S = POPULATION - INITIAL_INFECTED
  let I = INITIAL_INFECTED
  let R = 0
  let t = 0
  let day = 0
  while (I > 0) {
    const infection = (beta * S * I) / POPULATION
    const total = infection + gamma * I
    if (total <= 0) break
    // 1 - rand() is in (0, 1]: the log never sees 0.
    t += -Math.log(1 - rand()) / total
    // Days passed before this event see the state as it was.
    for (; day <= DAYS && day <= t; day++) {
      s[day] = S
      i[day] = I
      r[day] = R
    }
    if (day > DAYS) break
    if (rand() * total < infection) {
      S--
      I++
    } else {
      I--
      R++
    }
  }
  for (; day <= DAYS; day++) {
    s[day] = S
    i[day] = I
    r[day] = R
  }
  return { s, i, r }
}

/**
 * The observed data: daily counts of infected individuals from one outbreak
 * simulated with {@link TRUTH} and {@link OBSERVED_SEED}. Deterministic; the
 * driver never sends it, each worker computes it once when it loads the module.
 */
export const OBSERVED: Readonly<Int32Array> = trajectory(TRUTH.beta, TRUTH.gamma, OBSERVED_SEED).i

/** Root mean square distance between an infected curve and {@link OBSERVED}. */
export function distance(infected: ArrayLike<number>): number {
  let sum = 0
  for (let d = 0; d <= DAYS; d++) {
    const diff = (infected[d] ?? 0) - (OBSERVED[d] ?? 0)
    sum += diff * diff
  }
  return Math.sqrt(sum / (DAYS + 1))
}

/**
 * The sweep's task: simulates one outbreak with `(beta, gamma, seed)` and
 * returns `[tag, loss]`, where `loss` is the RMS distance of its infected
 * curve from the observed one. `tag` is opaque to the task: the caller's id
 * for this run, echoed back so that results arriving out of order (as
 * `map(..., { ordered: false })` yields them) can be matched to their inputs.
 */
export function simulate(tag: number, beta: number, gamma: number, seed: number): [tag: number, loss: number] {
  return [tag, distance(trajectory(beta, gamma, seed).i)]
}
