/**
 * Shared inputs in a pool thread: each batch brings the table of the values
 * its agent holds; a typed array becomes a view of its SharedArrayBuffer (no
 * copy per thread; read-only by contract), any other value is decoded once
 * per thread and kept by hash until the table no longer lists it.
 */
import type { Packr } from 'msgpackr'
import { ProtocolError } from '../errors.js'
import type { SharedKind } from '../protocol/messages.js'
import { setSharedResolver } from '../protocol/shared-ref.js'

/** The values of a node, as a pool batch carries them: `[hash, kind, buffer]`. */
export type SharedTable = readonly (readonly [hash: string, kind: SharedKind, sab: SharedArrayBuffer])[]

type TypedArrayClass = new (buffer: SharedArrayBuffer) => ArrayBufferView & { BYTES_PER_ELEMENT: number }

const TYPED: Record<Exclude<SharedKind, 'msgpack'>, TypedArrayClass & { BYTES_PER_ELEMENT: number }> = {
  Float64Array,
  Float32Array,
  Int8Array,
  Int16Array,
  Int32Array,
  Uint8Array,
  Uint8ClampedArray,
  Uint16Array,
  Uint32Array,
  BigInt64Array,
  BigUint64Array,
}

/** A typed array of `kind` over the whole buffer; ProtocolError when its length is not a multiple of the element size. */
export function sharedView(kind: Exclude<SharedKind, 'msgpack'>, sab: SharedArrayBuffer): ArrayBufferView {
  const Cls = TYPED[kind]
  if (sab.byteLength % Cls.BYTES_PER_ELEMENT !== 0) throw new ProtocolError(`shared ${kind} of ${sab.byteLength} bytes is not a whole number of elements`)
  return new Cls(sab)
}

const values = new Map<string, unknown>()
let current: SharedTable | undefined

/** Brings this thread's values in line with a batch's table (before its bodies are decoded). */
export function useSharedTable(table: SharedTable | undefined, packr: Packr): void {
  if (table === undefined) {
    if (values.size > 0) values.clear()
    current = undefined
    return
  }
  if (current === undefined) setSharedResolver((hash) => values.get(hash))
  current = table
  for (const [hash, kind, sab] of table) {
    if (!values.has(hash)) values.set(hash, kind === 'msgpack' ? packr.unpack(new Uint8Array(sab)) : sharedView(kind, sab))
  }
  if (values.size > table.length) {
    const listed = new Set(table.map((e) => e[0]))
    for (const hash of values.keys()) if (!listed.has(hash)) values.delete(hash)
  }
}
