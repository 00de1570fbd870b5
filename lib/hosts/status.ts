import type { AgentStatus } from '../agent/status-file.js'
import { ClusterError } from '../errors.js'
import type { HostsPlan } from './plan.js'
import { mapLimit } from './progress.js'
import { STATUS_SCRIPT, parseReply } from './remote.js'
import { runSsh, sshFailure, type SshTarget } from './ssh.js'
import { readState, type HostRecord } from './state.js'
import { fetchSnapshot } from '../monitor/client.js'

/** One host as `cluster status` sees it. */
export interface HostStatus {
  host: string
  agentId: string
  /**
   * `up`: the agent serves a driver; `waiting`: running, no driver now;
   * `leaving`: finishing its tasks; `stale`: its status has not changed for
   * several heartbeats (frozen?); `starting`: no status yet; `down`: no agent
   * running; `unreachable`: SSH failed (see `error`).
   */
  state: 'up' | 'waiting' | 'leaving' | 'stale' | 'starting' | 'down' | 'unreachable'
  pid: number | null
  threads: number | null
  /** Threads busy now. */
  busy: number | null
  /** Tasks received and not yet started. */
  queued: number | null
  /** Tasks the agent ran since it started, for every driver it served. */
  tasksDone: number | null
  /** Milliseconds since the agent last heard its driver. */
  heartbeatAgeMs: number | null
  /** The running driver's view of this agent (from its dashboard): tasks sent and not answered, tasks done for it, ms since it heard the agent. */
  driver: { inFlight: number; tasksDone: number; heartbeatAgeMs: number } | null
  version: string | null
  hostname: string | null
  error: string | null
}

/** What the running driver says, read from its dashboard (`/api/stats`). */
export type DriverView =
  | {
      url: string
      version: string
      address: string
      nodes: number
      tasks: { pending: number; running: number; succeeded: number; failed: number; ratePerSecond: number }
      /** Nodes of the driver that the state file does not list (agents started some other way). */
      otherNodes: string[]
      error: null
    }
  | { url: string; error: string }

export interface ClusterStatus {
  name: string
  head: string | null
  hosts: HostStatus[]
  /** The running driver's view, when a dashboard was named (`--dashboard`, or `dashboard` in the config). */
  driver?: DriverView
}

/** Validates an agent's status file (it comes from a host: trusted for nothing but its shape). */
export function parseAgentStatus(text: string | undefined): AgentStatus | undefined {
  if (text === undefined || text.length > 64 * 1024) return undefined
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return undefined
  }
  if (v === null || typeof v !== 'object') return undefined
  const s = v as Record<string, unknown>
  const num = (k: string) => typeof s[k] === 'number' && Number.isFinite(s[k]) && s[k] >= 0
  const str = (k: string) => typeof s[k] === 'string' && s[k].length <= 256
  if (!['id', 'host', 'version', 'connect'].every(str) || !['pid', 'threads', 'tasksDone', 'busy', 'queued', 'startedAt', 'updatedAt'].every(num))
    return undefined
  if (!['connecting', 'ready', 'leaving', 'closed'].includes(s['state'] as string)) return undefined
  if (s['driverAgeMs'] !== null && !num('driverAgeMs')) return undefined
  return s as unknown as AgentStatus
}

function targetOf(r: HostRecord): SshTarget {
  return { label: r.label, user: r.user, host: r.host, port: r.port, key: r.key }
}

async function statusOne(plan: HostsPlan, r: HostRecord): Promise<HostStatus> {
  const base: HostStatus = {
    host: r.label,
    agentId: r.agentId,
    state: 'down',
    pid: r.pid ?? null,
    threads: r.threads ?? null,
    busy: null,
    queued: null,
    tasksDone: null,
    heartbeatAgeMs: null,
    driver: null,
    version: r.version ?? null,
    hostname: r.hostname ?? null,
    error: null,
  }
  const timeoutMs = (plan.ssh.connectTimeoutS + 15) * 1000
  let res
  try {
    res = await runSsh(plan.ssh, targetOf(r), STATUS_SCRIPT, [r.runDir ?? plan.remote.runDir ?? '', plan.name, r.agentId], timeoutMs)
  } catch (err) {
    if (err instanceof ClusterError) return { ...base, state: 'unreachable', error: err.message }
    throw err
  }
  const failure = sshFailure(res, targetOf(r), 'status', timeoutMs)
  if (failure) return { ...base, state: 'unreachable', error: failure.message }
  const reply = parseReply(res.stdout)
  if (reply.values.get('alive') !== '1') {
    return { ...base, state: 'down', error: r.state === 'unknown' ? (r.error ?? null) : null }
  }
  const pid = Number(reply.values.get('pid'))
  const s = parseAgentStatus(reply.values.get('status'))
  if (!s) return { ...base, pid: Number.isSafeInteger(pid) ? pid : base.pid, state: 'starting' }
  const now = Number(reply.values.get('now')) * 1000
  const age = Number.isFinite(now) ? Math.max(0, now - s.updatedAt) : 0
  // The host's clock has one-second resolution here: allow for it.
  const staleAfter = 3 * (plan.heartbeatMs ?? 1000) + 1000
  return {
    ...base,
    pid: s.pid,
    threads: s.threads,
    busy: s.busy,
    queued: s.queued,
    tasksDone: s.tasksDone,
    version: s.version,
    hostname: s.host,
    heartbeatAgeMs: s.state === 'ready' && s.driverAgeMs !== null ? s.driverAgeMs + age : null,
    state: age > staleAfter ? 'stale' : s.state === 'ready' ? 'up' : s.state === 'leaving' ? 'leaving' : 'waiting',
  }
}

/**
 * Asks every host the cluster's state file lists about its agent, over SSH,
 * in parallel: whether it runs, its threads, load, tasks done, how long since
 * it heard its driver, and its version. It needs no driver running, and
 * tells what each host really runs (an agent that died shows as `down`).
 */
export async function clusterStatus(plan: HostsPlan): Promise<ClusterStatus> {
  const state = await readState(plan.stateFile)
  const snapshot = plan.dashboard ? fetchSnapshot(plan.dashboard.url, { token: plan.dashboard.token, timeoutMs: 3000 }).catch((err: Error) => err) : undefined
  const hosts = state ? await mapLimit(state.hosts, plan.concurrency, (r) => statusOne(plan, r)) : []
  const out: ClusterStatus = { name: plan.name, head: state?.head ?? plan.head ?? null, hosts }
  if (plan.dashboard && snapshot) {
    const s = await snapshot
    if (s instanceof Error) {
      out.driver = { url: plan.dashboard.url, error: s.message }
    } else {
      const byId = new Map(s.nodes.map((n) => [n.id, n]))
      for (const h of hosts) {
        const n = byId.get(h.agentId)
        if (n) h.driver = { inFlight: n.inFlight, tasksDone: n.tasksDone, heartbeatAgeMs: n.heartbeatAgeMs }
      }
      const known = new Set(hosts.map((h) => h.agentId))
      const { pending, running, succeeded, failed, ratePerSecond } = s.tasks
      out.driver = {
        url: plan.dashboard.url,
        version: s.version,
        address: s.address,
        nodes: s.nodes.length,
        tasks: { pending, running, succeeded, failed, ratePerSecond },
        otherNodes: s.nodes.filter((n) => !known.has(n.id)).map((n) => n.id),
        error: null,
      }
    }
  }
  return out
}
