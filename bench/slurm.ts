/**
 * Figures for agents Slurm starts, on the Slurm lab of the tests (slurmctld,
 * munged and one slurmd per network namespace: test/slurm.ts), so it needs
 * root, slurm-wlm and munge, and a source checkout:
 *
 *     npm run build && node dist/bench/slurm.js [repetitions]
 *
 * 1. `cluster up --slurm 4`, `repetitions` times (default 3): from the start
 *    of the command to the job RUNNING in squeue (Slurm's scheduling and
 *    launch of the batch script), from RUNNING to all four agents registered
 *    (srun starting them, Node.js and the tasks module loading, the CURVE
 *    handshake), and until the command returned. squeue and the agents'
 *    status files are polled every 25 ms, so each time is within ~25 ms.
 * 2. Recovery after `scancel` of one node's job: three agents in one job and
 *    a fourth in a second job serve a driver (this process) streaming tasks
 *    of 20 ms; the second job is cancelled, once with plain `scancel` and
 *    once with `scancel --signal=KILL` (whether the driver saw the agent
 *    leave or found it lost is part of the report: in the lab both ended in
 *    a clean leave, see docs/benchmarks.md).
 *    Reported: scancel → the driver saw the node go, the tasks it requeued,
 *    and from then until every task outstanding at that moment (the requeued
 *    ones among them) had its result on the other nodes — the stream stops
 *    taking new tasks at the loss, so that is the time to finish them.
 */
import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Cluster } from '../lib/index.js'
import { CLI, freePort } from '../test/helpers.js'
import { createSlurmLab, type SlurmLab } from '../test/slurm.js'

const run = promisify(execFile)
const reps = Number(process.argv[2] ?? 3)
if (!Number.isSafeInteger(reps) || reps < 1) throw new Error(`repetitions must be a positive integer, got ${process.argv[2]}`)

const TASKS = `
const pause = new Int32Array(new SharedArrayBuffer(4))
export function slow(i, ms) {
  Atomics.wait(pause, 0, 0, ms)
  return [i, process.env.SLURMD_NODENAME ?? '']
}
`
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function until<T>(what: string, ms: number, check: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await check()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(25)
  }
}

function cli(lab: SlurmLab, cwd: string, args: string[]): Promise<string> {
  return run(process.execPath, [CLI, ...args], { cwd, env: lab.env, timeout: 180_000 }).then((r) => r.stdout)
}

async function jobState(lab: SlurmLab, jobId: string): Promise<string> {
  return (await lab.slurm('squeue', ['-h', '-j', jobId, '-o', '%T']).catch(() => ({ stdout: '' }))).stdout.trim()
}

/** Agents of the job whose status files say a driver welcomed them. */
function ready(dir: string): number {
  if (!existsSync(dir)) return 0
  let n = 0
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.json')) continue
    try {
      if ((JSON.parse(readFileSync(join(dir, f), 'utf8')) as { state?: string }).state === 'ready') n++
    } catch {
      // being rewritten
    }
  }
  return n
}

const lab = await createSlurmLab(4)
const out: Record<string, unknown> = {}
try {
  const dir = join(lab.dir, 'bench')
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'tasks.mjs'), TASKS)
  const listen = `tcp://${lab.head}:${await freePort()}`
  const settings = { heartbeatMs: 500, nodeTimeoutMs: 3000 }
  await writeFile(
    join(dir, 'cluster.config.mjs'),
    `export default ${JSON.stringify({ name: 'bench', tasks: './tasks.mjs', listen, curve: { dir: './keys' }, localAgents: 0, ...settings })}\n`,
  )
  await cli(lab, dir, ['keys', '--out', 'keys'])
  const jobs = join(dir, '.actor-cluster', 'bench-slurm')

  // 1. up --slurm 4: scheduling vs agent start.
  const ups: { toRunningMs: number; runningToRegisteredMs: number; commandMs: number }[] = []
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now()
    let jobId: string | undefined
    let running: number | undefined
    let registered: number | undefined
    let done = false
    const up = cli(lab, dir, ['up', '--slurm', '4', '--wait', '120', '--json']).finally(() => (done = true))
    const commandMs = up.then(() => performance.now() - t0)
    while (!done || registered === undefined) {
      // One job in the queue at a time here: the one this up submitted.
      const q = (await lab.slurm('squeue', ['-h', '-o', '%i %T'])).stdout.trim().split('\n')[0]
      if (q) {
        const [id, state] = q.split(' ')
        jobId = id
        if (state === 'RUNNING' && running === undefined) running = performance.now()
      }
      if (jobId !== undefined && registered === undefined && ready(join(jobs, `job-${jobId}`)) >= 4) registered = performance.now()
      if (done && registered === undefined) break
      await sleep(25)
    }
    const res = JSON.parse(await up) as { slurm: { state: string } }
    if (res.slurm.state !== 'up' || running === undefined || registered === undefined) throw new Error(`up --slurm 4 did not come up: ${JSON.stringify(res)}`)
    ups.push({ toRunningMs: Math.round(running - t0), runningToRegisteredMs: Math.round(registered - running), commandMs: Math.round(await commandMs) })
    await cli(lab, dir, ['down'])
    await until('the lab nodes to be idle again', 60_000, async () =>
      (await lab.slurm('sinfo', ['-h', '-o', '%t'])).stdout.trim() === 'idle' ? true : undefined,
    )
  }
  out['up --slurm 4'] = ups

  // 2. Recovery after scancel of one node's job.
  const first = JSON.parse(await cli(lab, dir, ['up', '--slurm', '3', '--wait', '120', '--json'])) as { slurm: { jobId: string } }
  const driver = await Cluster.start({
    config: {},
    listen,
    localAgents: 0,
    curve: { dir: join(dir, 'keys') },
    waitForNodes: 3,
    logLevel: 'silent',
    ...settings,
  })
  const recoveries: Record<string, unknown>[] = []
  try {
    for (const signal of ['TERM', 'KILL'] as const) {
      const extra = JSON.parse(await cli(lab, dir, ['up', '--slurm', '1', '--wait', '120', '--json'])) as { slurm: { jobId: string; agents: { id: string }[] } }
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
  out['recovery after scancel of one node’s job (3 + 1 agents, 2 threads each, tasks of 20 ms)'] = recoveries
  out['first job'] = first.slurm.jobId
  await cli(lab, dir, ['down'])
} finally {
  await lab.close()
}
process.stdout.write(`${JSON.stringify(out, null, 2)}\n`)
