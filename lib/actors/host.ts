import { Worker } from 'node:worker_threads'
import { ActorOp, Status } from '../protocol/messages.js'
import { ActorBodyWriter } from '../protocol/bodies.js'
import { ActorLostError, WorkerCrashedError, toWireError } from '../errors.js'
import type { HostBatch, HostReplies } from './host-worker.js'
import type { SharedTable } from '../agent/shared-thread.js'
import type { ThreadInfo } from '../worker/context.js'
import { splitRequests, type Placement, type RoutedMessage } from './routing.js'

/** The threads' links to the agent (`context` in actor methods): opened when a thread starts, closed when it is gone. */
export interface HostLinks {
  open(thread: number): void
  close(thread: number): void
  readonly info: ThreadInfo
  /** Replies to asks routed inside the node, for `thread` (a Reply body): false when it has no link here. */
  reply(thread: number, body: Uint8Array, count: number): boolean
  /**
   * Messages routed inside the node were on their way to a host thread that
   * died (`why`): asks are answered with ActorLostError, tells reported as
   * failed; with `report`, the driver is told their actors are lost.
   */
  lost(messages: readonly RoutedMessage[], why: string, report: boolean): void
}

interface HostThread {
  worker: Worker
  actors: Set<string>
  /** Requests sent to this thread and not yet answered, by request id. */
  waiting: Set<number>
  /** Positions in the frame being read of the messages for this thread, sent by {@link ActorHosts.post}. */
  entries: number[]
  /** The shared-value table and the context last sent to the thread: a batch carries them only when they changed. */
  sentShared: SharedTable | undefined
  sentContext: ThreadInfo | undefined
  /** Messages routed to this thread from threads of the node and not yet done, by request id. */
  routed: Map<number, RoutedMessage>
  /** Graceful Stops sent to this thread and not yet answered: request id to actor id. */
  stops: Map<number, string>
}

/** How the agent's actor threads answer: batches from a thread, or single answers given on the agent's own thread. */
export interface HostAnswers {
  /** A thread's replies: an encoded Results body of `count` entries. */
  replies(results: Uint8Array, count: number): void
  /** One answer given without a thread (the actor's thread died, or the thread dying with the message in flight). */
  reply(id: number, status: Status, value: unknown): void
}

/**
 * The agent's actor threads. They are separate from the task pool because an
 * actor must stay on the thread that holds its state, while the pool hands
 * work to whichever thread is free. Threads start on the first spawn, up to
 * `maxThreads`; a new actor goes to the thread with the fewest actors.
 * Messages are gathered per thread with {@link handle} and sent, one batch
 * per thread, by {@link post}.
 */
export class ActorHosts {
  private readonly threads: HostThread[] = []
  /** Threads holding a batch not yet posted. */
  private readonly pending: HostThread[] = []
  private readonly placement = new Map<string, HostThread>()
  /** Actors whose thread died: their messages are answered with ActorLostError, so the driver learns of it. */
  private readonly gone = new Set<string>()
  /**
   * Placed actors whose messages from the node's threads go through the
   * driver, behind one that had to (a Stop, or one carrying a shared value
   * this node does not hold), until the actor is placed again.
   */
  private readonly viaDriver = new Set<string>()
  /**
   * Actors no longer placed (their graceful Stop is on its way) but still on
   * their thread until it answers the Stop: a Stop with force (or another
   * message from the driver) must reach that thread, not whichever is first.
   */
  private readonly stopping = new Map<string, HostThread>()
  /** The shared values the node holds, while a body is split. */
  private heldNow: SharedTable | undefined
  private readonly routing: Placement = {
    here: (actorId) => this.placement.has(actorId) && !this.viaDriver.has(actorId),
    viaDriver: (actorId) => this.viaDriver.add(actorId),
    holds: (hash) => this.heldNow?.some(([h]) => h === hash) ?? false,
  }
  private closed = false

  constructor(
    private readonly tasks: string,
    private readonly maxThreads: number,
    private readonly answers: HostAnswers,
    private readonly links?: HostLinks,
  ) {}

  /** Adds the message at position `entry` of the frame to its actor's thread's batch (or answers it here when that thread died). */
  handle(id: number, op: ActorOp, actorId: string, entry: number): void {
    let host = this.placement.get(actorId) ?? this.stopping.get(actorId)
    const spawn = op === ActorOp.Spawn || op === ActorOp.Respawn
    if (!host && this.gone.has(actorId)) {
      if (spawn) {
        this.gone.delete(actorId)
      } else {
        // It died with its thread: a Stop has nothing left to do; anything else never runs.
        if (op === ActorOp.Stop || op === ActorOp.Kill) {
          this.gone.delete(actorId)
          this.answers.reply(id, Status.Ok, null)
        } else {
          const lost = new ActorLostError(`actor ${actorId} was lost: its host thread died; the message did not run`)
          this.answers.reply(id, Status.Failed, toWireError(lost))
        }
        return
      }
    }
    if (spawn && !host) {
      host = this.pickThread()
      this.placement.set(actorId, host)
      host.actors.add(actorId)
      // A restarted actor: the driver sends the messages it held during the restart after this, and the node's
      // threads' messages must not overtake them, so theirs go through the driver too.
      if (op === ActorOp.Respawn) this.viaDriver.add(actorId)
      else this.viaDriver.delete(actorId)
    }
    if (!host) {
      // The host thread decides how to answer an actor it does not hold.
      host = this.threads[0] ?? this.pickThread()
    } else if (op === ActorOp.Stop || op === ActorOp.Kill) {
      // Messages from the node's threads now go to the driver, which answers them as it does for a stopped actor.
      if (this.placement.delete(actorId) && op === ActorOp.Stop) {
        this.stopping.set(actorId, host)
        host.stops.set(id, actorId)
      }
      this.viaDriver.delete(actorId)
      host.actors.delete(actorId)
    }
    host.waiting.add(id)
    if (host.entries.length === 0) this.pending.push(host)
    host.entries.push(entry)
  }

  /**
   * Sends each thread its messages of the frame `body` (`count` entries), one
   * message per thread: a copy of the body's bytes, decoded in the thread,
   * and which of its entries are the thread's (all, often: then no list).
   * Copying bytes costs the agent's main thread less than cloning messages.
   */
  post(body: Uint8Array, count: number, shared?: SharedTable): void {
    for (const host of this.pending) {
      const entries = host.entries
      host.entries = []
      // A thread that died while the frame was read has answered these already (crash answers cover `waiting`).
      if (!this.threads.includes(host)) continue
      const copy = new Uint8Array(body)
      const batch: HostBatch = { body: copy, count, entries: entries.length === count ? undefined : entries }
      this.changes(host, batch, shared)
      host.worker.postMessage(batch, [copy.buffer])
    }
    this.pending.length = 0
  }

  /**
   * A thread's requests (a Submit body of `count` entries): its asks and
   * tells to actors placed here go straight to their host threads, one batch
   * per thread, in the order sent; returns what goes to the driver — the
   * body as it came when nothing stayed, the rest encoded again, or
   * undefined when everything stayed. Replies to the routed asks go back to
   * `thread` over its link, under the request ids it gave them.
   */
  route(thread: number, body: Uint8Array, count: number, shared?: SharedTable): { body: Uint8Array; count: number } | undefined {
    if (this.placement.size === 0) return { body, count }
    this.heldNow = shared
    const split = splitRequests(thread, body, count, this.routing)
    this.heldNow = undefined
    if (split === undefined) return { body, count }
    const batches = new Map<HostThread, { writer: ActorBodyWriter; messages: RoutedMessage[] }>()
    for (const m of split.local) {
      const host = this.placement.get(m.actorId)!
      let b = batches.get(host)
      if (!b) batches.set(host, (b = { writer: new ActorBodyWriter(), messages: [] }))
      b.writer.add(m.reqId, ActorOp.Call, m.actorId, m.method, m.args)
      b.messages.push(m)
    }
    const ready: [HostThread, Uint8Array, RoutedMessage[]][] = []
    try {
      for (const [host, b] of batches) ready.push([host, b.writer.take(), b.messages])
    } catch {
      // Read but not written again as it came (rare): all of it goes to the driver, which says what is wrong.
      return { body, count }
    }
    for (const [host, bytes, messages] of ready) {
      const copy = new Uint8Array(bytes)
      const tells = new Uint8Array(messages.length)
      for (let i = 0; i < messages.length; i++) {
        const m = messages[i]!
        if (m.tell) tells[i] = 1
        host.routed.set(m.reqId, m)
      }
      const batch: HostBatch = { body: undefined, count: 0, entries: undefined, routed: { body: copy, count: messages.length, tells } }
      this.changes(host, batch, shared)
      host.worker.postMessage(batch, [copy.buffer, tells.buffer])
    }
    return split.rest
  }

  /** Puts in `batch` the shared-value table and the context if they changed since the thread's last batch. */
  private changes(host: HostThread, batch: HostBatch, shared: SharedTable | undefined): void {
    // Cloning the table and the context into every batch cost the agent's main thread more than the batch itself.
    if (shared !== host.sentShared) batch.shared = (host.sentShared = shared) ?? null
    const context = this.links?.info
    if (context !== host.sentContext) batch.context = host.sentContext = context
  }

  private pickThread(): HostThread {
    if (this.threads.length < this.maxThreads) return this.startThread()
    let best = this.threads[0]!
    for (const t of this.threads) if (t.actors.size < best.actors.size) best = t
    return best
  }

  private startThread(): HostThread {
    const worker = new Worker(new URL('./host-worker.js', import.meta.url), { workerData: { tasks: this.tasks } })
    const thread: HostThread = {
      worker,
      actors: new Set(),
      waiting: new Set(),
      entries: [],
      sentShared: undefined,
      sentContext: undefined,
      routed: new Map(),
      stops: new Map(),
    }
    const threadId = worker.threadId
    this.links?.open(threadId)
    worker.on('message', (r: HostReplies) => {
      if (r.results !== undefined) {
        const waiting = thread.waiting
        for (const id of r.ids) waiting.delete(id)
        if (thread.stops.size > 0) this.stopped(thread, r.ids)
        this.answers.replies(r.results, r.ids.length)
      }
      if (r.done !== undefined) for (const id of r.done) thread.routed.delete(id)
      if (r.routed !== undefined) for (const to of r.routed) this.links?.reply(to.thread, to.body, to.count)
    })
    let failed = false
    const fail = (err: Error) => {
      // 'error' is followed by 'exit': one answer per message.
      if (failed) return
      failed = true
      this.links?.close(threadId)
      const i = this.threads.indexOf(thread)
      if (i >= 0) this.threads.splice(i, 1)
      this.stopped(thread, [...thread.stops.keys()])
      for (const id of thread.actors) {
        this.placement.delete(id)
        this.viaDriver.delete(id)
        this.gone.add(id)
      }
      // Answered even when closing: an ask from a thread of the node settles once, whatever happens.
      if (thread.routed.size > 0) {
        const routed = [...thread.routed.values()]
        thread.routed.clear()
        this.links?.lost(routed, `its host thread died: ${err.message}`, !this.closed)
      }
      if (this.closed) return
      const wire = toWireError(new WorkerCrashedError(`actor host thread died: ${err.message}; its actors are gone`, { cause: err }))
      for (const id of thread.waiting) this.answers.reply(id, Status.Failed, wire)
      thread.waiting.clear()
    }
    worker.on('error', fail)
    worker.on('exit', (code) => fail(new Error(`exit code ${code}`)))
    worker.unref()
    this.threads.push(thread)
    return thread
  }

  /** The thread answered these messages (or died): the Stops among them are done, their actors off the thread. */
  private stopped(thread: HostThread, ids: readonly number[]): void {
    for (const id of ids) {
      const actorId = thread.stops.get(id)
      if (actorId === undefined) continue
      thread.stops.delete(id)
      if (this.stopping.get(actorId) === thread) this.stopping.delete(actorId)
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await Promise.all(this.threads.map((t) => t.worker.terminate()))
    this.threads.length = 0
    this.placement.clear()
    this.stopping.clear()
  }
}
