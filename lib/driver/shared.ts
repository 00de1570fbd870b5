/**
 * Shared inputs, driver side: the values put with `cluster.put`, by content
 * hash, and which node holds which. A frame that carries handles is preceded,
 * on its way to a node, by a Put of each value that node does not hold yet
 * (frames to one peer arrive in order, so the value is there first). On the
 * brokered designs any agent may take a task frame, so the agent that took it
 * fetches what it lacks (Fetch), answered by a Put or, for a value released
 * meanwhile or one the node cannot hold, by an Unavailable. Each node's record
 * follows the cache size and frame limit it announced: to make room, the
 * least recently used values its unsettled tasks do not carry are dropped
 * from it, and sent again if used again; a value larger than the node can
 * hold at all never goes there: on ZeroMQ the tasks that need it go to a node
 * that can (see {@link SharedValues.fitsElsewhere}), elsewhere they fail.
 */
import { createHash } from 'node:crypto'
import { InvalidArgumentError, SerializationError, SharedValueError } from '../errors.js'
import { encode, findUnserializable, header } from '../protocol/codec.js'
import { MsgType, SHARED_KINDS, type SharedKind } from '../protocol/messages.js'
import { childrenOf, eachRef, SharedRef, takeWrittenRefs, type SharedOwner } from '../protocol/shared-ref.js'
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
  /**
   * Tasks are addressed to a node (ZeroMQ): a value some members cannot hold
   * is accepted while one can, and its tasks go there. On the brokered
   * designs any agent may take any frame, so every member must hold it.
   */
  readonly routed: boolean
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
    // A handle resolves to its value on the node; undefined there means "not held".
    if (value === undefined) throw new InvalidArgumentError('cluster.put needs a value, got undefined')
    const { kind, bytes } = layout(value)
    const size = bytes.length
    if (size > this.cx.maxFrameBytes - FRAME_HEADROOM) {
      throw new SharedValueError('ERR_SHARED_TOO_LARGE', `shared value of ${size} bytes exceeds maxFrameBytes (${this.cx.maxFrameBytes})`)
    }
    const whys: string[] = []
    let fits = false
    for (const node of this.cx.nodes()) {
      const why = unfitWhy(node, size)
      if (why === undefined) fits = true
      else whys.push(why)
    }
    if (whys.length > 0 && !(this.cx.routed && fits)) {
      throw new SharedValueError('ERR_SHARED_TOO_LARGE', `shared value of ${size} bytes exceeds ${whys.join('; and ')}`)
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
   * frame's handles name that the node does not hold (a value the node cannot
   * hold at all is not sent: see {@link unfit}).
   */
  beforeSend(peer: string, refs: readonly SharedRef[] = takeWrittenRefs()): void {
    if (refs.length === 0) return
    const node = this.cx.node(peer)
    if (!node) return
    const record = this.record(peer, node)
    const sending = refs.map((r) => r.hash)
    for (const hash of sending) this.deliver(peer, node, record, hash, sending)
  }

  /**
   * Brokered designs: node `peer` took a frame whose tasks carry `hashes` it
   * lacks. Each is sent (a Put), or, when it was released meanwhile or the
   * node cannot hold it, refused (an Unavailable naming it), and the node
   * fails the tasks that need it.
   */
  fetch(peer: string, hashes: readonly string[]): void {
    const node = this.cx.node(peer)
    if (!node) return
    const record = this.record(peer, node)
    for (const hash of hashes) {
      const stored = this.values.get(hash)
      const why = stored && unfitWhy(node, stored.bytes.length)
      if (!stored) {
        this.cx.send(peer, [
          header(MsgType.Unavailable, hash, 'ERR_SHARED_RELEASED', `shared value ${hash} was released before node ${node.nodeId} fetched it`),
        ])
      } else if (why !== undefined) {
        this.cx.send(peer, [header(MsgType.Unavailable, hash, 'ERR_SHARED_TOO_LARGE', `shared value ${hash} of ${stored.bytes.length} bytes exceeds ${why}`)])
      } else {
        // Sent again even if the record says the node holds it: the node asks, so it does not.
        forget(record, hash)
        this.deliver(peer, node, record, hash, hashes)
      }
    }
  }

  /**
   * The values of `refs` that `node` cannot take with this frame: larger than
   * its cache or than the messages it accepts, or not fitting its cache
   * beside the values it must keep (see {@link unfitBeside}); hash → why, for
   * the tasks and actor calls that carry them. Undefined when every value fits.
   */
  unfit(node: ClusterNode, refs: readonly SharedRef[]): Map<string, string> | undefined {
    const out = new Map<string, string>()
    const record = this.record(node.peer, node)
    let missing: SharedRef[] | undefined
    for (const ref of refs) {
      const why = unfitWhy(node, ref.size)
      if (why !== undefined) out.set(ref.hash, `shared value ${ref.hash} of ${ref.size} bytes exceeds ${why}`)
      else if (!record.held.has(ref.hash)) (missing ??= []).push(ref)
    }
    if (missing !== undefined) this.unfitBeside(node, record, refs, missing, out)
    return out.size > 0 ? out : undefined
  }

  /**
   * Adds to `out` the values of `missing` (not on the node) that do not fit
   * its cache beside the values it must keep — those its unsettled tasks and
   * actor calls, or this frame, carry. Sent all the same they would take the
   * node over its bound, and its agent refuses that. Walks the node's tasks
   * only when the values do not fit beside all it holds.
   */
  private unfitBeside(node: ClusterNode, record: NodeRecord, refs: readonly SharedRef[], missing: readonly SharedRef[], out: Map<string, string>): void {
    const sizes = new Map<string, number>()
    for (const ref of missing) if (!out.has(ref.hash)) sizes.set(ref.hash, ref.size)
    let adding = 0
    for (const size of sizes.values()) adding += size
    if (record.bytes + adding <= record.cap) return
    const keep = new Set(refs.map((r) => r.hash))
    for (const e of this.cx.heldBy(node)) collectHashes(e.args, keep, 0)
    let kept = 0
    for (const [hash, size] of record.held) if (keep.has(hash)) kept += size
    for (const [hash, size] of sizes) {
      if (kept + size <= record.cap) kept += size
      else
        out.set(
          hash,
          `shared value ${hash} of ${size} bytes does not fit the shared cache of node ${node.nodeId} (sharedCacheBytes ${record.cap}) beside the ${kept} bytes of values its unsettled tasks and actor calls carry`,
        )
    }
  }

  /**
   * ZeroMQ: whether a member other than `node`, not leaving, can hold every
   * value `args` carry — a task too large for `node` goes there instead.
   */
  fitsElsewhere(args: unknown, node: ClusterNode): boolean {
    const refs = new Map<string, number>()
    collectSizes(args, refs, 0)
    for (const other of this.cx.nodes()) {
      if (other === node || other.state !== 'up') continue
      let fits = true
      for (const size of refs.values()) {
        if (unfitWhy(other, size) !== undefined) {
          fits = false
          break
        }
      }
      if (fits) return true
    }
    return false
  }

  private record(peer: string, node: ClusterNode): NodeRecord {
    let record = this.records.get(peer)
    if (!record) {
      record = { cap: node.info.sharedCacheBytes ?? Number.POSITIVE_INFINITY, bytes: 0, held: new Map() }
      this.records.set(peer, record)
    }
    return record
  }

  /** Sends `hash` to the node unless its record says it holds it (then marks it most recently used). */
  private deliver(peer: string, node: ClusterNode, record: NodeRecord, hash: string, sending: readonly string[]): void {
    const size = record.held.get(hash)
    if (size !== undefined) {
      // Most recently used last.
      record.held.delete(hash)
      record.held.set(hash, size)
      return
    }
    const stored = this.values.get(hash)
    if (!stored) return
    const n = stored.bytes.length
    if (unfitWhy(node, n) !== undefined) return
    if (record.bytes + n > record.cap) this.makeRoom(peer, node, record, n, sending)
    this.cx.send(peer, [header(MsgType.Put, hash, stored.kind, n), stored.bytes])
    record.held.set(hash, n)
    record.bytes += n
    this.counters.puts++
    this.counters.putBytes += n
  }

  /**
   * Drops least recently used values from a node until `n` more bytes fit,
   * sparing those its unsettled tasks (or the frame being sent) carry. If
   * those alone exceed the cache, the node holds more than its bound until
   * they settle.
   */
  private makeRoom(peer: string, node: ClusterNode, record: NodeRecord, n: number, sending: readonly string[]): void {
    const keep = new Set<string>(sending)
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

/** Why a value of `size` bytes can never be on `node` (its cache, or the largest message it accepts), or undefined. */
function unfitWhy(node: ClusterNode, size: number): string | undefined {
  const { sharedCacheBytes: cap, maxFrameBytes: max } = node.info
  if (cap !== undefined && size > cap) return `the shared cache of node ${node.nodeId} (sharedCacheBytes ${cap})`
  if (max !== undefined && size > max - FRAME_HEADROOM)
    return `the largest message node ${node.nodeId} accepts (maxFrameBytes ${max}, less ${FRAME_HEADROOM} bytes of headroom)`
  return undefined
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
  for (const v of childrenOf(value)) if (carries(v, ref, depth + 1)) return true
  return false
}

/** Adds the hash of every handle in `value` to `into`. */
function collectHashes(value: unknown, into: Set<string>, depth: number): void {
  eachRef(value, (ref) => into.add(ref.hash), depth)
}

/** Adds every handle in `value` to `into`: hash → size. */
function collectSizes(value: unknown, into: Map<string, number>, depth: number): void {
  eachRef(value, (ref) => into.set(ref.hash, ref.size), depth)
}
