import { spawn } from 'node:child_process'
import { rm } from 'node:fs/promises'
import { AgentStartError, ClusterError, ConfigError, HostSetupError, SshError } from '../errors.js'
import { VERSION } from '../version.js'
import type { HostSpec } from './hosts-file.js'
import { openHead } from './head.js'
import { agentIdFor, remoteDirFor, remoteTasksFor, type HostsPlan } from './plan.js'
import { mapLimit, type Progress } from './progress.js'
import { PROBE_SCRIPT, STATUS_SCRIPT, parseReply, startScript, type AgentKeys, type Reply } from './remote.js'
import { resolveAgentCurve } from '../transport/curve.js'
import { runProcess, runSsh, shq, sshFailure, sshOptions } from './ssh.js'
import { readState, updateState, type HostRecord } from './state.js'
import { parseAgentStatus } from './status.js'

/** What became of one host. */
export interface HostOutcome {
  readonly spec: HostSpec
  readonly agentId: string
  /** `up`: started and registered; `already up`: an agent of this cluster was running there; `failed`: see `error`. */
  readonly state: 'up' | 'already up' | 'failed'
  readonly error?: ClusterError | undefined
  /** SSH was lost while the agent was starting: it may be running; `cluster down` will look. */
  readonly uncertain?: boolean | undefined
  readonly pid?: number | undefined
  readonly threads?: number | undefined
  readonly version?: string | undefined
  readonly hostname?: string | undefined
  readonly runDir?: string | undefined
  readonly workDir?: string | undefined
}

export interface UpResult {
  readonly outcomes: readonly HostOutcome[]
  /** `registrar`: `up` bound the head itself while agents registered; `driver`: a running driver took them. */
  readonly head: 'registrar' | 'driver'
}

/** The oldest Node.js the agents run on (package.json engines). */
const MIN_NODE: readonly [number, number] = [20, 19]

/** Fails with a clear error when a local program the command needs is missing. */
async function requireLocal(cmd: string, arg: string, why: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn(cmd, [arg], { stdio: 'ignore' })
    child.on('error', (err: NodeJS.ErrnoException) =>
      reject(new ConfigError(err.code === 'ENOENT' ? `${cmd} is not installed on this machine; it is needed ${why}` : `cannot run ${cmd}: ${err.message}`)),
    )
    child.on('close', () => resolve())
  })
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop()?.trim() ?? ''
}

interface Probe {
  dir: string
  cli: string
  version: string
  hostname: string | undefined
}

/** Reads the probe's reply into what the start step needs, or the reason this host cannot run an agent. */
export function checkProbe(h: HostSpec, r: Reply, node: string, cli: string | undefined): Probe | HostSetupError {
  const v = r.values
  const error = v.get('error')
  const dir = v.get('dir') ?? ''
  const where = v.get('cli') ?? cli
  const nodeVersion = v.get('node')
  if (error === 'no-node') {
    const where = node.includes('/')
      ? `"${node}" does not exist or is not executable`
      : `"${node}" is not on the PATH of a non-interactive SSH session (PATH=${v.get('path') ?? '?'})`
    return new HostSetupError(
      h.label,
      'no-node',
      `${h.label}: Node.js not found: ${where}; install Node.js ≥ ${MIN_NODE.join('.')} there, or set node=/path/to/node on its line (remote.node in cluster.config)`,
    )
  }
  if (nodeVersion !== undefined) {
    const m = /^v(\d+)\.(\d+)/.exec(nodeVersion)
    if (!m || Number(m[1]) < MIN_NODE[0] || (Number(m[1]) === MIN_NODE[0] && Number(m[2]) < MIN_NODE[1])) {
      return new HostSetupError(
        h.label,
        'old-node',
        `${h.label}: Node.js ${nodeVersion || '(no version)'} at "${node}" is too old; actor-cluster needs ≥ ${MIN_NODE.join('.')}`,
      )
    }
  }
  if (error === 'no-rsync') {
    return new HostSetupError(
      h.label,
      'no-rsync',
      `${h.label}: rsync is not installed there (it is needed to sync the project); install it, or use --no-sync with the project already in place`,
    )
  }
  if (error === 'dir') return new HostSetupError(h.label, 'dir', `${h.label}: cannot create the project directory ${dir}`)
  if (error === 'no-actor-cluster') {
    return new HostSetupError(
      h.label,
      'no-actor-cluster',
      `${h.label}: actor-cluster is not installed there (${where ? `${where} does not exist` : `looked in ${dir}/node_modules and in the global packages of ${node}`}); ` +
        `install it (npm install -g actor-cluster@${VERSION}) or set cli=/path/to/actor-cluster/dist/bin/cluster.js on its line`,
    )
  }
  if (error === 'cli-failed') {
    return new HostSetupError(
      h.label,
      'no-actor-cluster',
      `${h.label}: actor-cluster at ${where ?? '?'} does not run: ${r.log.slice(-3).join(' / ') || 'no output'}`,
    )
  }
  const version = v.get('version')
  if (error !== undefined || version === undefined || where === undefined || dir === '') {
    return new HostSetupError(h.label, 'bad-reply', `${h.label}: unexpected answer from the host check${error ? ` (${error})` : ''}`)
  }
  if (version !== VERSION) {
    return new HostSetupError(
      h.label,
      'version',
      `${h.label}: actor-cluster ${version.slice(0, 40)} is installed at ${where}, this machine runs ${VERSION}; install the same version on every host`,
    )
  }
  return { dir, cli: where, version, hostname: v.get('hostname') }
}

/** Copies the project directory to a host with rsync over the same SSH settings. */
async function syncTo(plan: HostsPlan, h: HostSpec, dir: string): Promise<ClusterError | undefined> {
  const timeoutMs = 10 * 60_000
  const ssh = ['ssh', ...sshOptions(plan.ssh, h)].map(shq).join(' ')
  const host = h.host.includes(':') ? `[${h.host}]` : h.host
  const argv = [
    '-a',
    '--delete',
    `--timeout=${Math.max(30, plan.ssh.connectTimeoutS * 3)}`,
    '--exclude=/.git',
    '--exclude=node_modules',
    '--exclude=/.actor-cluster',
    ...plan.syncExclude.map((e) => `--exclude=${e}`),
    '-e',
    ssh,
    `${plan.root}/`,
    `${host}:${dir}/`,
  ]
  const r = await runProcess('rsync', argv, undefined, timeoutMs, h)
  const failure = sshFailure(r, h, 'syncing the project', timeoutMs, 'rsync')
  if (failure) return failure
  if (r.code !== 0)
    return new HostSetupError(h.label, 'sync', `${h.label}: syncing ${plan.root} to ${dir} failed (rsync exit ${r.code}): ${lastLine(r.stderr)}`)
  return undefined
}

/** Is the agent this cluster started on the host still running? (Then `up` leaves it be.) */
async function runningAgent(plan: HostsPlan, h: HostSpec, rec: HostRecord): Promise<HostOutcome | undefined> {
  const timeoutMs = (plan.ssh.connectTimeoutS + 15) * 1000
  const r = await runSsh(plan.ssh, h, STATUS_SCRIPT, [rec.runDir ?? plan.remote.runDir ?? '', plan.name, rec.agentId], timeoutMs)
  if (r.timedOut || r.code !== 0) return undefined
  const reply = parseReply(r.stdout)
  if (reply.values.get('alive') !== '1') return undefined
  const status = parseAgentStatus(reply.values.get('status'))
  return {
    spec: h,
    agentId: rec.agentId,
    state: 'already up',
    pid: Number(reply.values.get('pid')) || rec.pid,
    threads: status?.threads ?? rec.threads,
    version: status?.version ?? rec.version,
    hostname: status?.host ?? rec.hostname,
    runDir: rec.runDir,
    workDir: rec.workDir,
  }
}

async function upOne(
  plan: HostsPlan,
  h: HostSpec,
  tasks: string,
  keys: AgentKeys | undefined,
  recorded: HostRecord | undefined,
  progress: Progress | undefined,
): Promise<HostOutcome> {
  const agentId = agentIdFor(plan, h)
  const failed = (error: ClusterError, extra: Partial<HostOutcome> = {}): HostOutcome => {
    progress?.done(h.label, false, error.message.startsWith(h.label) ? error.message.slice(h.label.length + 2) : error.message)
    return { spec: h, agentId, state: 'failed', error, ...extra }
  }
  try {
    if (recorded) {
      progress?.step(h.label, 'checking')
      const running = await runningAgent(plan, h, recorded)
      if (running) {
        progress?.done(h.label, true, `already up (pid ${running.pid ?? '?'})`)
        return running
      }
    }
    const node = h.node ?? plan.remote.node
    const cli = h.cli ?? plan.remote.cli
    progress?.step(h.label, 'checking the host')
    const probeTimeout = (plan.ssh.connectTimeoutS + 30) * 1000
    const p = await runSsh(plan.ssh, h, PROBE_SCRIPT, [node, cli ?? '', remoteDirFor(plan, h), plan.sync ? '1' : '0'], probeTimeout)
    const pf = sshFailure(p, h, 'checking the host', probeTimeout)
    if (pf) return failed(pf)
    if (p.code !== 0)
      return failed(new HostSetupError(h.label, 'bad-reply', `${h.label}: the host check failed (exit ${p.code}): ${lastLine(p.stderr) || 'no message'}`))
    const probe = checkProbe(h, parseReply(p.stdout), node, cli)
    if (probe instanceof HostSetupError) return failed(probe)
    if (plan.sync) {
      progress?.step(h.label, 'syncing')
      const err = await syncTo(plan, h, probe.dir)
      if (err) return failed(err)
    }
    progress?.step(h.label, 'starting the agent')
    const startTimeout = (plan.ssh.connectTimeoutS + plan.registerTimeoutS + 20) * 1000
    const s = await runSsh(
      plan.ssh,
      h,
      startScript(keys),
      [
        node,
        probe.cli,
        probe.dir,
        plan.remote.runDir ?? '',
        agentId,
        plan.head!,
        tasks,
        String(h.threads ?? plan.threads ?? 0),
        String(plan.registerTimeoutS),
        plan.heartbeatMs !== undefined ? String(plan.heartbeatMs) : '',
        plan.nodeTimeoutMs !== undefined ? String(plan.nodeTimeoutMs) : '',
        plan.name,
      ],
      startTimeout,
    )
    const sf = sshFailure(s, h, 'starting the agent', startTimeout)
    const reply = parseReply(s.stdout)
    const runDir = reply.values.get('rundir')
    const pid = Number(reply.values.get('pid') ?? reply.values.get('already')) || undefined
    const base = { runDir, workDir: probe.dir, hostname: probe.hostname, version: probe.version, pid }
    if (sf) return failed(sf, { ...base, uncertain: reply.values.has('pid') || sf.reason === 'timeout' })
    const error = reply.values.get('error')
    const log = reply.log.join('\n')
    const indented = log ? `\n    ${reply.log.slice(-8).join('\n    ')}` : ''
    switch (error) {
      case undefined:
        break
      case 'exited':
        return failed(new AgentStartError(h.label, 'exited', `${h.label}: the agent exited at once:${indented || ' (no output)'}`, log), base)
      case 'not-registered':
        return failed(
          new AgentStartError(
            h.label,
            'not-registered',
            `${h.label}: the agent did not register with ${plan.head} within ${plan.registerTimeoutS} s (stopped it); can the host reach that address (firewall, routes)?${indented}`,
            log,
          ),
          base,
        )
      case 'no-tasks':
        return failed(
          new HostSetupError(
            h.label,
            'no-tasks',
            `${h.label}: the tasks module ${reply.values.get('tasks') ?? tasks} does not exist there${plan.sync ? '' : ' (without sync the project must already be in place)'}`,
          ),
          base,
        )
      case 'dir':
        return failed(new HostSetupError(h.label, 'dir', `${h.label}: cannot use the directory ${reply.values.get('dir') ?? runDir ?? '?'}`), base)
      case 'rundir': {
        const why = reply.values.get('why')
        return failed(new HostSetupError(h.label, 'dir', `${h.label}: refusing the run directory ${runDir ?? '?'}${why ? `: ${why}` : ''}`), base)
      }
      default:
        return failed(new HostSetupError(h.label, 'bad-reply', `${h.label}: unexpected answer while starting the agent (${error.slice(0, 40)})`), base)
    }
    if (s.code !== 0 || pid === undefined) {
      return failed(
        new HostSetupError(h.label, 'bad-reply', `${h.label}: starting the agent failed (exit ${s.code}): ${lastLine(s.stderr) || 'no message'}`),
        base,
      )
    }
    const status = parseAgentStatus(reply.values.get('status'))
    const already = reply.values.has('already')
    const outcome: HostOutcome = {
      spec: h,
      agentId,
      state: already ? 'already up' : 'up',
      ...base,
      threads: status?.threads,
      version: status?.version ?? probe.version,
      hostname: status?.host ?? probe.hostname,
    }
    progress?.done(h.label, true, `${already ? 'already up' : 'up'}, ${outcome.threads ?? '?'} threads, pid ${pid}`)
    return outcome
  } catch (err) {
    if (err instanceof ClusterError) return failed(err)
    throw err
  }
}

/**
 * Brings up one agent per host, in parallel: checks the host (Node.js,
 * actor-cluster and its version, rsync), syncs the project, starts the agent
 * detached and waits until it registers with the head. Hosts that fail are
 * reported with the cause; the others stay up. Records every host in the
 * state file for `cluster status` and `cluster down`.
 */
export async function clusterUp(plan: HostsPlan, hosts: readonly HostSpec[], progress?: Progress): Promise<UpResult> {
  if (plan.head === undefined || plan.listen === undefined) {
    throw new ConfigError('no head address: set listen (and head when listen is a wildcard) in cluster.config, or pass --head tcp://HOST:PORT')
  }
  if (plan.transport !== 'zmq') {
    throw new ConfigError(
      `cluster up starts agents of the zmq design; transport ${JSON.stringify(plan.transport)} agents are started with cluster agent --transport on each host`,
    )
  }
  const tasks = remoteTasksFor(plan)
  // The agents' half of the CURVE keys: the driver's public key and the agent key pair (never the driver's secret).
  const keys = plan.curve ? resolveAgentCurve(plan.curve) : undefined
  await requireLocal('ssh', '-V', 'to reach the hosts (install the OpenSSH client)')
  if (plan.sync) await requireLocal('rsync', '--version', 'to sync the project to the hosts (install it, or use --no-sync)')
  const state = await readState(plan.stateFile)
  // A running agent keeps the address it was started with: kept as `already up`, it would wait for a driver at the old head.
  if (state?.head !== undefined && state.head !== plan.head && state.hosts.length > 0) {
    throw new ConfigError(
      `cluster ${plan.name}'s agents were started for the head ${state.head}, not ${plan.head}, and keep that address: cluster down first, then up again (or up with --head ${state.head})`,
    )
  }
  const recorded = new Map(state?.hosts.map((r) => [r.label, r]))
  const head = await openHead(plan, keys)
  let outcomes: HostOutcome[]
  try {
    outcomes = await mapLimit(hosts, plan.concurrency, (h) => upOne(plan, h, tasks, keys, recorded.get(h.label), progress))
  } finally {
    progress?.end()
    await head.close()
  }
  const now = Date.now()
  const after = await updateState(plan.stateFile, plan.name, (records, s) => {
    s.head = plan.head
    for (const o of outcomes) {
      const before = records.get(o.spec.label)
      // A host that failed before an agent could start holds nothing to stop; one whose earlier agent may still run is kept.
      if (o.state === 'failed' && !o.uncertain && !(before && o.error instanceof SshError)) {
        records.delete(o.spec.label)
        continue
      }
      records.set(o.spec.label, {
        label: o.spec.label,
        user: o.spec.user,
        host: o.spec.host,
        port: o.spec.port,
        key: o.spec.key,
        agentId: o.agentId,
        state: o.state === 'failed' ? 'unknown' : 'up',
        error: o.error?.message,
        pid: o.pid,
        threads: o.threads,
        version: o.version,
        hostname: o.hostname,
        runDir: o.runDir ?? before?.runDir,
        workDir: o.workDir ?? before?.workDir,
        startedAt: o.state === 'up' ? now : before?.startedAt,
        updatedAt: now,
      })
    }
  })
  if (after.hosts.length === 0) await rm(plan.stateFile, { force: true })
  return { outcomes, head: head.registrar ? 'registrar' : 'driver' }
}
