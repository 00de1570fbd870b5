/**
 * The ledger: every task and actor message the driver has sent and not yet
 * settled, by id. It settles each exactly once (a second result, or one for
 * a withdrawn task, is dropped and counted), and it is the one place that
 * decides whether a failed attempt may run again: user failures (threw,
 * timed out) spend `retries`, infrastructure failures (crash, out of memory,
 * node lost) spend `maxRetries`.
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
 * One task or actor message. The shape is kept small on purpose: the driver
 * makes one per task, and every field costs throughput (see TaskStats).
 */
export interface TaskEntry {
  readonly id: number
  readonly name: string
  readonly args: unknown[]
  resolve: (value: unknown) => void
  reject: (err: Error) => void
  /** The node or shared queue holding it now; undefined while queued on the driver. */
  holder: TaskHolder | undefined
  settled: boolean
  /** The actor this message is for; undefined for tasks. */
  readonly actor: ActorTarget | undefined
  readonly op: ActorOp
  /** Options shared by the tasks of one view or map; undefined for plain calls. */
  readonly options: ResolvedTaskOptions | undefined
  /** Retries spent on user failures (threw, timed out). */
  userRetries: number
  /** Retries spent on infrastructure failures (crash, out of memory, node lost). */
  infraRetries: number
}

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
  succeeded(e: TaskEntry, now: number): void
  failed(e: TaskEntry, err: Error, node: string | undefined): void
  retried(e: TaskEntry, cause: Error): void
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
  private readonly entries = new Map<number, TaskEntry>()
  // Ids start at a random point: a stray result of an earlier driver on the same address cannot match one of ours.
  private next = randomInt(1, 2 ** 31)

  constructor(
    private readonly hooks: LedgerHooks,
    /** `maxRetries` of tasks submitted without options of their own. */
    private readonly defaultMaxRetries: number,
  ) {}

  get size(): number {
    return this.entries.size
  }

  /** The id the next entry would get (the monitor may move it forward to sample it). */
  get nextId(): number {
    return this.next
  }

  /** Records a new entry under `id` (≥ nextId). */
  add(
    id: number,
    name: string,
    args: unknown[],
    resolve: (value: unknown) => void,
    reject: (err: Error) => void,
    actor: ActorTarget | undefined,
    op: ActorOp,
    options: ResolvedTaskOptions | undefined,
    holder: TaskHolder | undefined,
  ): TaskEntry {
    this.next = id + 1
    const e: TaskEntry = { id, name, args, resolve, reject, holder, settled: false, actor, op, options, userRetries: 0, infraRetries: 0 }
    this.entries.set(id, e)
    if (actor === undefined) this.counters.tasksSubmitted++
    return e
  }

  get(id: number): TaskEntry | undefined {
    return this.entries.get(id)
  }

  /** Every unsettled entry (queued or sent). */
  unsettled(): IterableIterator<TaskEntry> {
    return this.entries.values()
  }

  entriesHeldBy(holder: TaskHolder): TaskEntry[] {
    const out: TaskEntry[] = []
    for (const e of this.entries.values()) if (e.holder === holder) out.push(e)
    return out
  }

  /** Marks an entry settled and forgets it; false when it already was. */
  private settle(e: TaskEntry): boolean {
    if (e.settled) return false
    e.settled = true
    this.entries.delete(e.id)
    this.release(e)
    return true
  }

  /** The entry leaves the node or shared queue that held it. */
  release(e: TaskEntry): void {
    e.holder?.taskLeft()
    e.holder = undefined
  }

  /**
   * The entry a result answers; undefined (counted as a late result, to be
   * dropped) when it already settled — a duplicate after a redelivery, or an
   * answer to a withdrawn task — or, given `from`, when another holds it.
   */
  answered(id: unknown, from?: TaskHolder): TaskEntry | undefined {
    const e = this.entries.get(id as number)
    // `from`: only the holder may answer (a node answering another's task, or one it no longer holds, is late).
    if (e === undefined || (from !== undefined && e.holder !== from)) {
      this.counters.lateResultsDropped++
      return undefined
    }
    return e
  }

  /** Results from a node no longer a member: each is counted as late and dropped. */
  dropLate(count: number): void {
    this.counters.lateResultsDropped += count
  }

  /** Resolves an entry with its result (once). */
  succeed(e: TaskEntry, value: unknown, now: number): void {
    if (!this.settle(e)) return
    if (!e.actor) {
      this.counters.tasksSucceeded++
      this.hooks.succeeded(e, now)
    }
    e.resolve(value)
  }

  /** Rejects an entry (once); `node` is where it ran, for the failure record (default: the node holding it). */
  fail(e: TaskEntry, err: Error, node: string | undefined = e.holder?.nodeId): void {
    if (!this.settle(e)) return
    if (!e.actor) {
      this.counters.tasksFailed++
      this.hooks.failed(e, err, node)
    }
    e.reject(err)
  }

  /** Settles an entry as cancelled; a copy still running somewhere is abandoned (its result will be dropped). */
  withdraw(e: TaskEntry, err: Error): void {
    if (!this.settle(e)) return
    this.counters.tasksCancelled++
    e.reject(err)
  }

  /** Withdraws every unsettled task submitted under `options` (one view, or one map). */
  withdrawAll(options: ResolvedTaskOptions, err: () => Error): void {
    for (const e of this.entries.values()) if (e.options === options) this.withdraw(e, err())
  }

  /** Rejects every unsettled entry with `err`. */
  failAll(err: Error): void {
    for (const e of this.entries.values()) this.fail(e, err)
  }

  /**
   * Spends one retry of the given kind if the entry's budget has one left;
   * the entry leaves its holder, ready to be queued again. The only place
   * retry budgets are checked.
   */
  retry(e: TaskEntry, kind: RetryKind, cause: Error): boolean {
    if (e.settled || e.actor) return false
    if (kind === 'infra') {
      if (e.infraRetries >= (e.options?.maxRetries ?? this.defaultMaxRetries)) return false
      e.infraRetries++
    } else {
      if (e.userRetries >= (e.options?.retries ?? 0)) return false
      e.userRetries++
    }
    this.release(e)
    this.counters.tasksRetried++
    this.hooks.retried(e, cause)
    return true
  }

  /** The entry leaves the holder it had (the shared queue) for `holder`, a node that took it. */
  move(e: TaskEntry, holder: TaskHolder): void {
    this.release(e)
    e.holder = holder
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
      if (e.actor || e.settled) continue
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
          new NodeLostError(`task "${e.name}" was on node ${node} when it was lost (${reason}), after ${e.infraRetries} earlier infrastructure failures`),
          node,
        )
      }
    }
    this.counters.requeued += back.length
    return back
  }
}
