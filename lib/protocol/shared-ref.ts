/**
 * Shared inputs on the wire: a {@link SharedRef} travels as a msgpack
 * extension that carries only the value's hash and size. The encoder records
 * every handle it writes (the driver reads that list to send each node the
 * values a frame needs, ahead of the frame); the decoder hands the hash to
 * whatever resolver the reading thread installed (an agent's cache, a worker
 * thread's views), so a handle arrives as its value.
 */
import { addExtension } from 'msgpackr'
import { ProtocolError, SerializationError } from '../errors.js'

/** The msgpack extension type of a handle. */
const SHARED_REF_EXT = 0x21

/** What a handle asks of the driver that made it. */
export interface SharedOwner {
  release(ref: SharedRef): Promise<void>
}

/**
 * A handle on a value put once on the cluster (`cluster.put(value)`): pass it
 * as, or inside, any task or actor argument and the task receives the value.
 * Each node receives the value at most once. `release()` (or `await using`)
 * frees it on the nodes.
 *
 * ```ts
 * await using obs = await cluster.put(new Float64Array(125_000))
 * const fits = await Promise.all(params.map((p) => cluster.call('loss', p, obs)))
 * ```
 */
export class SharedRef<T = unknown> {
  /** The value's content hash (SHA-256 of its kind and bytes, base64url). */
  readonly hash: string
  /** Bytes the value takes on the wire and in each node's cache. */
  readonly size: number
  #owner: SharedOwner | undefined
  #releasing: Promise<void> | undefined
  /** Only there for the type of the value; never set. */
  declare readonly __value?: T

  /** Made by `cluster.put`; a handle made by hand refers to nothing the cluster knows. */
  constructor(hash: string, size: number, owner?: SharedOwner) {
    this.hash = hash
    this.size = size
    this.#owner = owner
  }

  /** True once released (this handle can no longer be sent). */
  get released(): boolean {
    return this.#owner === undefined
  }

  /**
   * Frees the value on the nodes once every handle of it was released. Rejects
   * with a SharedValueError (`ERR_SHARED_IN_USE`) while tasks or actor calls
   * that carry it are unsettled; the handle stays usable then. Idempotent.
   */
  release(): Promise<void> {
    const owner = this.#owner
    if (owner === undefined) return this.#releasing ?? Promise.resolve()
    this.#releasing = owner.release(this).then(
      () => {
        this.#owner = undefined
      },
      (err: unknown) => {
        this.#releasing = undefined
        throw err
      },
    )
    return this.#releasing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release()
  }

  /** The value is on the nodes, not here. */
  toJSON(): { hash: string; size: number } {
    return { hash: this.hash, size: this.size }
  }
}

/** Handles written since the last {@link takeWrittenRefs}. */
let written: SharedRef[] = []

/** The handles encoded since the last call (in the frame just encoded), and starts a new list. */
export function takeWrittenRefs(): SharedRef[] {
  if (written.length === 0) return written
  const out = written
  written = []
  return out
}

/** Finds the value of a hash where a frame is decoded; undefined when this thread does not hold it. */
export type SharedResolver = (hash: string, size: number) => unknown

let resolver: SharedResolver | undefined

/** Installs how handles decode in this thread: to the value the thread holds. Returns the one it replaces. */
export function setSharedResolver(r: SharedResolver | undefined): SharedResolver | undefined {
  const before = resolver
  resolver = r
  return before
}

/** How handles decode while a read runs: to their values (the default), or to handles again. */
let keepHandles = false

/** Handles decoded as handles, while a read that asked for them runs. */
let decoded: SharedRef[] | undefined

/** The owner of a handle decoded only to be passed on: it is never released from here. */
const passedOn: SharedOwner = { release: () => Promise.resolve() }

/**
 * Runs `read` (a synchronous decode) with every handle decoding to a handle
 * rather than to its value: how an agent reads a body it passes on (or
 * splits, to fail the messages whose values it lacks), so that encoding what
 * it read writes the same handles. The handles read are added
 * to `seen`, if given.
 */
export function withHandlesKept<T>(read: () => T, seen?: SharedRef[]): T {
  keepHandles = true
  decoded = seen
  try {
    return read()
  } finally {
    keepHandles = false
    decoded = undefined
  }
}

/**
 * Runs `write`, an encode on an agent of handles it read with
 * {@link withHandlesKept} (a body split or passed on), and forgets the
 * handles it wrote: only the driver keeps that list, to learn which values
 * a frame carries, so here it would only grow into the next frame's.
 */
export function writtenHere<T>(write: () => T): T {
  try {
    return write()
  } finally {
    takeWrittenRefs()
  }
}

/** The first hash that `args` carry (arrays, plain objects, Maps and Sets; typed arrays are skipped) for which `pick` is true, or undefined. */
export function carriedOf(args: unknown, pick: (hash: string) => boolean, depth = 0): string | undefined {
  if (args instanceof SharedRef) return pick(args.hash) ? args.hash : undefined
  if (args === null || typeof args !== 'object' || ArrayBuffer.isView(args) || depth > 64) return undefined
  for (const v of childrenOf(args)) {
    const hash = carriedOf(v, pick, depth + 1)
    if (hash !== undefined) return hash
  }
  return undefined
}

/** Calls `visit` with every handle in `value` (the same containers as {@link carriedOf}). */
export function eachRef(value: unknown, visit: (ref: SharedRef) => void, depth = 0): void {
  if (value instanceof SharedRef) visit(value)
  else if (value !== null && typeof value === 'object' && !ArrayBuffer.isView(value) && depth <= 64) {
    for (const v of childrenOf(value)) eachRef(v, visit, depth + 1)
  }
}

/** What a container holds, handles searched for: an array's items, a Map's keys and values, a Set's items, an object's values. */
export function childrenOf(value: object): Iterable<unknown> {
  if (Array.isArray(value)) return value as unknown[]
  if (value instanceof Map) return [...(value as Map<unknown, unknown>).keys(), ...(value as Map<unknown, unknown>).values()]
  if (value instanceof Set) return value as Set<unknown>
  return Object.values(value) as unknown[]
}

const HASH = /^[A-Za-z0-9_-]{43}$/

/** Whether `v` has the shape of a value hash. */
export function isSharedHash(v: unknown): v is string {
  return typeof v === 'string' && HASH.test(v)
}

addExtension({
  Class: SharedRef,
  type: SHARED_REF_EXT,
  write(ref: SharedRef): [string, number] {
    if (ref.released) throw new SerializationError(`shared value ${ref.hash} was released; put it again to send it`)
    written.push(ref)
    return [ref.hash, ref.size]
  },
  read(data: unknown): unknown {
    if (!Array.isArray(data) || !isSharedHash(data[0]) || !Number.isSafeInteger(data[1])) throw new ProtocolError('malformed shared value reference')
    const hash = data[0]
    if (keepHandles) {
      const ref = new SharedRef(hash, data[1] as number, passedOn)
      decoded?.push(ref)
      return ref
    }
    const value = resolver?.(hash, data[1] as number)
    if (value === undefined) throw new ProtocolError(`shared value ${hash} is not held on this node`)
    return value
  },
})
