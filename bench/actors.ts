/**
 * Actors at scale and actors talking to actors: spawning many actors over
 * several agents (actors/s, and the driver's bytes per actor from the
 * transport's counters), ping-pong between two actors by `tell` on one node
 * and across two nodes (messages/s), and a token passed around a ring of
 * actors (hops/s). Published figures of Ray, Akka and Proto.Actor are printed
 * beside ours (other hardware, other shapes: a scale, not a race).
 */
import { availableParallelism, cpus, loadavg } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { Cluster, type ActorRef } from '../lib/index.js'
import { CLUSTER_DEFAULTS, type LocalTransport } from '../lib/options.js'
import { BENCH_TASKS } from './seed.js'
import { median } from './stats.js'
import type { Bouncer, Pinger, RingMember } from './tasks.js'

export interface ActorsBenchOptions {
  /** Actors spawned per run (0 skips the part). */
  spawn: number
  /** Messages per run of each ping-pong (0 skips both). */
  messages: number
  /** Balls in play at once in a ping-pong. */
  balls: number
  /** Members of the ring (0 skips the ring). */
  ringSize: number
  /** Hops of the token per run. */
  ringHops: number
  /** Local agents (at least 2 for the cross-node parts). */
  agents: number
  /** Threads per agent (default: cores / agents). */
  threads?: number
  /** How the local agents reach the driver (default: the cluster's default). */
  localTransport?: LocalTransport | undefined
  runs: number
  /** Longest wait for a run's messages to finish, in ms. */
  timeoutMs: number
}

export interface SpawnRow {
  actors: number
  seconds: number
  actorsPerSecond: number
  /** Bytes the driver sent and received per actor spawned (transport counters). */
  driverBytesPerActor: number
}

export interface RateRow {
  part: 'ping-pong same node' | 'ping-pong cross node' | 'ring'
  messages: number
  /** Median of the runs. */
  messagesPerSecond: number
  runs: number[]
}

export interface ActorsBenchResult {
  agents: number
  threads: number
  localTransport: LocalTransport
  machine: string
  /** The 1-minute load average before and after the runs. */
  load: [number, number]
  /** Median run of the spawn part (by time), and all runs. */
  spawn: (SpawnRow & { runs: SpawnRow[] }) | undefined
  rates: RateRow[]
  goals: { spawnSeconds: number; driverBytesPerActor: number; sameNode: number; crossNode: number }
  reference: { source: string; figure: string }[]
}

/** The goals on this machine. */
const GOALS = { spawnSeconds: 5, driverBytesPerActor: 500, sameNode: 1_000_000, crossNode: 300_000 }

/** Published figures (their hardware, their shapes). */
const REFERENCE = [
  { source: 'Ray many_actors (release test, cluster)', figure: '~550 actors/s' },
  { source: 'Ray 2.48 1_1_actor_calls_async (m5.16xlarge)', figure: '8,664 calls/s' },
  { source: 'Akka / Proto.Actor remote ping-pong (published)', figure: '2.4–2.7M msg/s' },
]

async function spawnRun(o: ActorsBenchOptions, threads: number): Promise<SpawnRow> {
  await using cluster = await Cluster.start({ tasks: BENCH_TASKS, localAgents: o.agents, threads, localTransport: o.localTransport })
  const before = cluster.stats().transport
  const start = performance.now()
  const refs = await Promise.all(Array.from({ length: o.spawn }, () => cluster.spawn<Pinger>('Pinger')))
  const seconds = (performance.now() - start) / 1000
  const after = cluster.stats().transport
  // Every actor answers: the spawn is done, not only sent.
  if ((await refs[refs.length - 1]!.ping()) !== 1) throw new Error('the last actor spawned did not answer its first call')
  const bytes = after.bytesOut - before.bytesOut + (after.bytesIn - before.bytesIn)
  return { actors: o.spawn, seconds, actorsPerSecond: Math.round(o.spawn / seconds), driverBytesPerActor: bytes / o.spawn }
}

/** Waits until `done()` says so, polling; throws after `timeoutMs`. */
async function until(done: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!(await done())) {
    if (performance.now() > deadline) throw new Error(`${what} did not finish within ${timeoutMs} ms`)
    await sleep(2)
  }
}

/** One ping-pong run: `balls` balls of `hops` hops each between `a` and `b`; messages per second. */
async function pingPongRun(a: ActorRef<Bouncer>, b: ActorRef<Bouncer>, balls: number, hops: number, timeoutMs: number): Promise<number> {
  const [ra0, fa0] = await a.counts()
  const [rb0, fb0] = await b.counts()
  const start = performance.now()
  await a.serve(balls, hops)
  await until(
    async () => {
      const [[, fa], [, fb]] = await Promise.all([a.counts(), b.counts()])
      return fa - fa0 + (fb - fb0) === balls
    },
    timeoutMs,
    'ping-pong',
  )
  const seconds = (performance.now() - start) / 1000
  const [[ra], [rb]] = await Promise.all([a.counts(), b.counts()])
  const messages = ra - ra0 + (rb - rb0)
  if (messages !== balls * hops) throw new Error(`ping-pong: ${messages} balls received, expected ${balls * hops}`)
  return Math.round(messages / seconds)
}

async function pingPong(cluster: Cluster, part: RateRow['part'], nodes: [string, string], o: ActorsBenchOptions): Promise<RateRow> {
  const a = await cluster.with({ node: nodes[0] }).spawn<Bouncer>('Bouncer')
  const b = await cluster.with({ node: nodes[1] }).spawn<Bouncer>('Bouncer')
  await Promise.all([a.link(b), b.link(a)])
  const hops = Math.max(1, Math.round(o.messages / o.balls))
  // One unmeasured run at a tenth of the size lets the JIT settle.
  await pingPongRun(a, b, o.balls, Math.max(1, Math.round(hops / 10)), o.timeoutMs)
  const runs: number[] = []
  for (let r = 0; r < o.runs; r++) runs.push(await pingPongRun(a, b, o.balls, hops, o.timeoutMs))
  await Promise.all([a.stop(), b.stop()])
  return { part, messages: o.balls * hops, messagesPerSecond: median(runs), runs }
}

/** The ring: members in contiguous blocks, one block per node, so a lap crosses between nodes once per node. */
async function ring(cluster: Cluster, nodes: string[], o: ActorsBenchOptions): Promise<RateRow> {
  const members: ActorRef<RingMember>[] = []
  for (let k = 0; k < o.ringSize; k++) {
    const node = nodes[Math.floor((k * nodes.length) / o.ringSize)]!
    members.push(await cluster.with({ node }).spawn<RingMember>('RingMember'))
  }
  await Promise.all(members.map((m, k) => m.link(members[(k + 1) % members.length]!)))
  const lap = async (hops: number): Promise<number> => {
    // The token stops at the member `hops` places after the first.
    const last = members[hops % members.length]!
    const before = await last.done()
    const start = performance.now()
    members[0]!.tell.token(hops)
    await until(async () => (await last.done()) > before, o.timeoutMs, 'the ring')
    return Math.round(hops / ((performance.now() - start) / 1000))
  }
  await lap(Math.max(1, Math.round(o.ringHops / 10)))
  const runs: number[] = []
  for (let r = 0; r < o.runs; r++) runs.push(await lap(o.ringHops))
  await Promise.all(members.map((m) => m.stop()))
  return { part: 'ring', messages: o.ringHops, messagesPerSecond: median(runs), runs }
}

export async function runActorsBench(o: ActorsBenchOptions, log: (line: string) => void = () => {}): Promise<ActorsBenchResult> {
  const threads = o.threads ?? Math.max(1, Math.floor(availableParallelism() / o.agents))
  const load0 = loadavg()[0]!
  let spawn: ActorsBenchResult['spawn']
  if (o.spawn > 0) {
    const runs: SpawnRow[] = []
    for (let r = 0; r < o.runs; r++) {
      const row = await spawnRun(o, threads)
      log(`spawn run ${r + 1}: ${row.actors} actors in ${row.seconds.toFixed(2)} s, ${row.driverBytesPerActor.toFixed(0)} B per actor`)
      runs.push(row)
    }
    const mid = [...runs].sort((x, y) => x.seconds - y.seconds)[runs.length >> 1]!
    spawn = { ...mid, runs }
  }
  const rates: RateRow[] = []
  if (o.messages > 0 || o.ringSize > 0) {
    await using cluster = await Cluster.start({ tasks: BENCH_TASKS, localAgents: o.agents, threads, localTransport: o.localTransport })
    const nodes = cluster
      .nodes()
      .map((n) => n.id)
      .sort()
    const [first, second] = nodes
    if (o.messages > 0) {
      rates.push(await pingPong(cluster, 'ping-pong same node', [first!, first!], o))
      log(`same node: ${rates.at(-1)!.messagesPerSecond} msg/s`)
      if (second !== undefined) {
        rates.push(await pingPong(cluster, 'ping-pong cross node', [first!, second], o))
        log(`cross node: ${rates.at(-1)!.messagesPerSecond} msg/s`)
      }
    }
    if (o.ringSize > 0) {
      rates.push(await ring(cluster, nodes, o))
      log(`ring: ${rates.at(-1)!.messagesPerSecond} hops/s`)
    }
  }
  return {
    agents: o.agents,
    threads,
    localTransport: o.localTransport ?? CLUSTER_DEFAULTS.localTransport,
    machine: `${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${availableParallelism()} cores`,
    load: [load0, loadavg()[0]!],
    spawn,
    rates,
    goals: GOALS,
    reference: REFERENCE,
  }
}

/** The result as Markdown: our figures with their goals, then the published ones. */
export function actorsMarkdown(r: ActorsBenchResult): string {
  const fmt = (x: number) => Math.round(x).toLocaleString('en-US')
  const lines = [
    `actors — ${r.agents} local agent(s) × ${r.threads} threads, reaching the driver by ${r.localTransport}; medians`,
    `Machine: ${r.machine}; load ${r.load[0].toFixed(2)} before, ${r.load[1].toFixed(2)} after`,
    '',
    '| part | size | figure | goal |',
    '| --- | ---: | ---: | --- |',
  ]
  if (r.spawn) {
    const s = r.spawn
    lines.push(`| spawn | ${fmt(s.actors)} actors | ${fmt(s.actorsPerSecond)} actors/s (${s.seconds.toFixed(2)} s) | ≤ ${r.goals.spawnSeconds} s for 100,000 |`)
    lines.push(`| driver bytes per actor | ${fmt(s.actors)} actors | ${s.driverBytesPerActor.toFixed(1)} B | ≤ ${r.goals.driverBytesPerActor} B |`)
  }
  for (const row of r.rates) {
    const goal =
      row.part === 'ping-pong same node' ? `≥ ${fmt(r.goals.sameNode)}/s` : row.part === 'ping-pong cross node' ? `≥ ${fmt(r.goals.crossNode)}/s` : '—'
    const unit = row.part === 'ring' ? 'hops' : 'msg'
    lines.push(`| ${row.part} | ${fmt(row.messages)} ${unit} | ${fmt(row.messagesPerSecond)} ${unit}/s | ${goal} |`)
  }
  lines.push('', 'Published figures (their hardware and shapes):', ...r.reference.map((x) => `  ${x.source}: ${x.figure}`))
  return lines.join('\n')
}
