import { availableParallelism } from 'node:os'
import { InvalidArgumentError } from './errors.js'
import type { CurveOptions } from './transport/curve.js'
import { booleanOption, describe, endpointOption, integerOption, MAX_THREADS, oneOfOption } from './validate.js'
import { isBrokered, resolveTransportOptions, type ResolvedTransportOptions, type TransportOptions } from './transport/options.js'
import { resolveDashboardOptions, resolveLogLevel, type DashboardOptions, type LogLevel, type ResolvedDashboardOptions } from './monitor/options.js'
// From pino itself: monitor/log.ts reaches the driver, which imports this module.
import type { Logger } from 'pino'
import { checkKnownKeys, notAnOptionsObject, type KeyTable } from './util/known-keys.js'

/** Where the task functions and actor classes live: a module path or URL. */
export type TasksModule = string | URL

/** How local agents reach their driver (see {@link ClusterOptions.localTransport}). */
export const LOCAL_TRANSPORTS = ['memory', 'inproc', 'tcp'] as const
export type LocalTransport = (typeof LOCAL_TRANSPORTS)[number]

export interface ClusterOptions extends TransportOptions {
  /** Module whose named exports are the task functions and actor classes. */
  tasks?: TasksModule
  /**
   * Address the driver binds; agents connect to it. Default: none — the
   * driver takes its local agents in this process alone (a `memory://`
   * address, or `inproc://` with `localTransport: 'inproc'`) and binds no
   * TCP port another user could reach; `cluster.address` is then that
   * address. Give it for remote agents (`tcp://0.0.0.0:7100`,
   * `tcp://127.0.0.1:0` for a free loopback port). With `localTransport:
   * 'tcp'` and no `listen`, `CLUSTER_DEFAULTS.listen` (a free loopback port).
   */
  listen?: string
  /** Agents started inside this process on loopback. Default 1; 0 waits for remote agents. */
  localAgents?: number
  /** Threads of each local agent. Default: the number of cores. */
  threads?: number
  /**
   * How local agents reach the driver: `'memory'` (default; frames handed
   * over in this process's memory, no socket or I/O thread in between; with
   * `listen`, remote agents still use the socket), `'inproc'` (ZeroMQ's
   * in-process transport to the driver's socket) or `'tcp'` (through the
   * loopback address, exactly as a remote agent).
   */
  localTransport?: LocalTransport
  /** Most tasks in one frame: `'auto'` (adapts to task size, up to 1024) or a fixed positive integer. */
  batch?: 'auto' | number
  /** Interval of heartbeats both ways, in ms. Default 1000. */
  heartbeatMs?: number
  /** An agent silent this long is declared lost and its tasks requeued. Default 3000. */
  nodeTimeoutMs?: number
  /** Largest frame accepted or sent, in bytes. Default 64 MiB. */
  maxFrameBytes?: number
  /** Listen without authentication: any peer that reaches the port may join. Default false. */
  insecure?: boolean
  /**
   * CURVE authentication and encryption (see `cluster keys`); required to listen beyond loopback unless `insecure`.
   * On loopback TCP without it (and without `insecure`) the driver makes keys for this cluster and leaves the
   * agents' half where agents of the same user on this machine find them (`cluster.localKeys`).
   */
  curve?: CurveOptions
  /** Retries of a task after infrastructure failures (worker crash, out of memory, node lost). Default 3. */
  maxRetries?: number
  /**
   * `Cluster.start()` resolves only once this many agents besides the local
   * ones have registered, failing after `waitForNodesMs`. Default 0 (does not
   * wait). `cluster run` inside a Slurm job sets it to the job's node count.
   */
  waitForNodes?: number
  /** How long `Cluster.start()` waits for `waitForNodes` agents. Default 120000. */
  waitForNodesMs?: number
  /** Further options of the local agents (thread recycling and memory limits). */
  localAgentOptions?: Pick<AgentOptions, 'maxPoolBatch' | 'targetQueueMs' | 'maxTasksPerThread' | 'recycleHeapMb' | 'threadMemoryMb' | 'sharedCacheBytes'>
  /**
   * A `cluster.config` to take options from: the object, or its file's path
   * or URL. Options given here win over it. Without it, the file named by
   * `CLUSTER_CONFIG` is used (`cluster run` sets it); `{}` means none.
   */
  config?: ClusterConfig | string | URL
  /**
   * Serve the web dashboard, `/metrics` and `/api/stats`: `true` (port
   * 8265 on loopback), a port (0 = a free one; read `cluster.dashboardUrl`),
   * or {@link DashboardOptions}. Default off, unless the environment
   * variable `CLUSTER_DASHBOARD` names a port (`cluster dashboard -- <cmd>` sets it).
   */
  dashboard?: boolean | number | DashboardOptions
  /** Level of the driver's structured logs (pino JSON lines on stderr). Default `silent`, or `CLUSTER_LOG_LEVEL`. */
  logLevel?: LogLevel
  /** A pino logger of your own to log to instead (its own level applies; `logLevel` is ignored). */
  logger?: Logger
}

export interface ResolvedClusterOptions extends ResolvedTransportOptions {
  readonly tasks: string | undefined
  /** Undefined when not given: see {@link ClusterOptions.listen}. */
  readonly listen: string | undefined
  readonly localAgents: number
  readonly threads: number
  readonly localTransport: LocalTransport
  readonly batch: 'auto' | number
  readonly heartbeatMs: number
  readonly nodeTimeoutMs: number
  readonly maxFrameBytes: number
  readonly insecure: boolean
  readonly curve: CurveOptions | undefined
  readonly maxRetries: number
  readonly waitForNodes: number
  readonly waitForNodesMs: number
  readonly localAgentOptions: Readonly<
    Pick<AgentOptions, 'maxPoolBatch' | 'targetQueueMs' | 'maxTasksPerThread' | 'recycleHeapMb' | 'threadMemoryMb' | 'sharedCacheBytes'>
  >
  readonly dashboard: ResolvedDashboardOptions | undefined
  readonly logLevel: LogLevel
  readonly logger: Logger | undefined
}

export const CLUSTER_DEFAULTS = {
  /** Bound only when local agents go over TCP (`localTransport: 'tcp'`) and `listen` was not given. */
  listen: 'tcp://127.0.0.1:0',
  localAgents: 1,
  localTransport: 'memory',
  batch: 'auto',
  heartbeatMs: 1000,
  nodeTimeoutMs: 3000,
  maxFrameBytes: 64 * 1024 * 1024,
  insecure: false,
  maxRetries: 3,
  waitForNodes: 0,
  waitForNodesMs: 120_000,
} as const

export interface AgentOptions extends TransportOptions {
  /** Driver address, e.g. `tcp://127.0.0.1:7100` (the `zmq` design; brokered designs join through `clusterId`). */
  connect?: string
  tasks: TasksModule
  /** Worker threads. Default: the number of cores. */
  threads?: number
  /** Most tasks handed to one thread at once. Default 2048. */
  maxPoolBatch?: number
  /** Aim for about this much queued work per thread when granting credit, in ms. Default 20. */
  targetQueueMs?: number
  heartbeatMs?: number
  /** Replace the pool's threads after each has run about this many tasks (0 = never). Default 0. */
  maxTasksPerThread?: number
  /** Replace the pool's threads when one reports a heap above this many MB after a batch (0 = never). Default 0. */
  recycleHeapMb?: number
  /** Hard heap limit of each worker thread in MB: a task that exceeds it fails with OutOfMemoryError. Default: Node's. */
  threadMemoryMb?: number
  /** Declare the driver gone after this much silence, in ms; more than `heartbeatMs`. Default 3000. */
  driverTimeoutMs?: number
  maxFrameBytes?: number
  /** Bytes of shared values (`cluster.put`) the agent keeps; the driver drops least recently used ones to stay within it. Default 256 MiB. */
  sharedCacheBytes?: number
  /** A stable identity for the agent; default random. */
  id?: string
  /** CURVE keys: the driver's public key and this agent's key pair (see `cluster keys`). */
  curve?: CurveOptions
  /** Brokered designs: frames carry no HMAC (the driver must be insecure too). Default false. */
  insecure?: boolean
}

export interface ResolvedAgentOptions extends ResolvedTransportOptions {
  readonly connect: string
  readonly tasks: string
  readonly threads: number
  readonly maxPoolBatch: number
  readonly targetQueueMs: number
  readonly heartbeatMs: number
  readonly maxTasksPerThread: number
  readonly recycleHeapMb: number
  readonly threadMemoryMb: number | undefined
  readonly driverTimeoutMs: number
  readonly maxFrameBytes: number
  readonly sharedCacheBytes: number
  readonly id: string | undefined
  readonly curve: CurveOptions | undefined
  readonly insecure: boolean
}

export const AGENT_DEFAULTS = {
  maxPoolBatch: 2048,
  targetQueueMs: 20,
  heartbeatMs: 1000,
  driverTimeoutMs: 3000,
  maxFrameBytes: CLUSTER_DEFAULTS.maxFrameBytes,
  sharedCacheBytes: 256 * 1024 * 1024,
} as const

/** An integer option of at least `min`, else the fallback. */
function positiveInt(name: string, v: unknown, fallback: number, min = 1, max?: number): number {
  return integerOption(name, v, min, max) ?? fallback
}

/** Turns a module path, file URL or URL object into an import specifier (an absolute file URL for paths). */
export function tasksSpecifier(name: string, v: unknown): string {
  if (v instanceof URL) return v.href
  if (typeof v !== 'string' || v.length === 0) {
    throw new InvalidArgumentError(`options.${name} must be a module path or URL, got ${describe(v)}`)
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(v) && !/^[a-z]:[\\/]/i.test(v)) return v
  return new URL(v, `file://${process.cwd()}/`).href
}

/** A ZeroMQ endpoint, or an error naming the field. */
function checkEndpoint(name: string, v: unknown): string {
  return endpointOption(name, v)
}

/** Where the driver listens: a socket's endpoint. A `memory://` address is the driver's own making, for its local agents. */
function listenOption(v: unknown): string {
  const listen = checkEndpoint('listen', v)
  if (/^memory:/i.test(listen)) {
    throw new InvalidArgumentError(
      `options.listen must be a socket's endpoint (tcp://, ipc:// or inproc://), got ${JSON.stringify(listen)}: the driver makes its memory:// address itself (localTransport: 'memory')`,
    )
  }
  return listen
}

const TRANSPORT_KEYS: KeyTable<TransportOptions> = {
  transport: true,
  redisUrl: true,
  amqpUrl: true,
  clusterId: true,
  brokerReconnectMs: true,
  brokerSecret: true,
  brokerSecretFile: true,
}

const LOCAL_AGENT_KEYS: KeyTable<NonNullable<ClusterOptions['localAgentOptions']>> = {
  maxPoolBatch: true,
  targetQueueMs: true,
  maxTasksPerThread: true,
  recycleHeapMb: true,
  threadMemoryMb: true,
  sharedCacheBytes: true,
}

/** Every option of `Cluster.start`, once. */
export const CLUSTER_KEYS: KeyTable<ClusterOptions> = {
  ...TRANSPORT_KEYS,
  tasks: true,
  listen: true,
  localAgents: true,
  threads: true,
  localTransport: true,
  batch: true,
  heartbeatMs: true,
  nodeTimeoutMs: true,
  maxFrameBytes: true,
  insecure: true,
  curve: true,
  maxRetries: true,
  waitForNodes: true,
  waitForNodesMs: true,
  localAgentOptions: true,
  config: true,
  dashboard: true,
  logLevel: true,
  logger: true,
}

const AGENT_KEYS: KeyTable<AgentOptions> = {
  ...TRANSPORT_KEYS,
  ...LOCAL_AGENT_KEYS,
  connect: true,
  tasks: true,
  threads: true,
  heartbeatMs: true,
  driverTimeoutMs: true,
  maxFrameBytes: true,
  id: true,
  curve: true,
  insecure: true,
}

/** Refuses a `Cluster.start` options object with a key that is no option: every layer (the caller's, a config's, the environment's) is merged in by now, so a typo in any is refused. */
function checkClusterOptionKeys(o: ClusterOptions): void {
  checkKnownKeys('Cluster.start options', o, CLUSTER_KEYS)
  if (o.localAgentOptions !== null && typeof o.localAgentOptions === 'object')
    checkKnownKeys('options.localAgentOptions', o.localAgentOptions, LOCAL_AGENT_KEYS)
}

export function resolveClusterOptions(o: ClusterOptions = {}): ResolvedClusterOptions {
  const notObject = notAnOptionsObject('options', o)
  if (notObject) throw notObject
  checkClusterOptionKeys(o)
  const batch = o.batch ?? CLUSTER_DEFAULTS.batch
  if (batch !== 'auto' && !(typeof batch === 'number' && Number.isSafeInteger(batch) && batch >= 1)) {
    throw new InvalidArgumentError(`options.batch must be 'auto' or a positive integer, got ${describe(batch)}`)
  }
  const localAgents = positiveInt('localAgents', o.localAgents, CLUSTER_DEFAULTS.localAgents, 0)
  const tasks = o.tasks === undefined ? undefined : tasksSpecifier('tasks', o.tasks)
  if (localAgents > 0 && tasks === undefined) {
    throw new InvalidArgumentError('options.tasks is required to start local agents (the module with your task functions)')
  }
  const heartbeatMs = positiveInt('heartbeatMs', o.heartbeatMs, CLUSTER_DEFAULTS.heartbeatMs)
  const nodeTimeoutMs = positiveInt('nodeTimeoutMs', o.nodeTimeoutMs, CLUSTER_DEFAULTS.nodeTimeoutMs)
  if (nodeTimeoutMs <= heartbeatMs) {
    throw new InvalidArgumentError(`options.nodeTimeoutMs (${nodeTimeoutMs}) must exceed options.heartbeatMs (${heartbeatMs})`)
  }
  const localTransport = oneOfOption('localTransport', o.localTransport, LOCAL_TRANSPORTS) ?? CLUSTER_DEFAULTS.localTransport
  const insecure = booleanOption('insecure', o.insecure) ?? CLUSTER_DEFAULTS.insecure
  if (o.logger !== undefined && (o.logger === null || typeof o.logger !== 'object' || typeof o.logger.info !== 'function')) {
    throw new InvalidArgumentError(`options.logger must be a pino logger, got ${describe(o.logger)}`)
  }
  return Object.freeze({
    ...resolveTransportOptions(o),
    tasks,
    listen: o.listen === undefined ? undefined : listenOption(o.listen),
    localAgents,
    threads: positiveInt('threads', o.threads, availableParallelism(), 1, MAX_THREADS),
    localTransport,
    batch,
    heartbeatMs,
    nodeTimeoutMs,
    maxFrameBytes: positiveInt('maxFrameBytes', o.maxFrameBytes, CLUSTER_DEFAULTS.maxFrameBytes, 1024),
    insecure,
    curve: o.curve,
    maxRetries: positiveInt('maxRetries', o.maxRetries, CLUSTER_DEFAULTS.maxRetries, 0),
    waitForNodes: positiveInt('waitForNodes', o.waitForNodes, CLUSTER_DEFAULTS.waitForNodes, 0),
    waitForNodesMs: positiveInt('waitForNodesMs', o.waitForNodesMs, CLUSTER_DEFAULTS.waitForNodesMs),
    localAgentOptions: Object.freeze({ ...o.localAgentOptions }),
    dashboard: resolveDashboardOptions(o.dashboard),
    logLevel: resolveLogLevel(o.logLevel),
    logger: o.logger,
  })
}

export function resolveAgentOptions(o: AgentOptions): ResolvedAgentOptions {
  const notObject = notAnOptionsObject('options', o)
  if (notObject) throw notObject
  checkKnownKeys('agent options', o, AGENT_KEYS)
  if (o.id !== undefined && (typeof o.id !== 'string' || o.id.length === 0 || o.id.length > 128)) {
    throw new InvalidArgumentError(`options.id must be a string of 1 to 128 characters, got ${describe(o.id)}`)
  }
  const transport = resolveTransportOptions(o)
  if (isBrokered(transport.transport) && transport.clusterId === undefined) {
    throw new InvalidArgumentError(
      `options.clusterId is required with transport '${transport.transport}': the id of the cluster to join (the driver's cluster.id)`,
    )
  }
  const heartbeatMs = positiveInt('heartbeatMs', o.heartbeatMs, AGENT_DEFAULTS.heartbeatMs)
  const driverTimeoutMs = positiveInt('driverTimeoutMs', o.driverTimeoutMs, AGENT_DEFAULTS.driverTimeoutMs)
  // Silence is checked once a heartbeat: a shorter timeout would take a driver for gone between two of its beats.
  if (driverTimeoutMs <= heartbeatMs) {
    throw new InvalidArgumentError(`options.driverTimeoutMs (${driverTimeoutMs}) must exceed options.heartbeatMs (${heartbeatMs})`)
  }
  return Object.freeze({
    ...transport,
    connect: isBrokered(transport.transport) && o.connect === undefined ? '' : checkEndpoint('connect', o.connect),
    tasks: tasksSpecifier('tasks', o.tasks),
    threads: positiveInt('threads', o.threads, availableParallelism(), 1, MAX_THREADS),
    maxPoolBatch: positiveInt('maxPoolBatch', o.maxPoolBatch, AGENT_DEFAULTS.maxPoolBatch),
    targetQueueMs: positiveInt('targetQueueMs', o.targetQueueMs, AGENT_DEFAULTS.targetQueueMs),
    heartbeatMs,
    maxTasksPerThread: positiveInt('maxTasksPerThread', o.maxTasksPerThread, 0, 0),
    recycleHeapMb: positiveInt('recycleHeapMb', o.recycleHeapMb, 0, 0),
    threadMemoryMb: o.threadMemoryMb === undefined ? undefined : positiveInt('threadMemoryMb', o.threadMemoryMb, 0, 16),
    driverTimeoutMs,
    maxFrameBytes: positiveInt('maxFrameBytes', o.maxFrameBytes, AGENT_DEFAULTS.maxFrameBytes, 1024),
    sharedCacheBytes: positiveInt('sharedCacheBytes', o.sharedCacheBytes, AGENT_DEFAULTS.sharedCacheBytes, 0),
    id: o.id,
    curve: o.curve,
    insecure: booleanOption('insecure', o.insecure) ?? false,
  })
}

export { isLoopbackEndpoint } from './validate.js'

/** How `cluster up`, `status` and `down` reach the hosts: the system's OpenSSH client, in batch mode. */
export interface SshOptions {
  /** An ssh_config file (`ssh -F`); default: the user's own (~/.ssh/config). */
  configFile?: string
  /** A private key (`ssh -i`); default: ssh's own choice (agent, ~/.ssh/id_*). A host line's `key=` wins. */
  identity?: string
  /** Login user when a host line names none; default: ssh's own choice. */
  user?: string
  /** SSH port when a host line names none; default: ssh's own choice (22). */
  port?: number
  /** More `-o` options, e.g. `'StrictHostKeyChecking=accept-new'`. */
  options?: string[]
  /** Seconds to wait for a host's SSH server to answer (`ConnectTimeout`). Default 10. */
  connectTimeoutS?: number
  /** Most SSH sessions at once. Default 32. */
  concurrency?: number
}

/** Where things live on the hosts. */
export interface RemoteOptions {
  /**
   * The project directory on each host (a host line's `dir=` wins). With sync,
   * the project is copied there; default `actor-cluster/<name>` under the
   * remote home. Without sync, default: the same path as on this machine.
   */
  dir?: string
  /** The `node` binary on the hosts (a host line's `node=` wins). Default `node`. */
  node?: string
  /**
   * actor-cluster's `dist/bin/cluster.js` on the hosts (a host line's `cli=`
   * wins). Default: `<dir>/node_modules/actor-cluster`, then the global
   * packages next to `node`.
   */
  cli?: string
  /** Where agents keep their pid, status, log and key files. Default `~/.actor-cluster/run/<name>` on each host (made 0700). */
  runDir?: string
}

/** The `slurm` section of cluster.config, and `cluster up --slurm N …`. */
export interface SlurmOptions {
  /** Nodes of the job, one agent each. */
  nodes?: number
  partition?: string
  /** Time limit, as sbatch takes it (`HH:MM:SS`). */
  time?: string
  account?: string
  /** CPUs per node (`--cpus-per-task`, the agent's threads); default: the whole node. */
  cpusPerNode?: number
  /** Further sbatch arguments, e.g. `--qos=long`. */
  sbatchArgs?: string[]
  /** Seconds to wait for the job to start and its agents to register. Default 300. */
  waitS?: number
}

/** The typed shape of `cluster.config.ts`: the driver's options plus how to bring up hosts. */
export interface ClusterConfig extends Omit<ClusterOptions, 'config'> {
  /** The cluster's name: tells its agents, state file and remote directories apart. Default: the project folder's name. */
  name?: string
  /** The address agents connect to, as the hosts see the driver. Default: `listen` (which must then name a host, not a wildcard). */
  head?: string
  /** The hosts file (`cluster up --nodes`). */
  hosts?: string
  /** `cluster up --slurm`: the batch job that starts the agents. */
  slurm?: SlurmOptions
  ssh?: SshOptions
  remote?: RemoteOptions
  /** Copy the project directory to the hosts before starting agents (rsync; `.git` and `node_modules` excluded). Default true. */
  sync?: boolean | { exclude?: string[] }
  /** Seconds an agent gets to register with the head after it starts. Default 30. */
  registerTimeoutS?: number
  /** Seconds `cluster down` waits for an agent to finish its running tasks before killing it. Default 15. */
  stopTimeoutS?: number
  /** Where `cluster up` records what it started. Default `.actor-cluster` in the project directory. */
  stateDir?: string
  /** The project directory: relative paths resolve against it. Default: the config file's folder (or the working directory). */
  root?: string
}

/** Types a `cluster.config.ts` export: `export default defineConfig({ ... })`. */
export function defineConfig(config: ClusterConfig): ClusterConfig {
  return config
}
