/**
 * Shared inputs, agent side: a task frame names, in its header, the shared
 * values its tasks carry. On the brokered designs any agent may take it from
 * the shared queue; on ZeroMQ the driver sent the values ahead of it, but the
 * node may have lost one since (its cache refused a Put it could not hold).
 * Those the node lacks are fetched from the driver (one Fetch per value, however
 * many frames wait for it); the frame waits for them, the node's other frames
 * do not. A value the driver cannot send (released meanwhile, or more than this
 * node can hold) fails the tasks of the frames that need it; the other tasks
 * of those frames run once the rest of their values are here. The values a
 * frame needs are pinned in the cache until the frame is answered or given
 * back, so a Drop that crosses a frame just taken waits for it.
 */
import { SharedValueError, toWireError } from '../errors.js'
import { decodeTaskBody, encodeTaskBody, ResultsWriter, type TaskItem } from '../protocol/bodies.js'
import { header } from '../protocol/codec.js'
import { MsgType, Status, type SharedUnavailableCode } from '../protocol/messages.js'
import { carriedOf, withHandlesKept, writtenHere } from '../protocol/shared-ref.js'
import type { Delivery, Parts } from '../transport/transport.js'
import type { SharedCache } from './shared-cache.js'

/** A frame taken from the shared queue, ready to run once the values it needs are held. */
export interface TakenFrame {
  readonly body: Uint8Array
  readonly count: number
  readonly timeoutMs: number | undefined
  /** The broker's handle; on ZeroMQ a token of the agent's own, acknowledged alike once the frame is answered. */
  readonly delivery: Delivery
  /** Brokered designs: resolves once the broker holds the agent's word that it took the frame. */
  readonly taken?: Promise<void> | undefined
}

export interface FetchContext {
  /** Sends a message to the driver. */
  send(parts: Parts): void
  /** Hands a frame whose values are all held to the runner. */
  run(frame: TakenFrame): void
  /** Sends these results (a Results message) of a frame's tasks that cannot run, and acknowledges the frame if `delivery` is given. */
  answer(parts: Parts | undefined, delivery?: Delivery): void
  /** The registration results are sent under. */
  registration(): string
  /** The node's id, for error messages. */
  readonly nodeId: string
  badFrame(): void
}

/** Why the driver cannot send a value: the code and message its tasks fail with. */
interface Unavailable {
  readonly code: SharedUnavailableCode
  readonly message: string
}

interface Waiting {
  readonly frame: TakenFrame
  readonly missing: Set<string>
  /** Values the driver cannot send: the tasks that carry one fail. */
  unavailable?: Map<string, Unavailable>
}

export class SharedFetches {
  /** Frames waiting for values, in the order they were taken. */
  private waiting: Waiting[] = []
  /** Values asked for and not answered yet. */
  private readonly asked = new Set<string>()
  /** The values each frame taken pinned, by its delivery. */
  private readonly pinned = new Map<Delivery, readonly string[]>()

  constructor(
    private readonly cache: SharedCache,
    private readonly cx: FetchContext,
  ) {}

  /** Frames waiting for values now. */
  get waitingFrames(): number {
    return this.waiting.length
  }

  /** A frame was taken: it runs now if the node holds every value it needs, or waits for those it lacks. */
  taken(frame: TakenFrame, hashes: readonly string[]): void {
    this.cache.pin(hashes)
    this.pinned.set(frame.delivery, hashes)
    const missing = new Set<string>()
    for (const hash of hashes) if (!this.cache.has(hash)) missing.add(hash)
    if (missing.size === 0) {
      this.cx.run(frame)
      return
    }
    this.waiting.push({ frame, missing })
    const ask = [...missing].filter((hash) => !this.asked.has(hash))
    for (const hash of ask) this.asked.add(hash)
    if (ask.length > 0) this.cx.send([header(MsgType.Fetch, ask)])
  }

  /** A value arrived (a Put): the frames it completes run. */
  arrived(hash: string): void {
    this.asked.delete(hash)
    this.settle(hash, undefined)
  }

  /**
   * The driver cannot send `hash` to this node: the tasks of the frames that
   * need it fail with `code`; their other tasks run once the rest of their
   * frame's values are here.
   */
  unavailable(hash: string, code: SharedUnavailableCode, message: string): void {
    this.asked.delete(hash)
    this.settle(hash, { code, message })
  }

  /** These frames were answered or given back: their values are no longer pinned by them. */
  acked(deliveries: readonly Delivery[]): void {
    for (const d of deliveries) {
      const hashes = this.pinned.get(d)
      if (hashes === undefined) continue
      this.pinned.delete(d)
      this.cache.unpin(hashes)
    }
  }

  /**
   * The driver is gone or replaced, or the agent leaves: the frames still
   * waiting are acknowledged unrun (the driver sends again what this node
   * took) and the cache starts empty.
   */
  reset(): void {
    for (const w of this.waiting.splice(0)) this.cx.answer(undefined, w.frame.delivery)
    this.asked.clear()
    this.pinned.clear()
    this.cache.clear()
  }

  private settle(hash: string, unavailable: Unavailable | undefined): void {
    const done: Waiting[] = []
    this.waiting = this.waiting.filter((w) => {
      if (!w.missing.delete(hash)) return true
      if (unavailable !== undefined) (w.unavailable ??= new Map()).set(hash, unavailable)
      if (w.missing.size > 0) return true
      done.push(w)
      return false
    })
    for (const w of done) {
      if (w.unavailable === undefined) this.cx.run(w.frame)
      else this.split(w.frame, w.unavailable)
    }
  }

  /**
   * Answers the tasks of `frame` that carry a value of `unavailable` with its
   * error, and runs the others (a frame of theirs alone, under the same
   * delivery: it is acknowledged once they are answered). The body is read
   * with handles kept, so those it writes again are the same handles.
   */
  private split(frame: TakenFrame, unavailable: ReadonlyMap<string, Unavailable>): void {
    let tasks: TaskItem[]
    try {
      tasks = withHandlesKept(() => decodeTaskBody(frame.body))
    } catch {
      this.cx.badFrame()
      this.cx.answer(undefined, frame.delivery)
      return
    }
    const results = new ResultsWriter()
    const rest: TaskItem[] = []
    for (const t of tasks) {
      const hash = carriedOf(t.args, (h) => unavailable.has(h))
      if (hash === undefined) {
        rest.push(t)
        continue
      }
      const { code, message } = unavailable.get(hash)!
      results.add(t.id, Status.Failed, toWireError(new SharedValueError(code, `task "${t.name}" on node ${this.cx.nodeId}: ${message}`)))
    }
    const failed: Parts | undefined = results.count > 0 ? [header(MsgType.Results, results.count, this.cx.registration()), results.take()] : undefined
    if (rest.length === 0) {
      this.cx.answer(failed, frame.delivery)
      return
    }
    if (failed !== undefined) this.cx.answer(failed)
    const body = writtenHere(() => encodeTaskBody(rest))
    this.cx.run({ ...frame, body, count: rest.length })
  }
}
