/**
 * Load balance under heavy-tailed task times: most tasks take 1 ms, 5% take
 * 50 ms. The makespan is compared with the ideal: the total work spread
 * evenly over every thread (or the longest task, if that is longer).
 */
import { Cluster } from '../lib/index.js'
import { BENCH_TASKS } from './seed.js'
import { median, rng } from './stats.js'

export interface BalanceRun {
  makespanMs: number
  idealMs: number
  ratio: number
}

export interface BalanceResult {
  tasks: number
  agents: number
  threads: number
  ratio: number
  runs: BalanceRun[]
}

function heavyTailed(n: number, seed = 42): number[] {
  const r = rng(seed)
  return Array.from({ length: n }, () => (r() < 0.05 ? 50 : 1))
}

export async function runBalance(o: { tasks: number; agents: number; threads: number; runs: number }): Promise<BalanceResult> {
  await using cluster = await Cluster.start({ tasks: BENCH_TASKS, localAgents: o.agents, threads: o.threads })
  const durations = heavyTailed(o.tasks)
  const total = durations.reduce((a, b) => a + b, 0)
  const idealMs = Math.max(total / (o.agents * o.threads), Math.max(...durations))
  // Warm-up: lets each agent measure task times and size its credit window.
  await Promise.all(Array.from({ length: 20 }, () => cluster.call('hold', 1)))
  const runs: BalanceRun[] = []
  for (let i = 0; i < o.runs; i++) {
    const t = performance.now()
    await Promise.all(durations.map((ms) => cluster.call('hold', ms)))
    const makespanMs = performance.now() - t
    runs.push({ makespanMs, idealMs, ratio: makespanMs / idealMs })
  }
  return { tasks: o.tasks, agents: o.agents, threads: o.threads, ratio: median(runs.map((r) => r.ratio)), runs }
}
