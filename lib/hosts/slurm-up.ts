/**
 * `cluster up --slurm N`, `status` and `down` for agents that Slurm starts:
 * one batch job whose `srun` runs one agent per node. `up` submits it, binds
 * the head while the agents register (as with SSH hosts), and reports a job
 * that stays pending (with squeue's reason) or fails (with its output); the
 * job id goes into the state file, where `status` and `down` find it.
 */
import { execFile } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { NodeInfo } from '../driver/types.js'
import { ConfigError, InvalidArgumentError } from '../errors.js'
import type { SlurmOptions } from '../options.js'
import { KEY_FILES, resolveAgentCurve } from '../transport/curve.js'
import { ensurePrivateDir, writePrivateFile } from '../util/private-files.js'
import { openHead } from './head.js'
import type { HostsPlan } from './plan.js'
import { readState, updateState } from './state.js'

const exec = promisify(execFile)
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'cluster.js')

const WAIT_S = 300

/** The Slurm job `up` submitted, as the state file records it. */
export interface SlurmRecord {
  jobId: string
  nodes: number
  output: string
  keys?: string | undefined
}

/** One registered agent of the job. */
export interface SlurmAgent {
  readonly id: string
  readonly host: string
  readonly threads: number
  readonly pid: number
  readonly version: string
}

export type SlurmUpResult =
  | { readonly state: 'up'; readonly jobId: string; readonly agents: readonly SlurmAgent[] }
  | { readonly state: 'pending' | 'failed'; readonly jobId: string; readonly agents: readonly SlurmAgent[]; readonly message: string }

function positive(name: string, v: number | undefined): number | undefined {
  if (v === undefined) return undefined
  if (!Number.isSafeInteger(v) || v < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${String(v)}`)
  return v
}

/** `squeue` of one job: its state and reason, or undefined once it left the queue. */
async function jobState(jobId: string): Promise<{ state: string; reason: string; nodes: string } | undefined> {
  const { stdout } = await exec('squeue', ['-h', '-j', jobId, '-o', '%T|%r|%N']).catch(() => ({ stdout: '' }))
  const [state, reason, nodes] = stdout.trim().split('|')
  return state ? { state, reason: reason ?? '', nodes: nodes ?? '' } : undefined
}

/** The end state of a job that left the queue (scontrol still knows it for MinJobAge). */
async function finalState(jobId: string): Promise<string> {
  const { stdout } = await exec('scontrol', ['show', 'job', jobId]).catch(() => ({ stdout: '' }))
  return /JobState=(\S+)/.exec(stdout)?.[1] ?? 'ended'
}

function tail(file: string, lines = 12): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no output)'
  }
}

/**
 * Submits one batch job of `opts.nodes` nodes whose srun starts an agent on
 * each, and waits until they registered, the job failed, or `waitS` passed.
 * An sbatch that refuses the job (bad partition, account, time) is a
 * ConfigError with Slurm's own message, before anything ran.
 */
export async function slurmUp(plan: HostsPlan, opts: SlurmOptions): Promise<SlurmUpResult> {
  const nodes = positive('--slurm', opts.nodes)
  if (nodes === undefined) throw new InvalidArgumentError('--slurm needs the number of nodes, e.g. --slurm 4')
  const cpus = positive('--cpus-per-node', opts.cpusPerNode)
  const waitS = positive('--wait', opts.waitS) ?? WAIT_S
  if (plan.head === undefined || plan.listen === undefined) {
    throw new ConfigError('no head address: set listen (and head when listen is a wildcard) in cluster.config, or pass --head tcp://HOST:PORT')
  }
  if (plan.tasks === undefined) throw new ConfigError('no tasks module: set tasks in cluster.config or pass --tasks')
  const previous = (await readState(plan.stateFile))?.slurm
  if (previous && (await jobState(previous.jobId))) {
    throw new ConfigError(`Slurm job ${previous.jobId} of cluster ${plan.name} is still queued or running: cluster down first`)
  }
  const dir = join(dirname(plan.stateFile), `${plan.name}-slurm`)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  // The agents' half of the keys (never the driver's secret), on the filesystem every node shares.
  let keys: string | undefined
  if (plan.curve) {
    const c = resolveAgentCurve(plan.curve)
    keys = join(dir, 'keys')
    ensurePrivateDir(dir, dir)
    rmSync(keys, { recursive: true, force: true })
    ensurePrivateDir(keys, dir)
    writePrivateFile(join(keys, KEY_FILES.serverPublic), `${c.serverPublicKey}\n`)
    writePrivateFile(join(keys, KEY_FILES.agent), `${JSON.stringify(c.agentKey)}\n`)
  }
  const output = join(dir, 'job-%j.out')
  const agent = [process.execPath, CLI, 'agent', '--connect', plan.head, '--tasks', plan.tasks, ...(keys ? ['--keys', keys] : [])]
  if (plan.heartbeatMs !== undefined) agent.push('--heartbeat-ms', String(plan.heartbeatMs))
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`
  const script = join(dir, 'agents.sbatch')
  writeFileSync(
    script,
    [
      '#!/bin/sh',
      '# Written by cluster up --slurm: one agent per node; each takes its node’s CPUs as threads.',
      `exec srun --ntasks-per-node=1 --kill-on-bad-exit=0 sh -c 'exec "$@" --threads "\${SLURM_CPUS_PER_TASK:-\${SLURM_CPUS_ON_NODE:-1}}"' sh ${agent.map(quote).join(' ')}`,
      '',
    ].join('\n'),
    { mode: 0o700 },
  )
  const args = [
    '--parsable',
    `--job-name=actor-cluster-${plan.name}`,
    `--nodes=${nodes}`,
    '--ntasks-per-node=1',
    `--output=${output}`,
    `--chdir=${plan.root}`,
    ...(opts.partition ? [`--partition=${opts.partition}`] : []),
    ...(opts.time ? [`--time=${opts.time}`] : []),
    ...(opts.account ? [`--account=${opts.account}`] : []),
    ...(cpus ? [`--cpus-per-task=${cpus}`] : []),
    ...(opts.sbatchArgs ?? []),
    script,
  ]
  const head = await openHead(plan, keys ? resolveAgentCurve({ dir: keys }) : undefined)
  try {
    let jobId: string
    try {
      jobId = (await exec('sbatch', args)).stdout.trim().split(';')[0] ?? ''
    } catch (err) {
      const e = err as { code?: string; stderr?: string; message: string }
      // Nothing was submitted: the keys and script written for it go.
      rmSync(dir, { recursive: true, force: true })
      if (e.code === 'ENOENT') throw new ConfigError('sbatch is not installed on this machine: run cluster up --slurm where Slurm’s commands are')
      throw new ConfigError(`sbatch refused the job: ${(e.stderr ?? e.message).trim()}`, { cause: err })
    }
    const out = output.replace('%j', jobId)
    await updateState(plan.stateFile, plan.name, (_hosts, s) => {
      s.head = plan.head
      s.slurm = { jobId, nodes, output: out, keys }
    })
    const registrar = head.registrar
    const agents = (): SlurmAgent[] =>
      (registrar?.nodes() ?? []).map((n: NodeInfo) => ({ id: n.id, host: n.host, threads: n.threads, pid: n.pid, version: n.version }))
    const end = Date.now() + waitS * 1000
    for (;;) {
      if (agents().length >= nodes) return { state: 'up', jobId, agents: agents() }
      const st = await jobState(jobId)
      if (st === undefined) {
        const final = await finalState(jobId)
        return {
          state: 'failed',
          jobId,
          agents: agents(),
          message: `Slurm job ${jobId} ended (${final}) before its agents registered; its output (${out}):\n${tail(out)}`,
        }
      }
      if (Date.now() > end) {
        const message =
          st.state === 'PENDING'
            ? `Slurm job ${jobId} is still pending after ${waitS} s (reason: ${st.reason}); it stays queued and its agents will join when it starts: cluster status shows it, cluster down cancels it`
            : `Slurm job ${jobId} is ${st.state} but only ${agents().length} of ${nodes} agents registered with ${plan.head} within ${waitS} s; can the nodes reach that address? Its output (${out}):\n${tail(out)}`
        return { state: st.state === 'PENDING' ? 'pending' : 'failed', jobId, agents: agents(), message }
      }
      await new Promise((r) => setTimeout(r, 250))
    }
  } finally {
    await head.close()
  }
}

/** What `cluster status` says of the Slurm job: its state (and why it waits), or how it ended. */
export async function slurmJobStatus(rec: SlurmRecord): Promise<{ jobId: string; state: string; reason: string | null; nodes: string | null }> {
  const st = await jobState(rec.jobId)
  if (st) return { jobId: rec.jobId, state: st.state, reason: st.reason && st.reason !== 'None' ? st.reason : null, nodes: st.nodes || null }
  return { jobId: rec.jobId, state: await finalState(rec.jobId), reason: null, nodes: null }
}

/** Cancels the job (its agents get SIGTERM first), waits until it left the queue, forgets it. */
export async function slurmDown(
  plan: HostsPlan,
  rec: SlurmRecord,
  waitS = 60,
): Promise<{ jobId: string; result: 'cancelled' | 'already ended' | 'failed'; message: string }> {
  const before = await jobState(rec.jobId)
  if (before) {
    try {
      // Slurm sends the steps SIGTERM (the agents finish their running tasks and leave), then SIGKILL after KillWait.
      await exec('scancel', [rec.jobId])
    } catch (err) {
      return { jobId: rec.jobId, result: 'failed', message: `scancel ${rec.jobId}: ${((err as { stderr?: string }).stderr ?? (err as Error).message).trim()}` }
    }
    const end = Date.now() + waitS * 1000
    while (await jobState(rec.jobId)) {
      if (Date.now() > end) break
      await new Promise((r) => setTimeout(r, 300))
    }
  }
  const still = await jobState(rec.jobId)
  if (still) return { jobId: rec.jobId, result: 'failed', message: `Slurm job ${rec.jobId} is still ${still.state} after scancel` }
  if (rec.keys) rmSync(rec.keys, { recursive: true, force: true })
  await updateState(plan.stateFile, plan.name, (_hosts, s) => {
    delete s.slurm
  })
  return {
    jobId: rec.jobId,
    result: before ? 'cancelled' : 'already ended',
    message: before ? `cancelled Slurm job ${rec.jobId}; it has left the queue` : `Slurm job ${rec.jobId} had already ended`,
  }
}
