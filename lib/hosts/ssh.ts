import { spawn } from 'node:child_process'
import { SshError, type SshFailure } from '../errors.js'
import type { HostSpec } from './hosts-file.js'

/** SSH settings shared by every host (a host line's user, port and key win). */
export interface SshSettings {
  readonly configFile: string | undefined
  readonly identity: string | undefined
  readonly user: string | undefined
  readonly port: number | undefined
  readonly options: readonly string[]
  readonly connectTimeoutS: number
}

/** Where and as whom to log in. */
export type SshTarget = Pick<HostSpec, 'label' | 'user' | 'host' | 'port' | 'key'>

export interface SshResult {
  /** Exit code of the remote command; 255 is ssh's own failure. null when killed. */
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
  readonly timedOut: boolean
}

/** Most bytes kept of a remote command's output: nothing from the network is trusted, not even its size. */
const MAX_OUTPUT = 1 << 20

/**
 * The ssh options for one host, without the command: batch mode (never a
 * password prompt), a connect timeout, keep-alives so a silent link is
 * noticed, and the user's own keys and known_hosts unless told otherwise.
 */
export function sshOptions(s: SshSettings, t: SshTarget): string[] {
  const args: string[] = []
  if (s.configFile !== undefined) args.push('-F', s.configFile)
  args.push('-o', 'BatchMode=yes', '-o', `ConnectTimeout=${s.connectTimeoutS}`, '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=3')
  const identity = t.key ?? s.identity
  if (identity !== undefined) args.push('-i', identity, '-o', 'IdentitiesOnly=yes')
  for (const o of s.options) args.push('-o', o)
  const port = t.port ?? s.port
  if (port !== undefined) args.push('-p', String(port))
  const user = t.user ?? s.user
  if (user !== undefined) args.push('-l', user)
  return args
}

/** Quotes a word for a POSIX shell on the far side. */
export function shq(word: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`
}

/**
 * Runs `script` with `sh` on a host (the script on stdin, `args` as `$1`…),
 * killing ssh after `timeoutMs`. Never rejects for the remote side's sake:
 * the caller reads `code`; only a missing ssh client rejects.
 */
export function runSsh(s: SshSettings, t: SshTarget, script: string, args: readonly string[], timeoutMs: number): Promise<SshResult> {
  const argv = [...sshOptions(s, t), '--', t.host, ['sh', '-s', '--', ...args].map(shq).join(' ')]
  return runProcess('ssh', argv, script, timeoutMs, t)
}

/** Runs a local program (ssh, rsync) with a time limit; output is capped. */
export function runProcess(cmd: string, argv: readonly string[], input: string | undefined, timeoutMs: number, t: SshTarget): Promise<SshResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let timedOut = false
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < MAX_OUTPUT) stdout += d
    })
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_OUTPUT) stderr += d
    })
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      if (err.code === 'ENOENT') {
        reject(
          new SshError(
            t.label,
            'no-ssh',
            `${cmd} is not installed on this machine (${cmd === 'ssh' ? 'the OpenSSH client' : cmd} is needed to reach the hosts)`,
            { cause: err },
          ),
        )
      } else {
        reject(new SshError(t.label, 'failed', `cannot run ${cmd}: ${err.message}`, { cause: err }))
      }
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, timedOut })
    })
    child.stdin.on('error', () => {})
    child.stdin.end(input ?? '')
  })
}

/** The last meaningful line ssh printed (it also prints banners and warnings). */
function lastLine(text: string): string {
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^Warning: Permanently added/.test(l))
  return lines[lines.length - 1] ?? ''
}

/**
 * Classifies a failed ssh (or rsync over ssh) run into an {@link SshError}
 * with the cause a person can act on; undefined when ssh itself succeeded
 * (the remote command's own exit code is the caller's business).
 */
export function sshFailure(r: SshResult, t: SshTarget, step: string, timeoutMs: number, via: 'ssh' | 'rsync' = 'ssh'): SshError | undefined {
  if (r.timedOut) return new SshError(t.label, 'timeout', `${t.label}: ${step} timed out after ${(timeoutMs / 1000).toFixed(0)} s`)
  // A remote command's own failure is not ssh's: only 255 is ssh speaking (rsync relays ssh's words on any failure).
  if (via === 'ssh' ? r.code !== 255 : r.code === 0) return undefined
  const err = r.stderr
  let reason: SshFailure | undefined
  let hint = ''
  if (/Permission denied|Too many authentication failures|no mutual signature|Authentication failed/i.test(err)) {
    reason = 'auth'
    hint = 'the host refused the SSH key: check the user, the key (ssh.identity or key=) and authorized_keys on the host'
  } else if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No \S+ host key is known/i.test(err)) {
    reason = 'host-key'
    hint = 'the host key is not in known_hosts (or changed): connect once with ssh by hand, or add it with ssh-keyscan'
  } else if (/Connection refused/i.test(err)) {
    reason = 'unreachable'
    hint = 'connection refused: no SSH server listening on that port'
  } else if (
    /timed out|No route to host|Network is unreachable|Could not resolve hostname|Name or service not known|Temporary failure in name resolution|Connection reset|Connection closed by|kex_exchange_identification/i.test(
      err,
    )
  ) {
    reason = 'unreachable'
    hint = 'the host did not answer'
  } else if (via === 'ssh') {
    reason = 'failed'
    hint = 'ssh failed'
  }
  if (reason === undefined) return undefined
  const said = lastLine(err).replace(/^ssh: /, '')
  return new SshError(t.label, reason, `${t.label}: ${step}: ${hint}${said ? ` (ssh: ${said})` : ''}`)
}
