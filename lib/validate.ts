/**
 * The checks every option resolver shares, and their wording:
 * `options.threads must be a positive integer, got 0`. A field named like an
 * environment variable (`CLUSTER_THREADS`) or a flag (`--threads`) is quoted
 * as is; any other name is an option path and gets the `options.` prefix.
 *
 * Each check comes twice: `xProblem(v)` says what `v` fails to be (or
 * undefined), for callers with their own error class and wording (the config
 * file checks); `xOption(name, v)` throws the {@link InvalidArgumentError}.
 */
import { InvalidArgumentError } from './errors.js'

/** A value as an error message quotes it: strings in quotes, objects by their tag. */
export function describe(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : typeof v === 'object' && v !== null ? Object.prototype.toString.call(v) : String(v)
}

/** A value by its kind (`number`, `an array`, `null`), strings in quotes: for shape errors where the value itself says little. */
export function describeKind(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : Array.isArray(v) ? 'an array' : v === null ? 'null' : typeof v
}

/** How a field is named in messages: `CLUSTER_X` and `--x` as they are, an option path as `options.<path>`. */
function fieldName(name: string): string {
  return /^[A-Z][A-Z0-9_]*$/.test(name) || name.startsWith('-') || name.startsWith('options') ? name : `options.${name}`
}

function fail(name: string, problem: string, v: unknown, shown = describe(v)): never {
  throw new InvalidArgumentError(`${fieldName(name)} ${problem}, got ${shown}`)
}

/** `must be a positive integer` and the like, or undefined when `v` is an integer in [min, max]. */
export function integerProblem(v: unknown, min = 1, max?: number): string | undefined {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= min && (max === undefined || v <= max)) return undefined
  if (max !== undefined) return `must be an integer from ${min} to ${max}`
  return `must be ${min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer ≥ ${min}`}`
}

/**
 * An integer option of at least `min` (and at most `max`); `undefined` passes
 * through, so callers write `integerOption('threads', o.threads) ?? fallback`.
 */
export function integerOption(name: string, v: unknown, min = 1, max?: number): number | undefined {
  if (v === undefined) return undefined
  const problem = integerProblem(v, min, max)
  return problem === undefined ? (v as number) : fail(name, problem, v)
}

/** `must be a number ≥ min`, or undefined (any finite number, fractions too). */
export function numberProblem(v: unknown, min = 1): string | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= min ? undefined : `must be a number ≥ ${min}`
}

export function stringProblem(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? undefined : 'must be a non-empty string'
}

export function booleanOption(name: string, v: unknown): boolean | undefined {
  if (v === undefined || typeof v === 'boolean') return v
  return fail(name, 'must be a boolean', v)
}

/** One of a fixed list of strings, quoted in the message. */
export function oneOfOption<T extends string>(name: string, v: unknown, choices: readonly T[]): T | undefined {
  if (v === undefined) return undefined
  if (typeof v === 'string' && (choices as readonly string[]).includes(v)) return v as T
  const list = choices.map((c) => `'${c}'`)
  const what = list.length === 2 ? `${list[0]} or ${list[1]}` : `one of ${list.join(', ')}`
  return fail(name, `must be ${what}`, v, JSON.stringify(v) ?? describe(v))
}

const ENDPOINT = /^(tcp:\/\/[^\s:]+|tcp:\/\/\[[0-9a-f:]+\]):(\d+|\*)$|^(ipc|inproc|memory):\/\/\S+$/i

/** Most threads a node may run: more would only exhaust the machine's memory starting them. */
export const MAX_THREADS = 4096

export function endpointProblem(v: unknown): string | undefined {
  if (typeof v !== 'string' || !ENDPOINT.test(v)) return 'must be an endpoint like tcp://127.0.0.1:7100'
  // A port past 65535 passes the pattern; a socket would wait on it for ever.
  const port = /^tcp:.*:(\d+)$/i.exec(v)?.[1]
  return port !== undefined && Number(port) > 65535 ? 'must have a port from 0 to 65535' : undefined
}

/**
 * A ZeroMQ endpoint: `tcp://host:port` (port `*` for any), `ipc://path` or
 * `inproc://name`; or `memory://name`, a driver in this process reached
 * without a socket (see lib/transport/memory.ts).
 */
export function endpointOption(name: string, v: unknown): string {
  const problem = endpointProblem(v)
  return problem === undefined ? (v as string) : fail(name, problem, v)
}

/** Is this host name or address reachable only from this machine? */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase()
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h)
}

/** Is this endpoint reachable only from this machine? */
export function isLoopbackEndpoint(endpoint: string): boolean {
  if (/^(ipc|inproc|memory):/.test(endpoint)) return true
  const host = /^tcp:\/\/(\[[^\]]+\]|[^:]+):/.exec(endpoint)?.[1] ?? ''
  return isLoopbackHost(host)
}

/** A URL with its password replaced by `***`, safe to print. Anything unparsable is shown by scheme only. */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.href.replace(/\/$/, '')
  } catch {
    const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(url)?.[0]
    return scheme ? `${scheme}… (unparsable)` : '(unparsable URL)'
  }
}

/**
 * A URL with one of `schemes` (`'redis:'`) and a host. Messages show it with
 * its password masked.
 */
export function urlOption(name: string, v: unknown, schemes: readonly string[]): string {
  const what = `must be a ${schemes.join(' or ')} URL`
  if (typeof v !== 'string' || v.length === 0) return fail(name, what, v, typeof v === 'string' ? '""' : String(v))
  let u: URL
  try {
    u = new URL(v)
  } catch {
    return fail(name, what, v, JSON.stringify(maskUrl(v)))
  }
  if (!schemes.includes(u.protocol) || u.hostname === '') return fail(name, `${what} with a host`, v, JSON.stringify(maskUrl(v)))
  return v
}
