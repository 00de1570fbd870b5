/**
 * Keys for agents on the driver's own machine. A ZeroMQ driver that listens
 * on loopback TCP without keys of its own makes a CURVE key pair for itself
 * and one for its agents, per cluster, and leaves the agents' half in a
 * directory only the user can read: `$XDG_RUNTIME_DIR/actor-cluster/<host>-<port>`,
 * else `~/.actor-cluster/local/<host>-<port>`. An agent told to connect to a
 * loopback port, with no keys of its own, looks there. Another user of the
 * machine can neither read those keys nor plant their own: every directory on
 * the way is checked (ours, not a symbolic link, 0700), files are created
 * with `O_EXCL` and mode 0600, and read only when they are ours and private.
 */
import { createHash } from 'node:crypto'
import { lstatSync, mkdirSync, rmSync } from 'node:fs'
import { homedir, hostname } from 'node:os'
import { dirname, join } from 'node:path'
import { AuthError } from '../errors.js'
import { ensurePrivateDir, lstatOrUndefined, myUid, privateDirProblem, writePrivateFile } from '../util/private-files.js'
import { KEY_FILES, resolveAgentCurve, type AgentCurve, type KeyPair } from './curve.js'

/** Where the local keys of every port live: the per-user runtime directory if there is one, else under home. */
export function localKeysRoot(env: NodeJS.ProcessEnv): { root: string; base: string } {
  const runtime = env['XDG_RUNTIME_DIR']
  if (runtime) return { root: runtime, base: join(runtime, 'actor-cluster') }
  const home = env['HOME'] || homedir()
  return { root: home, base: join(home, '.actor-cluster', 'local') }
}

/** The name of an endpoint's directory: its TCP port (`tcp://127.0.0.1:7100`, `tcp://[::1]:7100`, `tcp://localhost:7100`), or a digest of an `ipc://` path. */
function nameOf(endpoint: string): string | undefined {
  const port = /^tcp:\/\/(?:\[[^\]]+\]|[^:/]+):(\d+)$/.exec(endpoint)?.[1]
  if (port !== undefined) return port
  return endpoint.startsWith('ipc://') ? `ipc-${createHash('sha256').update(endpoint).digest('hex').slice(0, 16)}` : undefined
}

/** The directory holding the agents' keys of the driver at `endpoint` on this machine (a loopback TCP port or an ipc path). */
function localKeysDir(endpoint: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const name = nameOf(endpoint)
  return name === undefined ? undefined : join(localKeysRoot(env).base, `${hostname()}-${name}`)
}

/**
 * Makes `dir` (under the user's private base, see {@link localKeysRoot}) anew,
 * empty, 0700 and the user's own: whatever stood there (a driver's leftovers)
 * goes first. Throws AuthError naming the directory when it cannot be made so.
 */
export function freshPrivateDir(dir: string, env: NodeJS.ProcessEnv = process.env): void {
  const { root, base } = localKeysRoot(env)
  ensurePrivateDir(base, root)
  rmSync(dir, { recursive: true, force: true })
  try {
    mkdirSync(dir, { mode: 0o700 })
  } catch (err) {
    throw new AuthError(`cannot create ${dir}: ${(err as Error).message}`, { cause: err })
  }
  ensurePrivateDir(dir, base)
}

/**
 * The driver's side: writes the agents' half of its keys (its public key and
 * the agent key pair) for the port it bound; an earlier driver's directory
 * for that port (one that crashed: the port is ours now) is replaced.
 * Returns the directory; throws AuthError when it cannot be made safely.
 */
export function publishLocalKeys(address: string, serverPublicKey: string, agentKey: KeyPair, env: NodeJS.ProcessEnv = process.env): string {
  const dir = localKeysDir(address, env)
  if (dir === undefined) throw new AuthError(`cannot name a directory for the local keys of ${address}`)
  freshPrivateDir(dir, env)
  writePrivateFile(join(dir, KEY_FILES.serverPublic), `${serverPublicKey}\n`)
  writePrivateFile(join(dir, KEY_FILES.agent), `${JSON.stringify(agentKey)}\n`)
  return dir
}

/** Removes the keys a driver published (at close); a directory that is not ours is left alone. */
export function unpublishLocalKeys(dir: string): void {
  const st = lstatOrUndefined(dir)
  const uid = myUid()
  if (st && st.isDirectory() && !st.isSymbolicLink() && (uid === undefined || st.uid === uid)) rmSync(dir, { recursive: true, force: true })
}

/** Removes a directory left for `address` by a driver that crashed, if the directories on the way are ours (an insecure driver's start). */
export function clearStaleLocalKeys(address: string, env: NodeJS.ProcessEnv = process.env): void {
  const dir = localKeysDir(address, env)
  if (dir === undefined) return
  const base = lstatOrUndefined(dirname(dir))
  const uid = myUid()
  if (!base || !base.isDirectory() || base.isSymbolicLink() || (uid !== undefined && base.uid !== uid)) return
  unpublishLocalKeys(dir)
}

/**
 * The agent's side: the keys the driver on this machine's loopback port of
 * `endpoint` left for its agents, or undefined when it left none (it runs
 * without CURVE). Keys that another user could have written are refused.
 */
export function findLocalKeys(endpoint: string, env: NodeJS.ProcessEnv = process.env): AgentCurve | undefined {
  const dir = localKeysDir(endpoint, env)
  if (dir === undefined) return undefined
  const st = lstatOrUndefined(dir)
  if (!st) return undefined
  const uid = myUid()
  const problem =
    privateDirProblem(dir, st) ??
    (() => {
      const base = lstatSync(dirname(dir))
      return base.isSymbolicLink() || (uid !== undefined && base.uid !== uid) ? `${dirname(dir)} is not the user's own directory` : undefined
    })() ??
    [KEY_FILES.serverPublic, KEY_FILES.agent]
      .map((f) => {
        const fst = lstatOrUndefined(join(dir, f))
        if (!fst) return `${f} is missing`
        if (!fst.isFile()) return `${f} is not a regular file`
        if (uid !== undefined && fst.uid !== uid) return `${f} belongs to another user (uid ${fst.uid})`
        if ((fst.mode & 0o077) !== 0) return `${f} is readable by other users`
        return undefined
      })
      .find((p) => p !== undefined)
  if (problem) throw new AuthError(`refusing the local keys in ${dir}: ${problem}`)
  return resolveAgentCurve({ dir })
}
