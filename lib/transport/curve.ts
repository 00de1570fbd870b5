import { createHmac, createPrivateKey, createPublicKey, diffieHellman, timingSafeEqual } from 'node:crypto'
import * as zmq from 'zeromq'
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { AuthError, InvalidArgumentError } from '../errors.js'
import { ensurePrivateDir, writePrivateFile } from '../util/private-files.js'

/** A CURVE key pair, both halves Z85-encoded (40 characters). */
export interface KeyPair {
  publicKey: string
  secretKey: string
}

/**
 * CURVE authentication. The driver holds the server key pair and a list of
 * agent public keys it accepts; each agent holds the server's public key and
 * an agent key pair. `cluster keys` writes all of it into one directory; agents
 * may share the one agent key it makes (the "cluster secret"), or each have
 * its own, listed in `authorized_agents`.
 */
export interface CurveOptions {
  /** A directory written by `cluster keys`; supplies every key below that is not given. */
  dir?: string
  /** Driver and agents: the driver's public key. */
  serverPublicKey?: string
  /** Driver only: the driver's secret key. */
  serverSecretKey?: string
  /** Driver only: public keys of the agents allowed to join. */
  authorizedAgents?: string[]
  /** Agent only: its key pair. */
  agentKey?: KeyPair
}

export interface DriverCurve {
  server: KeyPair
  authorizedAgents: string[]
}

export interface AgentCurve {
  serverPublicKey: string
  agentKey: KeyPair
}

const Z85_KEY = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/

export const KEY_FILES = {
  server: 'server.json',
  serverPublic: 'server.pub',
  agent: 'agent.json',
  authorized: 'authorized_agents',
} as const

function checkKey(what: string, v: unknown): string {
  if (typeof v !== 'string' || !Z85_KEY.test(v)) throw new InvalidArgumentError(`${what} must be a 40-character Z85 CURVE key`)
  return v
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    throw new AuthError(`cannot read ${what} at ${path}: ${(err as Error).message}`, { cause: err })
  }
}

function readPair(path: string, what: string): KeyPair {
  let parsed: unknown
  try {
    parsed = JSON.parse(readText(path, what))
  } catch (err) {
    if (err instanceof AuthError) throw err
    throw new AuthError(`${what} at ${path} is not valid JSON`)
  }
  const o = (parsed ?? {}) as Record<string, unknown>
  return { publicKey: checkKey(`${what} publicKey (${path})`, o['publicKey']), secretKey: checkKey(`${what} secretKey (${path})`, o['secretKey']) }
}

/**
 * One key per line; a line starting with `#` is a comment, and anything after
 * the key (separated by white space) is ignored. (`#` is itself a Z85 digit,
 * so it cannot start a comment inside a line.)
 */
export function parseKeyList(text: string, source: string): string[] {
  const keys: string[] = []
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim()
    if (line && !line.startsWith('#')) keys.push(checkKey(`${source} line ${i + 1}`, line.split(/\s+/)[0]))
  })
  return keys
}

export function resolveDriverCurve(o: CurveOptions): DriverCurve {
  const fromDir = o.dir !== undefined && (o.serverSecretKey === undefined || o.authorizedAgents === undefined)
  const filed = fromDir ? readPair(join(o.dir!, KEY_FILES.server), 'the server key') : undefined
  const server = {
    publicKey: checkKey('curve.serverPublicKey', o.serverPublicKey ?? filed?.publicKey),
    secretKey: checkKey('curve.serverSecretKey', o.serverSecretKey ?? filed?.secretKey),
  }
  const authorizedAgents =
    o.authorizedAgents?.map((k, i) => checkKey(`curve.authorizedAgents[${i}]`, k)) ??
    (o.dir !== undefined ? parseKeyList(readText(join(o.dir, KEY_FILES.authorized), 'the authorized agents'), join(o.dir, KEY_FILES.authorized)) : [])
  return { server, authorizedAgents }
}

export function resolveAgentCurve(o: CurveOptions): AgentCurve {
  const serverPublicKey =
    o.serverPublicKey ?? (o.dir !== undefined ? readText(join(o.dir, KEY_FILES.serverPublic), "the server's public key").trim() : undefined)
  const agentKey = o.agentKey ?? (o.dir !== undefined ? readPair(join(o.dir, KEY_FILES.agent), 'the agent key') : undefined)
  if (!agentKey) throw new InvalidArgumentError('curve.agentKey (or curve.dir with agent.json) is required')
  return {
    serverPublicKey: checkKey('curve.serverPublicKey', serverPublicKey),
    agentKey: { publicKey: checkKey('curve.agentKey.publicKey', agentKey.publicKey), secretKey: checkKey('curve.agentKey.secretKey', agentKey.secretKey) },
  }
}

export function newKeyPair(): KeyPair {
  return zmq.curveKeyPair()
}

/**
 * Writes a server key pair, its public half, one agent key pair and the list
 * that authorizes it, into a directory that is the user's alone (created
 * 0700; a symbolic link or another user's directory is refused), each file
 * created anew (`O_EXCL`, secrets 0600): a file planted there beforehand
 * never receives a key.
 */
export function writeKeys(dir: string, force = false): { dir: string; files: string[] } {
  try {
    mkdirSync(dirname(resolve(dir)), { recursive: true })
  } catch (err) {
    throw new AuthError(`cannot create ${resolve(dir)}: ${(err as Error).message}`, { cause: err })
  }
  ensurePrivateDir(resolve(dir), resolve(dir))
  const files = Object.values(KEY_FILES).map((f) => join(dir, f))
  const existing = files.filter((f) => existsSync(f))
  if (existing.length > 0 && !force) throw new InvalidArgumentError(`refusing to overwrite ${existing.join(', ')} (use --force)`)
  for (const f of existing) rmSync(f)
  const server = newKeyPair()
  const agent = newKeyPair()
  writePrivateFile(join(dir, KEY_FILES.server), `${JSON.stringify(server, null, 2)}\n`)
  writePrivateFile(join(dir, KEY_FILES.serverPublic), `${server.publicKey}\n`, 0o644)
  writePrivateFile(join(dir, KEY_FILES.agent), `${JSON.stringify(agent, null, 2)}\n`)
  writePrivateFile(join(dir, KEY_FILES.authorized), `# agent public keys allowed to join, one per line\n${agent.publicKey}\n`, 0o644)
  return { dir, files }
}

// --- Proof of an agent key in Hello -------------------------------------------------------------
//
// zeromq.js does not tell the ROUTER which CURVE key a connection was
// authenticated with (no zmq_msg_gets, so no ZAP User-Id), and the ZAP request
// names neither the connection nor the peer's routing id. So a Hello proves
// its agent key itself: an HMAC, keyed by the X25519 secret that agent and
// driver share (the agent's secret with the driver's public key, or the
// driver's secret with the agent's public key), over the agent id, its
// registration and its routing id. The Hello travels inside the CURVE
// session, so no one else sees it to replay it.

function z85Decode(text: string): Buffer {
  const out = Buffer.alloc((text.length / 5) * 4)
  for (let i = 0, o = 0; i < text.length; i += 5, o += 4) {
    let v = 0
    for (let j = 0; j < 5; j++) v = v * 85 + Z85.indexOf(text[i + j]!)
    out.writeUInt32BE(v >>> 0, o)
  }
  return out
}

const jwk = (publicKey: string, secretKey?: string) => ({
  kty: 'OKP',
  crv: 'X25519',
  x: z85Decode(publicKey).toString('base64url'),
  ...(secretKey === undefined ? {} : { d: z85Decode(secretKey).toString('base64url') }),
})

function sharedSecret(own: KeyPair, otherPublic: string): Buffer {
  return diffieHellman({
    privateKey: createPrivateKey({ key: jwk(own.publicKey, own.secretKey), format: 'jwk' }),
    publicKey: createPublicKey({ key: jwk(otherPublic), format: 'jwk' }),
  })
}

const proofText = (agentId: string, registration: string, routingId: string) => `actor-cluster hello\n${agentId}\n${registration}\n${routingId}`

/** The agent's side: its public key and the proof that it holds the secret half, for one Hello. */
export function helloProof(curve: AgentCurve, agentId: string, registration: string, routingId: string): { key: string; proof: string } {
  const mac = createHmac('sha256', sharedSecret(curve.agentKey, curve.serverPublicKey))
    .update(proofText(agentId, registration, routingId))
    .digest('hex')
  return { key: curve.agentKey.publicKey, proof: mac }
}

/** The driver's side: does `proof` show that the sender of this Hello holds the secret of `key`? */
export function checkHelloProof(server: KeyPair, key: string, proof: string, agentId: string, registration: string, routingId: string): boolean {
  let expected: Buffer
  try {
    expected = createHmac('sha256', sharedSecret(server, key))
      .update(proofText(agentId, registration, routingId))
      .digest()
  } catch {
    return false
  }
  const given = Buffer.from(proof, 'hex')
  return given.length === expected.length && timingSafeEqual(given, expected)
}

// --- ZAP: the in-process handler that libzmq asks whether a client may connect ---------------

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#'

export function z85Encode(bytes: Uint8Array): string {
  if (bytes.length % 4 !== 0) throw new InvalidArgumentError('z85 input length must be a multiple of 4')
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let out = ''
  for (let i = 0; i < bytes.length; i += 4) {
    let v = view.getUint32(i)
    let chunk = ''
    for (let j = 0; j < 5; j++) {
      chunk = Z85[v % 85]! + chunk
      v = Math.floor(v / 85)
    }
    out += chunk
  }
  return out
}

/** Per ZAP domain (one per driver), the agent keys allowed in and what happened. */
interface Domain {
  allowed: Set<string>
  denied: number
}

const domains = new Map<string, Domain>()
const ZAP_ENDPOINT = 'inproc://zeromq.zap.01'
let handler: zmq.Reply | undefined
// Starting and stopping the handler are serialised: the ZAP endpoint exists once per process.
let lifecycle: Promise<void> = Promise.resolve()

async function serve(sock: zmq.Reply): Promise<void> {
  try {
    for await (const msg of sock) {
      const [version, requestId, domainName, , , mechanism, credential] = msg
      const domain = domains.get(domainName?.toString() ?? '')
      const key = credential && credential.length === 32 ? z85Encode(credential) : ''
      const ok = domain !== undefined && mechanism?.toString() === 'CURVE' && domain.allowed.has(key)
      if (!ok && domain) domain.denied++
      await sock.send([version ?? '1.0', requestId ?? '', ok ? '200' : '400', ok ? 'OK' : 'agent key not authorized', ok ? key : '', ''])
    }
  } catch {
    // closed
  }
}

/** Registers a driver's accepted keys under its ZAP domain, starting the handler on first use. */
export function registerZapDomain(name: string, allowed: Iterable<string>): Promise<Domain> {
  const domain: Domain = { allowed: new Set(allowed), denied: 0 }
  domains.set(name, domain)
  lifecycle = lifecycle.then(async () => {
    if (handler || domains.size === 0) return
    const sock = new zmq.Reply({ linger: 0 })
    // The endpoint of a handler closed a moment ago is released asynchronously: retry briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        await sock.bind(ZAP_ENDPOINT)
        break
      } catch (err) {
        if (attempt >= 30) {
          sock.close()
          throw new AuthError(`cannot start the CURVE authentication handler: ${(err as Error).message}`, { cause: err })
        }
        await new Promise((r) => setTimeout(r, 50))
      }
    }
    handler = sock
    void serve(sock)
  })
  return lifecycle.then(() => domain)
}

export function unregisterZapDomain(name: string): Promise<void> {
  domains.delete(name)
  lifecycle = lifecycle.then(async () => {
    if (!handler || domains.size > 0) return
    const sock = handler
    handler = undefined
    // close() without unbind(): unbind then close can abort libzmq 4.3.5 (pipe.cpp:355).
    sock.close()
  })
  return lifecycle
}
