import type { EventEmitter } from 'node:events'
import { createRequire } from 'node:module'
import type { Logger } from 'pino'
import type { ClusterEvents } from '../driver/types.js'
import type { LogLevel } from './options.js'

export type { Logger }

/**
 * A pino logger writing JSON lines to stderr (stdout stays the program's).
 * Writes are synchronous: logs are few (membership, failures), and none is
 * lost when the process exits.
 */
export function createLogger(level: LogLevel, name = 'actor-cluster'): Logger {
  // Loaded on first use: a program that logs nothing never loads pino.
  const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino')
  return pino({ name, level }, pino.destination({ fd: 2, sync: true }))
}

/** Task failures logged at most this often per second; the rest are counted in one line. */
const FAILURES_PER_SECOND = 10

/** Logs the cluster's own events: membership at info, losses and task failures at warn, retries at debug. */
export function logClusterEvents(cluster: EventEmitter<ClusterEvents>, log: Logger): void {
  cluster.on('node:joined', (n) => log.info({ node: n.id, host: n.host, threads: n.threads, local: n.local }, 'node joined'))
  cluster.on('node:left', (n) => log.info({ node: n.id, host: n.host, tasksDone: n.tasksDone }, 'node left'))
  cluster.on('node:lost', (n, reason) => log.warn({ node: n.id, host: n.host, reason, inFlight: n.inFlight }, 'node lost; its tasks are queued again'))
  cluster.on('task:retried', (t) => log.debug({ task: t.name, id: t.id, attempt: t.attempt, cause: t.cause.message }, 'task queued again'))
  cluster.on('actor:restarted', (a) => log.info({ actor: a.id, class: a.className, node: a.node }, 'actor restarted on another node'))
  cluster.on('actor:spawned', (a) => log.debug({ actor: a.id, class: a.className, node: a.node }, 'actor spawned'))
  cluster.on('actor:stopped', (a) => log.debug({ actor: a.id, class: a.className, node: a.node }, 'actor stopped'))
  let second = 0
  let logged = 0
  let suppressed = 0
  cluster.on('task:failed', (f) => {
    if (!log.isLevelEnabled('warn')) return
    const now = Math.floor(Date.now() / 1000)
    if (now !== second) {
      if (suppressed > 0) log.warn({ suppressed }, `${suppressed} more task failures in the last second were not logged one by one`)
      second = now
      logged = 0
      suppressed = 0
    }
    if (logged >= FAILURES_PER_SECOND) {
      suppressed++
      return
    }
    logged++
    log.warn({ task: f.name, id: f.id, node: f.node, err: f.error }, 'task failed')
  })
}
