/**
 * Schedulers: which queued task goes where, in frames of what size.
 *
 * - {@link CreditScheduler} (ZeroMQ, routed): the driver addresses each frame
 *   to one node, within the node's credit window: all of every node's free
 *   credit when the queue fills it, else levelling the tasks in flight per
 *   thread.
 * - {@link SharedQueueScheduler} (brokered designs): the broker hands frames
 *   to whichever agent has room, so the driver only bounds what it has
 *   published and not seen settled.
 *
 * Both size frames the same way ({@link FrameSizer}) and encode them through
 * {@link TaskFrames}, which splits a frame over `maxFrameBytes` and fails only
 * the tasks that cannot be carried.
 */
import { randomInt } from 'node:crypto'
import { SerializationError } from '../errors.js'
import { NumberTaskBodyWriter, TaskBodyWriter } from '../protocol/bodies.js'
import { encode, findUnserializable, header } from '../protocol/codec.js'
import { MsgType } from '../protocol/messages.js'
import { takeWrittenRefs, type SharedRef } from '../protocol/shared-ref.js'
import type { Parts } from '../transport/transport.js'
import { Deque } from '../util/deque.js'
import type { Ledger, TaskEntry, TaskHolder } from './ledger.js'
import type { ClusterNode } from './membership.js'

/** Most tasks in one frame under `batch: 'auto'`. */
const MAX_AUTO_BATCH = 1024
/** 'auto' batching aims for frames of about this many bytes. */
const TARGET_FRAME_BYTES = 256 * 1024
/** Room left in a frame for the header and framing. */
export const FRAME_HEADROOM = 4096

/** Frame size: a fixed number of tasks, or (auto) about TARGET_FRAME_BYTES from the measured bytes per task. */
export class FrameSizer {
  private bytesPerTask = 16

  constructor(private readonly batch: 'auto' | number) {}

  /** Most tasks per frame now. */
  max(): number {
    if (this.batch !== 'auto') return this.batch
    return Math.max(1, Math.min(MAX_AUTO_BATCH, Math.floor(TARGET_FRAME_BYTES / this.bytesPerTask)))
  }

  measured(bytes: number, tasks: number): void {
    this.bytesPerTask = this.bytesPerTask * 0.8 + (bytes / tasks) * 0.2
  }
}

/** Where a frame of tasks goes: a node or the shared queue, counting what it was sent and has not answered. */
export interface Placement extends TaskHolder {
  inFlight: number
}

/** Encodes task frames for one holder; splits what is too large, fails what cannot be carried. */
export class TaskFrames<P extends Placement> {
  /** Task frames put on the wire. */
  sent = 0

  constructor(
    private readonly ledger: Ledger,
    private readonly sizer: FrameSizer,
    private readonly maxFrameBytes: number,
    /** Puts the frame on the wire, to `holder`, with the shared-value handles its tasks carry. */
    private readonly put: (holder: P, parts: Parts, refs: readonly SharedRef[]) => void,
    private readonly fail: (e: TaskEntry, err: Error) => void,
    /** Brokered designs: the number a frame carries, given its tasks (recorded until an agent says it took them). */
    private readonly number?: (chunk: readonly TaskEntry[]) => number,
    /**
     * Fails the tasks of `chunk` that carry a shared value `holder` cannot hold (larger than its cache or its frame
     * limit), and returns them; undefined when every value fits.
     */
    private readonly unfit?: (holder: P, chunk: readonly TaskEntry[], refs: readonly SharedRef[]) => ReadonlySet<TaskEntry> | undefined,
  ) {}

  private encode(chunk: readonly TaskEntry[]): Buffer {
    const { ledger } = this
    // Handles written by an earlier attempt (a frame split or refused) are not this frame's.
    takeWrittenRefs()
    let numbers = true
    for (const e of chunk) {
      if (ledger.numberArgc(e) < 0) {
        numbers = false
        break
      }
    }
    if (numbers) {
      // Every argument a number: written straight to bytes, no argument list per task (the same bytes).
      const fast = new NumberTaskBodyWriter(chunk.length)
      for (const e of chunk) {
        const n = ledger.numberArgc(e)
        fast.add(ledger.id(e), ledger.name(e), n, n > 0 ? ledger.numberArg(e, 0) : 0, n > 1 ? ledger.numberArg(e, 1) : 0, n > 2 ? ledger.numberArg(e, 2) : 0)
      }
      return fast.encode()
    }
    const body = new TaskBodyWriter()
    for (const e of chunk) body.add(ledger.id(e), ledger.name(e), ledger.args(e))
    return body.encode()
  }

  /** Sends `chunk` to `holder` as one frame (or several, if it is too large); returns the tasks placed. */
  send(holder: P, chunk: TaskEntry[], timeoutMs: number | undefined): number {
    let body: Buffer
    try {
      body = this.encode(chunk)
    } catch {
      return this.sendEncodable(holder, chunk, timeoutMs)
    }
    const refs = takeWrittenRefs()
    // The frame's header lists the hashes of its values (for the node to fetch those it lacks), which counts against the limit too.
    const listed = refs.length > 0 ? hashes(refs) : undefined
    const size = body.length + (listed === undefined ? 0 : encode(listed).length)
    if (size > this.maxFrameBytes - FRAME_HEADROOM) {
      if (chunk.length === 1) {
        const e = chunk[0]!
        this.fail(e, new SerializationError(`arguments of task "${this.ledger.name(e)}" encode to ${size} bytes, over maxFrameBytes (${this.maxFrameBytes})`))
        return 0
      }
      const half = chunk.length >> 1
      return this.send(holder, chunk.slice(0, half), timeoutMs) + this.send(holder, chunk.slice(half), timeoutMs)
    }
    if (refs.length > 0 && this.unfit) {
      const failed = this.unfit(holder, chunk, refs)
      if (failed !== undefined) {
        const rest = chunk.filter((e) => !failed.has(e))
        return rest.length > 0 ? this.send(holder, rest, timeoutMs) : 0
      }
    }
    for (const e of chunk) this.ledger.hold(e, holder)
    holder.inFlight += chunk.length
    this.sizer.measured(body.length, chunk.length)
    let head: Buffer
    if (this.number) {
      // Any agent may take it: the hashes it needs travel in the header, for the taker to fetch those it lacks.
      const n = this.number(chunk)
      head =
        listed === undefined ? header(MsgType.Tasks, chunk.length, timeoutMs ?? null, n) : header(MsgType.Tasks, chunk.length, timeoutMs ?? null, n, listed)
    } else if (listed !== undefined) {
      // The node holds them unless its cache lost one (evicted, refused): then it fetches it, as on the brokered designs.
      head = header(MsgType.Tasks, chunk.length, timeoutMs ?? null, null, listed)
    } else head = timeoutMs === undefined ? header(MsgType.Tasks, chunk.length) : header(MsgType.Tasks, chunk.length, timeoutMs)
    this.sent++
    this.put(holder, [head, body], refs)
    return chunk.length
  }

  /**
   * A frame failed to encode: arguments are checked here, where encoding
   * failed, not in advance. The tasks whose arguments msgpack cannot carry
   * (named by a walk of them) fail with SerializationError, before anything
   * was sent; the rest go.
   */
  private sendEncodable(holder: P, chunk: TaskEntry[], timeoutMs: number | undefined): number {
    const { ledger } = this
    const ok: TaskEntry[] = []
    for (const e of chunk) {
      const bad = findUnserializable(ledger.args(e), 'args')
      if (bad === undefined) {
        ok.push(e)
        continue
      }
      this.fail(e, new SerializationError(`cannot send task "${ledger.name(e)}": ${bad}; msgpack cannot carry it`))
    }
    if (ok.length < chunk.length) return ok.length > 0 ? this.send(holder, ok, timeoutMs) : 0
    // The walk finds nothing (a getter that throws, nesting past the stack): each task is encoded alone to find it.
    if (chunk.length > 1) {
      const half = chunk.length >> 1
      return this.send(holder, chunk.slice(0, half), timeoutMs) + this.send(holder, chunk.slice(half), timeoutMs)
    }
    const e = chunk[0]!
    try {
      this.encode(chunk)
    } catch (err) {
      this.fail(e, new SerializationError(`cannot send task "${ledger.name(e)}": ${(err as Error).message}`, { cause: err }))
      return 0
    }
    // It encodes alone, yet not in its frame (a value that changed between reads).
    this.fail(e, new SerializationError(`cannot send task "${ledger.name(e)}": its arguments failed to encode in a frame`))
    return 0
  }
}

/** The distinct hashes of `refs`. */
function hashes(refs: readonly SharedRef[]): string[] {
  return [...new Set(refs.map((r) => r.hash))]
}

/** What both schedulers share: the queue of tasks waiting on the driver, and the frames. */
export abstract class Scheduler<P extends Placement = Placement> {
  readonly pending = new Deque<TaskEntry>()
  protected readonly sizer: FrameSizer
  protected readonly frames: TaskFrames<P>

  constructor(
    protected readonly ledger: Ledger,
    options: { batch: 'auto' | number; maxFrameBytes: number },
    put: (holder: P, parts: Parts, refs: readonly SharedRef[]) => void,
    fail: (e: TaskEntry, err: Error) => void,
    number?: (chunk: readonly TaskEntry[]) => number,
    unfit?: (holder: P, chunk: readonly TaskEntry[], refs: readonly SharedRef[]) => ReadonlySet<TaskEntry> | undefined,
  ) {
    this.sizer = new FrameSizer(options.batch)
    this.frames = new TaskFrames(ledger, this.sizer, options.maxFrameBytes, put, fail, number, unfit)
  }

  enqueue(e: TaskEntry): void {
    this.ledger.queued(e)
    this.pending.push(e)
  }

  /** Task frames sent so far. */
  get framesSent(): number {
    return this.frames.sent
  }

  /** Tasks taken back from a node go first, in the order they had. */
  requeue(entries: readonly TaskEntry[]): void {
    for (let i = entries.length - 1; i >= 0; i--) {
      this.ledger.queued(entries[i]!)
      this.pending.unshift(entries[i]!)
    }
  }

  /** Drops the whole queue (the driver closes, after settling every entry). */
  clear(): void {
    this.ledger.queueCleared(this.pending.clear())
  }

  /** Tasks waiting on the driver (withdrawn ones still in the queue not counted). */
  queued(): number {
    return this.pending.length - this.ledger.withdrawnInQueue
  }

  /** Tasks sent and not yet answered. */
  abstract inFlight(nodes: Iterable<ClusterNode>): number

  /** Hands queued tasks out as far as credit allows. */
  abstract flush(nodes: Iterable<ClusterNode>): void

  /**
   * Takes up to `n` unsettled tasks off the queue into `chunk`; a task under
   * a timeout is sent alone at once (the agent stops its thread if it
   * overruns) and counts against `n`, as does a task that travels alone (a
   * chunk of a reduce). Returns how many were placed or taken.
   */
  protected take(holder: P, chunk: TaskEntry[], n: number): number {
    const { ledger, pending } = this
    let used = 0
    while (chunk.length + used < n && pending.length > 0) {
      const e = pending.shift()!
      if (!ledger.dequeued(e)) continue
      const timeoutMs = ledger.options(e)?.timeoutMs
      if (timeoutMs === undefined && ledger.options(e)?.alone !== true) chunk.push(e)
      else {
        used++
        this.frames.send(holder, [e], timeoutMs)
      }
    }
    return used + chunk.length
  }
}

/**
 * Routed designs: hands queued tasks to nodes with free credit. A queue
 * that fills every node's credit gives each node all of its free credit; a
 * smaller one is spread so that the tasks in flight per thread come out as
 * level as the credit allows ({@link levelShares}), not in proportion to the
 * windows, which were measured on the tasks each node ran last and may say
 * nothing of these. A frame never holds more than one thread's share of a
 * node's window, so an agent can keep all its threads busy without
 * splitting frames.
 */
export class CreditScheduler extends Scheduler<ClusterNode> {
  inFlight(nodes: Iterable<ClusterNode>): number {
    let n = 0
    for (const node of nodes) n += node.inFlight
    return n
  }

  flush(nodes: Iterable<ClusterNode>): void {
    if (this.pending.length === 0) return
    const ready: ClusterNode[] = []
    let totalFree = 0
    for (const node of nodes) {
      const free = node.free
      if (free > 0) {
        ready.push(node)
        totalFree += free
      }
    }
    if (ready.length === 0) return
    const want = this.pending.length
    const shares = want >= totalFree ? ready.map((node) => node.free) : levelShares(ready, want)
    const batchMax = this.sizer.max()
    for (let i = 0; i < ready.length; i++) {
      const node = ready[i]!
      let share = shares[i]!
      // At most one thread's share per frame, so every thread of the node gets a frame of its own.
      const perFrame = Math.max(1, Math.min(batchMax, Math.ceil(Math.min(node.window, share) / node.info.threads)))
      while (share > 0 && this.pending.length > 0) {
        const chunk: TaskEntry[] = []
        share -= this.take(node, chunk, Math.min(share, perFrame))
        if (chunk.length > 0) this.frames.send(node, chunk, undefined)
      }
    }
  }
}

/** What {@link levelShares} needs to know of a node. */
export interface Load {
  readonly inFlight: number
  readonly free: number
  readonly info: { readonly threads: number }
}

/**
 * Splits `want` tasks (fewer than the nodes' free credit together) so that
 * each node's tasks in flight per thread come out as level as possible:
 * water-filling, each node taking `level × threads − inFlight` tasks, at
 * least none and at most its free credit, for the one level at which the
 * shares add up to `want`. The tasks the rounding leaves go one each to the
 * nodes that would stand lowest with one more (the first of equals). A task
 * submitted alone thus goes where it leaves the least load per thread, and a
 * burst of long tasks after many short ones is spread by threads, not by
 * windows sized on the short ones.
 */
export function levelShares(nodes: readonly Load[], want: number): number[] {
  // `want` is at least 1: the sweep below first meets it on a rise.
  // Where each node starts taking tasks (its load per thread) and where its credit runs out.
  const events: { at: number; slope: number }[] = []
  for (const n of nodes) {
    const threads = Math.max(1, n.info.threads)
    events.push({ at: n.inFlight / threads, slope: threads }, { at: (n.inFlight + n.free) / threads, slope: -threads })
  }
  events.sort((a, b) => a.at - b.at)
  // Sweeps the level up: the shares grow by `slope` tasks per unit of level between two events.
  let level = events[0]!.at
  let taken = 0
  let slope = 0
  for (const e of events) {
    const next = taken + slope * (e.at - level)
    // First reached after a rise (`taken` was short of it): the slope here is not zero.
    if (next >= want) {
      level = e.at - (next - want) / slope
      break
    }
    taken = next
    level = e.at
    slope += e.slope
  }
  const shares = nodes.map((n) => Math.min(n.free, Math.max(0, Math.floor(level * Math.max(1, n.info.threads) - n.inFlight))))
  // Fewer left over than nodes with a fraction cut off, each of which has room for one more.
  const left = want - shares.reduce((a, b) => a + b, 0)
  const lowest = nodes
    .map((n, i) => ({ i, load: (n.inFlight + shares[i]! + 1) / Math.max(1, n.info.threads) }))
    .filter(({ i }) => shares[i]! < nodes[i]!.free)
    .sort((a, b) => a.load - b.load) // stable: equals stay in node order
  for (const { i } of lowest.slice(0, left)) shares[i] = shares[i]! + 1
  return shares
}

/** The shared task queue of a brokered design, as the holder of the tasks published to it and not yet taken. */
export class SharedQueue implements Placement {
  readonly nodeId = undefined
  /** Tasks published and not yet taken by an agent (or settled). */
  inFlight = 0

  taskLeft(): void {
    this.inFlight--
  }
}

/**
 * Brokered designs: the broker hands frames to whichever agent has room, so
 * the driver bounds what it has published and not seen settled (twice the
 * agents' windows together), and sizes frames to one thread's share of the
 * average window, as for ZeroMQ.
 *
 * Each frame carries a number, and the driver keeps its tasks under that
 * number until an agent says it took the frame (a Taken frame): from then on
 * that node holds them, as a node holds what ZeroMQ sent it, and its loss
 * sends them again. The first agent to say so is the one: the broker's own
 * redelivery of a frame reaches the next agent marked as such, and that
 * agent drops it unrun and says so, so that the driver sends again what no
 * one took.
 */
export class SharedQueueScheduler extends Scheduler<SharedQueue> {
  readonly queue: SharedQueue
  /** Frames published and not yet taken, by number: the ids of their tasks (slots are reused once an entry settles). */
  private readonly published: Map<number, number[]>

  constructor(
    ledger: Ledger,
    options: { batch: 'auto' | number; maxFrameBytes: number },
    put: (holder: SharedQueue, parts: Parts) => void,
    fail: (e: TaskEntry, err: Error) => void,
  ) {
    const published = new Map<number, number[]>()
    // Numbers start at a random point: a Taken meant for an earlier driver of the same cluster id cannot match one of ours.
    let next = randomInt(1, 2 ** 31)
    super(ledger, options, put, fail, (chunk) => {
      const n = next++
      published.set(
        n,
        chunk.map((e) => ledger.id(e)),
      )
      return n
    })
    this.queue = new SharedQueue()
    this.published = published
  }

  /**
   * An agent says it took frame `frameId`: how many tasks the frame carries
   * (the agent answers each), and those still on the shared queue (not
   * settled, not taken by another); undefined when the frame is unknown or
   * was claimed before. Each frame is claimed once.
   */
  claim(frameId: number): { size: number; entries: TaskEntry[] } | undefined {
    const ids = this.published.get(frameId)
    if (ids === undefined) return undefined
    this.published.delete(frameId)
    const entries: TaskEntry[] = []
    for (const id of ids) {
      const e = this.ledger.get(id)
      if (e !== undefined && this.ledger.holder(e) === this.queue) entries.push(e)
    }
    return { size: ids.length, entries }
  }

  /** Tasks published and not answered: on the shared queue, or taken by a node. */
  inFlight(nodes: Iterable<ClusterNode>): number {
    let n = this.queue.inFlight
    for (const node of nodes) n += node.inFlight
    return n
  }

  flush(nodes: Iterable<ClusterNode>): void {
    if (this.pending.length === 0) return
    let windows = 0
    let threads = 0
    let held = this.queue.inFlight
    for (const node of nodes) {
      held += node.inFlight
      if (node.state !== 'up') continue
      windows += node.window
      threads += node.info.threads
    }
    if (windows === 0) return
    const cap = 2 * windows
    const perFrame = Math.max(1, Math.min(this.sizer.max(), Math.ceil(windows / threads)))
    const queue = this.queue
    while (held < cap && this.pending.length > 0) {
      const chunk: TaskEntry[] = []
      const before = queue.inFlight
      this.take(queue, chunk, Math.min(perFrame, cap - held))
      if (chunk.length > 0) this.frames.send(queue, chunk, undefined)
      held += queue.inFlight - before
    }
  }
}
