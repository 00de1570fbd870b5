/**
 * Shared inputs, agent side: a task frame names, in its header, the shared
 * values its tasks carry. On the brokered designs any agent may take it from
 * the shared queue; on ZeroMQ the driver sent the values ahead of it, but the
 * node may have lost one since (its cache refused a Put it could not hold).
 * Those the node lacks are fetched from the driver (one Fetch per value, however
 * many frames wait for it); the frame waits for them, the node's other frames
 * do not. A value the driver cannot send (released meanwhile, or more than this
 * node can hold) fails the tasks of the frames that need it. The values a
 * frame needs are pinned in the cache until the frame is answered or given
 * back, so a Drop that crosses a frame just taken waits for it.
 */
import { SharedValueError, toWireError } from '../errors.js'
import { decodeTaskBody, ResultsWriter } from '../protocol/bodies.js'
import { header } from '../protocol/codec.js'
import { MsgType, Status, type SharedUnavailableCode } from '../protocol/messages.js'
import { withoutSharedValues } from '../protocol/shared-ref.js'
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
  /** Answers a frame that cannot run with these results (a Results message), and acknowledges it. */
  answer(parts: Parts | undefined, delivery: Delivery): void
  /** The registration results are sent under. */
  registration(): string
  /** The node's id, for error messages. */
  readonly nodeId: string
  badFrame(): void
}

interface Waiting {
  readonly frame: TakenFrame
  readonly missing: Set<string>
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
    this.settle(hash, (frame) => this.cx.run(frame))
  }

  /** The driver cannot send `hash` to this node: the tasks of the frames that need it fail with `code`. */
  unavailable(hash: string, code: SharedUnavailableCode, message: string): void {
    this.asked.delete(hash)
    this.settle(hash, (frame) => this.fail(frame, code, message))
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

  private settle(hash: string, then: (frame: TakenFrame) => void): void {
    const done: TakenFrame[] = []
    this.waiting = this.waiting.filter((w) => {
      if (!w.missing.delete(hash)) return true
      if (w.missing.size > 0) return true
      done.push(w.frame)
      return false
    })
    for (const frame of done) then(frame)
  }

  /** Answers every task of `frame` with the error (its arguments are not decoded: the value they need is not here). */
  private fail(frame: TakenFrame, code: SharedUnavailableCode, message: string): void {
    let tasks
    try {
      tasks = withoutSharedValues(() => decodeTaskBody(frame.body))
    } catch {
      this.cx.badFrame()
      this.cx.answer(undefined, frame.delivery)
      return
    }
    const results = new ResultsWriter()
    for (const t of tasks) results.add(t.id, Status.Failed, toWireError(new SharedValueError(code, `task "${t.name}" on node ${this.cx.nodeId}: ${message}`)))
    this.cx.answer([header(MsgType.Results, tasks.length, this.cx.registration()), results.take()], frame.delivery)
  }
}
