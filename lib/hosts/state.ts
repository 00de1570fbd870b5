import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ConfigError } from '../errors.js'

/** What `cluster up` recorded of one host. */
export interface HostRecord {
  label: string
  user?: string | undefined
  host: string
  port?: number | undefined
  key?: string | undefined
  agentId: string
  /** `up`: the agent registered; `unknown`: SSH failed while starting or checking it, so an agent may be running (see `error`). */
  state: 'up' | 'unknown'
  error?: string | undefined
  pid?: number | undefined
  threads?: number | undefined
  version?: string | undefined
  hostname?: string | undefined
  runDir?: string | undefined
  workDir?: string | undefined
  startedAt?: number | undefined
  updatedAt: number
}

/** The state file of one cluster (`.actor-cluster/<name>.json`). */
export interface ClusterState {
  version: 1
  name: string
  head?: string | undefined
  updatedAt: number
  hosts: HostRecord[]
  /** The batch jobs of `cluster up --slurm` (one per `up`), until `cluster down` cancels them. */
  slurm?: SlurmJobRecord[] | undefined
}

/** One batch job `cluster up --slurm` submitted. */
export interface SlurmJobRecord {
  jobId: string
  /** Nodes the job holds now (fewer once `down --host` gave some back). */
  nodes: number
  /** The job's output file. */
  output: string
  /** Where its agents keep their pid and status files (`<node>.pid`, `<node>.json`), on the shared filesystem. */
  dir?: string | undefined
  keys?: string | undefined
  /** Nodes `cluster down --host` drained. */
  drained?: string[] | undefined
}

/** Reads the state file; undefined when there is none. A corrupt file is a ConfigError naming it. */
export async function readState(file: string): Promise<ClusterState | undefined> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new ConfigError(`cannot read the state file ${file}: ${(err as Error).message}`, { cause: err })
  }
  let state: unknown
  try {
    state = JSON.parse(text)
  } catch (err) {
    throw new ConfigError(`the state file ${file} is not valid JSON (${(err as Error).message}); move it away and run cluster down --nodes <hosts file>`)
  }
  const s = state as Partial<ClusterState> | null
  if (
    !s ||
    s.version !== 1 ||
    !Array.isArray(s.hosts) ||
    s.hosts.some((h) => !h || typeof h.label !== 'string' || typeof h.host !== 'string' || typeof h.agentId !== 'string')
  ) {
    throw new ConfigError(`the state file ${file} is not an actor-cluster state file (version 1)`)
  }
  // A state file of one job (written before `up --slurm` could grow a cluster) reads as a list of one.
  const slurm: unknown = s.slurm
  if (slurm !== undefined && !Array.isArray(slurm)) s.slurm = [slurm as SlurmJobRecord]
  return s as ClusterState
}

/**
 * Read, change, write back (atomically, by rename). Re-reads just before
 * writing so two commands touching different hosts do not undo each other.
 */
export async function updateState(file: string, name: string, change: (hosts: Map<string, HostRecord>, state: ClusterState) => void): Promise<ClusterState> {
  const state = (await readState(file)) ?? { version: 1, name, updatedAt: 0, hosts: [] }
  const hosts = new Map(state.hosts.map((h) => [h.label, h]))
  change(hosts, state)
  state.hosts = [...hosts.values()]
  state.updatedAt = Date.now()
  await mkdir(dirname(file), { recursive: true })
  const tmp = `${file}.${process.pid}.tmp`
  await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`)
  await rename(tmp, file)
  return state
}
