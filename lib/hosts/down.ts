import { rm } from 'node:fs/promises'
import { ClusterError, InvalidArgumentError } from '../errors.js'
import type { HostSpec } from './hosts-file.js'
import { agentIdFor, type HostsPlan } from './plan.js'
import { mapLimit, type Progress } from './progress.js'
import { STOP_SCRIPT, parseReply } from './remote.js'
import { runSsh, sshFailure } from './ssh.js'
import { readState, updateState, type HostRecord } from './state.js'

/** What `cluster down` did on one host. */
export interface DownOutcome {
  readonly host: string
  /**
   * `stopped`: the agent finished its running tasks, handed queued ones back
   * and exited; `killed`: it did not exit within the grace period;
   * `not running`: nothing to stop; `failed`: the host could not be reached
   * (see `error`; it stays listed, run `cluster down` again).
   */
  readonly result: 'stopped' | 'killed' | 'not running' | 'failed'
  readonly agents: readonly { id: string; pid: number | undefined; how: 'stopped' | 'killed' | 'gone' | 'none' }[]
  readonly error?: ClusterError | undefined
}

export interface DownOptions {
  /** Only these hosts (a label as `cluster status` shows it, or the host name or address). */
  only?: readonly string[] | undefined
  /** Hosts to visit even if the state file does not list them (every agent of this cluster there is stopped). */
  extra?: readonly HostSpec[] | undefined
  /** Drop hosts that cannot be reached from the state file anyway (a machine that is gone for good). */
  forget?: boolean | undefined
}

function matches(r: Pick<HostRecord, 'label' | 'host' | 'user'>, sel: string): boolean {
  return r.label === sel || r.host === sel || `${r.user ?? ''}@${r.host}` === sel || r.label.replace(/:\d+$/, '') === sel
}

/**
 * Stops the agents `cluster up` started (all, or `only` some hosts), each
 * with SIGTERM so it hands its queued tasks back to a running driver, then
 * SIGKILL after `stopTimeoutS`; removes their pid, status and log files on
 * the host. Idempotent: hosts with nothing running say so. Hosts that were
 * stopped leave the state file; unreachable ones stay in it.
 */
export async function clusterDown(plan: HostsPlan, options: DownOptions = {}, progress?: Progress): Promise<DownOutcome[]> {
  const state = await readState(plan.stateFile)
  let records: { rec: HostRecord; all: boolean }[] = (state?.hosts ?? []).map((rec) => ({ rec, all: false }))
  for (const h of options.extra ?? []) {
    if (!records.some((r) => r.rec.label === h.label)) {
      records.push({
        rec: { label: h.label, user: h.user, host: h.host, port: h.port, key: h.key, agentId: agentIdFor(plan, h), state: 'unknown', updatedAt: 0 },
        all: true,
      })
    }
  }
  if (options.only && options.only.length > 0) {
    const known = records.map((r) => r.rec.label)
    for (const sel of options.only) {
      if (!records.some((r) => matches(r.rec, sel))) {
        throw new InvalidArgumentError(`no host ${JSON.stringify(sel)} in cluster ${plan.name} (it has: ${known.length ? known.join(', ') : 'no hosts'})`)
      }
    }
    records = records.filter((r) => options.only!.some((sel) => matches(r.rec, sel)))
  }
  if (progress) progress.total = records.length
  const outcomes = await mapLimit(records, plan.concurrency, async ({ rec, all }): Promise<DownOutcome> => {
    progress?.step(rec.label, 'stopping')
    const target = { label: rec.label, user: rec.user, host: rec.host, port: rec.port, key: rec.key }
    const timeoutMs = (plan.ssh.connectTimeoutS + plan.stopTimeoutS + 15) * 1000
    let fail: ClusterError | undefined
    let stdout = ''
    try {
      const r = await runSsh(
        plan.ssh,
        target,
        STOP_SCRIPT,
        [rec.runDir ?? plan.remote.runDir ?? '', plan.name, String(plan.stopTimeoutS), ...(all ? [] : [rec.agentId])],
        timeoutMs,
      )
      fail = sshFailure(r, target, 'stopping the agent', timeoutMs)
      stdout = r.stdout
    } catch (err) {
      if (!(err instanceof ClusterError)) throw err
      fail = err
    }
    if (fail) {
      progress?.done(rec.label, false, fail.message.startsWith(rec.label) ? fail.message.slice(rec.label.length + 2) : fail.message)
      return { host: rec.label, result: 'failed', agents: [], error: fail }
    }
    const agents: { id: string; pid: number | undefined; how: 'stopped' | 'killed' | 'gone' | 'none' }[] = []
    for (const [key, value] of parseReply(stdout).pairs) {
      if (key !== 'stopped' && key !== 'killed' && key !== 'gone' && key !== 'none') continue
      const [id = '', pid] = value.split(' ')
      agents.push({ id, pid: pid === undefined ? undefined : Number(pid) || undefined, how: key })
    }
    const result = agents.some((a) => a.how === 'killed') ? 'killed' : agents.some((a) => a.how === 'stopped') ? 'stopped' : 'not running'
    const pids = agents
      .filter((a) => a.pid !== undefined && a.how !== 'gone' && a.how !== 'none')
      .map((a) => a.pid)
      .join(', ')
    progress?.done(
      rec.label,
      true,
      result === 'stopped'
        ? `stopped (pid ${pids}; finished its running tasks, handed queued ones back)`
        : result === 'killed'
          ? `killed (pid ${pids}) after ${plan.stopTimeoutS} s without exiting`
          : 'not running (already down)',
    )
    return { host: rec.label, result, agents }
  })
  progress?.end()
  if (state || outcomes.some((o) => o.result === 'failed')) {
    const done = new Set(outcomes.filter((o) => o.result !== 'failed').map((o) => o.host))
    const failed = new Map(outcomes.filter((o) => o.result === 'failed').map((o) => [o.host, o.error?.message]))
    const after = await updateState(plan.stateFile, plan.name, (hosts) => {
      for (const label of done) hosts.delete(label)
      for (const [label, error] of failed) {
        if (options.forget) {
          hosts.delete(label)
          continue
        }
        const r = hosts.get(label) ?? records.find((x) => x.rec.label === label)?.rec
        if (r) hosts.set(label, { ...r, error, updatedAt: Date.now() })
      }
    })
    if (after.hosts.length === 0) await rm(plan.stateFile, { force: true })
  }
  return outcomes
}
