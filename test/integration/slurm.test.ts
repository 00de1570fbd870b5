/**
 * actor-cluster on a real Slurm: slurmctld, munged and one slurmd per node,
 * each node a network namespace (test/slurm.ts). Skipped with the reason where
 * Slurm is not installed, unless REQUIRE_SLURM=1, where that is a failure.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createSlurmLab, slurmUnavailable, type SlurmLab } from '../slurm.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { CLI, freePort, within } from '../helpers.js'

const unavailable = await slurmUnavailable()
if (unavailable && process.env['REQUIRE_SLURM'] === '1') {
  test('Slurm is available (REQUIRE_SLURM=1)', () => assert.fail(unavailable))
}
const skip = unavailable ? `no Slurm here: ${unavailable}` : false

const LIB = new URL('../../lib/index.js', import.meta.url).href
const TASKS = 20_000

const TASKS_MODULE = `
import { existsSync } from 'node:fs'
export function square(i) { return [i, i * i, process.pid] }
const pause = new Int32Array(new SharedArrayBuffer(4))
/**
 * Holds its thread for ms milliseconds, and for as long as the file
 * \${hold}-<its node> exists; answers with the Slurm node it ran on.
 */
export function slow(i, ms, hold) {
  Atomics.wait(pause, 0, 0, ms)
  const node = process.env.SLURMD_NODENAME ?? ''
  if (hold) while (existsSync(hold + '-' + node)) Atomics.wait(pause, 0, 0, 20)
  return [i, i * i, node]
}
`

/** Cluster.start() under `cluster run` in a Slurm job: it returns with every agent registered. */
const DRIVER = `
import { Cluster } from ${JSON.stringify(LIB)}
const [tasks] = process.argv.slice(2).map(Number)
const cluster = await Cluster.start()
const nodes = cluster.nodes().map((n) => ({ id: n.id, threads: n.threads }))
console.log('nodes ' + JSON.stringify(nodes))
const seen = new Uint8Array(tasks)
let wrong = 0
const pids = new Set()
for await (const [i, sq, pid] of cluster.map('square', (function* () { for (let i = 0; i < tasks; i++) yield [i] })(), { ordered: false })) {
  seen[i]++
  if (sq !== i * i) wrong++
  pids.add(pid)
}
console.log('result ' + JSON.stringify({ exactlyOnce: seen.every((c) => c === 1), wrong, agents: pids.size }))
await cluster.close()
`

/** A project on the shared filesystem (the lab's directory): config, tasks, driver, batch script. */
async function project(lab: SlurmLab, nodes: number): Promise<string> {
  const dir = join(lab.dir, 'project')
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'tasks.mjs'), TASKS_MODULE)
  await writeFile(join(dir, 'driver.mjs'), DRIVER)
  await writeFile(join(dir, 'cluster.config.mjs'), `export default { tasks: './tasks.mjs', heartbeatMs: 500, nodeTimeoutMs: 3000 }\n`)
  await writeFile(
    join(dir, 'job.sbatch'),
    [
      '#!/bin/sh',
      `#SBATCH --nodes=${nodes}`,
      `#SBATCH --output=${join(dir, 'job.out')}`,
      `#SBATCH --chdir=${dir}`,
      `exec ${process.execPath} ${CLI} run driver.mjs -- ${TASKS}`,
      '',
    ].join('\n'),
  )
  return dir
}

/** Processes whose command line holds `needle` (an agent of this test's project). */
async function processesWith(needle: string): Promise<string[]> {
  const found: string[] = []
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
    if (cmd.includes(needle)) found.push(`${pid}: ${cmd.replace(/\0/g, ' ')}`)
  }
  return found
}

/** Polls `scontrol show job` until the job leaves squeue; returns the last state seen. */
async function waitForJobEnd(lab: SlurmLab, jobId: string, ms: number): Promise<string> {
  const end = Date.now() + ms
  let state = 'UNKNOWN'
  for (;;) {
    const { stdout } = await lab.slurm('squeue', ['-h', '-j', jobId, '-o', '%T']).catch(() => ({ stdout: '' }))
    const show = await lab.slurm('scontrol', ['show', 'job', jobId]).catch(() => ({ stdout: '' }))
    state = /JobState=(\S+)/.exec(show.stdout)?.[1] ?? state
    if (stdout.trim() === '') return state
    if (Date.now() > end) throw new Error(`job ${jobId} still in squeue (${stdout.trim()}) after ${ms} ms`)
    await new Promise((r) => setTimeout(r, 300))
  }
}

test(
  'an sbatch job of 3 nodes runs 20,000 tasks through cluster run: one agent per node, each result once, nothing left',
  { skip, timeout: 240_000 },
  async (t) => {
    const lab = await createSlurmLab(3)
    t.after(() => lab.close())
    const dir = await project(lab, 3)
    const { stdout } = await lab.slurm('sbatch', ['--parsable', join(dir, 'job.sbatch')])
    const jobId = stdout.trim().split(';')[0]!
    assert.match(jobId, /^\d+$/)
    const state = await waitForJobEnd(lab, jobId, 180_000)
    const out = await readFile(join(dir, 'job.out'), 'utf8').catch(() => '(no job output)')
    if (process.env['SLURM_TRACE']) process.stderr.write(out)
    assert.equal(state, 'COMPLETED', out)
    const nodes = JSON.parse(/^nodes (.*)$/m.exec(out)?.[1] ?? 'null') as { id: string; threads: number }[] | null
    assert.ok(nodes, out)
    assert.equal(nodes.length, 3, out)
    // SLURM_CPUS_ON_NODE: the lab's nodes have 2 CPUs each.
    assert.deepEqual(
      nodes.map((n) => n.threads),
      [2, 2, 2],
      out,
    )
    const result = JSON.parse(/^result (.*)$/m.exec(out)?.[1] ?? 'null') as { exactlyOnce: boolean; wrong: number; agents: number } | null
    assert.deepEqual(result, { exactlyOnce: true, wrong: 0, agents: 3 }, out)
    assert.deepEqual((await lab.slurm('squeue', ['-h'])).stdout.trim(), '')
    assert.deepEqual(await processesWith(join(dir, 'cluster.config.mjs')), [])
    // The job's keys went with it.
    assert.deepEqual(await readdir(join(dir, '.actor-cluster')).catch(() => []), [])
  },
)

/** Runs the `cluster` CLI on the host side with the lab's Slurm config; resolves with its exit code and output (killed after 150 s). */
async function cli(lab: SlurmLab, cwd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...lab.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], timeout: 150_000 })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    child.on('close', (code) => resolve({ code: code ?? 1, out }))
  })
}

/** A project for cluster up --slurm: the head on the host side of the bridge, CURVE keys from cluster keys. */
async function upProject(lab: SlurmLab): Promise<string> {
  const dir = join(lab.dir, 'up-project')
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'tasks.mjs'), TASKS_MODULE)
  await writeFile(join(dir, 'driver.mjs'), DRIVER)
  const port = await freePort()
  await writeFile(
    join(dir, 'cluster.config.mjs'),
    `export default ${JSON.stringify({ name: 'slurmlab', tasks: './tasks.mjs', listen: `tcp://${lab.head}:${port}`, curve: { dir: './keys' }, localAgents: 0, heartbeatMs: 500, nodeTimeoutMs: 3000 })}\n`,
  )
  const keys = await cli(lab, dir, ['keys', '--out', 'keys'])
  assert.equal(keys.code, 0, keys.out)
  return dir
}

test('cluster up --slurm 2 starts a job of two agents, a driver gets both, status shows the job, down cancels it', { skip, timeout: 240_000 }, async (t) => {
  const lab = await createSlurmLab(3)
  t.after(() => lab.close())
  const dir = await upProject(lab)
  const up = await cli(lab, dir, ['up', '--slurm', '2', '--wait', '60', '--json'])
  assert.equal(up.code, 0, up.out)
  const r = (JSON.parse(up.out) as { slurm: { state: string; jobId: string; agents: { threads: number }[] } }).slurm
  assert.equal(r.state, 'up', up.out)
  assert.deepEqual(
    r.agents.map((a) => a.threads),
    [2, 2],
  )
  // The agents follow the config's heartbeat and give a silent driver up after its node timeout, as over SSH.
  const agents = (await processesWith(join(dir, 'tasks.mjs'))).filter((p) => p.includes(`: ${process.execPath} `))
  assert.equal(agents.length, 2, agents.join('\n'))
  for (const p of agents) assert.match(p, / --heartbeat-ms 500 --driver-timeout-ms 3000 /)
  const status = await cli(lab, dir, ['status'])
  assert.equal(status.code, 0, status.out)
  assert.match(status.out, new RegExp(`Slurm job ${r.jobId}, 2 nodes: RUNNING`))
  // A driver on the head takes the agents the job started (and waits for both).
  const run = await cli(lab, dir, ['run', 'driver.mjs', '--', '2000'], { CLUSTER_WAIT_FOR_NODES: '2' })
  assert.equal(run.code, 0, run.out)
  assert.match(run.out, /^result \{"exactlyOnce":true,"wrong":0,"agents":2\}$/m)
  const down = await cli(lab, dir, ['down'])
  assert.equal(down.code, 0, down.out)
  assert.match(down.out, new RegExp(`cancelled Slurm job ${r.jobId}; it has left the queue`))
  assert.equal((await lab.slurm('squeue', ['-h'])).stdout.trim(), '')
  assert.deepEqual(await processesWith(join(dir, 'tasks.mjs')), [])
  const again = await cli(lab, dir, ['status'])
  assert.doesNotMatch(again.out, /Slurm job/)
})

test('cluster up --slurm with a partition Slurm does not know fails with its message before anything starts', { skip, timeout: 120_000 }, async (t) => {
  const lab = await createSlurmLab(1)
  t.after(() => lab.close())
  const dir = await upProject(lab)
  const up = await cli(lab, dir, ['up', '--slurm', '1', '--partition', 'nosuchpartition', '--wait', '30'])
  assert.notEqual(up.code, 0, up.out)
  assert.match(up.out, /sbatch refused the job: sbatch: error: .*invalid partition.*nosuchpartition/i)
  assert.equal((await lab.slurm('squeue', ['-h'])).stdout.trim(), '')
  assert.deepEqual(await processesWith(join(dir, 'tasks.mjs')), [])
  // Nothing recorded, nothing written for the job.
  assert.deepEqual(await readdir(join(dir, '.actor-cluster')).catch(() => []), [])
})

test(
  'cluster up --slurm for more nodes than can run reports the job pending with its reason instead of waiting forever',
  { skip, timeout: 120_000 },
  async (t) => {
    // Three nodes run a slurmd, a fourth is configured but never answers.
    const lab = await createSlurmLab(3, 1)
    t.after(() => lab.close())
    const dir = await upProject(lab)
    const started = Date.now()
    const up = await cli(lab, dir, ['up', '--slurm', '4', '--wait', '5'])
    assert.equal(up.code, 1, up.out)
    assert.ok(Date.now() - started < 60_000, `cluster up took ${Date.now() - started} ms`)
    assert.match(up.out, /Slurm job \d+ is still pending after 5 s \(reason: [^)]+\)/)
    const status = await cli(lab, dir, ['status'])
    assert.match(status.out, /PENDING \(reason: [^)]+\)/)
    const down = await cli(lab, dir, ['down'])
    assert.equal(down.code, 0, down.out)
    assert.match(down.out, /cancelled Slurm job \d+/)
    assert.equal((await lab.slurm('squeue', ['-h'])).stdout.trim(), '')
  },
)

/**
 * A driver whose job lasts until told: it streams `slow` tasks of 3 ms until
 * `stop` arrives on stdin, then says whether every task it submitted gave its
 * one right result. It reports nodes joining and leaving (with the tasks
 * requeued so far) and, on `count`, the results per Slurm node so far. Its
 * tasks on a node are held while the file \`$HOLD-<node>\` exists. At
 * most 200 tasks are out at once, so the job ends soon after \`stop\`.
 */
const STREAM_DRIVER = `
import { Cluster } from ${JSON.stringify(LIB)}
import { createInterface } from 'node:readline'
const say = (k, v) => console.log(k + ' ' + JSON.stringify(v))
const cluster = await Cluster.start()
say('nodes', cluster.nodes().map((n) => n.id).sort())
cluster.on('node:joined', (n) => say('joined', { id: n.id }))
cluster.on('node:left', (n) => say('left', { id: n.id, requeued: cluster.stats().requeued }))
cluster.on('node:lost', (n, reason) => say('lost', { id: n.id, reason, requeued: cluster.stats().requeued }))
const byNode = {}
let stop = false
const commands = createInterface({ input: process.stdin }).on('line', (l) => {
  if (l === 'stop') stop = true
  if (l === 'count') say('count', byNode)
})
let submitted = 0
async function* inputs() { while (!stop) yield [submitted++, 3, process.env.HOLD] }
const seen = new Uint8Array(1 << 24)
let wrong = 0
for await (const [i, sq, node] of cluster.map('slow', inputs(), { ordered: false, concurrency: 200 })) {
  seen[i]++
  if (sq !== i * i) wrong++
  byNode[node] = (byNode[node] ?? 0) + 1
}
let once = 0
for (let i = 0; i < submitted; i++) if (seen[i] === 1) once++
commands.close()
say('result', { allOnce: once === submitted, beyond: seen.subarray(submitted).some((c) => c !== 0), wrong, nodes: Object.keys(byNode).sort() })
await cluster.close()
`

/** A running `cluster run` whose stdout lines are kept; `next` waits (bounded) for one matching, after the lines already taken. */
function streamDriver(lab: SlurmLab, cwd: string, env: Record<string, string>) {
  // A process group of its own: `cluster run` and the driver it starts are killed together.
  const child: ChildProcess = spawn(process.execPath, [CLI, 'run', 'stream.mjs'], {
    cwd,
    env: { ...lab.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  })
  const lines: string[] = []
  let err = ''
  const waiters = new Set<() => void>()
  createInterface({ input: child.stdout! }).on('line', (l) => {
    lines.push(l)
    for (const w of waiters) w()
  })
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)))
  let taken = 0
  return {
    child,
    exited,
    send: (line: string) => child.stdin!.write(`${line}\n`),
    /** The exit code, or a failure after `ms`. */
    exit: (ms: number) => within(exited, ms, 'the driver to exit'),
    output: () => `${lines.join('\n')}\n--- stderr\n${err}`,
    /** The value of the next line `key {json}` (after those taken) that `accept` accepts. */
    async next<T>(key: string, ms: number, what: string, accept: (v: T) => boolean = () => true): Promise<T> {
      const end = Date.now() + ms
      for (;;) {
        while (taken < lines.length) {
          const l = lines[taken++]!
          if (l.startsWith(`${key} `)) {
            const v = JSON.parse(l.slice(key.length + 1)) as T
            if (accept(v)) return v
          }
        }
        if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}; driver output:\n${lines.join('\n')}\n--- stderr\n${err}`)
        await new Promise<void>((resolve) => {
          const done = () => {
            waiters.delete(done)
            clearTimeout(timer)
            resolve()
          }
          const timer = setTimeout(done, Math.max(0, end - Date.now()) + 1)
          waiters.add(done)
        })
      }
    },
  }
}

test(
  'cluster up --slurm grows a running job by a second job; scancel of one node’s job and down --host requeue their tasks: each result once, down leaves nothing',
  { skip, timeout: 240_000 },
  async (t) => {
    const lab = await createSlurmLab(3)
    t.after(() => lab.close())
    const dir = await upProject(lab)
    await writeFile(join(dir, 'stream.mjs'), STREAM_DRIVER)
    const up1 = await cli(lab, dir, ['up', '--slurm', '2', '--wait', '60', '--json'])
    assert.equal(up1.code, 0, up1.out)
    const a = (JSON.parse(up1.out) as { slurm: { state: string; jobId: string; agents: { node: string }[] } }).slurm
    assert.equal(a.state, 'up', up1.out)
    assert.equal((JSON.parse(up1.out) as { slurm: { head: string } }).slurm.head, 'registrar', up1.out)
    assert.deepEqual(a.agents.map((x) => x.node).sort(), ['node1', 'node2'])
    const id = (job: string, node: string) => `slurm-${job}-${node}`

    const hold = join(dir, 'hold')
    const driver = streamDriver(lab, dir, { CLUSTER_WAIT_FOR_NODES: '2', HOLD: hold })
    t.after(() => {
      if (driver.child.exitCode === null) process.kill(-driver.child.pid!, 'SIGKILL')
    })
    assert.deepEqual(await driver.next('nodes', 60_000, 'the driver to start with both agents'), [id(a.jobId, 'node1'), id(a.jobId, 'node2')])

    // Mid-job, a second job adds a node: the new agent joins the running driver.
    const up2 = await cli(lab, dir, ['up', '--slurm', '1', '--wait', '60', '--json'])
    assert.equal(up2.code, 0, up2.out)
    const b = (JSON.parse(up2.out) as { slurm: { state: string; jobId: string; agents: { node: string }[]; head: string } }).slurm
    assert.equal(b.state, 'up', up2.out)
    assert.equal(b.head, 'driver', up2.out)
    assert.notEqual(b.jobId, a.jobId)
    assert.deepEqual(
      b.agents.map((x) => x.node),
      ['node3'],
    )
    await driver.next('joined', 30_000, 'the third agent to join the running driver', (v: { id: string }) => v.id === id(b.jobId, 'node3'))
    const counted = async (node: string, above: number, what: string) => {
      const end = Date.now() + 30_000
      for (;;) {
        driver.send('count')
        const c = await driver.next<Record<string, number>>('count', Math.max(1, end - Date.now()), what)
        if ((c[node] ?? 0) > above) return c
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(c)}`)
      }
    }
    await counted('node3', 0, 'results from node3')

    // status: both jobs running, each with its agents beside it.
    const st = await cli(lab, dir, ['status', '--json'])
    assert.equal(st.code, 0, st.out)
    const jobs = (JSON.parse(st.out) as { slurm: { jobId: string; state: string; agents: { node: string; state: string; threads: number }[] }[] }).slurm
    assert.deepEqual(
      jobs.map((j) => ({ jobId: j.jobId, state: j.state, agents: j.agents.map((g) => [g.node, g.state, g.threads]) })),
      [
        {
          jobId: a.jobId,
          state: 'RUNNING',
          agents: [
            ['node1', 'up', 2],
            ['node2', 'up', 2],
          ],
        },
        { jobId: b.jobId, state: 'RUNNING', agents: [['node3', 'up', 2]] },
      ],
    )

    const text = await cli(lab, dir, ['status'])
    assert.match(text.out, new RegExp(`^cluster slurmlab: Slurm job ${a.jobId}, 2 nodes: RUNNING on node\\[1-2\\]$`, 'm'))
    assert.match(text.out, new RegExp(`^cluster slurmlab: Slurm job ${b.jobId}, 1 node: RUNNING on node3$`, 'm'))
    assert.match(text.out, new RegExp(`^node3 +up +2 +\\d/2.* ${id(b.jobId, 'node3')}$`, 'm'))

    // scancel of node3's job mid-job, its two threads held in a task each: they cannot finish within
    // KillWait (5 s), Slurm kills the agent, the driver finds it lost and runs what it held elsewhere.
    await writeFile(`${hold}-node3`, '')
    await lab.slurm('scancel', [b.jobId])
    const out3 = await driver.next<{ id: string; requeued: number }>('lost', 30_000, 'node3 to be lost after scancel', (v) => v.id === id(b.jobId, 'node3'))
    assert.ok(out3.requeued >= 2, `node3's two held tasks were not requeued: ${JSON.stringify(out3)}`)
    assert.equal(await waitForJobEnd(lab, b.jobId, 30_000), 'CANCELLED')

    const unknown = await cli(lab, dir, ['down', '--host', 'node9'])
    assert.equal(unknown.code, 1, unknown.out)
    assert.match(unknown.out, /no node "node9" in the running Slurm jobs of cluster slurmlab \(they run on: node1, node2\) \[ERR_INVALID_ARGUMENT\]/)

    // down --host node2: its agent leaves gracefully, the job gives node2 back and goes on with node1.
    const drain = await cli(lab, dir, ['down', '--host', 'node2'])
    assert.equal(drain.code, 0, drain.out)
    assert.match(
      drain.out,
      new RegExp(`stopped the agent on node2 \\(pid \\d+; finished its running tasks, handed queued ones back\\); Slurm job ${a.jobId} gave node2 back`),
    )
    const out2 = await driver.next<{ id: string; requeued: number }>('left', 30_000, 'node2 to leave', (v) => v.id === id(a.jobId, 'node2'))
    assert.ok(out2.requeued >= out3.requeued, JSON.stringify(out2))
    assert.equal((await lab.slurm('squeue', ['-h', '-j', a.jobId, '-o', '%T %N'])).stdout.trim(), 'RUNNING node1')
    assert.equal((await lab.slurm('sinfo', ['-h', '-n', 'node2', '-o', '%t'])).stdout.trim(), 'idle')
    const before = await counted('node1', 0, 'results from node1')
    await counted('node1', before['node1']!, 'node1 to go on after the drain')

    driver.send('stop')
    driver.child.stdin!.end()
    assert.deepEqual(
      await driver.next('result', 60_000, 'the job to end'),
      { allOnce: true, beyond: false, wrong: 0, nodes: ['node1', 'node2', 'node3'] },
      driver.output(),
    )
    assert.equal(await driver.exit(30_000), 0, driver.output())

    const down = await cli(lab, dir, ['down'])
    assert.equal(down.code, 0, down.out)
    assert.match(down.out, new RegExp(`cancelled Slurm job ${a.jobId}; it has left the queue`))
    assert.match(down.out, new RegExp(`Slurm job ${b.jobId} had already ended`))
    assert.equal((await lab.slurm('squeue', ['-h'])).stdout.trim(), '')
    assert.deepEqual(await processesWith(join(dir, 'tasks.mjs')), [])
    assert.deepEqual(await readdir(join(dir, '.actor-cluster')), [])
  },
)
