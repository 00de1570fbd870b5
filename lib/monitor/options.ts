import { InvalidArgumentError } from '../errors.js'
import { describe, integerOption, isLoopbackHost } from '../validate.js'

export { isLoopbackHost }

/** Options of the web dashboard (which also serves `/metrics` and `/api/stats`). */
export interface DashboardOptions {
  /** TCP port; 0 picks a free one (read `cluster.dashboardUrl`). Default 8265. */
  port?: number
  /** Interface to listen on. Default `127.0.0.1`; any other than loopback requires `token`. */
  host?: string
  /**
   * Secret required on every request, as `Authorization: Bearer <token>` or
   * `?token=<token>` (the page passes it on). At least 16 characters.
   * Required when `host` is not a loopback address; optional otherwise.
   */
  token?: string
  /** Interval of live updates to each open page, in ms (20 to 1000). Default 1000. */
  updateMs?: number
  /** Most pages connected at once; more get HTTP 503. Default 32. */
  maxClients?: number
}

export interface ResolvedDashboardOptions {
  readonly port: number
  readonly host: string
  readonly token: string | undefined
  readonly updateMs: number
  readonly maxClients: number
}

export const DASHBOARD_DEFAULTS = {
  port: 8265,
  host: '127.0.0.1',
  updateMs: 1000,
  maxClients: 32,
} as const

/**
 * A dashboard URL fit for a log line or a terminal: its `token` query
 * parameter, if any, shown as `***`. Logs and terminal output are read by
 * more people than the token is meant for.
 */
export function maskToken(url: string): string {
  return url.replace(/([?&]token=)[^&#]*/g, '$1***')
}

/** Log levels, from the most verbose; `silent` logs nothing. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

/**
 * Resolves `options.dashboard`: `true` (defaults), a port number, or an
 * object; `undefined` or `false` means no dashboard.
 */
export function resolveDashboardOptions(v: boolean | number | DashboardOptions | undefined): ResolvedDashboardOptions | undefined {
  if (v === undefined || v === false) return undefined
  const o: DashboardOptions = v === true ? {} : typeof v === 'number' ? { port: v } : v
  if (o === null || typeof o !== 'object') {
    throw new InvalidArgumentError(`options.dashboard must be a boolean, a port number or an object, got ${describe(v)}`)
  }
  const port = integerOption('dashboard.port', o.port, 0, 65535) ?? DASHBOARD_DEFAULTS.port
  const host = o.host ?? DASHBOARD_DEFAULTS.host
  if (typeof host !== 'string' || host.length === 0 || /[\s/]/.test(host)) {
    throw new InvalidArgumentError(`options.dashboard.host must be a host name or IP address, got ${describe(host)}`)
  }
  if (o.token !== undefined && (typeof o.token !== 'string' || o.token.length < 16 || !/^[\x21-\x7e]+$/.test(o.token))) {
    throw new InvalidArgumentError('options.dashboard.token must be a string of at least 16 printable characters without spaces')
  }
  if (!isLoopbackHost(host) && o.token === undefined) {
    throw new InvalidArgumentError(`options.dashboard.token is required to serve the dashboard on ${host}: only loopback addresses may go without one`)
  }
  const updateMs = integerOption('dashboard.updateMs', o.updateMs, 20, 1000) ?? DASHBOARD_DEFAULTS.updateMs
  const maxClients = integerOption('dashboard.maxClients', o.maxClients, 1) ?? DASHBOARD_DEFAULTS.maxClients
  return Object.freeze({ port, host, token: o.token, updateMs, maxClients })
}

export function resolveLogLevel(v: unknown, field = 'options.logLevel'): LogLevel {
  if (v === undefined) return 'silent'
  if (typeof v !== 'string' || !(LOG_LEVELS as readonly string[]).includes(v)) {
    throw new InvalidArgumentError(`${field} must be one of ${LOG_LEVELS.join(', ')}, got ${describe(v)}`)
  }
  return v as LogLevel
}
