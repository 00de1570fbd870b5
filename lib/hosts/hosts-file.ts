import { readFile } from 'node:fs/promises'
import { HostsFileError, type HostsFileProblem } from '../errors.js'
import { MAX_THREADS } from '../validate.js'

/** One line of a hosts file: `[user@]host[:sshPort] [threads=N] [key=value…]`. */
export interface HostSpec {
  /** The host as written, normalised: `user@host:port` with the parts that were given. */
  readonly label: string
  readonly user: string | undefined
  /** Host name or address (IPv6 without brackets). */
  readonly host: string
  readonly port: number | undefined
  /** Threads of the agent on this host; default: the host's cores. */
  readonly threads: number | undefined
  /** Path of the `node` binary on the host (default `node` on the PATH of a non-interactive SSH session). */
  readonly node: string | undefined
  /** Path of actor-cluster's `dist/bin/cluster.js` on the host (default: searched, see docs/cluster.md). */
  readonly cli: string | undefined
  /** The project directory on the host. */
  readonly dir: string | undefined
  /** SSH identity file (private key) for this host. */
  readonly key: string | undefined
  /** Line number in the file, from 1. */
  readonly line: number
}

/** Keys a host line may set, with what each takes. */
const HOST_KEYS = ['threads', 'node', 'cli', 'dir', 'key'] as const
type HostKey = (typeof HOST_KEYS)[number]

const USER = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/
const HOSTNAME = /^[A-Za-z0-9_]([A-Za-z0-9._-]*[A-Za-z0-9_])?$/
const IPV6 = /^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$/

/** Parses `[user@]host[:port]`; returns a reason string when it is malformed. */
function parseTarget(token: string): { user: string | undefined; host: string; port: number | undefined } | string {
  let rest = token
  let user: string | undefined
  const at = rest.lastIndexOf('@')
  if (at >= 0) {
    user = rest.slice(0, at)
    rest = rest.slice(at + 1)
    if (!USER.test(user)) return `bad user name ${JSON.stringify(user)} in ${JSON.stringify(token)}`
  }
  let host: string
  let portText: string | undefined
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']')
    if (close < 0) return `unclosed "[" in ${JSON.stringify(token)} (IPv6 addresses are written [addr] or [addr]:port)`
    host = rest.slice(1, close)
    const after = rest.slice(close + 1)
    if (after !== '' && !after.startsWith(':')) return `unexpected ${JSON.stringify(after)} after "]" in ${JSON.stringify(token)}`
    portText = after === '' ? undefined : after.slice(1)
    if (!IPV6.test(host) || !host.includes(':')) return `bad IPv6 address ${JSON.stringify(host)}`
  } else {
    const colon = rest.indexOf(':')
    if (colon >= 0 && rest.indexOf(':', colon + 1) >= 0) return `${JSON.stringify(token)}: write IPv6 addresses in brackets, [addr]:port`
    host = colon >= 0 ? rest.slice(0, colon) : rest
    portText = colon >= 0 ? rest.slice(colon + 1) : undefined
    if (host === '') return `missing host name in ${JSON.stringify(token)}`
    if (!HOSTNAME.test(host)) return `bad host name ${JSON.stringify(host)}`
  }
  let port: number | undefined
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN
    if (!(port >= 1 && port <= 65535)) return `bad SSH port ${JSON.stringify(portText)} in ${JSON.stringify(token)} (1 to 65535)`
  }
  return { user, host, port }
}

/** The normalised label of a host: `user@host:port`, brackets around IPv6. */
export function hostLabel(h: { user?: string | undefined; host: string; port?: number | undefined }): string {
  const host = h.host.includes(':') ? `[${h.host}]` : h.host
  return `${h.user !== undefined ? `${h.user}@` : ''}${host}${h.port !== undefined ? `:${h.port}` : ''}`
}

/**
 * Parses a hosts file: one host per line, `[user@]host[:sshPort] [threads=N]
 * [node=PATH] [cli=PATH] [dir=PATH] [key=PATH]`; `#` starts a comment; blank
 * lines are skipped. Every malformed line is reported (file, line, reason) in
 * one {@link HostsFileError}; so is a host listed twice and a file with no host.
 */
export function parseHostsFile(text: string, file = 'hosts file'): HostSpec[] {
  const hosts: HostSpec[] = []
  const problems: HostsFileProblem[] = []
  const seen = new Map<string, number>()
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1
    const hash = lines[i]!.indexOf('#')
    const content = (hash >= 0 ? lines[i]!.slice(0, hash) : lines[i]!).trim()
    if (content === '') continue
    const [first, ...rest] = content.split(/\s+/)
    if (first!.startsWith('-')) {
      problems.push({ line, reason: `a host cannot start with "-": ${JSON.stringify(first)}` })
      continue
    }
    if (first!.includes('=')) {
      problems.push({ line, reason: `expected [user@]host[:port] first, got ${JSON.stringify(first)}` })
      continue
    }
    const target = parseTarget(first!)
    if (typeof target === 'string') {
      problems.push({ line, reason: target })
      continue
    }
    const values: Partial<Record<HostKey, string>> = {}
    let bad: string | undefined
    for (const token of rest) {
      const eq = token.indexOf('=')
      if (eq <= 0) {
        bad = `expected key=value, got ${JSON.stringify(token)}`
        break
      }
      const key = token.slice(0, eq)
      const value = token.slice(eq + 1)
      if (!(HOST_KEYS as readonly string[]).includes(key)) {
        bad = `unknown key ${JSON.stringify(key)} (known: ${HOST_KEYS.join(', ')})`
        break
      }
      if (values[key as HostKey] !== undefined) {
        bad = `${key}= given twice`
        break
      }
      if (value === '') {
        bad = `${key}= needs a value`
        break
      }
      values[key as HostKey] = value
    }
    let threads: number | undefined
    if (!bad && values.threads !== undefined) {
      threads = /^\d+$/.test(values.threads) ? Number(values.threads) : NaN
      if (!(threads >= 1 && threads <= MAX_THREADS)) bad = `threads must be an integer from 1 to ${MAX_THREADS}, got ${JSON.stringify(values.threads)}`
    }
    if (bad) {
      problems.push({ line, reason: bad })
      continue
    }
    const spec: HostSpec = {
      label: hostLabel(target),
      ...target,
      threads,
      node: values.node,
      cli: values.cli,
      dir: values.dir,
      key: values.key,
      line,
    }
    const identity = `${spec.user ?? ''}@${spec.host.toLowerCase()}:${spec.port ?? 22}`
    const before = seen.get(identity)
    if (before !== undefined) {
      problems.push({ line, reason: `duplicate host ${spec.label}: already listed on line ${before}` })
      continue
    }
    seen.set(identity, line)
    hosts.push(spec)
  }
  if (problems.length > 0) throw new HostsFileError(file, problems)
  if (hosts.length === 0) throw new HostsFileError(file, [], `${file} lists no hosts (one per line: [user@]host[:port] [threads=N])`)
  return hosts
}

/** Reads and parses a hosts file; a missing or unreadable file is a {@link HostsFileError} naming it. */
export async function readHostsFile(path: string): Promise<HostSpec[]> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new HostsFileError(path, [], `cannot read hosts file ${path}: ${(err as Error).message}`)
  }
  return parseHostsFile(text, path)
}
