import type { CommandModule } from 'yargs'
import { Agent } from '../../agent/agent.js'
import { commandLogger } from '../log.js'

interface AgentArgs {
  connect: string
  tasks: string
  threads?: number
  'heartbeat-ms'?: number
  'driver-timeout-ms'?: number
  'max-frame-bytes'?: number
  'exit-on-driver-loss': boolean
  id?: string
  'log-level'?: string
}

export const agentCommand: CommandModule<object, AgentArgs> = {
  command: 'agent',
  describe: 'Run an agent: join the driver at --connect and run tasks from --tasks',
  builder: (y) =>
    y
      .option('connect', { type: 'string', demandOption: true, describe: 'driver address, e.g. tcp://127.0.0.1:7100' })
      .option('tasks', { type: 'string', demandOption: true, describe: 'module with the task functions and actor classes' })
      .option('threads', { type: 'number', describe: 'worker threads (default: cores)' })
      .option('heartbeat-ms', { type: 'number', describe: 'heartbeat interval (default 1000)' })
      .option('driver-timeout-ms', { type: 'number', describe: 'declare the driver gone after this much silence (default 3000)' })
      .option('max-frame-bytes', { type: 'number', describe: 'largest frame accepted (default 64 MiB)' })
      .option('exit-on-driver-loss', { type: 'boolean', default: false, describe: 'exit when the driver goes away instead of waiting for the next one' })
      .option('id', { type: 'string', describe: 'stable agent identity (default: host-pid-random)' }),
  handler: async (args) => {
    const agent = await Agent.start({
      connect: args.connect,
      tasks: args.tasks,
      threads: args.threads,
      heartbeatMs: args['heartbeat-ms'],
      driverTimeoutMs: args['driver-timeout-ms'],
      maxFrameBytes: args['max-frame-bytes'],
      id: args.id,
    })
    const log = commandLogger(args, 'info', 'agent').child({ agent: agent.id })
    // Messages keep the plain-text wording of earlier versions, for whoever reads or greps them.
    log.info({ threads: agent.options.threads, driver: args.connect }, `${agent.id}: ${agent.options.threads} threads, waiting for the driver at ${args.connect}`)
    agent.on('driver:joined', () => log.info({ driver: args.connect }, `${agent.id}: joined the driver at ${args.connect}`))
    agent.on('driver:lost', (reason) => {
      const next = args['exit-on-driver-loss'] ? '; exiting' : '; waiting for the next one'
      log.warn({ driver: args.connect, reason }, `${agent.id}: lost the driver (${reason})${next}`)
      if (args['exit-on-driver-loss']) void agent.close().then(() => process.exit(0))
    })
    agent.on('rejected', (reason) => {
      log.error({ driver: args.connect, reason }, `${agent.id}: the driver rejected this agent: ${reason}`)
      process.exitCode = 1
    })
    let stopping = false
    const stop = (signal: string) => {
      if (stopping) process.exit(1)
      stopping = true
      log.info({ signal }, `${agent.id}: ${signal}: finishing running tasks and handing queued ones back`)
      void agent.close().then(() => process.exit(process.exitCode ?? 0))
    }
    process.on('SIGINT', () => stop('SIGINT'))
    process.on('SIGTERM', () => stop('SIGTERM'))
    // The agent's own timers are unref'd (it may be embedded); as a command it must keep the process up.
    const keepAlive = setInterval(() => {}, 1 << 30)
    await new Promise<void>((resolve) => agent.once('rejected', () => resolve()))
    clearInterval(keepAlive)
    await agent.close()
  },
}
