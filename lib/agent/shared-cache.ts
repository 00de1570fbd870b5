/**
 * Shared inputs, agent side: the values the driver put on this node (Put
 * messages), each in one SharedArrayBuffer. Task batches carry the table of
 * them to the pool threads (a SharedArrayBuffer crosses postMessage without a
 * copy), where {@link useSharedTable} makes each value once per thread. On the
 * agent's main thread (actor messages are decoded there) handles resolve
 * through a registry of every agent of this process: values are
 * content-addressed, so any holder's copy is the value.
 */
import { ProtocolError, SharedValueError } from '../errors.js'
import { decode } from '../protocol/codec.js'
import type { SharedKind } from '../protocol/messages.js'
import { setSharedResolver } from '../protocol/shared-ref.js'
import { sharedView, type SharedTable } from './shared-thread.js'

/** The counters an agent keeps of its shared values (a part of its stats). */
export interface SharedCacheStats {
  /** Values held now, and their bytes. */
  sharedValues: number
  sharedBytes: number
  /** Put messages received since the agent started. */
  sharedPuts: number
  /** Put messages refused since the agent started: the value did not fit the node's `sharedCacheBytes`. */
  sharedRefused: number
}

/** The bound an agent keeps its cache to, and its node id for the refusal's message. */
export interface SharedCacheLimit {
  readonly nodeId: string
  readonly sharedCacheBytes: number
}

/** Most refusals a cache remembers (the oldest is forgotten first). */
const MAX_REFUSALS = 1024

interface Held {
  readonly kind: SharedKind
  readonly sab: SharedArrayBuffer
  /** The value on this thread, made on first use. */
  value?: unknown
}

/** Every agent's values in this process, with how many agents hold each. */
const registry = new Map<string, { held: Held; holders: number }>()

setSharedResolver((hash) => {
  const r = registry.get(hash)
  if (!r) return undefined
  const held = r.held
  if (held.value === undefined) held.value = held.kind === 'msgpack' ? decode(new Uint8Array(held.sab)) : sharedView(held.kind, held.sab)
  return held.value
})

export class SharedCache {
  private readonly held = new Map<string, Held>()
  private cachedTable: SharedTable | undefined
  /**
   * Brokered designs: values frames taken on this node need, with how many
   * frames need each. A Drop of one of them waits until none does: the
   * driver evicts by the tasks it knows the node holds, and a frame taken
   * from the shared queue may not be among them yet.
   */
  private readonly pins = new Map<string, number>()
  private readonly dropLater = new Set<string>()
  /**
   * Why the node refused each value it was sent and did not store (in the
   * order refused), for the actor calls that carry it: they
   * cannot wait for a fetch without holding up the calls behind them. Kept
   * until the value is stored, dropped or the cache cleared; at most
   * {@link MAX_REFUSALS}.
   */
  private readonly refusals = new Map<string, string>()

  constructor(
    private readonly stats: SharedCacheStats,
    private readonly limit: SharedCacheLimit,
  ) {}

  /**
   * Stores a value the driver sent (a repeated Put of a value held is
   * ignored), or refuses it and returns why: nothing from the network is
   * trusted, so the bound holds even against a driver that passes it. A value
   * larger than the cache is refused; so is one that does not fit beside the
   * values held. The agent evicts nothing on its own to make room: the
   * driver's Drops, sent ahead of its Put, already freed every value no
   * unsettled task or actor call of this node carries, and a value dropped
   * unasked could be one an actor call still on its way needs.
   */
  put(hash: string, kind: SharedKind, size: number, body: Uint8Array | undefined): string | undefined {
    if (!body || body.byteLength !== size) throw new ProtocolError(`put of ${hash}: body of ${body?.byteLength ?? 0} bytes, header says ${size}`)
    this.stats.sharedPuts++
    // The driver sends it again, so counts it held again: a Drop put off is off.
    this.dropLater.delete(hash)
    if (this.held.has(hash)) return undefined
    const { nodeId, sharedCacheBytes: cap } = this.limit
    const inUse = this.stats.sharedBytes
    if (size > cap || inUse + size > cap) {
      this.stats.sharedRefused++
      const beside = size > cap ? '' : ` beside the ${inUse} bytes of the ${this.stats.sharedValues} value(s) it holds in use`
      return this.refused(hash, `shared value ${hash} of ${size} bytes exceeds the shared cache of node ${nodeId} (sharedCacheBytes ${cap})${beside}`)
    }
    this.refusals.delete(hash)
    const sab = new SharedArrayBuffer(size)
    new Uint8Array(sab).set(body)
    // Checks a typed array's length against its element size.
    if (kind !== 'msgpack') sharedView(kind, sab)
    const r = registry.get(hash)
    const held = r?.held ?? { kind, sab }
    if (r) r.holders++
    else registry.set(hash, { held, holders: 1 })
    this.held.set(hash, held)
    this.stats.sharedValues++
    this.stats.sharedBytes += size
    this.cachedTable = undefined
    return undefined
  }

  /** Notes that the value `hash` sent to the node was not stored, and why; returns why. */
  refused(hash: string, why: string): string {
    this.refusals.delete(hash)
    this.refusals.set(hash, why)
    if (this.refusals.size > MAX_REFUSALS) this.refusals.delete(this.refusals.keys().next().value!)
    return why
  }

  /**
   * Why `what` (an actor call, say), which carries the value `hash`, cannot
   * be read on this node, or undefined when the node holds the value:
   * ERR_SHARED_TOO_LARGE with the reason the node refused it, else a
   * ProtocolError (the driver sent no such value).
   */
  lacking(hash: string, what: string): Error | undefined {
    if (this.held.has(hash)) return undefined
    const where = `${what} on node ${this.limit.nodeId}`
    const why = this.refusals.get(hash)
    if (why !== undefined) return new SharedValueError('ERR_SHARED_TOO_LARGE', `${where}: ${why}`)
    return new ProtocolError(`${where}: shared value ${hash} is not held there`)
  }

  /** Whether the node holds `hash`. */
  has(hash: string): boolean {
    return this.held.has(hash)
  }

  /** A frame that needs these values was taken: they stay until it is {@link unpin}ned. */
  pin(hashes: readonly string[]): void {
    for (const hash of hashes) this.pins.set(hash, (this.pins.get(hash) ?? 0) + 1)
  }

  /** The frame is answered (or given back): a Drop put off for its values happens now. */
  unpin(hashes: readonly string[]): void {
    for (const hash of hashes) {
      const n = this.pins.get(hash)
      if (n === undefined) continue
      if (n > 1) {
        this.pins.set(hash, n - 1)
        continue
      }
      this.pins.delete(hash)
      if (this.dropLater.delete(hash)) this.drop([hash])
    }
  }

  drop(hashes: readonly string[]): void {
    for (const hash of hashes) {
      this.refusals.delete(hash)
      const held = this.held.get(hash)
      if (!held) continue
      if (this.pins.has(hash)) {
        this.dropLater.add(hash)
        continue
      }
      this.held.delete(hash)
      this.stats.sharedValues--
      this.stats.sharedBytes -= held.sab.byteLength
      const r = registry.get(hash)
      if (r && --r.holders === 0) registry.delete(hash)
      this.cachedTable = undefined
    }
  }

  /** Forgets every value (a new driver session starts with none). */
  clear(): void {
    this.pins.clear()
    this.dropLater.clear()
    this.refusals.clear()
    this.drop([...this.held.keys()])
  }

  /** What a pool batch carries: every value held, or undefined when none is. */
  table(): SharedTable | undefined {
    if (this.held.size === 0) return undefined
    this.cachedTable ??= [...this.held].map(([hash, h]) => [hash, h.kind, h.sab] as const)
    return this.cachedTable
  }
}
