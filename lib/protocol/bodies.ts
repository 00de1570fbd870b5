/**
 * The body layouts: every module that writes or reads the body of a Tasks,
 * Results, ActorResults or Actor frame goes through this file, so a layout
 * changes in one place. Bodies are flat msgpack lists (no object per entry on
 * the wire); the readers below check the shape and hand each entry to a
 * callback, so callers never index by stride.
 */
import type { Packr } from 'msgpackr'
import { ProtocolError } from '../errors.js'
import { decode, encode, encodeStrict, parseFlatBody } from './codec.js'
import { ActorOp, ContextOp, Status } from './messages.js'

/** Fields per entry of each body. */
const TASK_FIELDS = 3
const RESULT_FIELDS = 3
const ACTOR_FIELDS = 5
const REQUEST_FIELDS = 3

/** One task as it travels: `[id, name, args]`. */
export interface TaskItem {
  readonly id: number
  readonly name: string
  readonly args: readonly unknown[]
}

/** One actor message: `[id, op, actorId, name, args]`. */
export interface ActorItem {
  readonly id: number
  readonly op: ActorOp
  readonly actorId: string
  readonly name: string
  readonly args: readonly unknown[]
}

// --- Tasks -------------------------------------------------------------------

/** Encodes the body of a Tasks frame. Throws for a value msgpack cannot carry as sent (see encodeStrict). */
export function encodeTaskBody(tasks: readonly TaskItem[]): Buffer {
  const body = new TaskBodyWriter()
  for (const t of tasks) body.add(t.id, t.name, t.args)
  return body.encode()
}

/** Builds the body of a Tasks frame task by task (the driver reads its tasks from the ledger's arrays). */
export class TaskBodyWriter {
  private readonly flat: unknown[] = []

  add(id: number, name: string, args: readonly unknown[]): void {
    this.flat.push(id, name, args)
  }

  /** Throws for a value msgpack cannot carry as sent (see encodeStrict). */
  encode(): Buffer {
    return encodeStrict(this.flat)
  }
}

/** Most bytes one number takes in msgpack (a float64). */
const MAX_NUMBER_BYTES = 9
/** Most bytes of an array header (0xdd and a 32-bit length). */
const MAX_ARRAY_HEADER = 5
/** Task names whose encoding is cached; past this the cache starts again (names come from a tasks module, so few). */
const MAX_CACHED_NAMES = 1024
const encodedNames = new Map<string, Buffer>()

// The last name asked for: a frame's tasks usually share one.
let lastName: string | undefined
let lastNameBytes: Buffer | undefined

function encodedName(name: string): Buffer {
  if (name === lastName) return lastNameBytes!
  let bytes = encodedNames.get(name)
  if (bytes === undefined) {
    if (encodedNames.size >= MAX_CACHED_NAMES) encodedNames.clear()
    // A copy: the encoder's output is a view of a buffer it reuses.
    bytes = Buffer.from(encodeStrict(name))
    encodedNames.set(name, bytes)
  }
  lastName = name
  lastNameBytes = bytes
  return bytes
}

/**
 * The body of a Tasks frame whose tasks each have at most three arguments,
 * all numbers (the common case of simulation calls): written straight to
 * bytes, with no argument list or flat list per task. The bytes are exactly
 * those {@link TaskBodyWriter} produces for the same tasks (msgpackr's
 * number, string and array encodings, mirrored here), so readers cannot
 * tell the two apart.
 */
export class NumberTaskBodyWriter {
  private buf: Buffer
  private view: DataView
  private pos: number

  constructor(count: number) {
    // An id, a short name, the arguments' header and two numbers per task: the seed's shape; more is reserved as needed.
    this.buf = Buffer.allocUnsafe(MAX_ARRAY_HEADER + count * (MAX_NUMBER_BYTES + 8 + 1 + 2 * MAX_NUMBER_BYTES))
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.length)
    this.pos = this.arrayHeader(0, TASK_FIELDS * count)
  }

  /** Adds a task of `argc` (0 to 3) arguments, the first `argc` of a0, a1, a2. */
  add(id: number, name: string, argc: number, a0: number, a1: number, a2: number): void {
    const nameBytes = encodedName(name)
    this.reserve(MAX_NUMBER_BYTES + nameBytes.length + 1 + argc * MAX_NUMBER_BYTES)
    let p = this.number(this.pos, id)
    const b = this.buf
    // A short name byte by byte: Buffer#copy is a call into C++, slower than the loop for a few bytes.
    if (nameBytes.length <= 32) for (let i = 0; i < nameBytes.length; i++) b[p++] = nameBytes[i]!
    else p += nameBytes.copy(b, p)
    b[p++] = 0x90 | argc
    if (argc > 0) p = this.number(p, a0)
    if (argc > 1) p = this.number(p, a1)
    if (argc > 2) p = this.number(p, a2)
    this.pos = p
  }

  encode(): Buffer {
    return this.buf.subarray(0, this.pos)
  }

  /** Room for `n` more bytes (a long name may need more than the estimate). */
  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return
    const bigger = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.pos + n))
    this.buf.copy(bigger, 0, 0, this.pos)
    this.buf = bigger
    this.view = new DataView(bigger.buffer, bigger.byteOffset, bigger.length)
  }

  /** msgpackr's array header for `length` items. */
  private arrayHeader(p: number, length: number): number {
    const b = this.buf
    if (length < 0x10) b[p++] = 0x90 | length
    else p = this.uint16or32(p, length, 0xdc, 0xdd)
    return p
  }

  /** `v` (at least 0x100, under 2^32) after the tag of its 16-bit form, or of its 32-bit form when it needs one. */
  private uint16or32(p: number, v: number, tag16: number, tag32: number): number {
    const b = this.buf
    if (v < 0x10000) {
      b[p++] = tag16
      b[p++] = v >> 8
      b[p++] = v & 0xff
    } else {
      b[p++] = tag32
      this.view.setUint32(p, v)
      p += 4
    }
    return p
  }

  /**
   * msgpackr's encoding of a number with records on and no float32: 32-bit
   * integers in the smallest integer form (fixints only below 0x40, whose
   * next bytes mean records), anything else a float64.
   */
  private number(p: number, v: number): number {
    const b = this.buf
    if (v >>> 0 === v) {
      if (v < 0x40) b[p++] = v
      else if (v < 0x100) {
        b[p++] = 0xcc
        b[p++] = v
      } else p = this.uint16or32(p, v, 0xcd, 0xce)
    } else if (v >> 0 === v) {
      if (v >= -0x20) b[p++] = 0x100 + v
      else if (v >= -0x80) {
        b[p++] = 0xd0
        b[p++] = v + 0x100
      } else if (v >= -0x8000) {
        b[p++] = 0xd1
        this.view.setInt16(p, v)
        p += 2
      } else {
        b[p++] = 0xd2
        this.view.setInt32(p, v)
        p += 4
      }
    } else {
      b[p++] = 0xcb
      this.view.setFloat64(p, v)
      p += 8
    }
    return p
  }
}

/**
 * Reads a Tasks body in a worker thread: calls `each` with every entry's raw
 * fields (the caller checks the name and arguments, to answer a bad entry
 * with an error). Returns false when the body is not a task list at all.
 */
export function readTaskBody(packr: Packr, bytes: Uint8Array, each: (id: unknown, name: unknown, args: unknown) => void): boolean {
  let items: unknown
  try {
    items = packr.unpack(bytes)
  } catch {
    return false
  }
  if (!Array.isArray(items) || items.length % TASK_FIELDS !== 0) return false
  for (let i = 0; i < items.length; i += TASK_FIELDS) each(items[i], items[i + 1], items[i + 2])
  return true
}

/** The tasks of a Tasks body, one object each (for the rare paths: splitting a failed batch). Throws ProtocolError. */
export function decodeTaskBody(bytes: Uint8Array): TaskItem[] {
  const items = decode(bytes)
  if (!Array.isArray(items) || items.length % TASK_FIELDS !== 0) throw new ProtocolError('task body is not a list of [id, name, args]')
  const out: TaskItem[] = []
  for (let i = 0; i < items.length; i += TASK_FIELDS) {
    out.push({ id: items[i] as number, name: items[i + 1] as string, args: items[i + 2] as unknown[] })
  }
  return out
}

// --- Results and ActorResults --------------------------------------------------

/**
 * Builds the body of a Results or ActorResults frame: an entry per task, its
 * status and value set when known (a task may settle after later ones).
 */
export class ResultsWriter {
  private flat: unknown[] = []

  /** Entries so far. */
  get count(): number {
    return this.flat.length / RESULT_FIELDS
  }

  /**
   * Adds an entry; returns its slot. Without a status, a placeholder (Ok,
   * null) to {@link set} later; with one, `value` as given: an `undefined`
   * result stays undefined (a default parameter would turn it into null).
   */
  add(id: unknown, status?: Status, value?: unknown): number {
    // The list in a local: this runs once per task in the pool's loop.
    const flat = this.flat
    const slot = flat.length
    if (status === undefined) flat.push(id, Status.Ok, null)
    else flat.push(id, status, value)
    return slot
  }

  set(slot: number, status: Status, value: unknown): void {
    const flat = this.flat
    flat[slot + 1] = status
    flat[slot + 2] = value
  }

  /** Encodes the entries but those of `slots` (tasks that answer later, on their own) and starts again empty. */
  takeExcept(slots: Iterable<number>, packr: Packr): Uint8Array {
    const skip = new Set(slots)
    const kept: unknown[] = []
    const flat = this.flat
    for (let i = 0; i < flat.length; i += RESULT_FIELDS) if (!skip.has(i)) kept.push(flat[i], flat[i + 1], flat[i + 2])
    this.flat = []
    return packr.pack(kept)
  }

  /** Encodes the entries and starts again empty. */
  take(packr?: Packr): Uint8Array {
    const out = this.flat
    this.flat = []
    return packr ? packr.pack(out) : encode(out)
  }
}

/** Reads a Results or ActorResults body of `count` entries. Throws ProtocolError when it holds anything else. */
export function readResultsBody(bytes: Uint8Array | undefined, count: number, each: (id: unknown, status: unknown, value: unknown) => void): void {
  const items = parseFlatBody(bytes, RESULT_FIELDS, count)
  for (let i = 0; i < items.length; i += RESULT_FIELDS) each(items[i], items[i + 1], items[i + 2])
}

// --- Actor -----------------------------------------------------------------------

export function encodeActorBody(messages: readonly ActorItem[]): Buffer {
  const flat = new Array<unknown>(messages.length * ACTOR_FIELDS)
  for (let i = 0, j = 0; i < messages.length; i++, j += ACTOR_FIELDS) {
    const m = messages[i]!
    flat[j] = m.id
    flat[j + 1] = m.op
    flat[j + 2] = m.actorId
    flat[j + 3] = m.name
    flat[j + 4] = m.args
  }
  return encode(flat)
}

/** Builds an Actor body message by message (an agent routing its threads' messages to its own actors). */
export class ActorBodyWriter {
  private flat: unknown[] = []

  get count(): number {
    return this.flat.length / ACTOR_FIELDS
  }

  add(id: number, op: ActorOp, actorId: string, name: string, args: readonly unknown[]): void {
    this.flat.push(id, op, actorId, name, args)
  }

  /** Encodes the messages (strictly: a value that would not arrive as sent throws) and starts again empty. */
  take(): Uint8Array {
    const out = this.flat
    this.flat = []
    return encodeStrict(out)
  }
}

/**
 * Reads an Actor body of `count` entries: `each` gets the fields of every
 * well-formed message and its position in the body (no object per message:
 * this runs once per call); returns how many entries were malformed (and skipped). Throws
 * ProtocolError when the body is not such a list at all.
 */
export function readActorBody(
  bytes: Uint8Array | undefined,
  count: number,
  each: (id: number, op: ActorOp, actorId: string, name: string, args: readonly unknown[], entry: number) => void,
): number {
  const items = parseFlatBody(bytes, ACTOR_FIELDS, count)
  let bad = 0
  for (let i = 0; i < items.length; i += ACTOR_FIELDS) {
    const id = items[i]
    const op = items[i + 1]
    const actorId = items[i + 2]
    const name = items[i + 3]
    const args = items[i + 4]
    if (
      !Number.isSafeInteger(id) ||
      (op !== ActorOp.Spawn && op !== ActorOp.Call && op !== ActorOp.Stop && op !== ActorOp.Respawn && op !== ActorOp.Kill) ||
      typeof actorId !== 'string' ||
      typeof name !== 'string' ||
      !Array.isArray(args)
    ) {
      bad++
      continue
    }
    each(id as number, op, actorId, name, args, i / ACTOR_FIELDS)
  }
  return bad
}

// --- Submit ----------------------------------------------------------------------

/** Builds the body of a Submit frame in a thread: `[reqId, op, args, ...]`. */
export class RequestWriter {
  private flat: unknown[] = []

  get count(): number {
    return this.flat.length / REQUEST_FIELDS
  }

  add(reqId: number, op: ContextOp, args: readonly unknown[]): void {
    this.flat.push(reqId, op, args)
  }

  /** Encodes the requests (strictly: a value that would not arrive as sent throws) and starts again empty. */
  take(): Uint8Array {
    const out = this.flat
    this.flat = []
    return encodeStrict(out)
  }

  /** Adds an entry as it was read from another body, unchecked (the driver checks it). */
  addRaw(reqId: unknown, op: unknown, args: unknown): void {
    this.flat.push(reqId, op, args)
  }

  /** Drops the requests gathered (they could not be encoded) and returns them. */
  clear(): unknown[] {
    const out = this.flat
    this.flat = []
    return out
  }
}

const CONTEXT_OPS = new Set<unknown>(Object.values(ContextOp))

/**
 * Reads a Submit body of `count` entries: `each` gets every entry whose id and
 * op are well formed (the op's arguments are the caller's to check);
 * `malformed` gets the id of an entry whose op or argument list is not, when
 * its id is usable, with what was wrong. Returns how many entries had no usable
 * id. Throws ProtocolError when the body is not such a list at all.
 */
export function readRequestBody(
  bytes: Uint8Array | undefined,
  count: number,
  each: (reqId: number, op: ContextOp, args: readonly unknown[]) => void,
  malformed: (reqId: number, problem: string) => void,
): number {
  const items = parseFlatBody(bytes, REQUEST_FIELDS, count)
  let bad = 0
  for (let i = 0; i < items.length; i += REQUEST_FIELDS) {
    const reqId = items[i]
    const op = items[i + 1]
    const args = items[i + 2]
    if (!Number.isSafeInteger(reqId) || (reqId as number) < 0) {
      bad++
      continue
    }
    if (!CONTEXT_OPS.has(op)) malformed(reqId as number, `unknown request op ${String(op)}`)
    else if (!Array.isArray(args)) malformed(reqId as number, 'request arguments are not a list')
    else each(reqId as number, op as ContextOp, args)
  }
  return bad
}

/**
 * Reads a Submit body of `count` entries as it came, for an agent passing its
 * entries on: `each` gets every entry's fields unchecked (the driver, or the
 * agent before routing one, checks them). Throws ProtocolError when the body
 * is not a list of `count` entries at all.
 */
export function readRawRequestBody(bytes: Uint8Array | undefined, count: number, each: (reqId: unknown, op: unknown, args: unknown) => void): void {
  const items = parseFlatBody(bytes, REQUEST_FIELDS, count)
  for (let i = 0; i < items.length; i += REQUEST_FIELDS) each(items[i], items[i + 1], items[i + 2])
}
