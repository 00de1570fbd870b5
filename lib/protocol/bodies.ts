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

  /** Adds an entry (status Ok, value null until set); returns its slot. */
  add(id: unknown, status: Status = Status.Ok, value: unknown = null): number {
    // The list in a local: this runs once per task in the pool's loop.
    const flat = this.flat
    const slot = flat.length
    flat.push(id, status, value)
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
      (op !== ActorOp.Spawn && op !== ActorOp.Call && op !== ActorOp.Stop) ||
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
