/**
 * Parameter estimation by simulation sweep: recovers the infection rate
 * (beta) and recovery rate (gamma) of a stochastic SIR epidemic from one
 * observed outbreak, by simulating thousands of candidate parameter sets on
 * the cluster and keeping those whose outbreaks look most like the data.
 *
 * Round 1 covers the whole prior box with a Latin hypercube; round 2 samples
 * again, with more replicates, the box around round 1's best fits.
 *
 * Run it with `npm run example:sweep` (options: `--samples`, `--replicates`,
 * `--refine-samples`, `--refine-replicates`, `--seed`).
 */
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'
import { Cluster } from '../../lib/index.js'
import { OBSERVED_SEED, POPULATION, TRUTH } from './model.js'
import { mulberry32 } from './prng.js'

/** A closed range of one parameter. */
export interface Range {
  min: number
  max: number
}

/** The region of parameter space searched. */
export interface Box {
  beta: Range
  gamma: Range
}

/** A parameter set and its mean loss over its replicates. */
export interface Fit {
  beta: number
  gamma: number
  /** Mean RMS distance (in individuals) between simulated and observed infected curves. */
  loss: number
}

/** What one round of the sweep did. */
export interface RoundSummary {
  box: Box
  samples: number
  replicates: number
  /** The best fits of the round, best first. */
  top: Fit[]
}

export interface SweepOptions {
  /** Parameter sets of round 1. Default 5000. */
  samples?: number
  /** Simulations per parameter set in round 1. Default 8. */
  replicates?: number
  /** Parameter sets of round 2; 0 skips the refinement. Default 2500. */
  refineSamples?: number
  /** Simulations per parameter set in round 2. Default 16. */
  refineReplicates?: number
  /** Best fits kept per round; round 2 searches around round 1's. Default 20. */
  keep?: number
  /** Seed of the sampling designs. Default 1. */
  seed?: number
  /** The region searched in round 1. Default beta in [0.05, 1], gamma in [0.02, 0.5]. */
  prior?: Box
  /** A running cluster to use; by default the sweep starts (and closes) its own. */
  cluster?: Cluster
  /** Called after each round, e.g. to print progress. */
  onRound?: (round: RoundSummary, index: number) => void
}

export interface SweepResult {
  /** The best fit of the last round. */
  best: Fit
  /** The mean of the last round's {@link SweepOptions.keep} best fits: steadier than `best` alone. */
  estimate: { beta: number; gamma: number }
  rounds: RoundSummary[]
  /** Simulations run. */
  evaluations: number
  /** Wall time of the sweep, cluster start included, in ms. */
  elapsedMs: number
  /** Worker threads that ran the simulations. */
  threads: number
}

/** Where the default sweep looks: R0 = beta / gamma from 0.1 to 50. */
export const DEFAULT_PRIOR: Readonly<Box> = Object.freeze({ beta: { min: 0.05, max: 1 }, gamma: { min: 0.02, max: 0.5 } })

const MODEL = new URL('./model.js', import.meta.url)
/** Replicate seeds of round k are k * SEED_STRIDE + 0, 1, ..., so rounds never share seeds. */
const SEED_STRIDE = 1000

/**
 * A Latin hypercube design of `n` points in `box`: each parameter's range is
 * cut into `n` equal strata and every stratum holds exactly one point, which
 * covers the box more evenly than independent uniform draws.
 */
export function latinHypercube(n: number, box: Box, seed: number): { beta: Float64Array; gamma: Float64Array } {
  const rand = mulberry32(seed)
  const axis = ({ min, max }: Range): Float64Array => {
    const perm = new Uint32Array(n)
    for (let k = 0; k < n; k++) perm[k] = k
    for (let k = n - 1; k > 0; k--) {
      const j = Math.floor(rand() * (k + 1))
      const tmp = perm[k]!
      perm[k] = perm[j]!
      perm[j] = tmp
    }
    const out = new Float64Array(n)
    for (let k = 0; k < n; k++) out[k] = min + ((perm[k]! + rand()) / n) * (max - min)
    return out
  }
  return { beta: axis(box.beta), gamma: axis(box.gamma) }
}

/** Orders fits by loss; ties (rare, but possible) by parameters, so that the outcome never depends on arrival order. */
function better(a: Fit, b: Fit): number {
  return a.loss - b.loss || a.beta - b.beta || a.gamma - b.gamma
}

/** The box spanned by `fits`, widened by half its size on each side and clipped to `prior`. */
function around(fits: readonly Fit[], prior: Box): Box {
  const span = (key: 'beta' | 'gamma'): Range => {
    let min = Infinity
    let max = -Infinity
    for (const f of fits) {
      min = Math.min(min, f[key])
      max = Math.max(max, f[key])
    }
    // Never narrower than 2% of the prior: a lone best fit must still get a box.
    const pad = Math.max((max - min) / 2, (prior[key].max - prior[key].min) / 100)
    return { min: Math.max(prior[key].min, min - pad), max: Math.min(prior[key].max, max + pad) }
  }
  return { beta: span('beta'), gamma: span('gamma') }
}

/** Runs `samples` parameter sets × `replicates` simulations on the cluster and returns the `keep` best fits. */
async function sweepRound(cluster: Cluster, box: Box, samples: number, replicates: number, keep: number, designSeed: number, round: number): Promise<Fit[]> {
  const design = latinHypercube(samples, box, designSeed)
  // Every parameter set is run with the same replicate seeds (common random
  // numbers): neighbouring sets then differ by their parameters rather than by
  // luck, which smooths the loss surface the sweep is ranking.
  const seedBase = round * SEED_STRIDE
  function* runs(): Generator<[tag: number, beta: number, gamma: number, seed: number]> {
    for (let p = 0; p < samples; p++) {
      for (let r = 0; r < replicates; r++) yield [p * replicates + r, design.beta[p]!, design.gamma[p]!, seedBase + r]
    }
  }
  // Losses are stored by run and summed in replicate order once a set is
  // complete, so floating-point rounding cannot depend on arrival order.
  const losses = new Float64Array(samples * replicates)
  const done = new Uint16Array(samples)
  const top: Fit[] = []
  for await (const [tag, loss] of cluster.map<[number, number]>('simulate', runs(), { ordered: false })) {
    losses[tag] = loss
    const p = Math.floor(tag / replicates)
    if (++done[p]! < replicates) continue
    let sum = 0
    for (let r = 0; r < replicates; r++) sum += losses[p * replicates + r]!
    const fit: Fit = { beta: design.beta[p]!, gamma: design.gamma[p]!, loss: sum / replicates }
    const last = top[top.length - 1]
    if (top.length < keep || (last !== undefined && better(fit, last) < 0)) {
      let at = top.length
      while (at > 0 && better(fit, top[at - 1]!) < 0) at--
      top.splice(at, 0, fit)
      if (top.length > keep) top.pop()
    }
  }
  return top
}

function positiveInt(name: string, v: number, max = Number.MAX_SAFE_INTEGER, min = 1): number {
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${v}`)
  return v
}

/**
 * Runs the sweep: round 1 over `prior`, then (unless `refineSamples` is 0)
 * round 2 around round 1's best fits. Deterministic for given options: the
 * designs and simulation seeds are fixed, and the results do not depend on
 * how the cluster schedules the simulations.
 */
export async function runSweep(options: SweepOptions = {}): Promise<SweepResult> {
  const start = performance.now()
  const samples = positiveInt('samples', options.samples ?? 5000)
  const replicates = positiveInt('replicates', options.replicates ?? 8, SEED_STRIDE - 1)
  const refineSamples = positiveInt('refineSamples', options.refineSamples ?? 2500, Number.MAX_SAFE_INTEGER, 0)
  const refineReplicates = positiveInt('refineReplicates', options.refineReplicates ?? 16, SEED_STRIDE - 1)
  const keep = positiveInt('keep', options.keep ?? 20)
  const seed = positiveInt('seed', options.seed ?? 1, 2 ** 32 - 1, 0)
  const prior = options.prior ?? DEFAULT_PRIOR
  // The replicate seeds are small numbers; the observed outbreak's must not be one of them.
  if (OBSERVED_SEED < 3 * SEED_STRIDE) throw new Error('the observed seed collides with the replicate seeds')

  const plan = [{ samples, replicates }]
  if (refineSamples > 0) plan.push({ samples: refineSamples, replicates: refineReplicates })

  const cluster = options.cluster ?? (await Cluster.start({ tasks: MODEL }))
  const rounds: RoundSummary[] = []
  let evaluations = 0
  let threads = 0
  try {
    for (const node of cluster.nodes()) threads += node.threads
    let box = prior
    for (const [k, step] of plan.entries()) {
      if (k > 0) box = around(rounds[k - 1]!.top, prior)
      const top = await sweepRound(cluster, box, step.samples, step.replicates, keep, seed + k, k + 1)
      evaluations += step.samples * step.replicates
      const summary: RoundSummary = { box, samples: step.samples, replicates: step.replicates, top }
      rounds.push(summary)
      options.onRound?.(summary, k)
    }
  } finally {
    if (!options.cluster) await cluster.close()
  }
  const { top } = rounds[rounds.length - 1]!
  const estimate = {
    beta: top.reduce((s, f) => s + f.beta, 0) / top.length,
    gamma: top.reduce((s, f) => s + f.gamma, 0) / top.length,
  }
  return { best: top[0]!, estimate, rounds, evaluations, elapsedMs: performance.now() - start, threads }
}

const pct = (value: number, truth: number): string => `${(((value - truth) / truth) * 100).toFixed(1).padStart(5)}%`
const fmt = (x: number): string => x.toFixed(4)

function report(r: SweepResult): void {
  const show = (label: string, beta: number, gamma: number): string =>
    `  ${label.padEnd(12)} beta ${fmt(beta)}  gamma ${fmt(gamma)}  R0 ${(beta / gamma).toFixed(3)}`
  const err = (beta: number, gamma: number): string =>
    `   (error: beta ${pct(beta, TRUTH.beta)}, gamma ${pct(gamma, TRUTH.gamma)}, R0 ${pct(beta / gamma, TRUTH.beta / TRUTH.gamma)})`
  console.log('\nresult')
  console.log(show('truth', TRUTH.beta, TRUTH.gamma))
  console.log(show('best fit', r.best.beta, r.best.gamma) + `  loss ${r.best.loss.toFixed(2)}` + err(r.best.beta, r.best.gamma))
  const n = r.rounds[r.rounds.length - 1]!.top.length
  console.log(show(`top-${n} mean`, r.estimate.beta, r.estimate.gamma) + err(r.estimate.beta, r.estimate.gamma))
  const seconds = r.elapsedMs / 1000
  console.log(
    `\n${r.evaluations} simulations on ${r.threads} threads in ${seconds.toFixed(2)} s (${Math.round(r.evaluations / seconds)} simulations/s, cluster start included)`,
  )
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      samples: { type: 'string' },
      replicates: { type: 'string' },
      'refine-samples': { type: 'string' },
      'refine-replicates': { type: 'string' },
      seed: { type: 'string' },
    },
  })
  const num = (v: string | undefined): number | undefined => (v === undefined ? undefined : Number(v))
  console.log(`fitting a stochastic SIR model (N = ${POPULATION}) to one observed outbreak; truth: beta ${TRUTH.beta}, gamma ${TRUTH.gamma}`)
  const result = await runSweep({
    samples: num(values.samples),
    replicates: num(values.replicates),
    refineSamples: num(values['refine-samples']),
    refineReplicates: num(values['refine-replicates']),
    seed: num(values.seed),
    onRound: (round, k) => {
      const { box, top } = round
      const b = top[0]!
      console.log(
        `round ${k + 1}: ${round.samples} sets × ${round.replicates} replicates in beta [${fmt(box.beta.min)}, ${fmt(box.beta.max)}], ` +
          `gamma [${fmt(box.gamma.min)}, ${fmt(box.gamma.max)}]; best beta ${fmt(b.beta)} gamma ${fmt(b.gamma)} loss ${b.loss.toFixed(2)}`,
      )
    },
  })
  report(result)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    // A bad flag (its RangeError, or parseArgs's own error) in one line; anything else with its stack.
    const usage = err instanceof RangeError || String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS')
    console.error(usage ? `error: ${(err as Error).message}` : err)
    process.exitCode = 1
  })
}
