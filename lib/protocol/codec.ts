import { Packr } from 'msgpackr'
import { ProtocolError, SerializationError } from '../errors.js'
import {
  PROTOCOL_VERSION,
  MsgType,
  SHARED_KINDS,
  SHARED_UNAVAILABLE_CODES,
  type HelloInfo,
  type WelcomeInfo,
  type AgentLoad,
  type SharedKind,
  type SharedUnavailableCode,
} from './messages.js'
import { isSharedHash, SharedRef } from './shared-ref.js'
import { isActorRef } from './actor-ref.js'

/**
 * One msgpackr configuration for every peer: records (defined inside each
 * message, so no shared state between processes) and typed arrays, Maps, Sets
 * and Dates carried as such.
 */
export function createPackr(): Packr {
  return new Packr({ moreTypes: true, useRecords: true })
}

const packr = createPackr()

export function encode(value: unknown): Buffer {
  return packr.pack(value)
}

/** A value that would not arrive as sent: the strict encoder refuses it instead of changing it. */
function refuse(what: string): never {
  throw new TypeError(`${what} would not arrive as sent`)
}

/**
 * The encoder of task arguments: the same bytes as {@link encode}, but where
 * msgpackr would silently drop a function or turn a class instance into a
 * plain object, it throws. Arguments are checked by encoding them, not by a
 * walk in advance; only a frame that fails is walked ({@link findUnserializable})
 * to name the value.
 */
const strictPackr = new Packr({
  moreTypes: true,
  // Called for every object written as a record: only plain objects are.
  useRecords: (o: object) => {
    const proto = Object.getPrototypeOf(o) as object | null
    return proto === Object.prototype || proto === null || refuse('an instance of a class')
  },
  // A class's toJSON would hide the instance: it is refused as one.
  useToJSON: false,
  writeFunction: () => refuse('a function'),
})

/** {@link encode}, refusing what would not arrive as sent (throws; see {@link findUnserializable} for which value). */
export function encodeStrict(value: unknown): Buffer {
  return strictPackr.pack(value)
}

/** Decodes bytes from the network; throws ProtocolError on anything malformed. */
export function decode(bytes: Uint8Array): unknown {
  try {
    return packr.unpack(bytes)
  } catch (err) {
    throw new ProtocolError(`malformed msgpack (${bytes.length} bytes): ${(err as Error).message}`)
  }
}

/** Fast check for the common case: numbers, strings, plain arrays and objects, typed arrays. */
function carriable(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case 'number':
    case 'string':
    case 'boolean':
    case 'undefined':
      return true
    case 'object': {
      if (value === null || ArrayBuffer.isView(value)) return true
      if (depth > 64) return false
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) if (!carriable(value[i], depth + 1)) return false
        return true
      }
      if (Object.getPrototypeOf(value) !== Object.prototype) return false
      for (const k in value) if (!carriable((value as Record<string, unknown>)[k], depth + 1)) return false
      return true
    }
    default:
      return false
  }
}

/**
 * Deepest nesting the walk follows: msgpackr itself packs about this deep
 * and no further (its recursion runs out of stack near 3,000 levels).
 */
const MAX_DEPTH = 1000

/**
 * msgpackr silently turns functions into nothing and class instances into
 * plain objects; a task argument that would not arrive as sent is an error.
 * Returns a description of the first value msgpack cannot carry, or undefined.
 * A bigint of any size arrives as sent (msgpackr writes one past 64 bits as
 * an extension), as an argument and as a result alike; so does nesting up to
 * {@link MAX_DEPTH} levels. A value that contains itself is named as such.
 */
export function findUnserializable(value: unknown, path = 'value'): string | undefined {
  return carriable(value, 0) ? undefined : walk(value, path, 0, new Set())
}

/** {@link findUnserializable}'s walk; `ancestors` are the objects on the path to `value`. */
function walk(value: unknown, path: string, depth: number, ancestors: Set<object>): string | undefined {
  switch (typeof value) {
    case 'function':
      return `${path} is a function`
    case 'symbol':
      return `${path} is a symbol`
    case 'object': {
      if (value === null || ArrayBuffer.isView(value) || value instanceof Date || value instanceof RegExp) return undefined
      if (ancestors.has(value)) return `${path} is circular (it contains itself)`
      if (depth > MAX_DEPTH) return `${path} is nested deeper than ${MAX_DEPTH} levels`
      ancestors.add(value)
      const bad = walkInside(value, path, depth + 1, ancestors)
      ancestors.delete(value)
      return bad
    }
    default:
      return undefined
  }
}

/** The first value inside `value` (an object, not yet on the path) msgpack cannot carry. */
function walkInside(value: object, path: string, depth: number, ancestors: Set<object>): string | undefined {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const bad = walk(value[i], `${path}[${i}]`, depth, ancestors)
      if (bad) return bad
    }
    return undefined
  }
  if (value instanceof Map) {
    for (const [k, v] of value) {
      const bad = walk(k, `${path} key`, depth, ancestors) ?? walk(v, `${path}.get(${String(k)})`, depth, ancestors)
      if (bad) return bad
    }
    return undefined
  }
  if (value instanceof Set) {
    for (const v of value) {
      const bad = walk(v, `${path} member`, depth, ancestors)
      if (bad) return bad
    }
    return undefined
  }
  // Errors travel as such; a handle travels as its hash, an actor reference as its id (their extensions).
  if (value instanceof Error || value instanceof SharedRef || isActorRef(value)) return undefined
  const proto = Object.getPrototypeOf(value) as object | null
  if (proto !== Object.prototype && proto !== null) {
    return `${path} is an instance of ${proto.constructor?.name ?? 'a class'}, which would arrive as a plain object`
  }
  for (const k of Object.keys(value)) {
    const bad = walk((value as Record<string, unknown>)[k], `${path}.${k}`, depth, ancestors)
    if (bad) return bad
  }
  return undefined
}

/** Throws SerializationError naming what msgpack cannot carry in `args`. */
export function assertSerializable(what: string, args: readonly unknown[]): void {
  const bad = findUnserializable(args, 'args')
  if (bad) throw new SerializationError(`${what}: ${bad}; msgpack cannot carry it`)
}

// --- frames ------------------------------------------------------------------

export function header(type: MsgType, ...fields: unknown[]): Buffer {
  return packr.pack([PROTOCOL_VERSION, type, ...fields])
}

/** Most parts a message of this protocol has: a header and a body (a routing id is the transport's envelope). */
const MESSAGE_PARTS = 2

/**
 * Why a received message cannot be one of this protocol's, by its shape
 * alone: more parts than a header and a body, or more than `maxBytes` in
 * all. Undefined if it may be. A transport's own limit (libzmq's
 * `maxMessageSize`) bounds each part, not their number nor their sum.
 */
export function messageShapeProblem(parts: readonly Uint8Array[], maxBytes: number): string | undefined {
  if (parts.length > MESSAGE_PARTS) return `${parts.length} parts (at most ${MESSAGE_PARTS})`
  let size = 0
  for (const p of parts) size += p.byteLength
  return size > maxBytes ? `${size} bytes (at most ${maxBytes})` : undefined
}

/** A decoded, validated header. */
export type Header =
  | { type: typeof MsgType.Hello; info: HelloInfo }
  | { type: typeof MsgType.Welcome; info: WelcomeInfo }
  | { type: typeof MsgType.Reject; reason: string }
  | { type: typeof MsgType.Tasks; count: number; timeoutMs: number | undefined; frameId: number | undefined; shared: string[] | undefined }
  | { type: typeof MsgType.Results; count: number; registration: string | undefined }
  | { type: typeof MsgType.ActorResults; count: number }
  | { type: typeof MsgType.Credit; window: number }
  | { type: typeof MsgType.Heartbeat; load: AgentLoad | undefined }
  | { type: typeof MsgType.Actor; count: number }
  | { type: typeof MsgType.Leave; returned: number[] }
  | { type: typeof MsgType.DriverBye }
  | { type: typeof MsgType.Taken; frameId: number; dropped: boolean }
  | { type: typeof MsgType.Put; hash: string; kind: SharedKind; size: number }
  | { type: typeof MsgType.Drop; hashes: string[] }
  | { type: typeof MsgType.Fetch; hashes: string[] }
  | { type: typeof MsgType.Unavailable; hash: string; code: SharedUnavailableCode; message: string }
  | { type: typeof MsgType.Submit; count: number }
  | { type: typeof MsgType.Reply; count: number; thread: number }
  | { type: typeof MsgType.ActorsLost; actorIds: string[] }

/** Thrown for a frame of another protocol version; receivers may answer it. */
export class VersionMismatch extends ProtocolError {
  readonly remoteVersion: unknown
  readonly type: unknown
  constructor(remote: unknown, type: unknown) {
    super(`peer speaks protocol version ${String(remote)}, this side speaks ${PROTOCOL_VERSION}`, 'ERR_PROTOCOL_VERSION')
    this.remoteVersion = remote
    this.type = type
  }
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0
const isStr = (v: unknown, max = 1024): v is string => typeof v === 'string' && v.length <= max
const isHashList = (v: unknown): v is string[] => Array.isArray(v) && v.length <= 100_000 && v.every(isSharedHash)
const isStrList = (v: unknown): v is string[] => Array.isArray(v) && v.length <= 100_000 && v.every((x) => isStr(x, 256))

/**
 * Parses a header received from the network. Never trusts it: every field is
 * checked, anything else is a ProtocolError (a VersionMismatch for frames of
 * another protocol version).
 */
export function parseHeader(bytes: Uint8Array | undefined): Header {
  if (!bytes || bytes.length === 0) throw new ProtocolError('empty frame')
  if (bytes.length > 1 << 20) throw new ProtocolError(`header of ${bytes.length} bytes exceeds 1 MiB`)
  const h = decode(bytes)
  if (!Array.isArray(h) || h.length < 2) throw new ProtocolError('frame header is not [version, type, ...]')
  const fields: readonly unknown[] = h
  const [version, type, a] = fields
  // A rejection must be readable by a peer of any version: it says why.
  if (version !== PROTOCOL_VERSION && type !== MsgType.Reject) throw new VersionMismatch(version, type)
  switch (type) {
    case MsgType.Hello: {
      const o = a as Record<string, unknown> | null
      if (
        !o ||
        typeof o !== 'object' ||
        !isStr(o['agentId'], 128) ||
        !isCount(o['threads']) ||
        o['threads'] < 1 ||
        !isCount(o['pid']) ||
        !isStr(o['host']) ||
        !isStr(o['version']) ||
        !isStrList(o['tasks']) ||
        !isStrList(o['actors']) ||
        !isCount(o['window']) ||
        (o['registration'] !== undefined && !isStr(o['registration'], 64)) ||
        (o['key'] !== undefined && !isStr(o['key'], 40)) ||
        (o['proof'] !== undefined && !isStr(o['proof'], 64)) ||
        (o['sharedCacheBytes'] !== undefined && !isCount(o['sharedCacheBytes'])) ||
        (o['maxFrameBytes'] !== undefined && !isCount(o['maxFrameBytes']))
      )
        throw new ProtocolError('malformed hello')
      return { type, info: o as unknown as HelloInfo }
    }
    case MsgType.Welcome: {
      const o = a as Record<string, unknown> | null
      if (!o || typeof o !== 'object' || !isStr(o['nodeId'], 128) || !isCount(o['heartbeatMs']) || !isStr(o['session'], 128))
        throw new ProtocolError('malformed welcome')
      return { type, info: o as unknown as WelcomeInfo }
    }
    case MsgType.Reject:
      return { type, reason: isStr(a, 4096) ? a : 'rejected without a reason' }
    case MsgType.Tasks: {
      // A numbered frame (brokered designs) says null for no timeout; a ZeroMQ frame listing shared values, null for no number.
      const timeoutMs = fields[3] === null ? undefined : fields[3]
      const frameId = fields[4] === null ? undefined : fields[4]
      const shared = fields[5]
      if (
        !isCount(a) ||
        (timeoutMs !== undefined && !(isCount(timeoutMs) && timeoutMs > 0)) ||
        (frameId !== undefined && !isCount(frameId)) ||
        (shared !== undefined && !isHashList(shared))
      )
        throw new ProtocolError('malformed task frame header')
      return { type, count: a, timeoutMs, frameId, shared }
    }
    case MsgType.Results: {
      // The registration under which the agent was given these tasks (absent from agents that do not say).
      const registration = fields[3]
      if (!isCount(a) || (registration !== undefined && !isStr(registration, 64))) throw new ProtocolError('malformed results frame header')
      return { type, count: a, registration }
    }
    case MsgType.Reply: {
      const thread = fields[3]
      if (!isCount(a) || !isCount(thread) || thread > 0x1fffff) throw new ProtocolError('malformed reply header')
      return { type, count: a, thread }
    }
    case MsgType.ActorResults:
    case MsgType.Submit:
    case MsgType.Actor:
      if (!isCount(a)) throw new ProtocolError(`malformed count in frame of type ${type}`)
      return { type, count: a }
    case MsgType.Credit:
      if (!isCount(a)) throw new ProtocolError('malformed credit')
      return { type, window: a }
    case MsgType.Heartbeat: {
      const o = a as Record<string, unknown> | undefined | null
      if (o && typeof o === 'object' && isCount(o['busy']) && isCount(o['done']) && isCount(o['queued'])) {
        return { type, load: { busy: o['busy'], done: o['done'], queued: o['queued'] } }
      }
      return { type, load: undefined }
    }
    case MsgType.Leave:
      if (!Array.isArray(a) || !a.every(isCount)) throw new ProtocolError('malformed leave')
      return { type, returned: a }
    case MsgType.DriverBye:
      return { type }
    case MsgType.Taken: {
      const dropped = fields[3]
      if (!isCount(a) || typeof dropped !== 'boolean') throw new ProtocolError('malformed taken')
      return { type, frameId: a, dropped }
    }
    case MsgType.Put: {
      const [, , , kind, size] = fields
      if (!isSharedHash(a) || !(SHARED_KINDS as readonly unknown[]).includes(kind) || !isCount(size)) throw new ProtocolError('malformed put')
      return { type, hash: a, kind: kind as SharedKind, size }
    }
    case MsgType.Drop:
      if (!isHashList(a)) throw new ProtocolError('malformed drop')
      return { type, hashes: a }
    case MsgType.Fetch:
      if (!isHashList(a) || a.length === 0) throw new ProtocolError('malformed fetch')
      return { type, hashes: a }
    case MsgType.Unavailable: {
      const [, , , code, message] = fields
      if (!isSharedHash(a) || !(SHARED_UNAVAILABLE_CODES as readonly unknown[]).includes(code) || !isStr(message, 4096))
        throw new ProtocolError('malformed unavailable')
      return { type, hash: a, code: code as SharedUnavailableCode, message }
    }
    case MsgType.ActorsLost:
      if (!isStrList(a) || a.length === 0) throw new ProtocolError('malformed actors-lost')
      return { type, actorIds: a }
    default:
      throw new ProtocolError(`unknown frame type ${String(type)}`)
  }
}

/** Decodes a body that must be a flat list whose length is a multiple of `stride`. */
export function parseFlatBody(bytes: Uint8Array | undefined, stride: number, count: number): unknown[] {
  if (!bytes) throw new ProtocolError('frame has no body')
  const body = decode(bytes)
  if (!Array.isArray(body) || body.length !== count * stride) {
    throw new ProtocolError(`body does not hold ${count} entries of ${stride} fields`)
  }
  return body
}
