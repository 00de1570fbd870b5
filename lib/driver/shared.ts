/**
 * Shared inputs, driver side: the values put with `cluster.put`, by content
 * hash, and which node holds which. A frame that carries handles is preceded,
 * on its way to a node, by a Put of each value that node does not hold yet
 * (frames to one peer arrive in order, so the value is there first). Each
 * node's record follows the cache size it announced: to make room, the
 * least recently used values its unsettled tasks do not carry are dropped
 * from it, and sent again if used again.
 */
import { createHash } from 'node:crypto'
import { InvalidArgumentError, SerializationError, SharedValueError } from '../errors.js'
import { encode, findUnserializable, header } from '../protocol/codec.js'
import { MsgType, SHARED_KINDS, type SharedKind } from '../protocol/messages.js'
import { SharedRef, takeWrittenRefs, type SharedOwner } from '../protocol/shared-ref.js'
import type { Parts } from '../transport/transport.js'
import type { TaskHolder } from './ledger.js'
import type { ClusterNode } from './membership.js'
import type { SharedStats } from './types.js'
import { FRAME_HEADROOM } from './scheduler.js'

/** A task or actor call that may carry handles: its name and arguments. */
export interface SharedUser {
  readonly name: string
  readonly args: readonly unknown[]
}

/** What the shared values need of the driver. */
export interface SharedContext {
  /** Puts a message on the wire to `peer` (not through {@link SharedValues.beforeSend}). */
  send(peer: string, parts: Parts): void
  node(peer: string): ClusterNode | undefined
  nodes(): Iterable<ClusterNode>
  /** Tasks and actor calls not settled yet (queued or sent). */
  unsettled(): Iterable<SharedUser>
  /** Those of them `holder` holds. */
  heldBy(holder: TaskHolder): Iterable<SharedUser>
  maxFrameBytes: number
  /** Brokered designs: any agent may take a frame, so no value can be sent ahead to the one that will. */
  brokered: boolean
}

interface Stored {
  readonly kind: SharedKind
  readonly bytes: Buffer
  /** Handles not released. */
  handles: number
}

/** What one node holds; the map's order is least recently used first. */
interface NodeRecord {
  readonly cap: number
  bytes: number
  readonly held: Map<string, number>
}

/** The owner of a borrowed handle: its release frees nothing. */
const BORROWED: SharedOwner = { release: () => Promise.resolve() }

const TYPED_KINDS: ReadonlySet<string> = new Set(SHARED_KINDS.filter((k) => k !== 'msgpack'))

export class SharedValues implements SharedOwner {
  private readonly values = new Map<string, Stored>()
  private readonly records = new Map<string, NodeRecord>()
  private readonly counters = { puts: 0, putBytes: 0, evictions: 0 }
  private bytes = 0

  constructor(private readonly cx: SharedContext) {}

  stats(): SharedStats {
    return { values: this.values.size, bytes: this.bytes, ...this.counters }
  }

  /** Registers `value` (once per content) and returns a new handle on it. */
  put<T>(value: T): SharedRef<T> {
    if (this.cx.brokered) {
      throw new SharedValueError('ERR_SHARED_UNSUPPORTED', 'cluster.put is not available with a brokered transport yet; pass the value with each task')
    }
    // A handle resolves to its value on the node; undefined there means "not held".
    if (value === undefined) throw new InvalidArgumentError('cluster.put needs a value, got undefined')
    const { kind, bytes } = layout(value)
    const size = bytes.length
    if (size > this.cx.maxFrameBytes - FRAME_HEADROOM) {
      throw new SharedValueError('ERR_SHARED_TOO_LARGE', `shared value of ${size} bytes exceeds maxFrameBytes (${this.cx.maxFrameBytes})`)
    }
    for (const node of this.cx.nodes()) {
      const cap = node.info.sharedCacheBytes
      if (cap !== undefined && size > cap) {
        throw new SharedValueError(
          'ERR_SHARED_TOO_LARGE',
          `shared value of ${size} bytes exceeds the shared cache of node ${node.nodeId} (sharedCacheBytes ${cap})`,
        )
      }
    }
    const hash = createHash('sha256').update(kind).update(bytes).digest('base64url')
    const stored = this.values.get(hash)
    if (stored) stored.handles++
    else {
      this.values.set(hash, { kind, bytes, handles: 1 })
      this.bytes += size
    }
    return new SharedRef<T>(hash, size, this)
  }

  /**
   * A handle on a value this driver holds, as a handle from a thread decodes
   * here (its hash and size): it can be sent on, and releasing it frees
   * nothing (the thread's own handle does). Undefined for a value not held.
   */
  borrow(hash: string, size: number): SharedRef | undefined {
    return this.values.has(hash) ? new SharedRef(hash, size, BORROWED) : undefined
  }

  /** One handle is released; the last one frees the value on every node. */
  release(ref: SharedRef): Promise<void> {
    const stored = this.values.get(ref.hash)
    if (!stored) return Promise.resolve()
    let users = 0
    let example = ''
    for (const e of this.cx.unsettled()) {
      if (carries(e.args, ref, 0)) {
        users++
        example ||= e.name
      }
    }
    if (users > 0) {
      return Promise.reject(
        new SharedValueError(
          'ERR_SHARED_IN_USE',
          `shared value ${ref.hash} is carried by ${users} unsettled task(s) or actor call(s) (e.g. "${example}"); release it once they settle`,
        ),
      )
    }
    if (--stored.handles > 0) return Promise.resolve()
    this.values.delete(ref.hash)
    this.bytes -= stored.bytes.length
    for (const [peer, record] of this.records) {
      if (forget(record, ref.hash)) this.cx.send(peer, [header(MsgType.Drop, [ref.hash])])
    }
    return Promise.resolve()
  }

  /**
   * A frame was just encoded for `peer`: sends it, first, each value the
   * frame's handles name that the node does not hold.
   */
  beforeSend(peer: string): void {
    const refs = takeWrittenRefs()
    if (refs.length === 0) return
    const node = this.cx.node(peer)
    if (!node) return
    let record = this.records.get(peer)
    if (!record) {
      record = { cap: node.info.sharedCacheBytes ?? Number.POSITIVE_INFINITY, bytes: 0, held: new Map() }
      this.records.set(peer, record)
    }
    for (const ref of refs) {
      const size = record.held.get(ref.hash)
      if (size !== undefined) {
        // Most recently used last.
        record.held.delete(ref.hash)
        record.held.set(ref.hash, size)
        continue
      }
      const stored = this.values.get(ref.hash)
      if (!stored) continue
      const n = stored.bytes.length
      if (record.bytes + n > record.cap) this.makeRoom(peer, node, record, n, refs)
      this.cx.send(peer, [header(MsgType.Put, ref.hash, stored.kind, n), stored.bytes])
      record.held.set(ref.hash, n)
      record.bytes += n
      this.counters.puts++
      this.counters.putBytes += n
    }
  }

  /**
   * Drops least recently used values from a node until `n` more bytes fit,
   * sparing those its unsettled tasks (or the frame being sent) carry. If
   * those alone exceed the cache, the node holds more than its bound until
   * they settle.
   */
  private makeRoom(peer: string, node: ClusterNode, record: NodeRecord, n: number, sending: readonly SharedRef[]): void {
    const keep = new Set<string>(sending.map((r) => r.hash))
    for (const e of this.cx.heldBy(node)) collectHashes(e.args, keep, 0)
    const dropped: string[] = []
    for (const hash of record.held.keys()) {
      if (record.bytes + n <= record.cap) break
      if (keep.has(hash)) continue
      forget(record, hash)
      dropped.push(hash)
    }
    if (dropped.length === 0) return
    this.counters.evictions += dropped.length
    this.cx.send(peer, [header(MsgType.Drop, dropped)])
  }

  /** The node is gone: what it held is gone with it (a node that comes back starts empty). */
  nodeGone(peer: string): void {
    this.records.delete(peer)
  }
}

function forget(record: NodeRecord, hash: string): boolean {
  const size = record.held.get(hash)
  if (size === undefined) return false
  record.held.delete(hash)
  record.bytes -= size
  return true
}

/** A value's kind and bytes: a typed array's own bytes (a copy: later changes to it do not count), anything else as msgpack. */
function layout(value: unknown): { kind: SharedKind; bytes: Buffer } {
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    const kind = value instanceof Buffer ? 'Uint8Array' : value.constructor.name
    if (TYPED_KINDS.has(kind)) return { kind: kind as SharedKind, bytes: Buffer.from(new Uint8Array(value.buffer, value.byteOffset, value.byteLength)) }
  }
  const bad = findUnserializable(value, 'value')
  if (bad) throw new SerializationError(`cannot put the value: ${bad}; msgpack cannot carry it`)
  takeWrittenRefs()
  const bytes = encode(value)
  if (takeWrittenRefs().length > 0) throw new InvalidArgumentError('a shared value cannot hold handles on other shared values')
  return { kind: 'msgpack', bytes }
}

/** Whether `value` holds the handle `ref` (arrays, plain objects, Maps and Sets; typed arrays are skipped). */
function carries(value: unknown, ref: SharedRef, depth: number): boolean {
  if (value === ref) return true
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value) || depth > 64) return false
  for (const v of children(value)) if (carries(v, ref, depth + 1)) return true
  return false
}

/** Adds the hash of every handle in `value` to `into`. */
function collectHashes(value: unknown, into: Set<string>, depth: number): void {
  if (value instanceof SharedRef) into.add(value.hash)
  else if (value !== null && typeof value === 'object' && !ArrayBuffer.isView(value) && depth <= 64) {
    for (const v of children(value)) collectHashes(v, into, depth + 1)
  }
}

function children(value: object): Iterable<unknown> {
  if (Array.isArray(value)) return value as unknown[]
  if (value instanceof Map) return [...(value as Map<unknown, unknown>).keys(), ...(value as Map<unknown, unknown>).values()]
  if (value instanceof Set) return value as Set<unknown>
  return Object.values(value) as unknown[]
}
