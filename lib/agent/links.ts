/**
 * The agent's end of its threads' links (the thread's end is
 * `lib/worker/link.ts`): a thread's requests go to the driver as one Submit
 * frame per message, unread; the driver's Reply frames go to the thread they
 * name, unread; and the late results of tasks that seceded (they wait on work
 * they asked for, so their batch ended without them) go to the driver as
 * ordinary Results frames. The agent keeps, per thread, the tasks that
 * seceded and not yet answered: they do not count against the node's window
 * (else a full window of waiting parents would leave no room for their
 * children), and if the thread dies each is answered once with
 * WorkerCrashedError. One that had a timeout keeps it: past it, it is
 * answered once with TaskTimeoutError and abandoned (its thread runs other
 * tasks, so it is not stopped; its late result is dropped by the driver).
 */
import { BroadcastChannel } from 'node:worker_threads'
import { randomBytes } from 'node:crypto'
import { ActorLostError, TaskTimeoutError, WorkerCrashedError, toWireError } from '../errors.js'
import { header } from '../protocol/codec.js'
import { readRequestBody, RequestWriter, ResultsWriter } from '../protocol/bodies.js'
import { ContextOp, MsgType, Status } from '../protocol/messages.js'
import type { RoutedMessage } from '../actors/routing.js'
import type { Parts } from '../transport/transport.js'
import { channelNames, own, type DownMessage, type UpMessage } from '../worker/link.js'
import { withHandlesKept } from '../protocol/shared-ref.js'
import type { ContextOptions, ThreadInfo } from '../worker/context.js'
import type { SecededTimeout } from './runner.js'

/** Where a seceded task's result goes: the driver and registration its batch came under. */
export interface Origin {
  readonly driver: string | undefined
  readonly registration: string
}

interface ThreadEnd {
  up: BroadcastChannel
  down: BroadcastChannel
  /** Seceded tasks of this thread not yet answered. */
  seceded: Map<number, Origin>
  /** Late results that arrived before the batch that seceded them said so. */
  early: Set<number>
  /** Seceded tasks answered with TaskTimeoutError, whose own results are yet to come. */
  abandoned: Set<number>
  /** The timeouts of seceded tasks of this thread. */
  timers: Set<NodeJS.Timeout>
}

export interface LinksOptions {
  send(parts: Parts): void
  /**
   * A thread's requests (a Submit body): those for actors of this node go
   * to their host threads; returns what goes to the driver (the body as it
   * came when nothing stayed; undefined when everything did).
   */
  route?(thread: number, body: Uint8Array, count: number): { body: Uint8Array; count: number } | undefined
  /** The driver now served, and this agent's registration with it; undefined driver: none (requests are refused). */
  session(): Origin
  /** The number of seceded tasks changed (the window announced grows by it). */
  secededChanged(total: number): void
  options: ContextOptions
  /** See {@link ThreadInfo.sendAhead}. */
  sendAhead: number
}

export class Links {
  /** Names this agent's channels: a pool shared by several agents in one process reaches each one's own. */
  readonly key = randomBytes(8).toString('hex')
  private readonly threads = new Map<number, ThreadEnd>()
  private total = 0
  /** Request ids of the agent's own reports (failed tells): no reply comes for them. */
  private agentSeq = 0
  private nodeId: string | undefined
  private _info: ThreadInfo

  constructor(private readonly options: LinksOptions) {
    this._info = { link: this.key, nodeId: undefined, options: options.options, sendAhead: options.sendAhead }
  }

  /** What each batch tells its thread about the cluster (one object, changed when the node id does). */
  get info(): ThreadInfo {
    return this._info
  }

  /** Tasks seceded on every thread and not yet answered. */
  get seceded(): number {
    return this.total
  }

  joined(nodeId: string): void {
    if (nodeId !== this.nodeId) {
      this.nodeId = nodeId
      this._info = { link: this.key, nodeId, options: this.options.options, sendAhead: this.options.sendAhead }
    }
  }

  /** A thread started: its channels open before it is given anything to run. */
  open(thread: number): void {
    if (this.threads.has(thread)) return
    const up = new BroadcastChannel(channelNames.up(this.key, thread))
    const down = new BroadcastChannel(channelNames.down(this.key, thread))
    up.onmessage = (event) => this.onUp(thread, (event as unknown as { data: UpMessage }).data)
    up.unref()
    down.unref()
    this.threads.set(thread, { up, down, seceded: new Map(), early: new Set(), abandoned: new Set(), timers: new Set() })
  }

  /** A thread is gone: its seceded tasks are answered once with WorkerCrashedError; its channels close. */
  close(thread: number, why = 'the thread exited'): void {
    const end = this.threads.get(thread)
    if (!end) return
    this.threads.delete(thread)
    end.up.close()
    end.down.close()
    for (const timer of end.timers) clearTimeout(timer)
    if (end.seceded.size === 0) return
    const session = this.options.session()
    const wire = toWireError(new WorkerCrashedError(`a task waiting on work it asked for lost its worker thread: ${why}`))
    const byRegistration = new Map<string, ResultsWriter>()
    for (const [id, origin] of end.seceded) {
      if (origin.driver === undefined || origin.driver !== session.driver) continue
      let w = byRegistration.get(origin.registration)
      if (!w) byRegistration.set(origin.registration, (w = new ResultsWriter()))
      w.add(id, Status.Failed, wire)
    }
    this.changed(-end.seceded.size)
    for (const [registration, w] of byRegistration) this.options.send([header(MsgType.Results, w.count, registration), w.take()])
  }

  /** Every thread is gone (the agent closes). */
  closeAll(): void {
    for (const thread of [...this.threads.keys()]) this.close(thread, 'the agent closed')
  }

  /** A batch ended with these tasks still waiting on the cluster: they answer later, up the thread's link, or time out after what is left of their timeout. */
  secededIn(thread: number, ids: readonly number[], origin: Origin, timeout?: SecededTimeout): void {
    const end = this.threads.get(thread)
    if (!end) return
    let added = 0
    for (const id of ids) {
      if (end.early.delete(id)) continue
      end.seceded.set(id, origin)
      added++
    }
    this.changed(added)
    if (timeout === undefined || added === 0) return
    const timer = setTimeout(() => {
      end.timers.delete(timer)
      this.timedOut(end, ids, origin, timeout.timeoutMs)
    }, timeout.leftMs)
    timer.unref()
    end.timers.add(timer)
  }

  /** Seceded tasks past their timeout and still unanswered: each answered once with TaskTimeoutError, and abandoned. */
  private timedOut(end: ThreadEnd, ids: readonly number[], origin: Origin, timeoutMs: number): void {
    const w = new ResultsWriter()
    const wire = toWireError(
      new TaskTimeoutError(
        `a task ran longer than its timeout of ${timeoutMs} ms while it waited on work it asked for; ` +
          'it was abandoned (its thread runs other tasks and was not stopped), and the work it asked for goes on',
      ),
    )
    for (const id of ids) {
      if (end.seceded.get(id) !== origin) continue
      end.seceded.delete(id)
      end.abandoned.add(id)
      w.add(id, Status.Failed, wire)
    }
    if (w.count === 0) return
    this.changed(-w.count)
    const session = this.options.session()
    if (origin.driver !== undefined && origin.driver === session.driver) this.options.send([header(MsgType.Results, w.count, origin.registration), w.take()])
  }

  /** The driver's replies to `thread`: handed over unread. False when no such thread has a link here. */
  reply(thread: number, body: Uint8Array, count: number): boolean {
    const end = this.threads.get(thread)
    if (!end) return false
    // Posting a view would clone the whole buffer under it (a transport's receive buffer, say).
    const message: DownMessage = { body: own(body), count }
    end.down.postMessage(message)
    return true
  }

  /**
   * Messages routed inside the node whose host thread died on their way:
   * each ask is answered with ActorLostError (it may or may not have run),
   * each tell reported to the driver as failed (an `actor:error`), and, with
   * `report`, the driver told which actors are lost, as a message it sent
   * would have told it, so that one spawned with `restart: 'always'` is
   * restarted.
   */
  lost(messages: readonly RoutedMessage[], why: string, report: boolean): void {
    const asks = new Map<number, ResultsWriter>()
    const told = new RequestWriter()
    const actors = new Set<string>()
    for (const m of messages) {
      actors.add(m.actorId)
      const wire = toWireError(new ActorLostError(`actor ${m.actorId} was lost: ${why}; ${m.method} was on its way to it and may or may not have run`))
      if (m.tell) {
        told.add(this.agentSeq++, ContextOp.ToldFailed, [m.actorId, m.method, wire])
        continue
      }
      let w = asks.get(m.thread)
      if (!w) asks.set(m.thread, (w = new ResultsWriter()))
      w.add(m.reqId, Status.Failed, wire)
    }
    for (const [thread, w] of asks) {
      const end = this.threads.get(thread)
      if (!end) continue
      const count = w.count
      const message: DownMessage = { body: own(w.take()), count }
      end.down.postMessage(message)
    }
    if (!report || this.options.session().driver === undefined) return
    if (told.count > 0) this.options.send([header(MsgType.Submit, told.count), told.take()])
    this.options.send([header(MsgType.ActorsLost, [...actors])])
  }

  private changed(delta: number): void {
    if (delta === 0) return
    this.total += delta
    this.options.secededChanged(this.total)
  }

  private onUp(thread: number, m: UpMessage): void {
    const end = this.threads.get(thread)
    if (!end || m === null || typeof m !== 'object') return
    if (m.kind === 'requests') {
      const rest = this.options.route ? this.options.route(thread, m.body, m.count) : m
      if (rest === undefined) return
      const session = this.options.session()
      if (session.driver !== undefined) this.options.send([header(MsgType.Submit, rest.count), rest.body])
      else this.refuse(end, rest.body, rest.count)
      return
    }
    if (m.kind !== 'results') return
    // One frame per registration the answered tasks came under (almost always one).
    const session = this.options.session()
    let origin: Origin | undefined
    let answered = 0
    for (const id of m.ids) {
      // Answered already (timed out): the result still goes, in its body, and the driver drops it as late.
      if (end.abandoned.delete(id)) continue
      const o = end.seceded.get(id)
      if (o === undefined) {
        end.early.add(id)
        origin ??= session
        continue
      }
      end.seceded.delete(id)
      answered++
      origin ??= o
    }
    this.changed(-answered)
    if (origin !== undefined && origin.driver !== undefined && origin.driver === session.driver)
      this.options.send([header(MsgType.Results, m.ids.length, origin.registration), m.body])
  }

  /** No driver to ask: the thread's requests fail at once (a tell is answered too; the thread ignores it). */
  private refuse(end: ThreadEnd, body: Uint8Array, count: number): void {
    const out = new ResultsWriter()
    const wire = toWireError(new WorkerCrashedError('the agent has no driver now; the request was not sent'))
    try {
      // Handles stay handles: a request carrying a value this node does not hold is refused like the others.
      withHandlesKept(() =>
        readRequestBody(
          body,
          count,
          (reqId) => out.add(reqId, Status.Failed, wire),
          (reqId) => out.add(reqId, Status.Failed, wire),
        ),
      )
    } catch {
      return
    }
    const n = out.count
    const message: DownMessage = { body: own(out.take()), count: n }
    end.down.postMessage(message)
  }
}
