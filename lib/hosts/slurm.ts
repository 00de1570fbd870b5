/**
 * Agents started by Slurm rather than over SSH: inside an allocation (a job
 * from `sbatch` or `salloc`), `cluster run` starts one agent per allocated
 * node with `srun`, all connecting to the driver on the batch host. The CURVE
 * keys are made for the job and handed over through the shared filesystem, in
 * a directory only the user can read, and removed when the run ends.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { networkInterfaces } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { InvalidArgumentError } from '../errors.js'
import { writeKeys } from '../transport/curve.js'

/** The job `cluster run` is inside, from Slurm's own variables. */
export interface SlurmAllocation {
  readonly jobId: string
  readonly nodes: number
}

/** The allocation this process runs in, or undefined outside Slurm. */
export function slurmAllocation(env: NodeJS.ProcessEnv = process.env): SlurmAllocation | undefined {
  const jobId = env['SLURM_JOB_ID'] ?? env['SLURM_JOBID']
  if (!jobId) return undefined
  const nodes = Number(env['SLURM_JOB_NUM_NODES'] ?? env['SLURM_NNODES'] ?? '1')
  if (!Number.isSafeInteger(nodes) || nodes < 1) throw new InvalidArgumentError(`SLURM_JOB_NUM_NODES must be a positive integer, got ${JSON.stringify(nodes)}`)
  return { jobId, nodes }
}

/**
 * The address the other nodes reach this one at: `CLUSTER_SLURM_HEAD` if set,
 * else this host's first IPv4 address that is not loopback.
 */
function slurmHeadAddress(env: NodeJS.ProcessEnv = process.env): string {
  const named = env['CLUSTER_SLURM_HEAD']
  if (named) return named
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address
  }
  throw new InvalidArgumentError('no IPv4 address other than loopback on this node: set CLUSTER_SLURM_HEAD to the address the other nodes reach it at')
}

/**
 * A TCP port free on every interface a moment ago, below the usual ephemeral
 * range: agents redial a port, and one inside that range could be picked as
 * a connecting socket's own source port.
 */
async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    const srv = createServer()
    const ok = await new Promise<boolean>((resolve) => {
      srv.once('error', () => resolve(false))
      srv.listen(port, '0.0.0.0', () => resolve(true))
    })
    if (ok) {
      await new Promise((r) => srv.close(r))
      return port
    }
  }
  throw new InvalidArgumentError('no free TCP port between 20000 and 32000 on this node')
}

/** A driver and its agents inside one Slurm allocation. */
export interface SlurmRun {
  readonly allocation: SlurmAllocation
  /** The address the agents connect to. */
  readonly head: string
  /** Variables for the driver: its bind address, the job's keys, the agents to wait for, no local agent. */
  readonly driverEnv: Record<string, string>
  /** Starts one agent per node (`srun`); resolves when the step has ended. */
  startAgents(): { srun: ChildProcess; ended: Promise<number | null> }
  /** Ends the agents' step (bounded) and removes the job's keys; safe to call twice. */
  close(): Promise<void>
}

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'cluster.js')
const STOP_MS = 15_000
const AGENTS_LEAVE_MS = 5_000

/**
 * Prepares a run inside `allocation`: keys in `<project>/.actor-cluster/slurm-<job id>`
 * (0700, secret files 0600), a port on this node, the agents' command.
 */
export async function prepareSlurmRun(config: string, allocation: SlurmAllocation, env: NodeJS.ProcessEnv = process.env): Promise<SlurmRun> {
  const head = slurmHeadAddress(env)
  const port = await freePort()
  const keys = join(dirname(config), '.actor-cluster', `slurm-${allocation.jobId}`)
  writeKeys(keys, true)
  const connect = `tcp://${head.includes(':') ? `[${head}]` : head}:${port}`
  let srun: ChildProcess | undefined
  let ended: Promise<number | null> | undefined
  let closing: Promise<void> | undefined
  const close = async () => {
    // Agents leave by themselves once their driver closed (--exit-on-driver-loss); the step then ends.
    if (ended) await Promise.race([ended, new Promise((r) => setTimeout(r, AGENTS_LEAVE_MS).unref())])
    if (srun && srun.exitCode === null && srun.signalCode === null && ended) {
      // srun passes SIGTERM on to the agents, which finish their running tasks and leave;
      // two SIGINTs within a second make it abort the step, SIGKILL is the last resort.
      srun.kill('SIGTERM')
      const steps: [number, () => void][] = [
        [STOP_MS, () => (srun?.kill('SIGINT'), setTimeout(() => srun?.kill('SIGINT'), 200))],
        [STOP_MS + 5_000, () => srun?.kill('SIGKILL')],
      ]
      const timers = steps.map(([ms, run]) => setTimeout(run, ms))
      await ended
      for (const t of timers) clearTimeout(t)
    }
    rmSync(keys, { recursive: true, force: true })
  }
  return {
    allocation,
    head: connect,
    driverEnv: {
      CLUSTER_CONFIG: config,
      CLUSTER_LISTEN: `tcp://0.0.0.0:${port}`,
      CLUSTER_LOCAL_AGENTS: '0',
      CLUSTER_CURVE_DIR: keys,
      CLUSTER_WAIT_FOR_NODES: String(allocation.nodes),
    },
    startAgents() {
      const n = String(allocation.nodes)
      // One task per node; each agent takes its node's CPUs, which only the task itself can read.
      const agent = [process.execPath, CLI, 'agent', '--config', config, '--connect', connect, '--keys', keys, '--exit-on-driver-loss']
      srun = spawn(
        'srun',
        [
          `--nodes=${n}`,
          `--ntasks=${n}`,
          '--ntasks-per-node=1',
          '--kill-on-bad-exit=0',
          `--job-name=actor-cluster-agents`,
          'sh',
          '-c',
          'exec "$@" --threads "${SLURM_CPUS_ON_NODE:-1}"',
          'sh',
          ...agent,
        ],
        { stdio: ['ignore', 'inherit', 'inherit'], env: { ...env, CLUSTER_CONFIG: config } },
      )
      ended = new Promise((resolve) => {
        srun?.once('error', () => resolve(null))
        srun?.once('exit', (code) => resolve(code))
      })
      return { srun, ended }
    },
    close: () => (closing ??= close()),
  }
}
