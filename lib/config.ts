import { existsSync } from 'node:fs'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { basename, dirname, isAbsolute, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { randomBytes } from 'node:crypto'
import { ConfigError } from './errors.js'
import { CLUSTER_KEYS, type ClusterConfig, type ClusterOptions } from './options.js'
import { describeKind as describe, integerProblem, numberProblem, stringProblem } from './validate.js'

export type { ClusterConfig, RemoteOptions, SshOptions } from './options.js'

/** The driver's options a config may hold: every ClusterOptions field but `config` (the table fails to compile when one is missing). */
const { config: _config, ...DRIVER_KEY_SET } = CLUSTER_KEYS
const DRIVER_KEYS = Object.keys(DRIVER_KEY_SET) as (keyof typeof DRIVER_KEY_SET)[]

const CONFIG_KEYS: ReadonlySet<string> = new Set([
  ...DRIVER_KEYS,
  'name',
  'head',
  'hosts',
  'slurm',
  'ssh',
  'remote',
  'sync',
  'registerTimeoutS',
  'stopTimeoutS',
  'stateDir',
  'root',
])

/** File names looked for, in this order, when no config is named. */
const CONFIG_FILES = ['cluster.config.js', 'cluster.config.mjs', 'cluster.config.ts', 'cluster.config.mts'] as const

export interface LoadedConfig {
  readonly config: ClusterConfig
  /** Absolute path of the file it came from. */
  readonly file: string
  /** The project directory (absolute): `config.root`, else the file's folder. */
  readonly root: string
}

/** The first `cluster.config.*` in `dir`, or undefined. */
export function findConfig(dir = process.cwd()): string | undefined {
  for (const name of CONFIG_FILES) {
    const p = join(dir, name)
    if (existsSync(p)) return p
  }
  return undefined
}

/**
 * Loads a config file: its default export (or the module itself) must be an
 * object. A TypeScript config loads directly where Node can (a loader, or
 * type stripping on newer Node); otherwise it is compiled with the project's
 * own `typescript` package. Fails with a {@link ConfigError} naming the file.
 */
export async function loadConfig(file: string | URL): Promise<LoadedConfig> {
  const path = file instanceof URL ? fileURLToPath(file) : file.startsWith('file:') ? fileURLToPath(file) : resolve(file)
  if (!existsSync(path)) throw new ConfigError(`config file ${path} does not exist`)
  let mod: Record<string, unknown>
  try {
    mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>
  } catch (err) {
    const code = (err as { code?: string }).code
    if (code === 'ERR_UNKNOWN_FILE_EXTENSION' && /\.[mc]?ts$/.test(path)) mod = await importTypeScript(path)
    else throw new ConfigError(`config file ${path} failed to load: ${(err as Error).message}`, { cause: err })
  }
  const config: unknown = 'default' in mod ? mod['default'] : mod
  checkConfig(config, path)
  const root = config.root !== undefined ? resolve(dirname(path), config.root) : dirname(path)
  return { config, file: path, root }
}

/** Node cannot run TypeScript itself here: compile the file with the project's `typescript` next to it, then import that. */
async function importTypeScript(path: string): Promise<Record<string, unknown>> {
  let ts: { transpileModule(src: string, o: object): { outputText: string }; ModuleKind: Record<string, number>; ScriptTarget: Record<string, number> }
  try {
    const resolved = createRequire(path).resolve('typescript')
    ts = ((await import(pathToFileURL(resolved).href)) as { default: typeof ts }).default
  } catch {
    throw new ConfigError(
      `cannot load ${path}: this Node.js (${process.version}) does not run TypeScript and the "typescript" package is not installed next to it; ` +
        'install typescript, compile the config and pass --config with the .js file, or write cluster.config.js',
    )
  }
  const src = await readFile(path, 'utf8')
  const out = ts.transpileModule(src, {
    fileName: basename(path),
    compilerOptions: { module: ts.ModuleKind['ESNext'], target: ts.ScriptTarget['ES2022'], verbatimModuleSyntax: false },
  }).outputText
  // Beside the original, so its imports resolve exactly as they would from the .ts file.
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}-${randomBytes(4).toString('hex')}.mjs`)
  await writeFile(tmp, out)
  try {
    return (await import(pathToFileURL(tmp).href)) as Record<string, unknown>
  } catch (err) {
    throw new ConfigError(`config file ${path} failed to load: ${(err as Error).message}`, { cause: err })
  } finally {
    await rm(tmp, { force: true })
  }
}

/** Checks the shape of a config object; names the file and the field of the first problem. */
export function checkConfig(config: unknown, where = 'config'): asserts config is ClusterConfig {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new ConfigError(`${where} must export an object (export default defineConfig({ ... })), got ${describe(config)}`)
  }
  const c = config as Record<string, unknown>
  for (const key of Object.keys(c)) {
    if (!CONFIG_KEYS.has(key)) throw new ConfigError(`${where}: unknown field "${key}" (known: ${[...CONFIG_KEYS].join(', ')})`)
  }
  const check = (name: string, v: unknown, problem: string | undefined) => {
    if (v !== undefined && problem !== undefined) throw new ConfigError(`${where}: ${name} ${problem}, got ${describe(v)}`)
  }
  const str = (name: string, v: unknown) => check(name, v, stringProblem(v))
  const num = (name: string, v: unknown, min = 1) => check(name, v, numberProblem(v, min))
  const obj = (name: string, v: unknown, keys: string[]): Record<string, unknown> | undefined => {
    if (v === undefined) return undefined
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${where}: ${name} must be an object, got ${describe(v)}`)
    for (const k of Object.keys(v)) if (!keys.includes(k)) throw new ConfigError(`${where}: unknown field "${name}.${k}" (known: ${keys.join(', ')})`)
    return v as Record<string, unknown>
  }
  for (const k of ['name', 'head', 'hosts', 'stateDir', 'root'] as const) str(k, c[k])
  num('registerTimeoutS', c['registerTimeoutS'])
  num('stopTimeoutS', c['stopTimeoutS'], 0)
  if (c['name'] !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(c['name'] as string)) {
    throw new ConfigError(`${where}: name must be 1 to 64 letters, digits, ".", "_" or "-", got ${describe(c['name'])}`)
  }
  const ssh = obj('ssh', c['ssh'], ['configFile', 'identity', 'user', 'port', 'options', 'connectTimeoutS', 'concurrency'])
  if (ssh) {
    for (const k of ['configFile', 'identity', 'user'] as const) str(`ssh.${k}`, ssh[k])
    num('ssh.port', ssh['port'])
    num('ssh.connectTimeoutS', ssh['connectTimeoutS'])
    num('ssh.concurrency', ssh['concurrency'])
    const o = ssh['options']
    if (o !== undefined && (!Array.isArray(o) || o.some((x) => typeof x !== 'string' || !/^[A-Za-z]+[ =]\S/.test(x)))) {
      throw new ConfigError(`${where}: ssh.options must be a list of "Key=value" strings, got ${JSON.stringify(o)}`)
    }
  }
  const slurm = obj('slurm', c['slurm'], ['nodes', 'partition', 'time', 'account', 'cpusPerNode', 'sbatchArgs', 'waitS'])
  if (slurm) {
    for (const k of ['partition', 'time', 'account'] as const) str(`slurm.${k}`, slurm[k])
    for (const k of ['nodes', 'cpusPerNode', 'waitS'] as const) check(`slurm.${k}`, slurm[k], integerProblem(slurm[k]))
    const args = slurm['sbatchArgs']
    if (args !== undefined && (!Array.isArray(args) || args.some((x) => typeof x !== 'string' || x === ''))) {
      throw new ConfigError(`${where}: slurm.sbatchArgs must be a list of sbatch arguments, got ${JSON.stringify(args)}`)
    }
  }
  const remote = obj('remote', c['remote'], ['dir', 'node', 'cli', 'runDir'])
  if (remote) for (const k of ['dir', 'node', 'cli', 'runDir'] as const) str(`remote.${k}`, remote[k])
  const sync = c['sync']
  if (sync !== undefined && typeof sync !== 'boolean') {
    const s = obj('sync', sync, ['exclude'])
    const ex = s?.['exclude']
    if (ex !== undefined && (!Array.isArray(ex) || ex.some((x) => typeof x !== 'string' || x === ''))) {
      throw new ConfigError(`${where}: sync.exclude must be a list of patterns, got ${JSON.stringify(ex)}`)
    }
  }
}

/** The driver's options in a config, with `tasks` and the CURVE keys directory resolved against the project directory. */
export function clusterOptionsOf(config: ClusterConfig, root: string): ClusterOptions {
  const out: ClusterOptions = {}
  for (const k of DRIVER_KEYS) {
    if (config[k] !== undefined) (out as Record<string, unknown>)[k] = config[k]
  }
  if (typeof out.tasks === 'string' && !/^[a-z][a-z0-9+.-]*:/i.test(out.tasks) && !isAbsolute(out.tasks)) out.tasks = resolve(root, out.tasks)
  if (out.curve?.dir !== undefined) out.curve = { ...out.curve, dir: resolve(root, out.curve.dir) }
  if (typeof out.brokerSecretFile === 'string') out.brokerSecretFile = resolve(root, out.brokerSecretFile)
  return out
}

/**
 * The config a caller names (an object, or a file's path or URL), else the
 * file the `CLUSTER_CONFIG` variable names, else undefined; `{}` means none.
 */
export async function namedConfig(
  source: ClusterConfig | string | URL | undefined,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Pick<LoadedConfig, 'config' | 'root'> | undefined> {
  const named = source ?? (env['CLUSTER_CONFIG'] || undefined)
  if (named === undefined) return undefined
  if (typeof named === 'string' || named instanceof URL) return loadConfig(named)
  checkConfig(named, 'options.config')
  return { config: named, root: named.root !== undefined ? resolve(named.root) : process.cwd() }
}

/**
 * Applies `options.config` (an object, or a file's path or URL) under the
 * options given: an option set explicitly wins over the config. Without
 * `config`, the file named by the `CLUSTER_CONFIG` environment variable is
 * used (`cluster run` sets it); `config: {}` means none. The environment's
 * other variables are not read here: `resolveClusterSettings` applies every layer.
 */
export async function applyConfig(options: ClusterOptions): Promise<ClusterOptions> {
  if (options === null || typeof options !== 'object') return options
  const loaded = await namedConfig(options.config)
  if (loaded === undefined) return options
  const merged: Record<string, unknown> = { ...clusterOptionsOf(loaded.config, loaded.root) }
  for (const [k, v] of Object.entries(options)) if (v !== undefined && k !== 'config') merged[k] = v
  return merged
}
