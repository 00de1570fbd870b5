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
import { spawn } from 'node:child_process'
import { CLI, freePort } from '../helpers.js'

const unavailable = await slurmUnavailable()
if (unavailable && process.env['REQUIRE_SLURM'] === '1') {
  test('Slurm is available (REQUIRE_SLURM=1)', () => assert.fail(unavailable))
}
const skip = unavailable ? `no Slurm here: ${unavailable}` : false

const LIB = new URL('../../lib/index.js', import.meta.url).href
const TASKS = 20_000

const TASKS_MODULE = `
export function square(i) { return [i, i * i, process.pid] }
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

/** Runs the `cluster` CLI on the host side with the lab's Slurm config; resolves with its exit code and output. */
async function cli(lab: SlurmLab, cwd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...lab.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
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
