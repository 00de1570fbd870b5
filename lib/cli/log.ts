import { createLogger, type Logger } from '../monitor/log.js'
import { resolveLogLevel, type LogLevel } from '../monitor/options.js'
import { envLogLevel } from '../settings.js'

/**
 * The logger of one command: `--log-level` (global flag, or
 * `CLUSTER_LOG_LEVEL`), else the command's own default — `info` for the
 * long-running services (agent, dashboard), `warn` for benchmarks, whose
 * report is their output.
 */
export function commandLogger(args: object, fallback: LogLevel, name = 'actor-cluster'): Logger {
  const given = (args as { 'log-level'?: unknown })['log-level']
  return createLogger(given === undefined ? (envLogLevel() ?? fallback) : resolveLogLevel(given, '--log-level'), name)
}
