/**
 * The per-cluster secret of the brokered designs. Every frame on the
 * brokers carries an HMAC keyed by it (see `frames.ts`), so a broker user
 * without it can pose neither as an agent nor as the driver. A driver given
 * none makes 32 random bytes per cluster and leaves them, like the local
 * CURVE keys, in a directory only the user can read:
 * `$XDG_RUNTIME_DIR/actor-cluster/broker-<clusterId>/secret`, else
 * `~/.actor-cluster/local/broker-<clusterId>/secret`; agents of the same user
 * on the same machine find it there by the cluster id. Anything another user
 * could have written is refused.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { AuthError } from '../errors.js'
import { lstatOrUndefined, privateDirProblem, privateFileProblem, writePrivateFile } from '../util/private-files.js'
import { freshPrivateDir, localKeysRoot } from './local-keys.js'

/** Fewest characters of a configured secret. */
const MIN_SECRET_CHARS = 32

const SECRET_FILE = 'secret'

function secretDir(clusterId: string, env: NodeJS.ProcessEnv): string {
  return join(localKeysRoot(env).base, `broker-${clusterId}`)
}

/** A configured secret as key bytes; throws AuthError when it is too short. */
export function secretKey(secret: string, what: string): Buffer {
  const text = secret.trim()
  if (text.length < MIN_SECRET_CHARS) throw new AuthError(`${what} must be at least ${MIN_SECRET_CHARS} characters (e.g. 64 hex digits), got ${text.length}`)
  return Buffer.from(text, 'utf8')
}

/** Reads a secret file: a regular file of the user's own that no one else can read or write. */
export function readSecretFile(path: string): Buffer {
  const problem = privateFileProblem(path)
  if (problem) throw new AuthError(`refusing the broker secret file ${path}: ${problem}`)
  return secretKey(readFileSync(path, 'utf8'), `the broker secret in ${path}`)
}

/** A new secret: 32 random bytes, as 64 hex digits. */
export function newSecret(): string {
  return randomBytes(32).toString('hex')
}

/**
 * The driver's side: leaves `secret` where agents of this user on this
 * machine look for cluster `clusterId`'s (an earlier driver's of the same id
 * is replaced). Returns the directory, to remove at close.
 */
export function publishBrokerSecret(clusterId: string, secret: string, env: NodeJS.ProcessEnv = process.env): string {
  const dir = secretDir(clusterId, env)
  freshPrivateDir(dir, env)
  writePrivateFile(join(dir, SECRET_FILE), `${secret}\n`)
  return dir
}

/**
 * The agent's side: the secret a driver of this user on this machine left
 * for cluster `clusterId`, or undefined when there is none. One another user
 * could have written is refused (AuthError).
 */
export function findBrokerSecret(clusterId: string, env: NodeJS.ProcessEnv = process.env): Buffer | undefined {
  const dir = secretDir(clusterId, env)
  const st = lstatOrUndefined(dir)
  if (!st) return undefined
  const problem = privateDirProblem(dir, st)
  if (problem) throw new AuthError(`refusing the broker secret in ${dir}: ${problem}`)
  return readSecretFile(join(dir, SECRET_FILE))
}

/**
 * An agent's key for cluster `clusterId`: `brokerSecret`, else the file
 * `brokerSecretFile`, else the secret a driver of this user on this machine
 * published; throws AuthError naming what to set when there is none.
 */
export function agentBrokerKey(
  o: { readonly clusterId: string | undefined; readonly brokerSecret: string | undefined; readonly brokerSecretFile: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
): Buffer {
  if (o.brokerSecret !== undefined) return secretKey(o.brokerSecret, 'options.brokerSecret')
  if (o.brokerSecretFile !== undefined) return readSecretFile(o.brokerSecretFile)
  const found = o.clusterId === undefined ? undefined : findBrokerSecret(o.clusterId, env)
  if (found) return found
  throw new AuthError(
    `no broker secret for cluster ${o.clusterId ?? '?'}: set brokerSecretFile (--broker-secret-file, CLUSTER_BROKER_SECRET_FILE) to a copy of the driver's secret file, ` +
      `or start this agent on the driver's machine as the same user (it finds the secret the driver made); insecure: true on both sides turns frame authentication off`,
  )
}
