/**
 * Figures for agents Slurm starts, on the Slurm lab of the tests (slurmctld,
 * munged and one slurmd per network namespace: test/slurm.ts), so it needs
 * root, slurm-wlm and munge, a source checkout, and — for the seed section —
 * sshd, ssh and rsync for the SSH lab (test/netns.ts):
 *
 *     npm run build && node dist/bench/slurm.js [section…] [--reps N] [--pairs N] [--seed-runs N] [--tasks N]
 *
 * Sections (default: all three, in this order): `up`, `recovery`, `seed`;
 * `node dist/bench/slurm.js seed` runs the seed comparison alone. Every lab
 * made is torn down (jobs, agents, namespaces) also when a step fails or the
 * run is interrupted (SIGINT, SIGTERM). JSON on stdout, a summary on stderr.
 *
 * 1. `up`: `cluster up --slurm 4`, `--reps` times (default 3): from the start
 *    of the command to the job RUNNING in squeue (Slurm's scheduling and
 *    launch of the batch script), from RUNNING to all four agents registered
 *    (srun starting them, Node.js and the tasks module loading, the CURVE
 *    handshake: the last agent's "joined the driver" log line, from the
 *    job's output), and until the command returned. squeue is polled every
 *    25 ms, so RUNNING is seen within 25 ms plus the time squeue takes.
 * 2. `recovery`: after `scancel` of one node's job: three agents in one job
 *    and a fourth in a second job serve a driver (this process) streaming
 *    tasks of 20 ms; the second job is cancelled, once with plain `scancel`
 *    and once with `scancel --signal=KILL` (whether the driver saw the agent
 *    leave or found it lost is part of the report: in the lab both ended in
 *    a clean leave, see docs/benchmarks.md).
 *    Reported: scancel → the driver saw the node go, the tasks it requeued,
 *    and from then until every task outstanding at that moment (the requeued
 *    ones among them) had its result on the other nodes — the stream stops
 *    taking new tasks at the loss, so that is the time to finish them.
 * 3. `seed`: the seed benchmark (bench/seed.ts: `--tasks` tasks `(1, k)`,
 *    default 100,000, one `cluster.call` each, the driver checks count and
 *    sum) through 4 agents of 2 threads started by `cluster up --slurm 4`
 *    against 4 started by `cluster up --nodes hosts.txt` over SSH. The two
 *    labs cannot exist at once, so each measurement makes its lab, brings the
 *    agents up, runs one unmeasured warm-up and `--seed-runs` runs (default
 *    8), and tears it all down. `--pairs` pairs (default 4), in the order
 *    Slurm, SSH, SSH, Slurm, … (each pair reverses the last, so a drift of
 *    the machine's load, and the first measurement's cold start, weigh on
 *    both alike). The driver is this process either way, bound on the lab's
 *    bridge: the Slurm lab's bridge is in this namespace; the SSH lab's is in
 *    a namespace of its own, so it gets a veth pair to this one (10.77.0.2),
 *    one veth crossing more per frame than the Slurm lab's path. The agents
 *    are the same `cluster agent` on the same cores; what differs is what
 *    started them (slurmstepd under srun, or an SSH session).
 *    Reported: every run, the medians per launcher, the ratio Slurm / SSH of
 *    the median round trips (and per pair), and the load average before and
 *    after each measurement and the whole section.
 *    Measured (2-core AMD EPYC, Node v20.20.2, load average ~4 from other
 *    work): Slurm 0.189 s, SSH 0.192 s (medians of 32 runs each), ratio
 *    0.98, per pair 1.13, 0.87, 1.07, 0.82; two more invocations at load 5
 *    to 12 gave 0.91 and 0.77: no cost of Slurm's launch beyond the noise
 *    (docs/benchmarks.md, "Slurm").
 */
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs, promisify } from 'node:util'
import { Cluster, InvalidArgumentError } from '../lib/index.js'
import { CLI, freePort } from '../test/helpers.js'
import { createLab } from '../test/netns.js'
import { createSlurmLab, type SlurmLab } from '../test/slurm.js'
import { BENCH_TASKS, seedRuns, type SeedRun } from './seed.js'
import { median } from './stats.js'

const run = promisify(execFile)

export const SECTIONS = ['up', 'recovery', 'seed'] as const
export type Section = (typeof SECTIONS)[number]

export interface SlurmBenchArgs {
  /** In the order of {@link SECTIONS}, whatever the order given. */
  readonly sections: readonly Section[]
  /** Repetitions of `cluster up --slurm 4` (section `up`). */
  readonly reps: number
  /** Pairs of seed measurements, one on each lab (section `seed`). */
  readonly pairs: number
  /** Measured seed runs per measurement. */
  readonly seedRuns: number
  /** Tasks per seed run. */
  readonly tasks: number
}

const ARG_DEFAULTS = { reps: 3, pairs: 4, seedRuns: 8, tasks: 100_000 } as const

/** The command line of this benchmark (without node and the script): sections as words, sizes as flags. */
export function parseSlurmBenchArgs(argv: readonly string[]): SlurmBenchArgs {
  let parsed
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: { reps: { type: 'string' }, pairs: { type: 'string' }, 'seed-runs': { type: 'string' }, tasks: { type: 'string' } },
    })
  } catch (err) {
    throw new InvalidArgumentError(`${(err as Error).message} (usage: [${SECTIONS.join('|')}]… [--reps N] [--pairs N] [--seed-runs N] [--tasks N])`, {
      cause: err,
    })
  }
  for (const p of parsed.positionals) {
    if (!(SECTIONS as readonly string[]).includes(p))
      throw new InvalidArgumentError(`unknown section ${JSON.stringify(p)}: the sections are ${SECTIONS.join(', ')}`)
  }
  const count = (flag: string, text: string | undefined, fallback: number): number => {
    if (text === undefined) return fallback
    const n = /^\d+$/.test(text) ? Number(text) : NaN
    if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`--${flag} must be a positive integer, got ${JSON.stringify(text)}`)
    return n
  }
  const v = parsed.values
  return {
    sections: parsed.positionals.length === 0 ? SECTIONS : SECTIONS.filter((s) => parsed.positionals.includes(s)),
    reps: count('reps', v.reps, ARG_DEFAULTS.reps),
    pairs: count('pairs', v.pairs, ARG_DEFAULTS.pairs),
    seedRuns: count('seed-runs', v['seed-runs'], ARG_DEFAULTS.seedRuns),
    tasks: count('tasks', v.tasks, ARG_DEFAULTS.tasks),
  }
}

const SLOW_TASKS = `
const pause = new Int32Array(new SharedArrayBuffer(4))
export function slow(i, ms) {
  Atomics.wait(pause, 0, 0, ms)
  return [i, process.env.SLURMD_NODENAME ?? '']
}
`
/** Agents and driver of every section: heartbeats as in the Slurm tests. */
const SETTINGS = { heartbeatMs: 500, nodeTimeoutMs: 3000 }
/** Agents and threads per agent of the seed comparison (the lab's nodes have 2 CPUs each). */
const SEED_AGENTS = 4
const SEED_THREADS = 2
/** This namespace's address on the SSH lab's bridge (the lab's head namespace has .1, its hosts .11 on). */
const HERE_ON_SSH_LAB = '10.77.0.2'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const log = (line: string) => process.stderr.write(`${line}\n`)
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')

/** What to tear down if the run is interrupted; each lab is registered while it exists. */
const teardowns = new Set<() => Promise<void>>()
async function withTeardown<T>(close: () => Promise<void>, body: () => Promise<T>): Promise<T> {
  teardowns.add(close)
  try {
    return await body()
  } finally {
    teardowns.delete(close)
    await close()
  }
}

async function until<T>(what: string, ms: number, check: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await check()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(25)
  }
}

function cli(env: NodeJS.ProcessEnv, cwd: string, args: string[]): Promise<string> {
  return run(process.execPath, [CLI, ...args], { cwd, env, timeout: 180_000 }).then((r) => r.stdout)
}

/** A project directory in the lab's (shared) directory: config, CURVE keys made by `cluster keys`. */
async function project(dir: string, env: NodeJS.ProcessEnv, config: Record<string, unknown>): Promise<string> {
  await mkdir(dir, { recursive: true })
  await writeFile(
    join(dir, 'cluster.config.mjs'),
    `export default ${JSON.stringify({ name: 'bench', curve: { dir: './keys' }, localAgents: 0, ...SETTINGS, ...config })}\n`,
  )
  await cli(env, dir, ['keys', '--out', 'keys'])
  return dir
}

/** A driver in this process for the agents a `cluster up` of the project at `dir` started. */
function driverFor(dir: string, listen: string, waitForNodes: number): Promise<Cluster> {
  return Cluster.start({ config: {}, listen, localAgents: 0, curve: { dir: join(dir, 'keys') }, waitForNodes, logLevel: 'silent', ...SETTINGS })
}

async function jobState(lab: SlurmLab, jobId: string): Promise<string> {
  return (await lab.slurm('squeue', ['-h', '-j', jobId, '-o', '%T']).catch(() => ({ stdout: '' }))).stdout.trim()
}

/**
 * When the `count`-th agent of a job's output (the agents' log lines, pino
 * JSON) first joined a driver: the latest of each agent's first "joined the
 * driver" line, in ms since the epoch; undefined while fewer have.
 */
export function registeredAt(output: string, count: number): number | undefined {
  const first = new Map<string, number>()
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue
    let entry: { time?: unknown; msg?: unknown }
    try {
      entry = JSON.parse(line) as typeof entry
    } catch {
      continue
    }
    const m = typeof entry.msg === 'string' ? /^(\S+): joined the driver at /.exec(entry.msg) : null
    if (m && typeof entry.time === 'number' && !first.has(m[1]!)) first.set(m[1]!, entry.time)
  }
  return first.size >= count ? Math.max(...first.values()) : undefined
}

interface UpTimes {
  toRunningMs: number
  runningToRegisteredMs: number
  commandMs: number
}

/**
 * Section `up`: `cluster up --slurm 4` `reps` times, each brought down again.
 * RUNNING is when squeue first showed it (polled); registered is read from
 * the agents' own log lines in the job's output (their clock is this
 * machine's), not from their status files: `up` returns as soon as they
 * are all registered and closes its head, after which the files no longer
 * say so — a poll can miss that moment on a loaded machine.
 */
async function upSection(lab: SlurmLab, dir: string, reps: number): Promise<UpTimes[]> {
  const jobs = join(dir, '.actor-cluster', 'bench-slurm')
  const ups: UpTimes[] = []
  for (let r = 0; r < reps; r++) {
    const t0 = Date.now()
    let running: number | undefined
    let done = false
    const up = cli(lab.env, dir, ['up', '--slurm', '4', '--wait', '120', '--json']).finally(() => (done = true))
    const commandMs = up.then(() => Date.now() - t0)
    while (!done && running === undefined) {
      // One job in the queue at a time here: the one this up submitted.
      const q = (await lab.slurm('squeue', ['-h', '-o', '%T'])).stdout.trim().split('\n')[0]
      if (q === 'RUNNING') running = Date.now()
      else await sleep(25)
    }
    const res = JSON.parse(await up) as { slurm: { state: string; jobId: string } }
    if (res.slurm.state !== 'up' || running === undefined)
      throw new Error(`up --slurm 4 did not come up (or squeue never showed it RUNNING): ${JSON.stringify(res)}`)
    const output = join(jobs, `job-${res.slurm.jobId}.out`)
    // srun forwards the agents' output to the file: it may trail the command by a moment.
    const registered = await until(`four "joined the driver" lines in ${output}`, 10_000, () => {
      let text = ''
      try {
        text = readFileSync(output, 'utf8')
      } catch {
        // not written yet
      }
      return registeredAt(text, 4)
    })
    ups.push({ toRunningMs: running - t0, runningToRegisteredMs: registered - running, commandMs: await commandMs })
    await cli(lab.env, dir, ['down'])
    await until('the lab nodes to be idle again', 60_000, async () =>
      (await lab.slurm('sinfo', ['-h', '-o', '%t'])).stdout.trim() === 'idle' ? true : undefined,
    )
  }
  return ups
}

/** Section `recovery`: scancel of the job of one of 3 + 1 agents, plain and with SIGKILL. */
async function recoverySection(lab: SlurmLab, dir: string, listen: string): Promise<Record<string, unknown>> {
  const first = JSON.parse(await cli(lab.env, dir, ['up', '--slurm', '3', '--wait', '120', '--json'])) as { slurm: { jobId: string } }
  const driver = await driverFor(dir, listen, 3)
  const recoveries: Record<string, unknown>[] = []
  try {
    for (const signal of ['TERM', 'KILL'] as const) {
      const extra = JSON.parse(await cli(lab.env, dir, ['up', '--slurm', '1', '--wait', '120', '--json'])) as {
        slurm: { jobId: string; agents: { id: string }[] }
      }
      const id = extra.slurm.agents[0]!.id
      await until(`agent ${id} to join the driver`, 30_000, () => (driver.nodes().some((n) => n.id === id) ? true : undefined))
      let taking = true
      let submitted = 0
      const answered = new Set<number>()
      const byNode = new Map<string, number>()
      async function* inputs() {
        while (taking) yield [submitted++, 20]
      }
      const stream = (async () => {
        for await (const [i, node] of driver.map<[number, string]>('slow', inputs(), { ordered: false, concurrency: 400 })) {
          answered.add(i)
          byNode.set(node, (byNode.get(node) ?? 0) + 1)
        }
      })()
      const node = id.replace(/^slurm-\d+-/, '')
      await until(`${node} to run 100 tasks`, 30_000, () => ((byNode.get(node) ?? 0) >= 100 ? true : undefined))
      const requeuedBefore = driver.stats().requeued
      const gone = new Promise<{ at: number; how: string }>((resolve) => {
        const left = (n: { id: string }) => n.id === id && resolve({ at: performance.now(), how: 'left' })
        const lost = (n: { id: string }) => n.id === id && resolve({ at: performance.now(), how: 'lost' })
        driver.on('node:left', left)
        driver.on('node:lost', lost)
      })
      const t0 = performance.now()
      await lab.slurm('scancel', signal === 'KILL' ? ['--signal=KILL', extra.slurm.jobId] : [extra.slurm.jobId])
      const seen = await gone
      taking = false
      const outstanding = submitted - answered.size
      const requeued = driver.stats().requeued - requeuedBefore
      await stream
      const finished = performance.now()
      recoveries.push({
        scancel: signal === 'KILL' ? 'scancel --signal=KILL' : 'scancel',
        driverSaw: seen.how,
        scancelToDetectedMs: Math.round(seen.at - t0),
        requeued,
        outstandingAtDetection: outstanding,
        detectedToAllFinishedMs: Math.round(finished - seen.at),
        exactlyOnce: answered.size === submitted,
      })
      await until(`job ${extra.slurm.jobId} to leave the queue`, 60_000, async () => ((await jobState(lab, extra.slurm.jobId)) === '' ? true : undefined))
    }
  } finally {
    await driver.close()
  }
  await cli(lab.env, dir, ['down'])
  return { firstJob: first.slurm.jobId, runs: recoveries }
}

type Launcher = 'slurm' | 'ssh'

interface SeedMeasurement {
  launcher: Launcher
  pair: number
  /** `cluster up` until it returned with every agent registered. */
  upMs: number
  /** Threads of each agent, as the driver saw them. */
  threads: number[]
  loadBefore: string
  loadAfter: string
  runs: SeedRun[]
}

/**
 * Brings `SEED_AGENTS` agents up with `up` (a `cluster up` in the project at
 * `dir`), runs the seed benchmark through them from a driver in this process,
 * and brings them down, also when a run fails.
 */
async function measureSeed(launcher: Launcher, pair: number, env: NodeJS.ProcessEnv, dir: string, listen: string, up: string[], a: SlurmBenchArgs) {
  const loadBefore = load()
  const t0 = performance.now()
  try {
    await cli(env, dir, up)
    const upMs = Math.round(performance.now() - t0)
    await using driver = await driverFor(dir, listen, SEED_AGENTS)
    const threads = driver.nodes().map((n) => n.threads)
    if (threads.length !== SEED_AGENTS || threads.some((t) => t !== SEED_THREADS)) {
      throw new Error(`${launcher}: expected ${SEED_AGENTS} agents of ${SEED_THREADS} threads, the driver has ${JSON.stringify(threads)}`)
    }
    const runs = await seedRuns(driver, { tasks: a.tasks, runs: a.seedRuns, warmup: true, via: 'call' })
    if (!runs.every((r) => r.ok)) throw new Error(`${launcher}: a seed run got a wrong count or sum: ${JSON.stringify(runs)}`)
    const m: SeedMeasurement = { launcher, pair, upMs, threads, loadBefore, loadAfter: load(), runs }
    log(`  ${launcher.padEnd(5)} pair ${pair}: ${runs.map((r) => `${r.roundTripSeconds.toFixed(3)} s`).join(', ')} (load ${loadBefore} → ${m.loadAfter})`)
    return m
  } finally {
    await cli(env, dir, ['down']).catch((err: unknown) => log(`  ${launcher}: cluster down failed (the lab's teardown follows): ${(err as Error).message}`))
  }
}

async function seedOnSlurm(pair: number, a: SlurmBenchArgs): Promise<SeedMeasurement> {
  const lab = await createSlurmLab(SEED_AGENTS)
  return withTeardown(
    () => lab.close(),
    async () => {
      const listen = `tcp://${lab.head}:${await freePort()}`
      const dir = await project(join(lab.dir, 'seed'), lab.env, { tasks: fileURLToPath(BENCH_TASKS), listen })
      return measureSeed('slurm', pair, lab.env, dir, listen, ['up', '--slurm', String(SEED_AGENTS), '--wait', '120'], a)
    },
  )
}

async function seedOnSsh(pair: number, a: SlurmBenchArgs): Promise<SeedMeasurement> {
  const lab = await createLab(SEED_AGENTS)
  return withTeardown(
    () => lab.close(),
    async () => {
      await lab.attachHere(HERE_ON_SSH_LAB)
      const listen = `tcp://${HERE_ON_SSH_LAB}:${await freePort()}`
      const dir = await project(join(lab.dir, 'seed'), process.env, {
        tasks: fileURLToPath(BENCH_TASKS),
        listen,
        registerTimeoutS: 20,
        stopTimeoutS: 5,
        ssh: { configFile: lab.sshConfig, identity: lab.key, connectTimeoutS: 2 },
        remote: { node: process.execPath, cli: CLI, runDir: join(lab.dir, 'run') },
      })
      await writeFile(join(dir, 'hosts.txt'), lab.hosts.map((h) => `${h.address} threads=${SEED_THREADS}\n`).join(''))
      return measureSeed('ssh', pair, process.env, dir, listen, ['up', '--nodes', 'hosts.txt', '--no-sync'], a)
    },
  )
}

/** Section `seed`: Slurm-started against SSH-started agents, alternating labs in pairs (ABBA…). */
async function seedSection(a: SlurmBenchArgs): Promise<Record<string, unknown>> {
  const loadBefore = load()
  const measurements: SeedMeasurement[] = []
  for (let pair = 1; pair <= a.pairs; pair++) {
    const order: Launcher[] = pair % 2 === 1 ? ['slurm', 'ssh'] : ['ssh', 'slurm']
    for (const l of order) measurements.push(await (l === 'slurm' ? seedOnSlurm : seedOnSsh)(pair, a))
  }
  const roundTrips = (l: Launcher, pair?: number) =>
    measurements.filter((m) => m.launcher === l && (pair === undefined || m.pair === pair)).flatMap((m) => m.runs.map((r) => r.roundTripSeconds))
  const summary = (l: Launcher) => {
    const s = median(roundTrips(l))
    return { medianRoundTripSeconds: s, medianTasksPerSecond: Math.round(a.tasks / s), runs: roundTrips(l).length }
  }
  const slurm = summary('slurm')
  const ssh = summary('ssh')
  const ratio = slurm.medianRoundTripSeconds / ssh.medianRoundTripSeconds
  const perPair = Array.from({ length: a.pairs }, (_, i) => median(roundTrips('slurm', i + 1)) / median(roundTrips('ssh', i + 1)))
  log(
    `seed: slurm median ${slurm.medianRoundTripSeconds.toFixed(3)} s (${slurm.medianTasksPerSecond} tasks/s), ssh ${ssh.medianRoundTripSeconds.toFixed(3)} s ` +
      `(${ssh.medianTasksPerSecond} tasks/s), ratio slurm/ssh ${ratio.toFixed(3)} (per pair ${perPair.map((r) => r.toFixed(3)).join(', ')})`,
  )
  return {
    tasks: a.tasks,
    agents: SEED_AGENTS,
    threadsPerAgent: SEED_THREADS,
    runsPerMeasurement: a.seedRuns,
    slurm,
    ssh,
    ratioSlurmOverSsh: Number(ratio.toFixed(4)),
    ratioPerPair: perPair.map((r) => Number(r.toFixed(4))),
    loadBefore,
    loadAfter: load(),
    measurements,
  }
}

async function main(): Promise<void> {
  const a = parseSlurmBenchArgs(process.argv.slice(2))
  const out: Record<string, unknown> = { sections: a.sections, loadBefore: load() }
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log(`bench:slurm: ${signal}: tearing the lab down`)
      void Promise.allSettled([...teardowns].map((close) => close())).then(() => process.exit(130))
    })
  }
  if (a.sections.includes('up') || a.sections.includes('recovery')) {
    const lab = await createSlurmLab(4)
    await withTeardown(
      () => lab.close(),
      async () => {
        const listen = `tcp://${lab.head}:${await freePort()}`
        const dir = await project(join(lab.dir, 'bench'), lab.env, { tasks: './tasks.mjs', listen })
        await writeFile(join(dir, 'tasks.mjs'), SLOW_TASKS)
        if (a.sections.includes('up')) out['up --slurm 4'] = await upSection(lab, dir, a.reps)
        if (a.sections.includes('recovery')) {
          out['recovery after scancel of one node’s job (3 + 1 agents, 2 threads each, tasks of 20 ms)'] = await recoverySection(lab, dir, listen)
        }
      },
    )
  }
  if (a.sections.includes('seed')) out['seed: 4 agents started by Slurm vs by SSH'] = await seedSection(a)
  out['loadAfter'] = load()
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`)
}

if (process.argv[1] && import.meta.url === new URL(process.argv[1], 'file://').href) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench:slurm: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  })
}
