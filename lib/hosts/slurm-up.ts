/**
 * `cluster up --slurm N`, `status` and `down` for agents that Slurm starts:
 * one batch job per `up`, whose `srun` runs one agent per node. `up` submits
 * it, binds the head while the agents register (or lets a running driver take
 * them: a second `up` grows a running cluster), and reports a job that stays
 * pending (with squeue's reason) or fails (with its output). Every job goes
 * into the state file, where `status` and `down` find them. Each agent keeps
 * a pid file and a status file named after its node in the job's directory
 * on the shared filesystem: `up` counts registrations there, `status` reads
 * them, and `down --host NODE` signals that one agent through a step run in
 * the job on that node.
 */
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { ConfigError, InvalidArgumentError } from '../errors.js'
import type { SlurmOptions } from '../options.js'
import { KEY_FILES, resolveAgentCurve } from '../transport/curve.js'
import { ensurePrivateDir, writePrivateFile } from '../util/private-files.js'
import { openHead } from './head.js'
import type { HostsPlan } from './plan.js'
import { readState, updateState, type SlurmJobRecord } from './state.js'
import { parseAgentStatus } from './status.js'

const exec = promisify(execFile)
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'cluster.js')

const WAIT_S = 300

/** The Slurm jobs `up` submitted, as the state file records them. */
export type SlurmRecord = SlurmJobRecord

/** One agent of a job, from its status file. */
export interface SlurmAgent {
  /** The Slurm node it runs on. */
  readonly node: string
  readonly id: string
  readonly host: string
  readonly threads: number
  readonly pid: number
  readonly version: string
}

export type SlurmUpResult =
  | {
      readonly state: 'up'
      readonly jobId: string
      readonly agents: readonly SlurmAgent[]
      /** `registrar`: up bound the head while they registered (they now wait for a driver); `driver`: they joined the running one. */
      readonly head: 'registrar' | 'driver'
    }
  | { readonly state: 'pending' | 'failed'; readonly jobId: string; readonly agents: readonly SlurmAgent[]; readonly message: string }

function positive(name: string, v: number | undefined): number | undefined {
  if (v === undefined) return undefined
  if (!Number.isSafeInteger(v) || v < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${String(v)}`)
  return v
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** `squeue` of one job: its state, reason and node list, or undefined once it left the queue. */
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

/** A Slurm host list (`node[1-3,7]`) as names. */
async function hostnames(list: string): Promise<string[]> {
  if (list === '' || list === '(null)') return []
  const { stdout } = await exec('scontrol', ['show', 'hostnames', list])
  return stdout.split('\n').filter((l) => l.trim() !== '')
}

function tail(file: string, lines = 12): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no output)'
  }
}

/** The directory this cluster's jobs share: the agents' keys, the batch script, one directory per job. */
function baseDir(plan: HostsPlan): string {
  return join(dirname(plan.stateFile), `${plan.name}-slurm`)
}

/** What one agent's status file says, with the node it names. */
function agentFiles(dir: string | undefined): { node: string; status: NonNullable<ReturnType<typeof parseAgentStatus>> }[] {
  if (dir === undefined || !existsSync(dir)) return []
  const out = []
  for (const f of readdirSync(dir).sort()) {
    if (!f.endsWith('.json')) continue
    let text: string | undefined
    try {
      text = readFileSync(join(dir, f), 'utf8')
    } catch {
      continue
    }
    const status = parseAgentStatus(text)
    if (status) out.push({ node: f.slice(0, -'.json'.length), status })
  }
  return out
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`

/**
 * The batch script: a directory for the job, then one srun task per node that
 * writes its pid file (the shell's pid is the agent's, by exec) and runs the
 * agent with the node's CPUs as threads, an id and a status file named after
 * the node.
 */
function batchScript(base: string, agent: readonly string[]): string {
  const task =
    'echo $$ > "$0/$SLURMD_NODENAME.pid" && exec "$@" --threads "${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}"' +
    ' --id "slurm-$SLURM_JOB_ID-$SLURMD_NODENAME" --status-file "$0/$SLURMD_NODENAME.json"'
  return [
    '#!/bin/sh',
    '# Written by cluster up --slurm: one agent per node; each takes its node’s CPUs as threads.',
    `D=${quote(base)}/job-"$SLURM_JOB_ID"`,
    'mkdir -p -m 700 "$D" || exit 1',
    `exec srun --ntasks-per-node=1 --kill-on-bad-exit=0 sh -c ${quote(task)} "$D" ${agent.map(quote).join(' ')}`,
    '',
  ].join('\n')
}

/**
 * Submits one batch job of `opts.nodes` nodes whose srun starts an agent on
 * each, and waits until they registered, the job failed, or `waitS` passed.
 * Jobs already up stay: their agents and the new ones serve the same head,
 * so a second `up` grows the cluster, also while a driver runs (the new
 * agents join it). An sbatch that refuses the job (bad partition, account,
 * time) is a ConfigError with Slurm's own message, before anything ran.
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
  const others = (await readState(plan.stateFile))?.slurm ?? []
  const dir = baseDir(plan)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  // The user's alone (a symbolic link or another user's directory is refused): the script and keys go there.
  ensurePrivateDir(dir, dir)
  // The agents' half of the keys (never the driver's secret), on the filesystem every node shares.
  let keys: string | undefined
  if (plan.curve) {
    const c = resolveAgentCurve(plan.curve)
    keys = join(dir, 'keys')
    ensurePrivateDir(keys, dir)
    // Another job of this cluster may have written them (the same keys): written again, each file afresh
    // (O_EXCL), so nothing planted in its place receives them. Running agents read theirs when they started.
    for (const f of [KEY_FILES.serverPublic, KEY_FILES.agent]) rmSync(join(keys, f), { force: true })
    writePrivateFile(
      join(keys, KEY_FILES.serverPublic),
      `${c.serverPublicKey}
`,
    )
    writePrivateFile(
      join(keys, KEY_FILES.agent),
      `${JSON.stringify(c.agentKey)}
`,
    )
  }
  const output = join(dir, 'job-%j.out')
  const agent = [process.execPath, CLI, 'agent', '--connect', plan.head, '--tasks', plan.tasks, ...(keys ? ['--keys', keys] : [])]
  if (plan.heartbeatMs !== undefined) agent.push('--heartbeat-ms', String(plan.heartbeatMs))
  // As over SSH: an agent gives the driver up after the silence the driver allows a node.
  if (plan.nodeTimeoutMs !== undefined) agent.push('--driver-timeout-ms', String(plan.nodeTimeoutMs))
  const script = join(dir, 'agents.sbatch')
  // sbatch copies the script when it takes the job: rewriting it does not touch jobs already queued.
  writeFileSync(script, batchScript(dir, agent), { mode: 0o700 })
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
      // Nothing was submitted: the keys and script written for it go, unless other jobs of the cluster use them.
      if (others.length === 0) rmSync(dir, { recursive: true, force: true })
      if (e.code === 'ENOENT') throw new ConfigError('sbatch is not installed on this machine: run cluster up --slurm where Slurm’s commands are')
      throw new ConfigError(`sbatch refused the job: ${(e.stderr ?? e.message).trim()}`, { cause: err })
    }
    const out = output.replace('%j', jobId)
    const jobDir = join(dir, `job-${jobId}`)
    await updateState(plan.stateFile, plan.name, (_hosts, s) => {
      s.head = plan.head
      s.slurm = [...(s.slurm ?? []), { jobId, nodes, output: out, dir: jobDir, keys }]
    })
    // Registered: the agent's status file says a driver (this registrar, or the running driver) welcomed it.
    const agents = (): SlurmAgent[] =>
      agentFiles(jobDir)
        .filter((a) => a.status.state === 'ready')
        .map(({ node, status: s }) => ({ node, id: s.id, host: s.host, threads: s.threads, pid: s.pid, version: s.version }))
    const end = Date.now() + waitS * 1000
    for (;;) {
      if (agents().length >= nodes) return { state: 'up', jobId, agents: agents(), head: head.registrar ? 'registrar' : 'driver' }
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
      await sleep(250)
    }
  } finally {
    await head.close()
  }
}

/** One agent of a job as `cluster status` shows it. */
export interface SlurmAgentStatus {
  node: string
  id: string
  /** As for SSH hosts (`up`, `waiting`, `leaving`, `stale`, `down`), and `drained` after `down --host`. */
  state: 'up' | 'waiting' | 'leaving' | 'stale' | 'down' | 'drained'
  pid: number
  threads: number
  busy: number
  queued: number
  tasksDone: number
  heartbeatAgeMs: number | null
  version: string
}

export interface SlurmJobStatus {
  jobId: string
  state: string
  reason: string | null
  /** The nodes the job holds now, as squeue lists them. */
  nodes: string | null
  agents: SlurmAgentStatus[]
}

/** What `cluster status` says of one job: its state (and why it waits) or how it ended, and each agent beside it. */
export async function slurmJobStatus(rec: SlurmRecord, heartbeatMs = 1000): Promise<SlurmJobStatus> {
  const st = await jobState(rec.jobId)
  const running = st?.state === 'RUNNING' || st?.state === 'COMPLETING'
  const now = Date.now()
  const drained = new Set(rec.drained ?? [])
  const agents = agentFiles(rec.dir).map(({ node, status: s }): SlurmAgentStatus => {
    const age = Math.max(0, now - s.updatedAt)
    const state = drained.has(node)
      ? 'drained'
      : !running || s.state === 'closed'
        ? 'down'
        : age > 3 * heartbeatMs + 1000
          ? 'stale'
          : s.state === 'ready'
            ? 'up'
            : s.state === 'leaving'
              ? 'leaving'
              : 'waiting'
    return {
      node,
      id: s.id,
      state,
      pid: s.pid,
      threads: s.threads,
      busy: s.busy,
      queued: s.queued,
      tasksDone: s.tasksDone,
      heartbeatAgeMs: state === 'up' && s.driverAgeMs !== null ? s.driverAgeMs + age : null,
      version: s.version,
    }
  })
  if (st) return { jobId: rec.jobId, state: st.state, reason: st.reason && st.reason !== 'None' ? st.reason : null, nodes: st.nodes || null, agents }
  return { jobId: rec.jobId, state: await finalState(rec.jobId), reason: null, nodes: null, agents }
}

/** Waits (bounded) until the job left the queue; the state it was last seen in, or undefined once gone. */
async function waitGone(jobId: string, waitS: number): Promise<string | undefined> {
  const end = Date.now() + waitS * 1000
  for (;;) {
    const st = await jobState(jobId)
    if (st === undefined) return undefined
    if (Date.now() > end) return st.state
    await sleep(300)
  }
}

export interface SlurmDownOutcome {
  jobId: string
  result: 'cancelled' | 'already ended' | 'failed'
  message: string
}

/**
 * Cancels every job (their agents get SIGTERM first: they finish their
 * running tasks and hand queued ones back), waits until each left the queue,
 * and forgets those that did; the keys go with the last one.
 */
export async function slurmDown(plan: HostsPlan, recs: readonly SlurmRecord[], waitS = 60): Promise<SlurmDownOutcome[]> {
  const outcomes = await Promise.all(
    recs.map(async (rec): Promise<SlurmDownOutcome> => {
      const before = await jobState(rec.jobId)
      if (before) {
        try {
          // Slurm sends the steps SIGTERM, then SIGKILL after KillWait.
          await exec('scancel', [rec.jobId])
        } catch (err) {
          return {
            jobId: rec.jobId,
            result: 'failed',
            message: `scancel ${rec.jobId}: ${((err as { stderr?: string }).stderr ?? (err as Error).message).trim()}`,
          }
        }
      }
      const still = before ? await waitGone(rec.jobId, waitS) : undefined
      if (still) return { jobId: rec.jobId, result: 'failed', message: `Slurm job ${rec.jobId} is still ${still} ${waitS} s after scancel` }
      if (rec.dir) rmSync(rec.dir, { recursive: true, force: true })
      return before
        ? { jobId: rec.jobId, result: 'cancelled', message: `cancelled Slurm job ${rec.jobId}; it has left the queue` }
        : { jobId: rec.jobId, result: 'already ended', message: `Slurm job ${rec.jobId} had already ended` }
    }),
  )
  const gone = new Set(outcomes.filter((o) => o.result !== 'failed').map((o) => o.jobId))
  const after = await updateState(plan.stateFile, plan.name, (_hosts, s) => {
    s.slurm = (s.slurm ?? []).filter((r) => !gone.has(r.jobId))
    if (s.slurm.length === 0) delete s.slurm
  })
  if (after.slurm === undefined) {
    for (const rec of recs) if (rec.keys) rmSync(rec.keys, { recursive: true, force: true })
    rmSync(baseDir(plan), { recursive: true, force: true })
    if (after.hosts.length === 0) rmSync(plan.stateFile, { force: true })
  }
  return outcomes
}

/** Runs on the node, in a step of the job: SIGTERM to the agent of the pid file, SIGKILL after $2 s; says which. */
const DRAIN_SCRIPT = `f=$1; t=$2
[ -s "$f" ] || { echo none; exit 0; }
pid=$(cat "$f")
kill -0 "$pid" 2>/dev/null || { echo gone "$pid"; exit 0; }
kill -TERM "$pid"
n=0
while kill -0 "$pid" 2>/dev/null; do
  n=$((n + 1))
  if [ "$n" -gt $((t * 10)) ]; then kill -KILL "$pid"; echo killed "$pid"; exit 0; fi
  sleep 0.1
done
echo stopped "$pid"`

export interface SlurmDrainOutcome {
  /** The node. */
  host: string
  jobId: string
  /** As for SSH hosts: `stopped` (left after its running tasks), `killed` (not within the stop timeout), `not running`. */
  result: 'stopped' | 'killed' | 'not running'
  pid: number | null
  /** What became of the node: given back to Slurm (the job shrank), or the job ended with its last agent. */
  released: 'job shrank' | 'job ended' | 'kept'
  message: string
}

/**
 * `cluster down --host NODE` for a node of a Slurm job: the agent there gets
 * SIGTERM from a step run in its job on that node (`srun --overlap`), so it
 * finishes its running tasks, hands its queued ones back to the driver and
 * exits (SIGKILL after `stopTimeoutS`); its srun task ends, the other nodes'
 * tasks go on. The job then gives the node back to Slurm (`scontrol update
 * NodeList=` the others); a job whose last node this was ends by itself.
 */
export async function slurmDrain(plan: HostsPlan, node: string): Promise<SlurmDrainOutcome> {
  const recs = (await readState(plan.stateFile))?.slurm ?? []
  const held: { rec: SlurmRecord; nodes: string[] }[] = []
  for (const rec of recs) {
    const st = await jobState(rec.jobId)
    if (st?.state === 'RUNNING') held.push({ rec, nodes: await hostnames(st.nodes) })
  }
  const found = held.find((h) => h.nodes.includes(node))
  if (!found) {
    const all = held.flatMap((h) => h.nodes)
    throw new InvalidArgumentError(
      `no node ${JSON.stringify(node)} in the running Slurm jobs of cluster ${plan.name} (they run on: ${all.length ? all.join(', ') : 'no nodes'})`,
    )
  }
  const { rec } = found
  const pidFile = join(rec.dir ?? join(baseDir(plan), `job-${rec.jobId}`), `${node}.pid`)
  let said: string
  try {
    const r = await exec(
      'srun',
      [
        `--jobid=${rec.jobId}`,
        '--overlap',
        `--nodelist=${node}`,
        '--nodes=1',
        '--ntasks=1',
        '--quiet',
        'sh',
        '-c',
        DRAIN_SCRIPT,
        'sh',
        pidFile,
        String(plan.stopTimeoutS),
      ],
      { timeout: (plan.stopTimeoutS + 60) * 1000 },
    )
    said = r.stdout.trim().split('\n').pop() ?? ''
  } catch (err) {
    const e = err as { stderr?: string; message: string }
    throw new ConfigError(`cannot reach the agent on ${node} through Slurm job ${rec.jobId} (srun --overlap): ${(e.stderr ?? e.message).trim()}`, {
      cause: err,
    })
  }
  const [how = '', pidText] = said.split(' ')
  const pid = pidText === undefined ? null : Number(pidText) || null
  const result = how === 'stopped' ? 'stopped' : how === 'killed' ? 'killed' : 'not running'
  const rest = found.nodes.filter((n) => n !== node)
  let released: SlurmDrainOutcome['released'] = 'kept'
  let note = ''
  if (rest.length > 0) {
    try {
      await exec('scontrol', ['update', `JobId=${rec.jobId}`, `NodeList=${rest.join(',')}`])
      released = 'job shrank'
    } catch (err) {
      note = `; the node stays in job ${rec.jobId} until cluster down (scontrol could not shrink it: ${((err as { stderr?: string }).stderr ?? (err as Error).message).trim()})`
    }
  } else if ((await waitGone(rec.jobId, 30)) === undefined) {
    // The step's last task ended, so did the batch script and the job.
    released = 'job ended'
  } else {
    note = `; job ${rec.jobId} has no agent left but is still queued: cluster down cancels it`
  }
  const after = await updateState(plan.stateFile, plan.name, (_hosts, s) => {
    s.slurm = (s.slurm ?? []).flatMap((r) => {
      if (r.jobId !== rec.jobId) return [r]
      if (released === 'job ended') {
        if (r.dir) rmSync(r.dir, { recursive: true, force: true })
        return []
      }
      return [{ ...r, nodes: rest.length, drained: [...(r.drained ?? []), node] }]
    })
    if (s.slurm.length === 0) delete s.slurm
  })
  if (after.slurm === undefined) {
    rmSync(baseDir(plan), { recursive: true, force: true })
    if (after.hosts.length === 0) rmSync(plan.stateFile, { force: true })
  }
  const what =
    result === 'stopped'
      ? `stopped the agent on ${node} (pid ${pid ?? '?'}; finished its running tasks, handed queued ones back)`
      : result === 'killed'
        ? `killed the agent on ${node} (pid ${pid ?? '?'}) after ${plan.stopTimeoutS} s without exiting`
        : `no agent running on ${node}`
  const where =
    released === 'job shrank' ? `; Slurm job ${rec.jobId} gave ${node} back` : released === 'job ended' ? `; Slurm job ${rec.jobId} ended with it` : ''
  return { host: node, jobId: rec.jobId, result, pid, released, message: `${what}${where}${note}` }
}
