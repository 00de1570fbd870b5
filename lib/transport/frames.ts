import { ProtocolError } from '../errors.js'
import type { Parts } from './transport.js'

/** Most parts in one packed message: a peer id, a header and a body, with room to spare. */
const MAX_PARTS = 8

/**
 * Brokers carry one byte string per message, ZeroMQ a list of frames: a
 * brokered message is its parts packed as `[count u8] ([length u32be] [bytes])*`.
 */
export function packParts(parts: readonly Uint8Array[]): Buffer {
  if (parts.length > MAX_PARTS) throw new RangeError(`cannot pack ${parts.length} parts (at most ${MAX_PARTS})`)
  let size = 1
  for (const p of parts) size += 4 + p.byteLength
  const out = Buffer.allocUnsafe(size)
  out[0] = parts.length
  let o = 1
  for (const p of parts) {
    out.writeUInt32BE(p.byteLength, o)
    out.set(p, o + 4)
    o += 4 + p.byteLength
  }
  return out
}

/** Unpacks a message from a broker. Never trusts it: anything malformed is a ProtocolError. Parts are views, not copies. */
export function unpackParts(bytes: Uint8Array): Parts {
  if (bytes.byteLength < 1) throw new ProtocolError('empty brokered message')
  const n = bytes[0]!
  if (n > MAX_PARTS) throw new ProtocolError(`brokered message claims ${n} parts (at most ${MAX_PARTS})`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const parts: Parts = []
  let o = 1
  for (let i = 0; i < n; i++) {
    if (o + 4 > bytes.byteLength) throw new ProtocolError('brokered message truncated in a part length')
    const len = view.getUint32(o)
    o += 4
    if (o + len > bytes.byteLength) throw new ProtocolError(`brokered message part of ${len} bytes overruns the message`)
    parts.push(bytes.subarray(o, o + len))
    o += len
  }
  if (o !== bytes.byteLength) throw new ProtocolError(`brokered message has ${bytes.byteLength - o} trailing bytes`)
  return parts
}
