import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createHash } from 'node:crypto'
import { findConfig, loadConfig, type ClusterConfig } from '../config.js'
import { ConfigError, InvalidArgumentError } from '../errors.js'
import type { HostSpec } from './hosts-file.js'
import type { SshSettings } from './ssh.js'
import type { CurveOptions } from '../transport/curve.js'
import { DASHBOARD_DEFAULTS } from '../monitor/options.js'
import { TRANSPORT_DEFAULTS, type TransportKind } from '../transport/options.js'
import { MAX_THREADS, integerOption } from '../validate.js'

/** Flags of `cluster up`, `status`, `down` (each also a `CLUSTER_*` variable); they win over the config file. */
export interface HostsFlags {
  config?: string | undefined
  nodes?: string | undefined
  head?: string | undefined
  listen?: string | undefined
  tasks?: string | undefined
  insecure?: boolean | undefined
  sync?: boolean | undefined
  threads?: number | undefined
  name?: string | undefined
  sshIdentity?: string | undefined
  sshConfig?: string | undefined
  sshOption?: string[] | undefined
  connectTimeout?: number | undefined
  registerTimeout?: number | undefined
  stopTimeout?: number | undefined
  concurrency?: number | undefined
  remoteDir?: string | undefined
  remoteNode?: string | undefined
  remoteCli?: string | undefined
  runDir?: string | undefined
  stateDir?: string | undefined
  keys?: string | undefined
  dashboard?: string | undefined
  /** The driver's timing and design, for the agents `cluster up` starts (from `CLUSTER_*` variables; no flags). */
  heartbeatMs?: number | undefined
  nodeTimeoutMs?: number | undefined
  transport?: TransportKind | undefined
}

/** Everything `cluster up`, `status` and `down` need, resolved: defaults < config file < environment < flags. */
export interface HostsPlan {
  readonly name: string
  /** The project directory (absolute): relative paths resolve against it; it is what gets synced. */
  readonly root: string
  readonly configFile: string | undefined
  readonly stateFile: string
  readonly hostsFile: string | undefined
  /** What the driver binds. */
  readonly listen: string | undefined
  /** What agents connect to. */
  readonly head: string | undefined
  readonly insecure: boolean
  /** The data plane of the config (`cluster up` starts zmq agents only). */
  readonly transport: string
  /** CURVE keys (the config's `curve`, or `--keys DIR`); the directory resolved. */
  readonly curve: CurveOptions | undefined
  /** The tasks module on this machine (absolute path). */
  readonly tasks: string | undefined
  readonly sync: boolean
  readonly syncExclude: readonly string[]
  readonly ssh: SshSettings
  readonly concurrency: number
  readonly remote: { readonly dir: string | undefined; readonly node: string; readonly cli: string | undefined; readonly runDir: string | undefined }
  readonly registerTimeoutS: number
  readonly stopTimeoutS: number
  /** Threads of each agent when its host line says none; undefined = the host's cores. */
  readonly threads: number | undefined
  readonly heartbeatMs: number | undefined
  readonly nodeTimeoutMs: number | undefined
  /** The running driver's dashboard (`--dashboard URL`, or the config's `dashboard`), for `cluster status`. */
  readonly dashboard: { readonly url: string; readonly token: string | undefined } | undefined
}

export const HOSTS_DEFAULTS = {
  connectTimeoutS: 10,
  concurrency: 32,
  registerTimeoutS: 30,
  stopTimeoutS: 15,
  node: 'node',
  stateDir: '.actor-cluster',
} as const

const WILDCARD = /^tcp:\/\/(\*|0\.0\.0\.0|\[::\]|\[\*\]):/

function positive(name: string, v: number | undefined, min = 1): number | undefined {
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw new InvalidArgumentError(`${name} must be a number ≥ ${min}, got ${String(v)}`)
  return v
}

function checkAddress(field: string, v: string): string {
  const m = /^tcp:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.*-]+):(\d{1,5})$/.exec(v)
  if (!m) throw new ConfigError(`${field} must be an address like tcp://10.0.0.1:7100, got ${JSON.stringify(v)}`)
  const port = Number(m[2])
  if (port < 1 || port > 65535) {
    throw new ConfigError(`${field} needs a fixed port (1 to 65535) that the hosts can reach, got ${JSON.stringify(v)}`)
  }
  return v
}

/** A user path: `~` is left for ssh to expand, anything else resolves against `base`. */
function localPath(p: string | undefined, base: string): string | undefined {
  if (p === undefined) return undefined
  return p.startsWith('~') ? p : resolve(base, p)
}

function tasksPath(v: string | URL | undefined, base: string): string | undefined {
  if (v === undefined) return undefined
  if (v instanceof URL || /^file:/i.test(v)) return fileURLToPath(v)
  if (/^[a-z][a-z0-9+.-]*:/i.test(v)) throw new ConfigError(`tasks must be a file on this machine to be used on the hosts, got ${JSON.stringify(v)}`)
  return resolve(base, v)
}

/**
 * Loads the config (`--config`, else `cluster.config.*` in the working
 * directory, else none) and merges the flags over it.
 */
export async function resolveHostsPlan(flags: HostsFlags, cwd = process.cwd()): Promise<HostsPlan> {
  const configFile = flags.config !== undefined && flags.config !== '' ? resolve(cwd, flags.config) : findConfig(cwd)
  let config: ClusterConfig = {}
  let root = cwd
  if (configFile !== undefined) {
    const loaded = await loadConfig(configFile)
    config = loaded.config
    root = loaded.root
  }
  const name =
    flags.name ??
    config.name ??
    (basename(root)
      .replace(/[^A-Za-z0-9._-]/g, '_')
      .slice(0, 64) ||
      'cluster')
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(name))
    throw new InvalidArgumentError(`--name must be 1 to 64 letters, digits, ".", "_" or "-", got ${JSON.stringify(name)}`)
  const stateDir = flags.stateDir !== undefined ? resolve(cwd, flags.stateDir) : resolve(root, config.stateDir ?? HOSTS_DEFAULTS.stateDir)
  const listen = flags.listen ?? config.listen
  let head = flags.head ?? config.head
  if (listen !== undefined) checkAddress(flags.listen !== undefined ? '--listen' : 'listen', listen)
  if (head !== undefined) checkAddress(flags.head !== undefined ? '--head' : 'head', head)
  if (head === undefined && listen !== undefined) {
    if (WILDCARD.test(listen)) {
      throw new ConfigError(
        `listen ${listen} binds every interface; set head to the address the hosts reach this machine at (head: 'tcp://10.0.0.1:7100' or --head)`,
      )
    }
    head = listen
  }
  if (head !== undefined && WILDCARD.test(head)) throw new ConfigError(`head ${head} is a wildcard; name an address the hosts can reach`)
  const sync = flags.sync ?? config.sync !== false
  const ssh = config.ssh ?? {}
  const remote = config.remote ?? {}
  return {
    name,
    root,
    configFile,
    stateFile: join(stateDir, `${name}.json`),
    hostsFile: flags.nodes !== undefined ? resolve(cwd, flags.nodes) : config.hosts !== undefined ? resolve(root, config.hosts) : undefined,
    listen: listen ?? head,
    head,
    insecure: flags.insecure ?? config.insecure ?? false,
    transport: flags.transport ?? config.transport ?? TRANSPORT_DEFAULTS.transport,
    curve:
      flags.keys !== undefined
        ? { dir: resolve(cwd, flags.keys) }
        : config.curve !== undefined
          ? { ...config.curve, ...(config.curve.dir !== undefined ? { dir: resolve(root, config.curve.dir) } : {}) }
          : undefined,
    tasks: flags.tasks !== undefined ? tasksPath(flags.tasks, cwd) : tasksPath(config.tasks, root),
    sync,
    syncExclude: typeof config.sync === 'object' ? (config.sync.exclude ?? []) : [],
    ssh: {
      configFile: flags.sshConfig !== undefined ? localPath(flags.sshConfig, cwd) : localPath(ssh.configFile, root),
      identity: flags.sshIdentity !== undefined ? localPath(flags.sshIdentity, cwd) : localPath(ssh.identity, root),
      user: ssh.user,
      port: ssh.port,
      options: [...(ssh.options ?? []), ...(flags.sshOption ?? [])],
      connectTimeoutS: Math.ceil(positive('--connect-timeout', flags.connectTimeout) ?? ssh.connectTimeoutS ?? HOSTS_DEFAULTS.connectTimeoutS),
    },
    concurrency: Math.floor(positive('--concurrency', flags.concurrency) ?? ssh.concurrency ?? HOSTS_DEFAULTS.concurrency),
    remote: {
      dir: flags.remoteDir ?? remote.dir,
      node: flags.remoteNode ?? remote.node ?? HOSTS_DEFAULTS.node,
      cli: flags.remoteCli ?? remote.cli,
      runDir: flags.runDir ?? remote.runDir,
    },
    registerTimeoutS: Math.ceil(positive('--register-timeout', flags.registerTimeout) ?? config.registerTimeoutS ?? HOSTS_DEFAULTS.registerTimeoutS),
    stopTimeoutS: Math.ceil(positive('--stop-timeout', flags.stopTimeout, 0) ?? config.stopTimeoutS ?? HOSTS_DEFAULTS.stopTimeoutS),
    // Checked as the agents check it (and as a hosts file's threads=): a value they refuse would fail on every host.
    threads: integerOption('--threads', flags.threads, 1, MAX_THREADS),
    heartbeatMs: flags.heartbeatMs ?? config.heartbeatMs,
    nodeTimeoutMs: flags.nodeTimeoutMs ?? config.nodeTimeoutMs,
    dashboard: dashboardOf(flags.dashboard, config),
  }
}

/** Where the driver's dashboard answers: the flag's URL, else the config's `dashboard` (its port, on its host or loopback). */
function dashboardOf(flag: string | undefined, config: ClusterConfig): HostsPlan['dashboard'] {
  if (flag !== undefined && flag !== '') {
    try {
      new URL(flag)
    } catch {
      throw new InvalidArgumentError(`--dashboard must be a URL like http://127.0.0.1:8265/, got ${JSON.stringify(flag)}`)
    }
    return { url: flag, token: undefined }
  }
  const d = config.dashboard
  if (d === undefined || d === false) return undefined
  const o = d === true ? {} : typeof d === 'number' ? { port: d } : d
  const port = o.port ?? DASHBOARD_DEFAULTS.port
  if (port === 0) return undefined
  const host = o.host === undefined || /^(0\.0\.0\.0|::|\[::\])$/.test(o.host) ? DASHBOARD_DEFAULTS.host : o.host
  return { url: `http://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}/`, token: o.token }
}

/** The agent identity of a host in this cluster: stable, so a second `cluster up` finds the agent it started. */
export function agentIdFor(plan: Pick<HostsPlan, 'name'>, h: Pick<HostSpec, 'label'>): string {
  const id = `${plan.name}@${h.label}`.replace(/[^A-Za-z0-9._@:[\]-]/g, '_')
  return id.length <= 120 ? id : `${id.slice(0, 100)}-${createHash('sha256').update(id).digest('hex').slice(0, 16)}`
}

/** The project directory on a host (relative = under the remote home). */
export function remoteDirFor(plan: HostsPlan, h: Pick<HostSpec, 'dir'>): string {
  return h.dir ?? plan.remote.dir ?? (plan.sync ? `actor-cluster/${plan.name}` : plan.root)
}

/**
 * The tasks module as the agent on a host finds it: relative to the remote
 * project directory when it lies inside the project, else the same absolute
 * path (which only works without sync, on hosts that have it there).
 */
export function remoteTasksFor(plan: HostsPlan): string {
  if (plan.tasks === undefined) {
    throw new ConfigError('no tasks module: set tasks in cluster.config (the module with your task functions) or pass --tasks')
  }
  const rel = relative(plan.root, plan.tasks)
  if (rel !== '' && !rel.startsWith('..') && !isAbsolute(rel)) return rel.split(sep).join('/')
  if (plan.sync) {
    throw new ConfigError(
      `the tasks module ${plan.tasks} is outside the project directory ${plan.root}, which is what gets synced to the hosts; move it inside, or use --no-sync`,
    )
  }
  return plan.tasks
}
