/**
 * The ledger: every task and actor message the driver has sent and not yet
 * settled, by id. It settles each exactly once (a second result, or one for
 * a withdrawn task, is dropped and counted), and it is the one place that
 * decides whether a failed attempt may run again: user failures (threw,
 * timed out) spend `retries`, infrastructure failures (crash, out of memory,
 * node lost) spend `maxRetries`.
 *
 * It holds no object per task: an entry is a slot, an index into parallel
 * arrays (struct of arrays), taken from a free list and given back when the
 * entry settles; ids map to slots through an open-addressing table of typed
 * arrays. A million outstanding calls are a million promises and nothing
 * else for the garbage collector to copy (see docs/architecture.md).
 */
import { randomInt } from 'node:crypto'
import { NodeLostError } from '../errors.js'
import type { ActorOp } from '../protocol/messages.js'
import type { ResolvedTaskOptions } from './task-options.js'

/** Where a task is held while it runs: a node, or the shared queue of a brokered design. */
export interface TaskHolder {
  /** The node's id, for failure records; undefined for the shared queue. */
  readonly nodeId: string | undefined
  /** The task left this holder (settled or taken back). */
  taskLeft(): void
}

/** What the ledger knows of the actor a message is for. */
export interface ActorTarget {
  readonly id: string
}

/**
 * One task or actor message while it is unsettled: a slot of the ledger.
 * A slot is reused once its entry settles, so it is only meaningful until
 * then (the scheduler's queue is the one holder that outlives settlement,
 * and the ledger keeps a queued slot until it is taken off the queue).
 */
export type TaskEntry = number

/** Receives the outcomes of many entries (one `map`): `seq` is the number the entry was added with. */
export interface ResultSink {
  settled(seq: number, ok: boolean, value: unknown): void
}

/** What settles an entry: the resolve function of a call's promise, or a sink. */
export type Settle = ((value: unknown) => void) | ResultSink

/** Which budget a failed attempt spends. */
export type RetryKind = 'user' | 'infra'

const INFRA_CODES: ReadonlySet<string> = new Set(['ERR_WORKER_CRASHED', 'ERR_OUT_OF_MEMORY'])

/**
 * Which budget a failed attempt may retry on: a task that threw (`threw`)
 * or timed out spends `retries`; a crashed or out-of-memory thread spends
 * `maxRetries`; any other runtime failure (unknown task, unserialisable
 * result) is final.
 */
export function retryKindOf(threw: boolean, code: string | undefined): RetryKind | undefined {
  if (threw || code === 'ERR_TIMEOUT') return 'user'
  return code !== undefined && INFRA_CODES.has(code) ? 'infra' : undefined
}

export interface LedgerCounters {
  tasksSubmitted: number
  tasksSucceeded: number
  tasksFailed: number
  tasksCancelled: number
  /** Tasks sent again: after a node was lost or left, a worker crashed, or (with `retries`) the task failed. */
  tasksRetried: number
  /** Tasks put back on the queue because their node left or was lost. */
  requeued: number
  lateResultsDropped: number
}

/** What the ledger tells the rest of the driver (monitoring and events). */
export interface LedgerHooks {
  succeeded(id: number, name: string, now: number): void
  failed(id: number, name: string, err: Error, node: string | undefined): void
  retried(id: number, name: string, args: readonly unknown[], cause: Error, attempt: number): void
}

/** The slot has an unsettled entry. */
const LIVE = 1
/** The slot is in a scheduler's queue: it is freed when taken off, not when it settles. */
const QUEUED = 2

const NO_SLOT = -1
const INITIAL_SLOTS = 1024
/**
 * Argument lists this short are copied into the ledger's own arrays, so the
 * caller's list dies young (numbers in an old array cost the collector
 * nothing); longer ones are kept as they are.
 */
const INLINE_ARGS = 3
/** `argc` of a slot whose list is kept whole. */
const KEPT_WHOLE = 255

/**
 * A promise rejected through its resolve function: the ledger keeps only
 * `resolve` per call (one closure fewer for the collector to copy), and
 * rejections are rare.
 */
function rejecting(err: unknown): PromiseLike<never> {
  return {
    then: (_ok, fail) => {
      fail?.(err)
      return undefined as never
    },
  }
}

/**
 * Ids to slots: open addressing on typed arrays, Robin Hood linear probing
 * (an entry farther from its home takes the place of one nearer to its own),
 * deletion by backward shift. Ids are sequential, so `id & mask` puts them
 * side by side, each at its home: a lookup reads one cell next to the last
 * one read, and a deletion stops at the next cell (an entry at its home).
 */
class IdIndex {
  private keys: Float64Array
  private slots: Int32Array
  private mask: number
  private count = 0

  constructor(size: number) {
    this.keys = new Float64Array(size)
    this.slots = new Int32Array(size)
    this.mask = size - 1
  }

  /** How far the entry at `i` with id `k` is from its home. */
  private distance(k: number, i: number): number {
    return (i - (k & this.mask)) & this.mask
  }

  get(id: number): number {
    const { keys, mask } = this
    for (let i = id & mask, d = 0; ; i = (i + 1) & mask, d++) {
      const k = keys[i]!
      if (k === id) return this.slots[i]!
      // Empty, or an entry nearer its home than this id would be: the id is not here.
      if (k === 0 || this.distance(k, i) < d) return NO_SLOT
    }
  }

  set(id: number, slot: number): void {
    if (2 * (this.count + 1) > this.keys.length) this.grow()
    const { keys, slots, mask } = this
    let k = id
    let v = slot
    for (let i = id & mask, d = 0; ; i = (i + 1) & mask, d++) {
      const cur = keys[i]!
      if (cur === 0) {
        keys[i] = k
        slots[i] = v
        this.count++
        return
      }
      const dCur = this.distance(cur, i)
      if (dCur < d) {
        const w = slots[i]!
        keys[i] = k
        slots[i] = v
        k = cur
        v = w
        d = dCur
      }
    }
  }

  delete(id: number): void {
    const { keys, slots, mask } = this
    let i = id & mask
    for (let d = 0; ; i = (i + 1) & mask, d++) {
      const k = keys[i]!
      if (k === id) break
      if (k === 0 || this.distance(k, i) < d) return
    }
    // Backward shift until an empty cell or an entry at its home.
    for (let j = (i + 1) & mask; keys[j] !== 0 && this.distance(keys[j]!, j) !== 0; i = j, j = (j + 1) & mask) {
      keys[i] = keys[j]!
      slots[i] = slots[j]!
    }
    keys[i] = 0
    this.count--
  }

  private grow(): void {
    const { keys, slots } = this
    this.keys = new Float64Array(keys.length * 2)
    this.slots = new Int32Array(keys.length * 2)
    this.mask = this.keys.length - 1
    this.count = 0
    for (let i = 0; i < keys.length; i++) if (keys[i] !== 0) this.set(keys[i]!, slots[i]!)
  }
}

export class Ledger {
  readonly counters: LedgerCounters = {
    tasksSubmitted: 0,
    tasksSucceeded: 0,
    tasksFailed: 0,
    tasksCancelled: 0,
    tasksRetried: 0,
    requeued: 0,
    lateResultsDropped: 0,
  }
  // Ids start at a random point: a stray result of an earlier driver on the same address cannot match one of ours.
  private next = randomInt(1, 2 ** 31)
  private live = 0
  /** Entries settled while in a scheduler's queue (their slots wait to be taken off it). */
  private settledInQueue = 0

  // One array per field, indexed by slot.
  private state = new Uint8Array(INITIAL_SLOTS)
  private ids = new Float64Array(INITIAL_SLOTS)
  private seqs = new Float64Array(INITIAL_SLOTS)
  private ops = new Uint8Array(INITIAL_SLOTS)
  private userRetries = new Uint32Array(INITIAL_SLOTS)
  private infraRetries = new Uint32Array(INITIAL_SLOTS)
  private argc = new Uint8Array(INITIAL_SLOTS)
  private readonly arg0: unknown[] = []
  private readonly arg1: unknown[] = []
  private readonly arg2: unknown[] = []
  private readonly names: (string | undefined)[] = []
  private readonly argLists: (unknown[] | undefined)[] = []
  private readonly settles: (Settle | undefined)[] = []
  private readonly holders: (TaskHolder | undefined)[] = []
  private readonly optionSets: (ResolvedTaskOptions | undefined)[] = []
  private readonly actors: (ActorTarget | undefined)[] = []
  /** Free slots, a stack: the slot freed last is reused first (warm in cache). */
  private free = new Int32Array(INITIAL_SLOTS)
  private freeTop = 0
  private capacity = 0
  private readonly index = new IdIndex(2 * INITIAL_SLOTS)

  constructor(
    private readonly hooks: LedgerHooks,
    /** `maxRetries` of tasks submitted without options of their own. */
    private readonly defaultMaxRetries: number,
  ) {
    this.grow(INITIAL_SLOTS)
  }

  /** Unsettled entries. */
  get size(): number {
    return this.live
  }

  /** The id the next entry would get (the monitor may move it forward to sample it). */
  get nextId(): number {
    return this.next
  }

  private grow(to: number): void {
    const widen = <A extends Uint8Array | Uint32Array | Float64Array | Int32Array>(a: A, make: (n: number) => A): A => {
      if (a.length >= to) return a
      const b = make(to)
      b.set(a)
      return b
    }
    this.state = widen(this.state, (n) => new Uint8Array(n))
    this.ids = widen(this.ids, (n) => new Float64Array(n))
    this.seqs = widen(this.seqs, (n) => new Float64Array(n))
    this.ops = widen(this.ops, (n) => new Uint8Array(n))
    this.userRetries = widen(this.userRetries, (n) => new Uint32Array(n))
    this.infraRetries = widen(this.infraRetries, (n) => new Uint32Array(n))
    this.argc = widen(this.argc, (n) => new Uint8Array(n))
    this.free = widen(this.free, (n) => new Int32Array(n))
    for (const a of [this.names, this.argLists, this.arg0, this.arg1, this.arg2, this.settles, this.holders, this.optionSets, this.actors] as unknown[][]) {
      // One allocation of the new length (holes read as undefined), not one push per slot.
      a.length = to
    }
    // Pushed highest first, so slots are handed out from 0 up.
    for (let s = to - 1; s >= this.capacity; s--) this.free[this.freeTop++] = s
    this.capacity = to
  }

  /**
   * Records a new entry under `id` (≥ nextId); `settle` receives its outcome
   * (with `seq`, when it is a sink). Returns its slot.
   */
  add(
    id: number,
    name: string,
    args: unknown[],
    settle: Settle,
    seq: number,
    actor: ActorTarget | undefined,
    op: ActorOp,
    options: ResolvedTaskOptions | undefined,
    holder: TaskHolder | undefined,
  ): TaskEntry {
    this.next = id + 1
    if (this.freeTop === 0) this.grow(this.capacity * 2)
    const s = this.free[--this.freeTop]!
    this.state[s] = LIVE
    this.ids[s] = id
    this.seqs[s] = seq
    this.ops[s] = op
    this.userRetries[s] = 0
    this.infraRetries[s] = 0
    this.names[s] = name
    const n = args.length
    if (n <= INLINE_ARGS) {
      this.argc[s] = n
      if (n > 0) this.arg0[s] = args[0]
      if (n > 1) this.arg1[s] = args[1]
      if (n > 2) this.arg2[s] = args[2]
    } else {
      this.argc[s] = KEPT_WHOLE
      this.argLists[s] = args
    }
    this.settles[s] = settle
    this.holders[s] = holder
    this.optionSets[s] = options
    this.actors[s] = actor
    this.index.set(id, s)
    this.live++
    if (actor === undefined) this.counters.tasksSubmitted++
    return s
  }

  // --- reading an entry ----------------------------------------------------------

  id(e: TaskEntry): number {
    return this.ids[e]!
  }

  name(e: TaskEntry): string {
    return this.names[e]!
  }

  /** The entry's argument list (a new array when it was copied in; see INLINE_ARGS). */
  args(e: TaskEntry): unknown[] {
    switch (this.argc[e]) {
      case 0:
        return []
      case 1:
        return [this.arg0[e]]
      case 2:
        return [this.arg0[e], this.arg1[e]]
      case 3:
        return [this.arg0[e], this.arg1[e], this.arg2[e]]
      default:
        return this.argLists[e]!
    }
  }

  /**
   * The entry's number of arguments when they are at most three and all
   * numbers (read them with {@link numberArg}, no list made); -1 otherwise.
   */
  numberArgc(e: TaskEntry): number {
    const n = this.argc[e]!
    if (n === KEPT_WHOLE) return -1
    if (n > 0 && typeof this.arg0[e] !== 'number') return -1
    if (n > 1 && typeof this.arg1[e] !== 'number') return -1
    if (n > 2 && typeof this.arg2[e] !== 'number') return -1
    return n
  }

  /** Argument `i` (0 to 2) of an entry whose {@link numberArgc} is more than `i`. */
  numberArg(e: TaskEntry, i: 0 | 1 | 2): number {
    return (i === 0 ? this.arg0[e] : i === 1 ? this.arg1[e] : this.arg2[e]) as number
  }

  op(e: TaskEntry): ActorOp {
    return this.ops[e] as ActorOp
  }

  actor(e: TaskEntry): ActorTarget | undefined {
    return this.actors[e]
  }

  options(e: TaskEntry): ResolvedTaskOptions | undefined {
    return this.optionSets[e]
  }

  holder(e: TaskEntry): TaskHolder | undefined {
    return this.holders[e]
  }

  /** Retries spent: on user failures (threw, timed out), on infrastructure failures (crash, out of memory, node lost). */
  retries(e: TaskEntry): { user: number; infra: number } {
    return { user: this.userRetries[e]!, infra: this.infraRetries[e]! }
  }

  /** Whether the entry settled (a freed slot counts as settled). */
  settled(e: TaskEntry): boolean {
    return (this.state[e]! & LIVE) === 0
  }

  /** The unsettled entry with this id, if any. */
  get(id: number): TaskEntry | undefined {
    const s = this.index.get(id)
    return s === NO_SLOT ? undefined : s
  }

  /** Every unsettled entry (queued or sent). */
  *unsettled(): IterableIterator<TaskEntry> {
    for (let s = 0; s < this.capacity; s++) if ((this.state[s]! & LIVE) !== 0) yield s
  }

  /** The unsettled entries held by `holder`, in the order they were added. */
  entriesHeldBy(holder: TaskHolder): TaskEntry[] {
    const out: TaskEntry[] = []
    for (let s = 0; s < this.capacity; s++) if (this.holders[s] === holder && (this.state[s]! & LIVE) !== 0) out.push(s)
    return out.sort((a, b) => this.ids[a]! - this.ids[b]!)
  }

  // --- the scheduler's queue ------------------------------------------------------

  /** The entry goes into a scheduler's queue: its slot stays reserved until {@link dequeued}. */
  queued(e: TaskEntry): void {
    this.state[e]! |= QUEUED
  }

  /** The entry was taken off the queue: true if it is still to be sent; false if it settled meanwhile (its slot is freed). */
  dequeued(e: TaskEntry): boolean {
    const st = this.state[e]!
    this.state[e] = st & ~QUEUED
    if ((st & LIVE) !== 0) return true
    this.settledInQueue--
    this.freeSlot(e)
    return false
  }

  /** The queue was dropped whole (the driver closes): slots of settled entries in it are freed. */
  queueCleared(entries: readonly TaskEntry[]): void {
    for (const e of entries) this.dequeued(e)
  }

  /** Queued entries that settled while waiting (the queue's length minus this is what it really holds). */
  get withdrawnInQueue(): number {
    return this.settledInQueue
  }

  // --- settlement -----------------------------------------------------------------

  private freeSlot(s: number): void {
    this.names[s] = undefined
    this.free[this.freeTop++] = s
  }

  /** Marks an entry settled and forgets it; returns its settle target, or undefined when it already was. */
  private settle(e: TaskEntry): Settle | undefined {
    const st = this.state[e]!
    if ((st & LIVE) === 0) return undefined
    const settle = this.settles[e]
    this.state[e] = st & ~LIVE
    this.index.delete(this.ids[e]!)
    this.live--
    this.release(e)
    this.settles[e] = undefined
    const n = this.argc[e]!
    if (n === KEPT_WHOLE) this.argLists[e] = undefined
    else {
      if (n > 0) this.arg0[e] = undefined
      if (n > 1) this.arg1[e] = undefined
      if (n > 2) this.arg2[e] = undefined
    }
    this.optionSets[e] = undefined
    this.actors[e] = undefined
    if ((st & QUEUED) !== 0) this.settledInQueue++
    else this.freeSlot(e)
    return settle
  }

  /** The entry leaves the node or shared queue that held it. */
  release(e: TaskEntry): void {
    const h = this.holders[e]
    if (h === undefined) return
    this.holders[e] = undefined
    h.taskLeft()
  }

  /** The entry is now held by `holder` (sent to it). */
  hold(e: TaskEntry, holder: TaskHolder): void {
    this.holders[e] = holder
  }

  /**
   * The entry a result answers; undefined (counted as a late result, to be
   * dropped) when it already settled — a duplicate after a redelivery, or an
   * answer to a withdrawn task — or, given `from`, when another holds it.
   */
  answered(id: unknown, from?: TaskHolder): TaskEntry | undefined {
    const s = typeof id === 'number' ? this.index.get(id) : NO_SLOT
    // `from`: only the holder may answer (a node answering another's task, or one it no longer holds, is late).
    if (s === NO_SLOT || (from !== undefined && this.holders[s] !== from)) {
      this.counters.lateResultsDropped++
      return undefined
    }
    return s
  }

  /** Results from a node no longer a member: each is counted as late and dropped. */
  dropLate(count: number): void {
    this.counters.lateResultsDropped += count
  }

  private deliver(settle: Settle, seq: number, ok: boolean, value: unknown): void {
    if (typeof settle === 'function') settle(ok ? value : rejecting(value))
    else settle.settled(seq, ok, value)
  }

  /** Resolves an entry with its result (once). */
  succeed(e: TaskEntry, value: unknown, now: number): void {
    this.finish(e, true, value, now, undefined)
  }

  /** Rejects an entry (once); `node` is where it ran, for the failure record (default: the node holding it). */
  fail(e: TaskEntry, err: Error, node: string | undefined = this.holders[e]?.nodeId): void {
    this.finish(e, false, err, 0, node)
  }

  /** Settles an entry as succeeded or failed, counted and told to the hooks when it is a task. */
  private finish(e: TaskEntry, ok: boolean, value: unknown, now: number, node: string | undefined): void {
    // Read before settling: the slot may be reused from then on.
    const isTask = this.actors[e] === undefined
    const id = this.ids[e]!
    const name = this.names[e]!
    const seq = this.seqs[e]!
    const settle = this.settle(e)
    if (settle === undefined) return
    if (isTask && ok) {
      this.counters.tasksSucceeded++
      this.hooks.succeeded(id, name, now)
    } else if (isTask) {
      this.counters.tasksFailed++
      this.hooks.failed(id, name, value as Error, node)
    }
    this.deliver(settle, seq, ok, value)
  }

  /** Settles an entry as cancelled; a copy still running somewhere is abandoned (its result will be dropped). */
  withdraw(e: TaskEntry, err: Error): void {
    const seq = this.seqs[e]!
    const settle = this.settle(e)
    if (settle === undefined) return
    this.counters.tasksCancelled++
    this.deliver(settle, seq, false, err)
  }

  /** Withdraws every unsettled task submitted under `options` (one view, or one map). */
  withdrawAll(options: ResolvedTaskOptions, err: () => Error): void {
    for (const s of this.inOrder((s) => this.optionSets[s] === options)) this.withdraw(s, err())
  }

  /**
   * Withdraws every unsettled task whose options name `submitter` (the node
   * whose threads asked for them), in the order they were added; `err` says
   * why, given the task's name. Returns how many.
   */
  withdrawSubmittedBy(submitter: object, err: (name: string) => Error): number {
    const orphans = this.inOrder((s) => this.optionSets[s]?.submitter === submitter)
    for (const s of orphans) this.withdraw(s, err(this.names[s]!))
    return orphans.length
  }

  /** Rejects every unsettled entry with `err`. */
  failAll(err: Error): void {
    for (const s of this.inOrder(() => true)) this.fail(s, err)
  }

  /** Unsettled entries that `keep` accepts, in the order they were added. */
  private inOrder(keep: (s: number) => boolean): number[] {
    const out: number[] = []
    for (let s = 0; s < this.capacity; s++) if ((this.state[s]! & LIVE) !== 0 && keep(s)) out.push(s)
    return out.sort((a, b) => this.ids[a]! - this.ids[b]!)
  }

  /**
   * Spends one retry of the given kind if the entry's budget has one left;
   * the entry leaves its holder, ready to be queued again. The only place
   * retry budgets are checked.
   */
  retry(e: TaskEntry, kind: RetryKind, cause: Error): boolean {
    if ((this.state[e]! & LIVE) === 0 || this.actors[e] !== undefined) return false
    const options = this.optionSets[e]
    if (kind === 'infra') {
      if (this.infraRetries[e]! >= (options?.maxRetries ?? this.defaultMaxRetries)) return false
      this.infraRetries[e]!++
    } else {
      if (this.userRetries[e]! >= (options?.retries ?? 0)) return false
      this.userRetries[e]!++
    }
    this.release(e)
    this.counters.tasksRetried++
    this.hooks.retried(this.ids[e]!, this.names[e]!, this.args(e), cause, this.infraRetries[e]! + this.userRetries[e]!)
    return true
  }

  /** The entry leaves the holder it had (the shared queue) for `holder`, a node that took it. */
  move(e: TaskEntry, holder: TaskHolder): void {
    this.release(e)
    this.holders[e] = holder
  }

  /**
   * A holder is gone: returns its tasks to run again, in the order they were
   * sent. When it was lost, each spends an infrastructure retry and one with
   * none left fails with NodeLostError; when it left cleanly, nothing is
   * charged. Actor messages are not returned (their actor decides).
   */
  reclaim(holder: TaskHolder, how: 'left' | 'lost', describe: () => { node: string; reason: string }): TaskEntry[] {
    return this.takeBack(this.entriesHeldBy(holder), how, describe)
  }

  /** {@link reclaim} of the given entries (tasks taken by a node that was already out, or given back unrun). */
  takeBack(entries: readonly TaskEntry[], how: 'left' | 'lost', describe: () => { node: string; reason: string }): TaskEntry[] {
    const back: TaskEntry[] = []
    for (const e of entries) {
      if (this.actors[e] !== undefined || this.settled(e)) continue
      if (how === 'left') {
        this.release(e)
        back.push(e)
        continue
      }
      const { node, reason } = describe()
      if (this.retry(e, 'infra', new NodeLostError(`node ${node} was lost (${reason})`))) {
        back.push(e)
      } else {
        this.fail(
          e,
          new NodeLostError(
            `task "${this.names[e]!}" was on node ${node} when it was lost (${reason}), after ${this.infraRetries[e]!} earlier infrastructure failures`,
          ),
          node,
        )
      }
    }
    this.counters.requeued += back.length
    return back
  }
}
