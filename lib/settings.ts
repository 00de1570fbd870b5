/**
 * The one settings pipeline: defaults < config file < `CLUSTER_*` environment
 * variables < explicit options (or command-line flags). The driver
 * (`Cluster.start`), `cluster agent`, `cluster dashboard` and the hosts
 * commands all resolve through here, so a variable means the same thing
 * everywhere. Each variable is `CLUSTER_` and its option's name in upper
 * snake case (`heartbeatMs` → `CLUSTER_HEARTBEAT_MS`); `docs/configuration.md`
 * lists them.
 */
import { resolve } from 'node:path'
import { InvalidArgumentError } from './errors.js'
import { clusterOptionsOf, namedConfig } from './config.js'
import {
  LOCAL_TRANSPORTS,
  resolveAgentOptions,
  resolveClusterOptions,
  type AgentOptions,
  type ClusterConfig,
  type ClusterOptions,
  type ResolvedAgentOptions,
  type ResolvedClusterOptions,
} from './options.js'
import { DASHBOARD_DEFAULTS, LOG_LEVELS, type DashboardOptions, type LogLevel } from './monitor/options.js'
import { AMQP_SCHEMES, CLUSTER_ID, REDIS_SCHEMES, TRANSPORT_KINDS } from './transport/options.js'
import { endpointProblem, integerProblem, urlOption } from './validate.js'
import { notAnOptionsObject } from './util/known-keys.js'

/** The variable naming the config file (`cluster run` sets it). */
const CONFIG_ENV = 'CLUSTER_CONFIG'

/** `heartbeatMs` → `CLUSTER_HEARTBEAT_MS`. */
export function envName(key: string): string {
  return `CLUSTER_${key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/-/g, '_')
    .toUpperCase()}`
}

type Parse = (raw: string, name: string) => unknown

function bad(name: string, problem: string, raw: string): never {
  throw new InvalidArgumentError(`${name} ${problem}, got ${JSON.stringify(raw)}`)
}

const integer =
  (min = 1, max?: number): Parse =>
  (raw, name) => {
    const n = /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : NaN
    const problem = integerProblem(n, min, max)
    return problem === undefined ? n : bad(name, problem, raw)
  }

const boolean: Parse = (raw, name) => {
  const v = raw.trim().toLowerCase()
  if (['1', 'true', 'yes', 'on'].includes(v)) return true
  if (['0', 'false', 'no', 'off'].includes(v)) return false
  return bad(name, 'must be true or false (or 1 or 0)', raw)
}

const text: Parse = (raw) => raw

const oneOf =
  (choices: readonly string[]): Parse =>
  (raw, name) =>
    choices.includes(raw) ? raw : bad(name, `must be one of ${choices.join(', ')}`, raw)

const endpoint: Parse = (raw, name) => {
  const problem = endpointProblem(raw)
  return problem === undefined ? raw : bad(name, problem, raw)
}

const url =
  (schemes: readonly string[]): Parse =>
  (raw, name) =>
    urlOption(name, raw, schemes)

const batch: Parse = (raw, name) =>
  raw === 'auto' ? raw : /^\d+$/.test(raw) && Number(raw) >= 1 ? Number(raw) : bad(name, "must be 'auto' or a positive integer", raw)

const clusterId: Parse = (raw, name) => (CLUSTER_ID.test(raw) ? raw : bad(name, "must be 1 to 64 letters, digits, '-', '_' or '.'", raw))

/** One `CLUSTER_*` variable: the option it sets and how its text becomes a value. */
export interface EnvVariable {
  readonly name: string
  readonly key: string
  readonly parse: Parse
}

const variable = (key: string, parse: Parse, name = envName(key)): EnvVariable => ({ name, key, parse })

const TRANSPORT_VARIABLES = [
  variable('transport', oneOf(TRANSPORT_KINDS)),
  variable('redisUrl', url(REDIS_SCHEMES)),
  variable('amqpUrl', url(AMQP_SCHEMES)),
  variable('clusterId', clusterId),
  variable('brokerReconnectMs', integer(0)),
  variable('brokerSecretFile', (raw) => resolve(raw)),
] as const

/** The driver's options that a variable can set (the dashboard's, which nest, are read apart). */
const CLUSTER_VARIABLES: readonly EnvVariable[] = [
  variable('tasks', text),
  variable('listen', endpoint),
  variable('localAgents', integer(0)),
  variable('threads', integer()),
  variable('localTransport', oneOf(LOCAL_TRANSPORTS)),
  variable('batch', batch),
  variable('heartbeatMs', integer()),
  variable('nodeTimeoutMs', integer()),
  variable('maxFrameBytes', integer(1024)),
  variable('insecure', boolean),
  variable('maxRetries', integer(0)),
  variable('waitForNodes', integer(0)),
  variable('waitForNodesMs', integer()),
  variable('curve', (raw) => ({ dir: resolve(raw) }), 'CLUSTER_CURVE_DIR'),
  ...TRANSPORT_VARIABLES,
  variable('logLevel', oneOf(LOG_LEVELS)),
]

/** The agent's options that a variable can set (`id` reads `CLUSTER_AGENT_ID`: `CLUSTER_ID` would read as the cluster's). */
const AGENT_VARIABLES: readonly EnvVariable[] = [
  variable('connect', endpoint),
  variable('tasks', text),
  variable('threads', integer()),
  variable('maxPoolBatch', integer()),
  variable('targetQueueMs', integer()),
  variable('heartbeatMs', integer()),
  variable('maxTasksPerThread', integer(0)),
  variable('recycleHeapMb', integer(0)),
  variable('threadMemoryMb', integer(16)),
  variable('driverTimeoutMs', integer()),
  variable('maxFrameBytes', integer(1024)),
  variable('sharedCacheBytes', integer(0)),
  variable('id', text, 'CLUSTER_AGENT_ID'),
  variable('insecure', boolean),
  ...TRANSPORT_VARIABLES,
]

/** The dashboard's variables: `CLUSTER_DASHBOARD` (a port) turns it on, the others adjust it. */
const DASHBOARD_VARIABLES: readonly EnvVariable[] = [
  variable('port', (raw, name) => (/^\d{1,5}$/.test(raw) && Number(raw) <= 65535 ? Number(raw) : bad(name, 'must be a port number', raw)), 'CLUSTER_DASHBOARD'),
  variable('host', text, 'CLUSTER_DASHBOARD_HOST'),
  variable('token', text, 'CLUSTER_DASHBOARD_TOKEN'),
  variable('updateMs', integer(20, 1000), 'CLUSTER_DASHBOARD_UPDATE_MS'),
]

/** The options the given variables set in `env` (unset and empty variables set nothing). */
function envOptions(variables: readonly EnvVariable[], env: NodeJS.ProcessEnv = process.env): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const v of variables) {
    const raw = env[v.name]
    if (raw !== undefined && raw !== '') out[v.key] = v.parse(raw, v.name)
  }
  return out
}

/** `CLUSTER_LOG_LEVEL`, checked, or undefined. */
export function envLogLevel(env: NodeJS.ProcessEnv = process.env): LogLevel | undefined {
  return envOptions(
    CLUSTER_VARIABLES.filter((v) => v.key === 'logLevel'),
    env,
  )['logLevel'] as LogLevel | undefined
}

type DashboardValue = boolean | number | DashboardOptions | undefined

function dashboardObject(v: DashboardValue): DashboardOptions {
  return v === undefined || typeof v === 'boolean' ? {} : typeof v === 'number' ? { port: v } : { ...v }
}

/**
 * The dashboard once the environment is applied over `below` (the config's):
 * `CLUSTER_DASHBOARD` turns it on at that port; the host, token and update
 * variables adjust whichever dashboard is on. Field by field, the variables win.
 */
function envDashboard(below: DashboardValue, env: NodeJS.ProcessEnv = process.env): DashboardValue {
  const fields = envOptions(DASHBOARD_VARIABLES, env) as DashboardOptions
  if (Object.keys(fields).length === 0) return below
  // Without a port the variables only adjust a dashboard the config turned on.
  if (fields.port === undefined && (below === undefined || below === false)) return below
  return { ...dashboardObject(below), ...fields }
}

/**
 * Fills `dashboard` and `logLevel` from the environment when the caller left
 * them out (`cluster dashboard -- <command>` turns the dashboard on this way in
 * a program that does not ask for it).
 */
export function monitorEnvDefaults<T extends { dashboard?: DashboardValue; logLevel?: LogLevel }>(options: T, env: NodeJS.ProcessEnv = process.env): T {
  let out = options
  if (options.dashboard === undefined) {
    const dashboard = envDashboard(undefined, env)
    if (dashboard !== undefined) out = { ...out, dashboard }
  }
  const logLevel = options.logLevel === undefined ? envLogLevel(env) : undefined
  if (logLevel !== undefined) out = { ...out, logLevel }
  return out
}

/** Copies the defined fields of each layer over the ones below. */
function layer<T extends object>(...layers: readonly object[]): T {
  const out: Record<string, unknown> = {}
  for (const l of layers) for (const [k, v] of Object.entries(l)) if (v !== undefined) out[k] = v
  return out as T
}

/**
 * The driver's options with every layer applied but not yet checked: the
 * config (`options.config`, else `CLUSTER_CONFIG`), then the environment, then
 * `options`. `base` goes under the config: a command's own defaults.
 */
export async function mergeClusterSettings(options: ClusterOptions, env: NodeJS.ProcessEnv = process.env, base: ClusterOptions = {}): Promise<ClusterOptions> {
  const loaded = await namedConfig(options.config, env)
  const fromConfig = loaded === undefined ? {} : clusterOptionsOf(loaded.config, loaded.root)
  const below = layer<ClusterOptions>(base, fromConfig)
  const fromEnv = { ...envOptions(CLUSTER_VARIABLES, env), dashboard: envDashboard(below.dashboard, env) }
  const { config: _config, ...explicit } = options
  return layer<ClusterOptions>(below, fromEnv, explicit)
}

/**
 * Resolves the driver's options through every layer: defaults < config file
 * < `CLUSTER_*` variables < `options`. What `Cluster.start` calls. Throws an
 * {@link InvalidArgumentError} naming the option or variable at fault, or a
 * `ConfigError` naming the config file.
 */
export async function resolveClusterSettings(options: ClusterOptions, env: NodeJS.ProcessEnv = process.env): Promise<ResolvedClusterOptions> {
  const notObject = notAnOptionsObject('options', options)
  if (notObject) throw notObject
  const merged = await mergeClusterSettings(options, env)
  const fromEnv = envSources(CLUSTER_VARIABLES, options, env)
  if (options.dashboard === undefined) for (const [path, name] of envSources(DASHBOARD_VARIABLES, {}, env)) fromEnv.set(`dashboard.${path}`, name)
  try {
    return resolveClusterOptions(merged)
  } catch (err) {
    throw inEnvTerms(err, fromEnv)
  }
}

/** The option paths the given variables set in `env` (`threads` → `CLUSTER_THREADS`), but for those `explicit` sets itself. */
function envSources(variables: readonly EnvVariable[], explicit: object, env: NodeJS.ProcessEnv): Map<string, string> {
  const out = new Map<string, string>()
  for (const v of variables) {
    const raw = env[v.name]
    if (raw !== undefined && raw !== '' && (explicit as Record<string, unknown>)[v.key] === undefined) out.set(v.key, v.name)
  }
  return out
}

/**
 * An options error in the environment's terms: each `options.<path>` whose
 * value a variable set becomes that variable (`CLUSTER_THREADS=5000`:
 * `CLUSTER_THREADS must be …`), as a bad flag is named by the flag. A value
 * from a config file or the caller keeps the option's name.
 */
function inEnvTerms(err: unknown, fromEnv: ReadonlyMap<string, string>): unknown {
  return renameOptions(err, (path) => fromEnv.get(path))
}

/**
 * An options error with each `options.<path>` in its message that `nameOf`
 * knows named its way (a flag, a variable); any other error, or one with
 * nothing to rename, is returned as it is.
 */
export function renameOptions(err: unknown, nameOf: (path: string) => string | undefined): unknown {
  if (!(err instanceof InvalidArgumentError)) return err
  const message = err.message.replace(/\boptions\.([\w.]*\w)/g, (whole, path: string) => nameOf(path) ?? whole)
  return message === err.message ? err : new InvalidArgumentError(message, { cause: err })
}

/** What an agent takes from a cluster config: the driver's address, its tasks, threads, timing (`nodeTimeoutMs` as `driverTimeoutMs`), transport and keys. */
function agentOptionsOf(config: ClusterConfig, root: string): Partial<AgentOptions> {
  const o = clusterOptionsOf(config, root)
  const at = config.head ?? config.listen
  // Only an address an agent can dial: not a wildcard, not "any free port".
  const connect = at !== undefined && !/^tcp:\/\/(\*|0\.0\.0\.0|\[::\]):|:(0|\*)$/.test(at) ? at : undefined
  return {
    connect,
    tasks: o.tasks,
    threads: o.threads,
    heartbeatMs: o.heartbeatMs,
    // As `cluster up` starts agents: one gives its driver up after the silence the driver allows a node.
    driverTimeoutMs: o.nodeTimeoutMs,
    maxFrameBytes: o.maxFrameBytes,
    transport: o.transport,
    redisUrl: o.redisUrl,
    amqpUrl: o.amqpUrl,
    clusterId: o.clusterId,
    brokerReconnectMs: o.brokerReconnectMs,
    brokerSecret: o.brokerSecret,
    brokerSecretFile: o.brokerSecretFile,
    insecure: o.insecure,
    curve: o.curve,
    ...o.localAgentOptions,
  }
}

/**
 * The agent's options through every layer: defaults < config < `CLUSTER_*`
 * variables < `options`. The config is used only when named (`config`, or
 * `CLUSTER_CONFIG`): an agent's working directory is often a synced copy of
 * the project, whose config describes the driver.
 */
export async function resolveAgentSettings(
  options: Partial<AgentOptions> & { config?: ClusterConfig | string | URL },
  env: NodeJS.ProcessEnv = process.env,
): Promise<ResolvedAgentOptions> {
  const notObject = notAnOptionsObject('options', options)
  if (notObject) throw notObject
  const loaded = await namedConfig(options.config, env)
  const { config: _config, ...explicit } = options
  const merged = layer<AgentOptions>(loaded === undefined ? {} : agentOptionsOf(loaded.config, loaded.root), envOptions(AGENT_VARIABLES, env), explicit)
  try {
    return resolveAgentOptions(merged)
  } catch (err) {
    throw inEnvTerms(err, envSources(AGENT_VARIABLES, explicit, env))
  }
}

/**
 * The dashboard options of `cluster dashboard`: defaults < `CLUSTER_DASHBOARD*`
 * variables < flags. Unchecked (the caller may still add a token); pass the
 * result to `resolveDashboardOptions`.
 */
export function mergeDashboardSettings(flags: DashboardOptions, env: NodeJS.ProcessEnv = process.env): DashboardOptions & { host: string } {
  const fromEnv = envOptions(DASHBOARD_VARIABLES, env)
  return layer<DashboardOptions & { host: string }>({ port: DASHBOARD_DEFAULTS.port, host: DASHBOARD_DEFAULTS.host }, fromEnv, flags)
}

/** The config file a command uses: `--config`, else `CLUSTER_CONFIG`, else undefined (the caller may look for one). */
export function configFileOf(flag: string | undefined, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string | undefined {
  const named = flag !== undefined && flag !== '' ? flag : env[CONFIG_ENV] || undefined
  return named === undefined ? undefined : resolve(cwd, named)
}

/**
 * Flags of the hosts commands (`up`, `status`, `down`) from the environment:
 * each flag's `CLUSTER_*` name (`--ssh-identity` → `CLUSTER_SSH_IDENTITY`),
 * plus the driver's `CLUSTER_HEARTBEAT_MS`, `CLUSTER_NODE_TIMEOUT_MS` and
 * `CLUSTER_TRANSPORT`, which the agents `cluster up` starts must share with
 * the driver. `--dashboard` has none: `CLUSTER_DASHBOARD` is a port.
 */
const HOSTS_VARIABLES: readonly EnvVariable[] = [
  variable('config', text),
  variable('nodes', text),
  variable('head', text),
  variable('listen', text),
  variable('tasks', text),
  variable('insecure', boolean),
  variable('sync', boolean),
  variable('threads', integer()),
  variable('name', text),
  variable('sshIdentity', text),
  variable('sshConfig', text),
  variable('connectTimeout', integer()),
  variable('registerTimeout', integer()),
  variable('stopTimeout', integer(0)),
  variable('concurrency', integer()),
  variable('remoteDir', text),
  variable('remoteNode', text),
  variable('remoteCli', text),
  variable('runDir', text),
  variable('stateDir', text),
  variable('keys', text),
  variable('heartbeatMs', integer()),
  variable('nodeTimeoutMs', integer()),
  variable('transport', oneOf(TRANSPORT_KINDS)),
]

/** Every variable this module reads. */
export const ENV_VARIABLE_NAMES: readonly string[] = [
  ...new Set([CONFIG_ENV, ...[CLUSTER_VARIABLES, AGENT_VARIABLES, DASHBOARD_VARIABLES, HOSTS_VARIABLES].flat().map((v) => v.name)]),
].sort()

/** Flags over their variables: what the hosts commands hand to `resolveHostsPlan`. */
export function mergeHostsFlags<T extends object>(flags: T, env: NodeJS.ProcessEnv = process.env): T {
  return layer<T>(envOptions(HOSTS_VARIABLES, env), flags)
}
