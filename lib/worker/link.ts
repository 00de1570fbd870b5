/**
 * A thread's link to its agent (the thread's end; the agent's is
 * `lib/agent/links.ts`): requests to the cluster go up, the driver's replies
 * come down, and the late results of tasks that seceded go up. Both ends talk
 * over two `BroadcastChannel`s named after the agent and the thread, so no
 * channel is made per batch. The agent opens its ends when the thread starts
 * (the pool's `workerCreate`, before the thread is given any batch; an actor
 * host thread when the agent starts it), so nothing the thread posts is lost.
 */
import { BroadcastChannel, threadId } from 'node:worker_threads'
import type { Packr } from 'msgpackr'
import { RequestWriter, ResultsWriter, readResultsBody } from '../protocol/bodies.js'
import { ContextOp, REQUEST_THREAD_FACTOR, Status } from '../protocol/messages.js'
import { createPackr, findUnserializable } from '../protocol/codec.js'
import { ActorNameError, ProtocolError, SerializationError, UnknownNodeError, fromWire, rebuildError, type ClusterError, type WireError } from '../errors.js'

/** Up the link: requests (a Submit body), or late results of seceded tasks (a Results body and the ids it answers). */
export type UpMessage =
  { kind: 'requests'; thread: number; body: Uint8Array; count: number } | { kind: 'results'; thread: number; body: Uint8Array; ids: number[] }

/** Down the link: the driver's replies to this thread (a Reply body). */
export interface DownMessage {
  body: Uint8Array
  count: number
}

/** The channel names of an agent's link with one thread. */
export const channelNames = {
  up: (key: string, thread: number) => `actor-cluster:${key}:${thread}:up`,
  down: (key: string, thread: number) => `actor-cluster:${key}:${thread}:down`,
}

interface Pending {
  resolve: (value: unknown) => void
  reject: (err: unknown) => void
  what: string
}

/** Requests made in this thread since it started: a batch that sees this change while it waits secedes. */
export const activity = { requests: 0, wake: undefined as (() => void) | undefined }

/** The decoder of replies: references in them become this thread's working references. */
const packr: Packr = createPackr()

export class Link {
  private readonly down: BroadcastChannel
  private readonly up: BroadcastChannel
  private seq = 0
  private readonly pending = new Map<number, Pending>()
  private readonly requests = new RequestWriter()
  private readonly late = new ResultsWriter()
  private lateIds: number[] = []
  private scheduled = false

  /** `sendAhead`: requests gathered before they go up without waiting for the end of the thread's turn (0: never). */
  constructor(
    readonly key: string,
    private readonly sendAhead: number,
  ) {
    this.down = new BroadcastChannel(channelNames.down(key, threadId))
    this.down.onmessage = (event) => this.onDown((event as unknown as { data: DownMessage }).data)
    this.down.unref()
    this.up = new BroadcastChannel(channelNames.up(key, threadId))
    this.up.unref()
  }

  /** Asks the cluster; the promise settles with the driver's reply. */
  request(op: ContextOp, args: unknown[], what: string): Promise<unknown> {
    const reqId = threadId * REQUEST_THREAD_FACTOR + (this.seq = (this.seq + 1) % REQUEST_THREAD_FACTOR)
    const bad = unfit(op, args)
    if (bad) return Promise.reject(new SerializationError(`cannot send ${what}: ${bad}; msgpack cannot carry it`))
    activity.requests++
    activity.wake?.()
    return new Promise((resolve, reject) => {
      this.pending.set(reqId, { resolve, reject, what })
      this.requests.add(reqId, op, args)
      this.schedule()
    })
  }

  /** Sends without a reply (a tell). */
  send(op: ContextOp, args: unknown[], what: string): void {
    const bad = unfit(op, args)
    if (bad) throw new SerializationError(`cannot send ${what}: ${bad}; msgpack cannot carry it`)
    const reqId = threadId * REQUEST_THREAD_FACTOR + (this.seq = (this.seq + 1) % REQUEST_THREAD_FACTOR)
    this.requests.add(reqId, op, args)
    this.schedule()
  }

  /** A task that seceded settled: its result goes up with the next message. */
  result(id: number, status: Status, value: unknown): void {
    this.late.add(id, status, value)
    this.lateIds.push(id)
    this.schedule()
  }

  private schedule(): void {
    // A long run of requests goes up in parts, so the agent (and the actors it reaches) start on the first while this thread makes the rest.
    if (this.sendAhead > 0 && this.requests.count >= this.sendAhead) this.flushRequests()
    if (this.scheduled) return
    this.scheduled = true
    setImmediate(() => this.flush())
  }

  private flush(): void {
    this.scheduled = false
    if (this.lateIds.length > 0) {
      const ids = this.lateIds
      this.lateIds = []
      const body = own(this.late.take(packr))
      this.post({ kind: 'results', thread: threadId, body, ids })
    }
    this.flushRequests()
  }

  private flushRequests(): void {
    const count = this.requests.count
    if (count === 0) return
    let body: Uint8Array
    try {
      body = own(this.requests.take())
    } catch (err) {
      // One request could not be encoded as sent: refuse them all, naming the cause (they were checked, so rare).
      const flat = this.requests.clear()
      for (let i = 0; i < flat.length; i += 3) {
        const p = this.pending.get(flat[i] as number)
        this.pending.delete(flat[i] as number)
        p?.reject(new SerializationError(`cannot send ${p.what}: ${(err as Error).message}`, { cause: err }))
      }
      return
    }
    this.post({ kind: 'requests', thread: threadId, body, count })
  }

  private post(message: UpMessage): void {
    this.up.postMessage(message)
  }

  private onDown(message: DownMessage): void {
    try {
      readResultsBody(message.body, message.count, (reqId, status, value) => {
        const p = this.pending.get(reqId as number)
        if (!p) return
        this.pending.delete(reqId as number)
        if (status === Status.Ok) p.resolve(value)
        else p.reject(rebuildReplyError(p.what, fromWire(value)))
      })
    } catch (err) {
      // The agent forwards the driver's bytes; a body it could not read fails nothing here but is worth a trace.
      process.emitWarning(`actor-cluster: a reply to this thread could not be read: ${(err as Error).message}`)
    }
  }

  /** The thread's tasks that seceded are answered by the agent if the thread dies; requests still waiting die with it. */
  close(): void {
    this.up.close()
    this.down.close()
  }
}

/**
 * The bytes in a buffer of their own: an encoder's output is a view of its
 * working buffer, which grows to the largest message it ever wrote, and
 * posting a view clones its whole buffer — after one large message, every
 * later one would copy megabytes.
 */
export function own(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : new Uint8Array(bytes)
}

/** Where a request's values from the caller sit, by op, and their names in the caller's terms; the rest is the runtime's own. */
const CALLER_VALUES: Partial<Record<ContextOp, readonly (readonly [at: number, name: string])[]>> = {
  [ContextOp.Call]: [
    [1, 'args'],
    [2, 'options'],
  ],
  [ContextOp.Spawn]: [
    [1, 'args'],
    [2, 'options'],
  ],
  [ContextOp.Ask]: [[2, 'args']],
  [ContextOp.Tell]: [[2, 'args']],
  [ContextOp.Put]: [[0, 'value']],
}

/**
 * The first value of the request msgpack cannot carry, named as the caller
 * wrote it (`args[0]`, not the request's `args[1][0]`); each field is walked
 * once (this runs for every request a thread makes).
 */
function unfit(op: ContextOp, fields: unknown[]): string | undefined {
  const named = CALLER_VALUES[op] ?? []
  // The caller's values first, then the runtime's own fields.
  for (const [at, name] of named) {
    const bad = findUnserializable(fields[at], name)
    if (bad) return bad
  }
  for (let i = 0; i < fields.length; i++) {
    if (named.some(([at]) => at === i)) continue
    const bad = findUnserializable(fields[i], `request[${i}]`)
    if (bad) return bad
  }
  return undefined
}

/** The error a reply carries, as its class where the runtime raised it (the driver sends every failure as a runtime one). */
function rebuildReplyError(what: string, wire: WireError): ClusterError {
  let err: ClusterError
  switch (wire.code) {
    case 'ERR_ACTOR_NOT_FOUND':
    case 'ERR_ACTOR_NAME_TAKEN':
      err = new ActorNameError(wire.code, '', wire.message)
      break
    case 'ERR_UNKNOWN_NODE':
      err = new UnknownNodeError(/^unknown node "(.*)"; /.exec(wire.message)?.[1] ?? '', [])
      err.message = wire.message
      break
    case 'ERR_PROTOCOL':
      return new ProtocolError(wire.message)
    default:
      return rebuildError(what, wire, true)
  }
  if (wire.stack) err.stack = wire.stack
  return err
}
