import { createHmac, timingSafeEqual } from 'node:crypto'
import { ProtocolError } from '../errors.js'
import type { Parts } from './transport.js'

/** Most parts in one packed message: a peer id, a header and a body, with room to spare. */
const MAX_PARTS = 8

/**
 * Brokers carry one byte string per message, ZeroMQ a list of frames: a
 * brokered message is its parts packed as `[count u8] ([length u32be] [bytes])*`,
 * followed by `trailer` bytes left for the caller (the tag of a {@link FrameAuth}).
 * The first byte is always the count (at most 8): Redis marks a redelivered
 * frame with a first byte 0xff.
 */
export function packParts(parts: readonly Uint8Array[], trailer = 0): Buffer {
  if (parts.length > MAX_PARTS) throw new RangeError(`cannot pack ${parts.length} parts (at most ${MAX_PARTS})`)
  let size = 1
  for (const p of parts) size += 4 + p.byteLength
  const out = Buffer.allocUnsafe(size + trailer)
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

/** Bytes of the tag at the end of an authenticated message: an HMAC-SHA-256. */
export const TAG_BYTES = 32

/** The ways a brokered message goes; each is MACed apart, so none can be replayed as another. */
export type FrameDirection = 'task' | 'to-agent' | 'to-driver'

/**
 * Authenticates the messages of one cluster in one direction: a message is
 * `[packed parts] [tag 32 bytes]` (the tag last, so the first byte stays the
 * part count, which the Redis redelivery mark relies on), the tag an HMAC-SHA-256 keyed by the
 * cluster's secret over the cluster id, the direction, the recipient (an
 * agent's id, for messages to it) and the packed parts. Whoever lacks the
 * secret can neither make a message that passes nor move one from another
 * cluster, direction or agent's inbox. (Not a defence against a message of
 * the same cluster, direction and recipient sent again, nor encryption.)
 */
export class FrameAuth {
  private readonly context: Buffer

  constructor(
    private readonly key: Buffer,
    clusterId: string,
    direction: FrameDirection,
  ) {
    this.context = Buffer.from(`actor-cluster brokered v1\0${clusterId}\0${direction}\0`, 'utf8')
  }

  private mac(body: Uint8Array, to: string): Buffer {
    return createHmac('sha256', this.key).update(this.context).update(to).update('\0').update(body).digest()
  }

  /** Packs `parts` and their tag, for `to` (an agent's id; '' for the driver or the task queue). */
  seal(parts: readonly Uint8Array[], to = ''): Buffer {
    const out = packParts(parts, TAG_BYTES)
    const end = out.byteLength - TAG_BYTES
    this.mac(out.subarray(0, end), to).copy(out, end)
    return out
  }

  /** The packed parts of a message whose tag is right for `to`, or undefined (missing or wrong). */
  open(message: Uint8Array, to = ''): Uint8Array | undefined {
    const end = message.byteLength - TAG_BYTES
    if (end < 0) return undefined
    const body = message.subarray(0, end)
    return timingSafeEqual(message.subarray(end), this.mac(body, to)) ? body : undefined
  }
}
