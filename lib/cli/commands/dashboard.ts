import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer } from 'node:net'
import type { CommandModule } from 'yargs'
import { Cluster } from '../../driver/cluster.js'
import { InvalidArgumentError } from '../../errors.js'
import { DASHBOARD_DEFAULTS, maskToken, resolveDashboardOptions, type ResolvedDashboardOptions } from '../../monitor/options.js'
import { mergeClusterSettings, mergeDashboardSettings } from '../../settings.js'
import { isLoopbackHost } from '../../validate.js'
import { inFlagTerms, type FlagOf } from '../flags.js'
import { commandLogger } from '../log.js'
import { exitCodeOf } from '../exit-code.js'

interface DashboardArgs {
  port?: number
  host?: string
  token?: string
  'token-file'?: string
  'update-ms'?: number
  listen?: string
  tasks?: string
  'local-agents'?: number
  threads?: number
  insecure?: boolean
  'log-level'?: string
  '--'?: (string | number)[]
}

/** A port that was free a moment ago on `host` (for a child that must be told its port before it binds). */
async function freePort(host: string): Promise<number> {
  const srv = createServer()
  srv.listen(0, host)
  await Promise.race([once(srv, 'listening'), once(srv, 'error').then(([err]) => Promise.reject(err as Error))])
  const port = (srv.address() as { port: number }).port
  srv.close()
  await once(srv, 'close')
  return port
}

/**
 * What a standing driver (`cluster dashboard` without a program) binds and
 * starts when neither flags, variables nor a config say: a fixed port agents
 * can be told, and no local agents. Under the config, like the library's defaults.
 */
const STANDING_DRIVER_DEFAULTS = { listen: 'tcp://127.0.0.1:7100', localAgents: 0 } as const

/** The option each flag sets, for errors that name the option (`options.dashboard.port` is `--port` here). */
const DASHBOARD_FLAGS: Readonly<Record<string, FlagOf>> = {
  'dashboard.port': { flag: 'port', variable: 'CLUSTER_DASHBOARD' },
  'dashboard.host': { flag: 'host', variable: 'CLUSTER_DASHBOARD_HOST' },
  'dashboard.token': { flag: 'token', variable: 'CLUSTER_DASHBOARD_TOKEN' },
  'dashboard.updateMs': { flag: 'update-ms', variable: 'CLUSTER_DASHBOARD_UPDATE_MS' },
  listen: 'listen',
  tasks: 'tasks',
  localAgents: 'local-agents',
  threads: 'threads',
}

/** The URL as printed: the token masked (terminals are logged and shared). */
function urlOf(o: ResolvedDashboardOptions, port: number): string {
  const host = o.host.includes(':') ? `[${o.host}]` : o.host
  return maskToken(`http://${host}:${port}/${o.token ? `?token=${encodeURIComponent(o.token)}` : ''}`)
}

/** The token of `--token-file`: the file's first line. */
function readTokenFile(path: string): string {
  try {
    return readFileSync(path, 'utf8').split(/\r?\n/)[0]!.trim()
  } catch (err) {
    throw new InvalidArgumentError(`cannot read --token-file ${path}: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * Keeps a token the command made up where only this user can read it: a
 * fresh directory (0700) of its own and a new file (0600), removed when the
 * command ends. Printing it would put it in terminal logs.
 */
function keepGeneratedToken(): { token: string; path: string; remove: () => void } {
  const token = randomBytes(18).toString('base64url')
  const dir = mkdtempSync(join(tmpdir(), 'actor-cluster-dashboard-'))
  const path = join(dir, 'token')
  writeFileSync(path, `${token}\n`, { mode: 0o600, flag: 'wx' })
  return { token, path, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/**
 * `cluster dashboard -- <command>` runs a program with the dashboard turned
 * on in the clusters it starts (through `CLUSTER_DASHBOARD*` variables);
 * `cluster dashboard --listen …` runs a standing driver with a dashboard
 * that agents join.
 */
export const dashboardCommand: CommandModule<object, DashboardArgs> = {
  command: 'dashboard',
  describe: 'Serve the web dashboard: of a program (cluster dashboard -- node job.js), or of a standing driver that agents join',
  // No yargs defaults: an absent flag lets CLUSTER_* variables (and, for the standing driver, CLUSTER_CONFIG) speak.
  builder: (y) =>
    y
      .usage('$0 dashboard [options] [-- <program> [args...]]')
      .option('port', { type: 'number', describe: `dashboard port (0 = a free one; default ${DASHBOARD_DEFAULTS.port})` })
      .option('host', { type: 'string', describe: `dashboard interface; other than loopback needs a token (default ${DASHBOARD_DEFAULTS.host})` })
      .option('token', {
        type: 'string',
        describe:
          'secret for the page and /metrics; visible to other users in ps: prefer CLUSTER_DASHBOARD_TOKEN or --token-file (generated when --host is not loopback)',
      })
      .option('token-file', { type: 'string', describe: 'read the secret from the first line of this file' })
      .option('update-ms', { type: 'number', describe: `live update interval (default ${DASHBOARD_DEFAULTS.updateMs})` })
      .option('listen', { type: 'string', describe: `standing driver: address agents connect to (default ${STANDING_DRIVER_DEFAULTS.listen})` })
      .option('tasks', { type: 'string', describe: 'standing driver: module with the task functions and actor classes' })
      .option('local-agents', {
        type: 'number',
        describe: `standing driver: agents started in this process (needs --tasks; default ${STANDING_DRIVER_DEFAULTS.localAgents})`,
      })
      .option('threads', { type: 'number', describe: 'standing driver: threads of each local agent' })
      .option('insecure', { type: 'boolean', describe: 'standing driver: allow a non-loopback --listen without authentication' }),
  handler: async (args) => {
    // One secret, one source: a file that silently won over the flag would leave the typed token unused without a word.
    if (args.token !== undefined && args['token-file'] !== undefined) {
      throw new InvalidArgumentError(`--token and --token-file ${args['token-file']} both give the secret: keep one`)
    }
    const log = commandLogger(args, 'info', 'dashboard')
    if (args.token !== undefined) {
      log.warn('--token is visible to every user of this machine (ps, /proc): prefer CLUSTER_DASHBOARD_TOKEN or --token-file')
    }
    const flagToken = args['token-file'] !== undefined ? readTokenFile(args['token-file']) : args.token
    const given = mergeDashboardSettings({ port: args.port, host: args.host, token: flagToken, updateMs: args['update-ms'] })
    const generated = given.token === undefined && !isLoopbackHost(given.host) ? keepGeneratedToken() : undefined
    try {
      await serve(args, log, resolveDashboardOptions({ ...given, token: given.token ?? generated?.token })!, generated?.path)
    } catch (err) {
      // A token read from --token-file is named by that flag.
      const fromFile: FlagOf = { flag: 'token-file', variable: null }
      throw inFlagTerms(err, args['token-file'] === undefined ? DASHBOARD_FLAGS : { ...DASHBOARD_FLAGS, 'dashboard.token': fromFile })
    } finally {
      generated?.remove()
    }
  },
}

/** Runs the program, or the standing driver, with the dashboard of `options`. */
async function serve(
  args: DashboardArgs,
  log: ReturnType<typeof commandLogger>,
  options: ResolvedDashboardOptions,
  tokenFile: string | undefined,
): Promise<void> {
  const tokenNote = tokenFile ? ` (token in ${tokenFile}, readable by you alone, removed when this command ends)` : ''
  const cmd = (args['--'] ?? []).map(String)
  if (cmd.length > 0) {
    const port = options.port === 0 ? await freePort(options.host) : options.port
    const env: NodeJS.ProcessEnv = { ...process.env, CLUSTER_DASHBOARD: String(port), CLUSTER_DASHBOARD_HOST: options.host }
    if (options.token) env['CLUSTER_DASHBOARD_TOKEN'] = options.token
    if (options.updateMs !== DASHBOARD_DEFAULTS.updateMs) env['CLUSTER_DASHBOARD_UPDATE_MS'] = String(options.updateMs)
    if (args['log-level'] !== undefined) env['CLUSTER_LOG_LEVEL'] = args['log-level']
    process.stdout.write(`dashboard: ${urlOf(options, port)} (served by ${cmd[0]} once it starts a cluster)${tokenNote}\n`)
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: 'inherit', env })
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => child.kill(signal))
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.once('error', (err: NodeJS.ErrnoException) =>
        reject(new InvalidArgumentError(`cannot run ${cmd[0]}: ${err.code === 'ENOENT' ? 'no such program' : err.message}`, { cause: err })),
      )
      child.once('exit', (c, s) => resolve([c, s]))
    })
    process.exitCode = exitCodeOf(code, signal)
    return
  }
  const settings = await mergeClusterSettings(
    {
      tasks: args.tasks,
      listen: args.listen,
      localAgents: args['local-agents'],
      threads: args.threads,
      insecure: args.insecure,
      dashboard: options,
      logger: log,
    },
    process.env,
    STANDING_DRIVER_DEFAULTS,
  )
  // Every layer is applied: `config: {}` keeps Cluster.start from reading the config file again.
  const cluster = await Cluster.start({ ...settings, config: {} })
  process.stdout.write(`dashboard: ${maskToken(cluster.dashboardUrl ?? '')}${tokenNote}\nagents connect to: ${cluster.address}\n`)
  // The cluster's timers are unref'd (it may be embedded); as a command it must keep the process up.
  const keepAlive = setInterval(() => {}, 1 << 30)
  const signal = await new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'))
    process.once('SIGTERM', () => resolve('SIGTERM'))
  })
  clearInterval(keepAlive)
  log.info({ signal }, 'stopping')
  await cluster.close()
}
