/**
 * An agent-based simulation on the cluster: a stochastic SIR epidemic on a
 * grid of patches (towns), one actor per patch. Each tick the driver asks
 * every patch to step; each patch draws its infections and recoveries, and
 * sends the people who travel this tick straight to its neighbours' actors
 * with `tell`. The driver only sums the patches' counts into the epidemic
 * curve.
 *
 * Run it with `npm run example:metapop` (options: `--width`, `--height`,
 * `--ticks`, `--seed`, `--agents`).
 */
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'
import { Cluster, type ActorRef } from '../../lib/index.js'
import { checkParams, DEFAULT_PARAMS, gridNeighbours, initialState, type InitialConditions, type ModelParams } from './model.js'
import type { Patch } from './patches.js'

export interface MetapopOptions {
  /** Patches across and down; the grid has `width × height` patches. Default 32 × 32 (1,024). */
  width?: number
  height?: number
  /** Ticks simulated. Default 200. */
  ticks?: number
  /** Seed of every random draw. Default 1. */
  seed?: number
  /** Epidemic and travel parameters (default {@link DEFAULT_PARAMS}). */
  params?: Partial<ModelParams>
  /** Patch populations are drawn between these. Default 1,000 and 5,000. */
  minPopulation?: number
  maxPopulation?: number
  /** Infected people in the centre patch at tick 0. Default 10. */
  infected?: number
  /** Local agents of the cluster the run starts (default 1, with one thread per core); ignored with `cluster`. */
  agents?: number
  /** A running cluster to use (its tasks module must be this example's `patches.js`); by default the run starts and closes its own. */
  cluster?: Cluster
  /** Called after each tick with the totals over all patches. */
  onTick?: (t: number, s: number, i: number, r: number) => void
}

export interface MetapopResult {
  patches: number
  ticks: number
  /** Totals over all patches at each tick, after infections and recoveries, travellers counted where they left. */
  curve: { s: number[]; i: number[]; r: number[] }
  /** People in all patches at tick 0. */
  population: number
  /** Nodes the patches ran on. */
  nodes: number
  /** Spawning and linking the patches. */
  setupSeconds: number
  /** Ticks per second of the tick loop (setup excluded). */
  ticksPerSecond: number
  /** Steps answered "not ready" (travellers still on their way) and asked again. */
  retries: number
}

export const PATCHES_MODULE = new URL('./patches.js', import.meta.url)

/** Rounds of asking the patches that are not ready before a tick is given up as stuck. */
const MAX_ROUNDS = 100_000

function positiveInt(name: string, v: number, min = 1, max = 2 ** 31 - 1): number {
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${v}`)
  return v
}

/**
 * Runs the simulation. The curve depends only on the options, not on the
 * number of nodes, the placement of the patches or the timing of messages:
 * every draw of patch `k` at tick `t` comes from a stream seeded by
 * `(seed, k, t)`, and travellers are added as sums.
 */
export async function runMetapopulation(options: MetapopOptions = {}): Promise<MetapopResult> {
  const width = positiveInt('width', options.width ?? 32)
  const height = positiveInt('height', options.height ?? 32)
  const ticks = positiveInt('ticks', options.ticks ?? 200)
  const conditions: InitialConditions = {
    width,
    height,
    seed: positiveInt('seed', options.seed ?? 1, 0, 2 ** 32 - 1),
    minPopulation: positiveInt('minPopulation', options.minPopulation ?? 1000, 0),
    maxPopulation: positiveInt('maxPopulation', options.maxPopulation ?? 5000, 0),
    infected: positiveInt('infected', options.infected ?? 10, 0),
  }
  if (conditions.maxPopulation < conditions.minPopulation) throw new RangeError('maxPopulation must be at least minPopulation')
  const params = checkParams({ ...DEFAULT_PARAMS, ...options.params })
  const agents = positiveInt('agents', options.agents ?? 1)
  const patches = width * height
  let population = 0
  for (let k = 0; k < patches; k++) {
    const p = initialState(k, conditions)
    population += p.s + p.i + p.r
  }

  const cluster = options.cluster ?? (await Cluster.start({ tasks: PATCHES_MODULE, localAgents: agents }))
  let refs: ActorRef<Patch>[] = []
  try {
    const setup = performance.now()
    refs = await Promise.all(Array.from({ length: patches }, (_, k) => cluster.spawn<Patch>('Patch', k, conditions, params)))
    // References are values: each patch gets its neighbours' actors and tells them directly from then on.
    await Promise.all(refs.map((ref, k) => ref.link(gridNeighbours(k, width, height).map((j) => refs[j]!))))
    const setupSeconds = (performance.now() - setup) / 1000

    const curve = { s: [] as number[], i: [] as number[], r: [] as number[] }
    let retries = 0
    const all = refs.map((_, k) => k)
    const start = performance.now()
    for (let t = 0; t < ticks; t++) {
      let s = 0
      let i = 0
      let r = 0
      let pending = all
      for (let round = 0; pending.length > 0; round++) {
        if (round === MAX_ROUNDS) throw new Error(`tick ${t}: ${pending.length} patches still waiting for travellers after ${MAX_ROUNDS} rounds`)
        const answers = await Promise.all(pending.map((k) => refs[k]!.step(t)))
        const again: number[] = []
        for (const [j, a] of answers.entries()) {
          if (a === null) {
            again.push(pending[j]!)
          } else {
            s += a[0]
            i += a[1]
            r += a[2]
          }
        }
        retries += again.length
        pending = again
      }
      curve.s.push(s)
      curve.i.push(i)
      curve.r.push(r)
      options.onTick?.(t, s, i, r)
    }
    const seconds = (performance.now() - start) / 1000
    return { patches, ticks, curve, population, nodes: new Set(refs.map((x) => x.node)).size, setupSeconds, ticksPerSecond: ticks / seconds, retries }
  } finally {
    if (options.cluster) await Promise.all(refs.map((x) => x.stop()))
    else await cluster.close()
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { width: { type: 'string' }, height: { type: 'string' }, ticks: { type: 'string' }, seed: { type: 'string' }, agents: { type: 'string' } },
  })
  const num = (v: string | undefined): number | undefined => (v === undefined ? undefined : Number(v))
  const every = 10
  const r = await runMetapopulation({
    width: num(values.width),
    height: num(values.height),
    ticks: num(values.ticks),
    seed: num(values.seed),
    agents: num(values.agents),
    onTick: (t, s, i, rec) => {
      if (t % every === 0) console.log(`tick ${String(t).padStart(4)}  S ${String(s).padStart(9)}  I ${String(i).padStart(8)}  R ${String(rec).padStart(9)}`)
    },
  })
  let peak = 0
  for (let t = 1; t < r.ticks; t++) if (r.curve.i[t]! > r.curve.i[peak]!) peak = t
  const last = r.ticks - 1
  console.log(
    `\n${r.patches} patches (actors) on ${r.nodes} node(s), ${r.population.toLocaleString('en-US')} people; ` +
      `infected peak ${r.curve.i[peak]!.toLocaleString('en-US')} at tick ${peak}; recovered by tick ${last}: ${((100 * r.curve.r[last]!) / r.population).toFixed(1)}%`,
  )
  console.log(
    `${r.ticks} ticks at ${r.ticksPerSecond.toFixed(1)} ticks/s (${Math.round(r.ticksPerSecond * r.patches).toLocaleString('en-US')} patch steps/s, ` +
      `${r.retries} steps asked again); setup ${r.setupSeconds.toFixed(2)} s`,
  )
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    // A bad flag (its RangeError, or parseArgs's own error) in one line; anything else with its stack.
    const usage = err instanceof RangeError || String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS')
    console.error(usage ? `error: ${(err as Error).message}` : err)
    process.exitCode = 1
  })
}
