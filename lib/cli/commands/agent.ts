import type { CommandModule } from 'yargs'
import { access, constants } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { Agent } from '../../agent/agent.js'
import { StatusFile } from '../../agent/status-file.js'
import { InvalidArgumentError } from '../../errors.js'
import { AGENT_DEFAULTS, CLUSTER_DEFAULTS } from '../../options.js'
import { resolveAgentSettings } from '../../settings.js'
import { TRANSPORT_KINDS, TRANSPORT_DEFAULTS, type TransportKind } from '../../transport/options.js'
import { inFlagTerms, type FlagOf } from '../flags.js'
import { commandLogger } from '../log.js'

interface AgentArgs {
  config?: string
  connect?: string
  transport?: TransportKind
  redis?: string
  amqp?: string
  'cluster-id'?: string
  'broker-reconnect-ms'?: number
  'broker-secret-file'?: string
  insecure?: boolean
  tasks?: string
  threads?: number
  'heartbeat-ms'?: number
  'driver-timeout-ms'?: number
  'max-frame-bytes'?: number
  'shared-cache-bytes'?: number
  'exit-on-driver-loss': boolean
  id?: string
  'max-tasks-per-thread'?: number
  'recycle-heap-mb'?: number
  'thread-memory-mb'?: number
  keys?: string
  'server-key'?: string
  'status-file'?: string
  'log-level'?: string
}

/** The option each flag sets, for errors that name the option (`options.threads` is `--threads` here). */
const AGENT_FLAGS: Readonly<Record<string, FlagOf>> = {
  connect: 'connect',
  transport: 'transport',
  redisUrl: { flag: 'redis', variable: 'CLUSTER_REDIS_URL' },
  amqpUrl: { flag: 'amqp', variable: 'CLUSTER_AMQP_URL' },
  clusterId: 'cluster-id',
  brokerReconnectMs: 'broker-reconnect-ms',
  brokerSecretFile: 'broker-secret-file',
  tasks: 'tasks',
  threads: 'threads',
  heartbeatMs: 'heartbeat-ms',
  driverTimeoutMs: 'driver-timeout-ms',
  maxFrameBytes: 'max-frame-bytes',
  sharedCacheBytes: 'shared-cache-bytes',
  id: { flag: 'id', variable: 'CLUSTER_AGENT_ID' },
  maxTasksPerThread: 'max-tasks-per-thread',
  recycleHeapMb: 'recycle-heap-mb',
  threadMemoryMb: 'thread-memory-mb',
  'curve.dir': { flag: 'keys', variable: null },
  'curve.serverPublicKey': { flag: 'server-key', variable: null },
}

/** A missing tasks module or driver address, said in the command's terms. */
function explainMissing(err: InvalidArgumentError): InvalidArgumentError {
  if (err.message.startsWith('options.tasks') && err.message.endsWith('got undefined')) {
    return new InvalidArgumentError('--tasks is required: the module with the task functions (or CLUSTER_TASKS, or tasks in the config)')
  }
  if (err.message.startsWith('options.connect') && err.message.endsWith('got undefined')) {
    return new InvalidArgumentError('--connect is required with --transport zmq: the driver address, e.g. tcp://127.0.0.1:7100')
  }
  return err
}

export const agentCommand: CommandModule<object, AgentArgs> = {
  command: 'agent',
  describe: 'Run an agent: join the driver at --connect (or, brokered, the cluster --cluster-id) and run tasks from --tasks',
  // No yargs defaults: an absent flag lets CLUSTER_* variables and a named config speak (lib/settings.ts).
  builder: (y) =>
    y
      .option('config', {
        type: 'string',
        describe: 'take the driver address (head or listen), tasks, threads, transport and keys from this cluster.config (or CLUSTER_CONFIG)',
      })
      .option('connect', { type: 'string', describe: 'driver address, e.g. tcp://127.0.0.1:7100 (the zmq design)' })
      .option('transport', { choices: TRANSPORT_KINDS, describe: `the design the driver uses (default ${TRANSPORT_DEFAULTS.transport})` })
      .option('redis', { type: 'string', describe: `Redis URL for the redis and amqp+redis designs (default ${TRANSPORT_DEFAULTS.redisUrl})` })
      .option('amqp', { type: 'string', describe: `RabbitMQ URL for the amqp and amqp+redis designs (default ${TRANSPORT_DEFAULTS.amqpUrl})` })
      .option('cluster-id', { type: 'string', describe: "the cluster to join on the brokers (the driver's cluster.id)" })
      .option('broker-reconnect-ms', { type: 'number', describe: `give up on a lost broker after this long (default ${TRANSPORT_DEFAULTS.brokerReconnectMs})` })
      .option('broker-secret-file', {
        type: 'string',
        describe: "file (mode 0600) holding the cluster's broker secret; default: the one the driver made, for an agent of the same user on its machine",
      })
      .option('insecure', { type: 'boolean', describe: 'brokered: frames carry no HMAC (only with a driver that is insecure too)' })
      .option('tasks', { type: 'string', describe: 'module with the task functions and actor classes (required: flag, CLUSTER_TASKS or the config)' })
      .option('threads', { type: 'number', describe: 'worker threads (default: cores)' })
      .option('heartbeat-ms', { type: 'number', describe: `heartbeat interval (default ${AGENT_DEFAULTS.heartbeatMs})` })
      .option('driver-timeout-ms', { type: 'number', describe: `declare the driver gone after this much silence (default ${AGENT_DEFAULTS.driverTimeoutMs})` })
      .option('max-frame-bytes', { type: 'number', describe: `largest frame accepted (default ${CLUSTER_DEFAULTS.maxFrameBytes / 1024 / 1024} MiB)` })
      .option('shared-cache-bytes', {
        type: 'number',
        describe: `bytes of shared values (cluster.put) kept (default ${AGENT_DEFAULTS.sharedCacheBytes / 1024 / 1024} MiB)`,
      })
      .option('exit-on-driver-loss', { type: 'boolean', default: false, describe: 'exit when the driver goes away instead of waiting for the next one' })
      .option('id', { type: 'string', describe: 'stable agent identity (default: host-pid-random)' })
      .option('max-tasks-per-thread', { type: 'number', describe: 'replace the threads after each ran about this many tasks (default: never)' })
      .option('recycle-heap-mb', { type: 'number', describe: 'replace the threads when one holds more heap than this after a batch (default: never)' })
      .option('thread-memory-mb', { type: 'number', describe: 'hard heap limit per thread; a task over it fails with OutOfMemoryError' })
      .option('keys', {
        type: 'string',
        describe:
          'CURVE keys directory from `cluster keys` (server.pub and agent.json); default for a loopback --connect: the keys that driver made for this user',
      })
      .option('server-key', { type: 'string', describe: "the driver's CURVE public key, in place of the server.pub of --keys (needs --keys)" })
      .option('status-file', { type: 'string', describe: 'keep a JSON status file here (state, load, tasks done), rewritten every heartbeat' }),
  handler: async (args) => {
    // The flags' keys replace the config's whole: without --keys there is no agent key pair to be had.
    if (args['server-key'] !== undefined && args.keys === undefined) {
      throw new InvalidArgumentError(
        "--server-key needs --keys: the directory from `cluster keys` with this agent's key pair (agent.json); --server-key stands for its server.pub",
      )
    }
    const options = await resolveAgentSettings({
      config: args.config,
      connect: args.connect,
      transport: args.transport,
      redisUrl: args.redis,
      amqpUrl: args.amqp,
      clusterId: args['cluster-id'],
      brokerReconnectMs: args['broker-reconnect-ms'],
      brokerSecretFile: args['broker-secret-file'] === undefined ? undefined : resolve(args['broker-secret-file']),
      insecure: args.insecure,
      tasks: args.tasks,
      threads: args.threads,
      heartbeatMs: args['heartbeat-ms'],
      driverTimeoutMs: args['driver-timeout-ms'],
      maxFrameBytes: args['max-frame-bytes'],
      sharedCacheBytes: args['shared-cache-bytes'],
      id: args.id,
      maxTasksPerThread: args['max-tasks-per-thread'],
      recycleHeapMb: args['recycle-heap-mb'],
      threadMemoryMb: args['thread-memory-mb'],
      curve: args.keys !== undefined || args['server-key'] !== undefined ? { dir: args.keys, serverPublicKey: args['server-key'] } : undefined,
    }).catch((err: unknown) => {
      throw inFlagTerms(err instanceof InvalidArgumentError ? explainMissing(err) : err, AGENT_FLAGS)
    })
    // An address inside a driver's own process (cluster.address without listen): this process can never reach it.
    if (options.transport === 'zmq' && /^(memory|inproc):/i.test(options.connect)) {
      throw new InvalidArgumentError(
        `--connect ${options.connect} is an address inside the driver's own process, which an agent in a process of its own cannot reach: start the driver with listen (e.g. tcp://0.0.0.0:7100) and connect to that`,
      )
    }
    const statusPath = args['status-file']
    // Checked before the agent starts: a status file it cannot write would only be a warning every heartbeat.
    if (statusPath) {
      await access(dirname(resolve(statusPath)), constants.W_OK).catch((err: unknown) => {
        throw new InvalidArgumentError(`--status-file ${statusPath} cannot be written: ${(err as Error).message}`, { cause: err })
      })
    }
    const where = options.transport === 'zmq' ? options.connect : `cluster ${options.clusterId ?? '?'} over ${options.transport}`
    // Resolved options go back in as options: a brokered agent's empty address means none.
    const agent = await Agent.start({ ...options, connect: options.connect || undefined })
    const status = statusPath ? new StatusFile(agent, statusPath) : undefined
    const log = commandLogger(args, 'info', 'agent').child({ agent: agent.id })
    // Messages keep the plain-text wording of earlier versions, for whoever reads or greps them.
    log.info({ threads: agent.options.threads, driver: where }, `${agent.id}: ${agent.options.threads} threads, waiting for the driver at ${where}`)
    agent.on('driver:joined', () => log.info({ driver: where }, `${agent.id}: joined the driver at ${where}`))
    agent.on('driver:lost', (reason) => {
      const next = args['exit-on-driver-loss'] ? '; exiting' : '; waiting for the next one'
      log.warn({ driver: where, reason }, `${agent.id}: lost the driver (${reason})${next}`)
      if (args['exit-on-driver-loss'])
        void agent.close().then(async () => {
          await status?.close()
          process.exit(0)
        })
    })
    agent.on('auth:failed', (message) => log.error({ driver: where }, `${agent.id}: ${message} — check the keys (cluster keys) on both sides`))
    agent.on('rejected', (reason) => {
      log.error({ driver: where, reason }, `${agent.id}: the driver rejected this agent: ${reason}`)
      process.exitCode = 1
    })
    let stopping = false
    const stop = (signal: string) => {
      if (stopping) process.exit(1)
      stopping = true
      log.info({ signal }, `${agent.id}: ${signal}: finishing running tasks and handing queued ones back`)
      void agent.close().then(async () => {
        await status?.close()
        process.exit(process.exitCode ?? 0)
      })
    }
    process.on('SIGINT', () => stop('SIGINT'))
    process.on('SIGTERM', () => stop('SIGTERM'))
    // The agent's own timers are unref'd (it may be embedded); as a command it must keep the process up.
    const keepAlive = setInterval(() => {}, 1 << 30)
    agent.on('transport:error', (err) => {
      log.error({ err }, `${agent.id}: ${err.message}; exiting`)
      process.exitCode = 1
    })
    await new Promise<void>((resolve) => {
      agent.once('rejected', () => resolve())
      agent.once('transport:error', () => resolve())
    })
    clearInterval(keepAlive)
    await agent.close()
    await status?.close()
  },
}
