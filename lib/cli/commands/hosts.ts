import type { Argv, CommandModule } from 'yargs'
import { readHostsFile } from '../../hosts/hosts-file.js'
import { HOSTS_DEFAULTS, resolveHostsPlan, type HostsFlags, type HostsPlan } from '../../hosts/plan.js'
import { Progress, formatTable } from '../../hosts/progress.js'
import { clusterUp } from '../../hosts/up.js'
import { clusterStatus, type HostStatus } from '../../hosts/status.js'
import { clusterDown } from '../../hosts/down.js'
import { ConfigError } from '../../errors.js'
import { loadConfig } from '../../config.js'
import type { SlurmOptions } from '../../options.js'
import { slurmDown, slurmDrain, slurmJobStatus, slurmUp } from '../../hosts/slurm-up.js'
import { readState } from '../../hosts/state.js'
import { mergeHostsFlags } from '../../settings.js'
import { describe } from '../../validate.js'

type Args = Record<string, unknown>

/** Flags every hosts command shares. No yargs defaults: an absent flag lets its CLUSTER_* variable, then the config file, speak. */
function common(y: Argv): Argv {
  return y
    .option('config', { type: 'string', describe: 'cluster.config file (default: cluster.config.{js,mjs,ts,mts} here)' })
    .option('name', { type: 'string', describe: 'cluster name (default: the project folder name)' })
    .option('state-dir', { type: 'string', describe: `where up records what it started (default ${HOSTS_DEFAULTS.stateDir})` })
    .option('ssh-identity', { type: 'string', describe: 'SSH private key (ssh -i)' })
    .option('ssh-config', { type: 'string', describe: 'ssh_config file (ssh -F)' })
    .option('ssh-option', { type: 'string', array: true, describe: 'extra ssh -o option, e.g. StrictHostKeyChecking=accept-new (repeatable)' })
    .option('connect-timeout', { type: 'number', describe: `seconds to wait for a host to answer SSH (default ${HOSTS_DEFAULTS.connectTimeoutS})` })
    .option('concurrency', { type: 'number', describe: `most SSH sessions at once (default ${HOSTS_DEFAULTS.concurrency})` })
    .option('run-dir', { type: 'string', describe: 'directory for agent pid/status/log files on the hosts' })
    .option('json', { type: 'boolean', describe: 'print one JSON object' })
}

/** The command's flags over their CLUSTER_* variables (lib/settings.ts). */
function flags(a: Args): HostsFlags {
  // yargs gives a string for a string flag (a list when one is repeated, which no value here accepts).
  const s = (k: string) => {
    const v = a[k]
    return v === undefined ? undefined : typeof v === 'string' ? v : describe(v)
  }
  const n = (k: string) => (a[k] === undefined ? undefined : Number(a[k]))
  const b = (k: string) => (a[k] === undefined ? undefined : Boolean(a[k]))
  return mergeHostsFlags({
    config: s('config'),
    nodes: s('nodes'),
    head: s('head'),
    listen: s('listen'),
    tasks: s('tasks'),
    insecure: b('insecure'),
    sync: b('sync'),
    threads: n('threads'),
    name: s('name'),
    sshIdentity: s('ssh-identity'),
    sshConfig: s('ssh-config'),
    sshOption: a['ssh-option'] === undefined ? undefined : (a['ssh-option'] as unknown[]).map(String),
    connectTimeout: n('connect-timeout'),
    registerTimeout: n('register-timeout'),
    stopTimeout: n('stop-timeout'),
    concurrency: n('concurrency'),
    remoteDir: s('remote-dir'),
    remoteNode: s('remote-node'),
    remoteCli: s('remote-cli'),
    runDir: s('run-dir'),
    stateDir: s('state-dir'),
    keys: s('keys'),
    dashboard: s('dashboard'),
  })
}

/** A string flag's value (yargs gives a list when a flag is repeated). */
const text = (v: unknown): string => (typeof v === 'string' ? v : describe(v))

const dash = (v: string | number | null | undefined) => (v === undefined || v === null ? '-' : String(v))

export const upCommand: CommandModule = {
  command: 'up',
  describe: 'Start one agent per host of a hosts file over SSH, wait until each registers, print a table',
  builder: (y) =>
    common(y)
      .option('nodes', { type: 'string', describe: 'hosts file: [user@]host[:port] [threads=N] [key=value…] per line (default: hosts in the config)' })
      .option('head', { type: 'string', describe: 'address agents connect to, tcp://HOST:PORT (default: listen)' })
      .option('listen', { type: 'string', describe: 'address the driver binds (default: the config)' })
      .option('tasks', { type: 'string', describe: 'tasks module, inside the project directory (default: the config)' })
      .option('insecure', { type: 'boolean', describe: 'allow a non-loopback head without authentication (trusted networks only)' })
      .option('keys', {
        type: 'string',
        describe: 'CURVE keys directory from cluster keys (default: curve in the config); agents get server.pub and agent.json',
      })
      .option('sync', { type: 'boolean', describe: 'copy the project to the hosts with rsync first (default true; --no-sync when it is already there)' })
      .option('threads', { type: 'number', describe: 'threads per agent when a host line says none (default: the host cores)' })
      .option('register-timeout', { type: 'number', describe: `seconds an agent gets to register (default ${HOSTS_DEFAULTS.registerTimeoutS})` })
      .option('remote-dir', { type: 'string', describe: 'project directory on the hosts' })
      .option('remote-node', { type: 'string', describe: `node binary on the hosts (default ${HOSTS_DEFAULTS.node})` })
      .option('remote-cli', { type: 'string', describe: "actor-cluster's dist/bin/cluster.js on the hosts" })
      .option('slurm', { type: 'number', describe: 'instead of hosts: one Slurm batch job of N nodes, one agent per node (or slurm.nodes in the config)' })
      .option('partition', { type: 'string', describe: 'with --slurm: the partition (sbatch --partition)' })
      .option('time', { type: 'string', describe: 'with --slurm: the time limit, HH:MM:SS (sbatch --time)' })
      .option('account', { type: 'string', describe: 'with --slurm: the account to charge (sbatch --account)' })
      .option('cpus-per-node', { type: 'number', describe: "with --slurm: CPUs, and the agent's threads, per node (default: the whole node)" })
      .option('sbatch-arg', { type: 'string', array: true, describe: 'with --slurm: a further sbatch argument, e.g. --sbatch-arg=--qos=long (repeatable)' })
      .option('wait', { type: 'number', describe: 'with --slurm: seconds to wait for the job to start and its agents to register (default 300)' }),
  handler: async (a) => {
    const plan = await resolveHostsPlan(flags(a))
    const fromConfig: SlurmOptions = plan.configFile ? ((await loadConfig(plan.configFile)).config.slurm ?? {}) : {}
    const slurm: SlurmOptions = {
      ...fromConfig,
      ...(a['slurm'] !== undefined ? { nodes: Number(a['slurm']) } : {}),
      ...(a['partition'] !== undefined ? { partition: text(a['partition']) } : {}),
      ...(a['time'] !== undefined ? { time: text(a['time']) } : {}),
      ...(a['account'] !== undefined ? { account: text(a['account']) } : {}),
      ...(a['cpus-per-node'] !== undefined ? { cpusPerNode: Number(a['cpus-per-node']) } : {}),
      ...(a['sbatch-arg'] !== undefined ? { sbatchArgs: (a['sbatch-arg'] as unknown[]).map(String) } : {}),
      ...(a['wait'] !== undefined ? { waitS: Number(a['wait']) } : {}),
    }
    if (slurm.nodes !== undefined && a['nodes'] === undefined) {
      const r = await slurmUp(plan, slurm)
      if (a['json']) {
        process.stdout.write(`${JSON.stringify({ name: plan.name, head: plan.head, slurm: r })}\n`)
      } else {
        const rows = r.agents.map((n) => [n.node, String(n.threads), n.version, 'up', String(n.pid), n.id])
        const lines = rows.length > 0 ? [formatTable(['NODE', 'THREADS', 'VERSION', 'STATE', 'PID', 'AGENT'], rows), ''] : []
        lines.push(
          r.state === 'up'
            ? `Slurm job ${r.jobId}: ${r.agents.length} agents up; they connect to ${plan.head} and ${r.head === 'driver' ? 'serve the running driver' : 'wait for a driver there (cluster run driver.js)'}.`
            : r.message,
        )
        process.stdout.write(`${lines.join('\n')}\n`)
      }
      if (r.state !== 'up') process.exitCode = 1
      return
    }
    if (plan.hostsFile === undefined) throw new ConfigError('no hosts file: pass --nodes hosts.txt or set hosts in cluster.config')
    const hosts = await readHostsFile(plan.hostsFile)
    const progress = new Progress('up', hosts.length)
    const { outcomes, head } = await clusterUp(plan, hosts, progress)
    const failed = outcomes.filter((o) => o.state === 'failed')
    if (a['json']) {
      process.stdout.write(
        `${JSON.stringify({
          name: plan.name,
          head: plan.head,
          hosts: outcomes.map((o) => ({
            host: o.spec.label,
            state: o.state,
            agentId: o.agentId,
            threads: o.threads ?? null,
            version: o.version ?? null,
            pid: o.pid ?? null,
            hostname: o.hostname ?? null,
            error: o.error ? { code: o.error.code, reason: (o.error as { reason?: string }).reason ?? null, message: o.error.message } : null,
          })),
        })}\n`,
      )
    } else {
      const rows = outcomes.map((o) => [o.spec.label, dash(o.threads), dash(o.version), o.state, dash(o.pid), dash(o.hostname)])
      const lines = [formatTable(['HOST', 'THREADS', 'VERSION', 'STATE', 'PID', 'HOSTNAME'], rows), '']
      const up = outcomes.length - failed.length
      lines.push(
        `${up} of ${outcomes.length} host${outcomes.length === 1 ? '' : 's'} up; agents connect to ${plan.head} and ${head === 'driver' ? 'serve the running driver' : 'wait for a driver there (cluster run driver.js)'}.`,
      )
      if (failed.length > 0) {
        lines.push(`${failed.length} host${failed.length === 1 ? '' : 's'} failed:`)
        for (const o of failed)
          lines.push(`  ${o.error!.message}${o.error ? ` [${o.error.code}]` : ''}${o.uncertain ? ' (its agent may be running: cluster down will look)' : ''}`)
        lines.push('Fix them and run cluster up again (running agents are kept), or cluster down to stop everything.')
      }
      process.stdout.write(`${lines.join('\n')}\n`)
    }
    if (failed.length > 0) process.exitCode = 1
  },
}

function load(s: HostStatus): string {
  if (s.busy === null || s.threads === null) return '-'
  return `${s.busy}/${s.threads}${s.queued ? ` +${s.queued}` : ''}`
}

export const statusCommand: CommandModule = {
  command: 'status',
  describe: 'Ask every host of the cluster about its agent: state, threads, load, tasks done, heartbeat age, version',
  builder: (y) =>
    common(y).option('dashboard', {
      type: 'string',
      describe: "also ask the running driver, through its dashboard (URL; default: the config's dashboard)",
    }),
  handler: async (a) => {
    const plan: HostsPlan = await resolveHostsPlan(flags(a))
    const jobs = (await readState(plan.stateFile))?.slurm ?? []
    if (jobs.length > 0) {
      const all = await Promise.all(jobs.map((j) => slurmJobStatus(j, plan.heartbeatMs)))
      if (a['json']) {
        process.stdout.write(`${JSON.stringify({ name: plan.name, slurm: all })}\n`)
        return
      }
      const lines: string[] = []
      for (const [i, js] of all.entries()) {
        const why = js.reason ? ` (reason: ${js.reason})` : ''
        if (i > 0) lines.push('')
        const n = jobs[i]!.nodes
        lines.push(`cluster ${plan.name}: Slurm job ${js.jobId}, ${n} node${n === 1 ? '' : 's'}: ${js.state}${why}${js.nodes ? ` on ${js.nodes}` : ''}`)
        if (js.agents.length === 0) continue
        const rows = js.agents.map((g) => [
          g.node,
          g.state,
          String(g.threads),
          g.state === 'up' || g.state === 'leaving' ? `${g.busy}/${g.threads}${g.queued ? ` +${g.queued}` : ''}` : '-',
          String(g.tasksDone),
          g.heartbeatAgeMs === null ? '-' : `${(g.heartbeatAgeMs / 1000).toFixed(1)} s`,
          g.version,
          String(g.pid),
          g.id,
        ])
        lines.push(formatTable(['NODE', 'STATE', 'THREADS', 'LOAD', 'TASKS DONE', 'HEARTBEAT', 'VERSION', 'PID', 'AGENT'], rows))
      }
      process.stdout.write(`${lines.join('\n')}\n`)
      return
    }
    const st = await clusterStatus(plan)
    if (a['json']) {
      process.stdout.write(`${JSON.stringify(st)}\n`)
      return
    }
    const driverLines: string[] = []
    if (st.driver?.error === null) {
      const d = st.driver
      driverLines.push(
        `driver at ${d.address} (dashboard ${d.url}): ${d.nodes} nodes; tasks ${d.tasks.pending} pending, ${d.tasks.running} running, ${d.tasks.succeeded} done, ${d.tasks.failed} failed; ${Math.round(d.tasks.ratePerSecond)} tasks/s`,
      )
      if (d.otherNodes.length > 0) driverLines.push(`  nodes not started by cluster up: ${d.otherNodes.join(', ')}`)
    } else if (st.driver) {
      driverLines.push(`no driver view: ${st.driver.error}`)
    }
    if (st.hosts.length === 0) {
      process.stdout.write(`${[`cluster ${st.name} has no hosts (cluster up --nodes hosts.txt starts them)`, ...driverLines].join('\n')}\n`)
      return
    }
    const threads = st.hosts.reduce((n, h) => n + (h.state === 'up' || h.state === 'waiting' ? (h.threads ?? 0) : 0), 0)
    // With the driver's view, one more column: the tasks it has sent each agent and not had answered.
    const withDriver = st.driver?.error === null
    const rows = st.hosts.map((h) => [
      h.host,
      h.state,
      dash(h.threads),
      load(h),
      dash(h.tasksDone),
      h.heartbeatAgeMs === null ? '-' : `${(h.heartbeatAgeMs / 1000).toFixed(1)} s`,
      dash(h.version),
      dash(h.pid),
      ...(withDriver ? [h.driver ? String(h.driver.inFlight) : 'not a node'] : []),
    ])
    const lines = [
      `cluster ${st.name}, head ${dash(st.head)}: ${st.hosts.filter((h) => h.state === 'up').length} of ${st.hosts.length} hosts serving a driver, ${threads} threads`,
      ...driverLines,
      '',
    ]
    lines.push(formatTable(['HOST', 'STATE', 'THREADS', 'LOAD', 'TASKS DONE', 'HEARTBEAT', 'VERSION', 'PID', ...(withDriver ? ['IN FLIGHT'] : [])], rows))
    const bad = st.hosts.filter((h) => h.error !== null)
    if (bad.length > 0) {
      lines.push('')
      for (const h of bad) lines.push(`${h.host}: ${h.error!.startsWith(h.host) ? h.error!.slice(h.host.length + 2) : h.error}`)
    }
    process.stdout.write(`${lines.join('\n')}\n`)
  },
}

export const downCommand: CommandModule = {
  command: 'down',
  describe: 'Stop the agents cluster up started (all, or --host X) and remove their files on the hosts',
  builder: (y) =>
    common(y)
      .option('host', {
        type: 'string',
        array: true,
        describe: 'only this host, or node of a Slurm job (repeatable); its agent finishes its running tasks and hands queued ones back to the driver',
      })
      .option('nodes', { type: 'string', describe: 'also stop this cluster’s agents on the hosts of this file, recorded or not' })
      .option('stop-timeout', {
        type: 'number',
        describe: `seconds an agent gets to finish its running tasks before SIGKILL (default ${HOSTS_DEFAULTS.stopTimeoutS})`,
      })
      .option('forget', { type: 'boolean', describe: 'drop hosts that cannot be reached from the cluster anyway (machines gone for good)' }),
  handler: async (a) => {
    const plan = await resolveHostsPlan(flags(a))
    const jobs = (await readState(plan.stateFile))?.slurm ?? []
    if (jobs.length > 0 && a['host'] !== undefined) {
      // Nodes of Slurm jobs: each drained in turn (its agent leaves, the job gives the node back).
      const drained = []
      for (const node of (a['host'] as unknown[]).map(String)) drained.push(await slurmDrain(plan, node))
      if (a['json']) {
        process.stdout.write(`${JSON.stringify({ name: plan.name, slurm: { drained } })}\n`)
      } else {
        const rows = drained.map((d) => [d.host, d.result, d.pid === null ? '-' : String(d.pid), d.jobId, d.released])
        process.stdout.write(`${[formatTable(['NODE', 'RESULT', 'PID', 'JOB', 'NODE RELEASED'], rows), '', ...drained.map((d) => d.message)].join('\n')}\n`)
      }
      return
    }
    if (jobs.length > 0) {
      const r = await slurmDown(plan, jobs)
      process.stdout.write(a['json'] ? `${JSON.stringify({ name: plan.name, slurm: r })}\n` : `${r.map((o) => o.message).join('\n')}\n`)
      if (r.some((o) => o.result === 'failed')) process.exitCode = 1
      return
    }
    const extra = a['nodes'] !== undefined && plan.hostsFile !== undefined ? await readHostsFile(plan.hostsFile) : undefined
    const only = a['host'] === undefined ? undefined : (a['host'] as unknown[]).map(String)
    const outcomes = await clusterDown(plan, { only, extra, forget: a['forget'] === true }, new Progress('down', 0))
    const failed = outcomes.filter((o) => o.result === 'failed')
    if (a['json']) {
      process.stdout.write(
        `${JSON.stringify({
          name: plan.name,
          hosts: outcomes.map((o) => ({
            host: o.host,
            result: o.result,
            agents: o.agents,
            error: o.error ? { code: o.error.code, message: o.error.message } : null,
          })),
        })}\n`,
      )
    } else if (outcomes.length === 0) {
      process.stdout.write(`cluster ${plan.name} has no hosts to stop (nothing recorded in ${plan.stateFile})\n`)
    } else {
      const rows = outcomes.map((o) => [
        o.host,
        o.result,
        o.agents
          .filter((x) => x.pid !== undefined && x.how !== 'gone')
          .map((x) => x.pid)
          .join(',') || '-',
      ])
      const lines = [formatTable(['HOST', 'RESULT', 'PID'], rows)]
      if (failed.length > 0) {
        lines.push(
          '',
          a['forget'] === true
            ? `${failed.length} host${failed.length === 1 ? '' : 's'} could not be reached and ${failed.length === 1 ? 'was' : 'were'} forgotten; an agent may still run there:`
            : `${failed.length} host${failed.length === 1 ? '' : 's'} could not be reached; they stay listed (run cluster down again, or --forget):`,
        )
        for (const o of failed) lines.push(`  ${o.error!.message} [${o.error!.code}]`)
      }
      process.stdout.write(`${lines.join('\n')}\n`)
    }
    if (failed.length > 0) process.exitCode = 1
  },
}
