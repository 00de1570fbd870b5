/**
 * An actor host thread: holds actor instances and runs their method calls.
 * The agent hands it every message of a frame meant for its actors in one
 * batch. Each actor has a mailbox: its messages run one at a time in arrival
 * order, even when a method is async; different actors on one thread
 * interleave only at their awaits. Replies go back in batches too: those of
 * a batch's synchronous calls when the batch has run, those of async calls
 * gathered until the next turn of the event loop.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { AsyncLocalStorage } from 'node:async_hooks'
import { loadCatalog } from '../tasks-module.js'
import { createPackr, findUnserializable } from '../protocol/codec.js'
import { readActorBody, ResultsWriter } from '../protocol/bodies.js'
import { ActorOp, REQUEST_THREAD_FACTOR, Status } from '../protocol/messages.js'
import {
  ActorStoppedError,
  RemoteTaskError,
  SerializationError,
  UnknownActorError,
  UnknownMethodError,
  fromWire,
  rebuildError,
  toWireError,
} from '../errors.js'
import { Deque } from '../util/deque.js'
import { useSharedTable, type SharedTable } from '../agent/shared-thread.js'
import { bindAgent, threadActorRef, toldFailed, useActorStore, useLocalDelivery, type ThreadInfo } from '../worker/context.js'
import type { ActorRef } from '../driver/types.js'

/**
 * Messages for this thread's actors: the Actor frame's body as it came
 * (decoded here, off the agent's main thread) and, when the frame also holds
 * messages for other threads or answered by the agent, the positions of this
 * thread's entries, ascending.
 */
export interface HostBatch {
  /** Messages from the driver (undefined: none). */
  body: Uint8Array | undefined
  count: number
  entries: number[] | undefined
  /** The shared values the node holds (the body's handles decode to them), when they changed since the last batch; null: none now. */
  shared?: SharedTable | null | undefined
  /** The agent's link (`context` in methods) and node, when they changed since the last batch. */
  context?: ThreadInfo | undefined
  /**
   * Asks and tells from threads of this node, routed here by the agent: an
   * Actor body whose ids are the senders' request ids, and which entries
   * are tells (1) rather than asks (0).
   */
  routed?: { body: Uint8Array; count: number; tells: Uint8Array } | undefined
}

/**
 * Replies, in one encoded Results body (`[id, status, value, ...]`, sent to
 * the driver as it is), and the ids they answer, in the same order.
 */
export interface HostReplies {
  /** Replies to the driver's messages (undefined: none). */
  results: Uint8Array | undefined
  ids: number[]
  /** Replies to asks routed by the agent: a Reply body per sending thread. */
  routed?: { thread: number; body: Uint8Array; count: number }[] | undefined
  /** Request ids of the routed asks and tells done (answered, or failed). */
  done?: number[] | undefined
}

interface Waiting {
  id: number
  op: ActorOp
  name: string
  args: readonly unknown[]
}

interface Live {
  id: string
  /** Its own reference, `context.self` while its methods run (made on first use). */
  self: ActorRef<object> | undefined
  className: string
  instance: Record<string, unknown>
  /** The message whose async method is running, if one is: later messages wait in `queue`. */
  running: number | undefined
  queue: Deque<Waiting> | undefined
  stopped: boolean
  /** Stopped at once (`ActorOp.Kill`): what its running method returns later is dropped. */
  killed: boolean
}

const { tasks } = workerData as { tasks: string }
const catalog = await loadCatalog(tasks, 'an actor host thread')
const actors = new Map<string, Live>()
const port = parentPort!
const packr = createPackr()
/** The actor whose method runs, across its awaits: `context.self`. */
const running = new AsyncLocalStorage<ActorRef<object>>()
useActorStore(running)

const out = new ResultsWriter()
let ids: number[] = []
let scheduled = false

/**
 * Messages between actors of this thread stay in it: they go through the
 * receiver's mailbox like any other, under negative ids, and their answers
 * settle here. Arguments are copied through msgpack, as they would be on the
 * wire, so two actors never share an object. A message is delivered after
 * the sender's method has returned, never inside it: an actor never runs
 * inside another's method (nor inside its own), and a conversation of a
 * million hops is a loop, not a million nested calls.
 */
const local = new Map<
  number,
  { resolve: (v: unknown) => void; reject: (e: unknown) => void; what: string } | { tell: string; method: string; reqId?: number } | { reqId: number }
>()
let localSeq = 0

/**
 * Messages from other threads of the node, routed here by the agent, run
 * under local ids too; their answers go back to the sending thread (asks,
 * under its request id) and the agent learns which are done.
 */
const routedOut = new Map<number, ResultsWriter>()
let done: number[] = []

useLocalDelivery((actorId, method, args, ask) => {
  const live = actors.get(actorId)
  if (!live || live.stopped) return undefined
  let copy = args
  try {
    // Numbers, strings and the like cannot be shared: only arguments with objects in them are copied.
    if (!allPlain(args)) copy = packr.unpack(packr.pack(args)) as unknown[]
  } catch (err) {
    // The same check as the wire's (the arguments were checked when the message was made, so rare).
    const refused = new SerializationError(`cannot send ${live.className}.${method}: ${(err as Error).message}`, { cause: err })
    return ask ? Promise.reject(refused) : undefined
  }
  const id = -++localSeq
  if (ask) {
    return new Promise((resolve, reject) => {
      local.set(id, { resolve, reject, what: `${live.className}.${method}` })
      post({ id, actorId, name: method, args: copy })
    })
  }
  local.set(id, { tell: actorId, method })
  post({ id, actorId, name: method, args: copy })
  return true
})

/** Messages between this thread's actors not yet delivered, in the order they were sent. */
const posted = new Deque<{ id: number; actorId: string; name: string; args: readonly unknown[] }>()
let draining = false
/** Most messages between this thread's actors delivered in one turn of its event loop; then its port and timers get a turn. */
const LOCAL_TURN = 8192

function post(message: { id: number; actorId: string; name: string; args: readonly unknown[] }): void {
  posted.push(message)
  if (draining) return
  draining = true
  queueMicrotask(drain)
}

/** Delivers the posted messages in order (those they post in turn too), a bounded number per turn. */
function drain(): void {
  for (let n = 0; posted.length > 0; n++) {
    if (n === LOCAL_TURN) {
      setImmediate(drain)
      if (ids.length > 0 || done.length > 0) later()
      return
    }
    const m = posted.shift()!
    deliver(m.id, ActorOp.Call, m.actorId, m.name, m.args)
  }
  draining = false
  if (ids.length > 0 || done.length > 0) later()
}

/** No argument is an object (nor anything msgpack would refuse or change): the array is the copy. */
function allPlain(args: unknown[]): boolean {
  for (const a of args) {
    const t = typeof a
    if (t !== 'number' && t !== 'string' && t !== 'boolean' && a !== null) return false
  }
  return true
}

/** The answer to a message from an actor of this thread. */
function answerLocal(id: number, status: Status, value: unknown): void {
  const waiting = local.get(id)
  if (!waiting) return
  local.delete(id)
  if ('tell' in waiting) {
    if (waiting.reqId !== undefined) {
      done.push(waiting.reqId)
      later()
    }
    if (status !== Status.Ok) toldFailed(waiting.tell, waiting.method, value)
    return
  }
  if (!('resolve' in waiting)) {
    const reqId = waiting.reqId
    const thread = Math.floor(reqId / REQUEST_THREAD_FACTOR)
    let w = routedOut.get(thread)
    if (!w) routedOut.set(thread, (w = new ResultsWriter()))
    w.add(reqId, status, value)
    done.push(reqId)
    later()
    return
  }
  if (status === Status.Ok) waiting.resolve(value)
  else {
    const wire = fromWire(value)
    waiting.reject(status === Status.Threw ? new RemoteTaskError(waiting.what, wire) : rebuildError(waiting.what, wire, true))
  }
}

function reply(id: number, status: Status, value: unknown): void {
  if (id < 0) {
    answerLocal(id, status, value)
    return
  }
  out.add(id, status, value)
  ids.push(id)
}

/** Sends the replies gathered so far, in one message. */
function flush(): void {
  scheduled = false
  if (ids.length === 0 && done.length === 0) return
  const transfer: ArrayBuffer[] = []
  let results: Uint8Array | undefined
  if (ids.length > 0) {
    // A fresh copy: the packr's own buffer must not be transferred whole.
    results = new Uint8Array(out.take(packr))
    transfer.push(results.buffer as ArrayBuffer)
  }
  let routed: HostReplies['routed']
  if (routedOut.size > 0) {
    routed = []
    for (const [thread, w] of routedOut) {
      const count = w.count
      const body = new Uint8Array(w.take(packr))
      transfer.push(body.buffer)
      routed.push({ thread, body, count })
    }
    routedOut.clear()
  }
  const message: HostReplies = { results, ids, routed, done: done.length > 0 ? done : undefined }
  ids = []
  done = []
  port.postMessage(message, transfer)
}

/** Replies of async methods: gathered until the next turn of the event loop. */
function later(): void {
  if (scheduled) return
  scheduled = true
  setImmediate(flush)
}

function settle(live: Live, id: number, name: string, value: unknown): void {
  const bad =
    typeof value === 'object' || typeof value === 'function' || typeof value === 'symbol' || typeof value === 'bigint'
      ? findUnserializable(value, 'result')
      : undefined
  if (bad) reply(id, Status.Failed, toWireError(new SerializationError(`${live.className}.${name} returned a value msgpack cannot carry: ${bad}`)))
  else reply(id, Status.Ok, value)
}

/**
 * Runs one message of an actor whose mailbox is free. Returns true when it
 * left the actor busy (an async method is running; its reply and the rest
 * of the mailbox follow when it settles).
 */
function run(live: Live, id: number, op: ActorOp, name: string, args: readonly unknown[]): boolean {
  if (op === ActorOp.Stop) {
    actors.delete(live.id)
    reply(id, Status.Ok, null)
    return false
  }
  const method = live.instance[name]
  if (typeof method !== 'function' || name === 'constructor' || name.startsWith('_')) {
    reply(id, Status.Failed, toWireError(UnknownMethodError.of(live.className, name)))
    return false
  }
  let value: unknown
  try {
    value = running.run((live.self ??= threadActorRef(live.id, undefined)), Reflect.apply, method as (...a: unknown[]) => unknown, live.instance, args)
  } catch (err) {
    reply(id, Status.Threw, toWireError(err))
    return false
  }
  if (value === null || typeof value !== 'object' || typeof (value as Promise<unknown>).then !== 'function') {
    settle(live, id, name, value)
    return false
  }
  live.running = id
  Promise.resolve(value).then(
    (v) => {
      if (live.killed) return
      settle(live, id, name, v)
      resume(live)
    },
    (err: unknown) => {
      if (live.killed) return
      reply(id, Status.Threw, toWireError(err))
      resume(live)
    },
  )
  return true
}

/**
 * Stops an actor at once: it leaves the thread now, the message its async
 * method is running and those queued are answered (a queued Stop as done,
 * the others with ActorStoppedError), and what the running method returns
 * later is dropped (a promise cannot be cancelled).
 */
function kill(live: Live, id: number): void {
  actors.delete(live.id)
  live.stopped = true
  live.killed = true
  const stopped = () => toWireError(new ActorStoppedError(`actor ${live.id} (${live.className}) was stopped with force before this message finished`))
  if (live.running !== undefined) reply(live.running, Status.Failed, stopped())
  const queue = live.queue
  live.queue = undefined
  while (queue !== undefined && queue.length > 0) {
    const m = queue.shift()!
    if (m.op === ActorOp.Stop) reply(m.id, Status.Ok, null)
    else reply(m.id, Status.Failed, stopped())
  }
  reply(id, Status.Ok, null)
}

/** An async method settled: the actor's waiting messages run, up to its next await. */
function resume(live: Live): void {
  live.running = undefined
  const queue = live.queue
  while (queue !== undefined && queue.length > 0) {
    const m = queue.shift()!
    if (run(live, m.id, m.op, m.name, m.args)) break
  }
  later()
}

function spawn(id: number, actorId: string, className: string, args: readonly unknown[]): void {
  const Cls = catalog.classes.get(className)
  if (!Cls) {
    reply(id, Status.Failed, toWireError(UnknownActorError.of(className, [...catalog.classes.keys()])))
    return
  }
  try {
    const self = threadActorRef(actorId, undefined)
    const instance = running.run(self, () => new Cls(...args)) as Record<string, unknown>
    actors.set(actorId, { id: actorId, self, className, instance, running: undefined, queue: undefined, stopped: false, killed: false })
    reply(id, Status.Ok, actorId)
  } catch (err) {
    reply(id, Status.Threw, toWireError(err))
  }
}

/** One message of a batch: straight to its actor when the mailbox is free, else in line behind the others. */
function deliver(id: number, op: ActorOp, actorId: string, name: string, args: readonly unknown[]): void {
  if (op === ActorOp.Spawn || op === ActorOp.Respawn) {
    spawn(id, actorId, name, args)
    return
  }
  const live = actors.get(actorId)
  // Stopped at once, whatever it runs or holds (a graceful Stop already in its queue included).
  if (op === ActorOp.Kill) {
    if (live) kill(live, id)
    else reply(id, Status.Ok, null)
    return
  }
  if (!live || live.stopped) {
    reply(id, Status.Failed, toWireError(new ActorStoppedError(`actor ${actorId} is not running on this node`)))
    return
  }
  // Calls after a Stop are refused now; the Stop itself runs in its turn.
  if (op === ActorOp.Stop) live.stopped = true
  if (live.running !== undefined || (live.queue !== undefined && live.queue.length > 0)) (live.queue ??= new Deque()).push({ id, op, name, args })
  else run(live, id, op, name, args)
}

port.on('message', (batch: HostBatch) => {
  if (batch.shared !== undefined) useSharedTable(batch.shared ?? undefined, packr)
  if (batch.context) bindAgent(batch.context)
  const entries = batch.entries
  if (batch.routed !== undefined) {
    const tells = batch.routed.tells
    readActorBody(batch.routed.body, batch.routed.count, (reqId, _op, actorId, name, args, entry) => {
      const id = -++localSeq
      local.set(id, tells[entry] === 1 ? { tell: actorId, method: name, reqId } : { reqId })
      deliver(id, ActorOp.Call, actorId, name, args)
    })
  }
  if (batch.body === undefined) {
    // Nothing from the driver.
  } else if (entries === undefined) {
    readActorBody(batch.body, batch.count, deliver)
  } else {
    let next = 0
    readActorBody(batch.body, batch.count, (id, op, actorId, name, args, entry) => {
      if (entries[next] !== entry) return
      next++
      deliver(id, op, actorId, name, args)
    })
  }
  flush()
})
