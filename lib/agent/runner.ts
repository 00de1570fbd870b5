import { MessageChannel, type MessagePort } from 'node:worker_threads'
import { OutOfMemoryError, TaskTimeoutError, WorkerCrashedError, toWireError } from '../errors.js'
import { header } from '../protocol/codec.js'
import { decodeTaskBody, encodeTaskBody, ResultsWriter, type TaskItem } from '../protocol/bodies.js'
import { MsgType, Status } from '../protocol/messages.js'
import { withHandlesKept, writtenHere } from '../protocol/shared-ref.js'
import type { Delivery, Parts } from '../transport/transport.js'
import { Deque } from '../util/deque.js'
import type { RunOptions, WorkerPool } from './pool.js'
import type { PoolBatch, PoolResult } from './worker.js'
import type { SharedTable } from './shared-thread.js'
import type { ThreadInfo } from '../worker/context.js'

interface QueuedFrame {
  body: Uint8Array
  count: number
  /** Run alone, under this limit: the thread is replaced if it runs over. */
  timeoutMs: number | undefined
  /** Run alone: a timed frame, or a task split out of a batch whose thread died. */
  solo: boolean
  /** The broker's handles (brokered designs), or a frame's token (ZeroMQ, a frame that pinned shared values), acknowledged once the frame's results are out. */
  deliveries: Delivery[] | undefined
  /** A task split out of a failed batch: its share of the original frames' acknowledgement. */
  split: SplitGroup | undefined
  /** May start: brokered frames wait until the broker holds the agent's word that it took them. */
  ready: boolean
}

/** The frames of a batch whose thread died, split into single tasks: acknowledged once every piece is answered. */
interface SplitGroup {
  remaining: number
  deliveries: Delivery[]
}

/** What the runner needs to know of the driver session. */
export interface SessionView {
  /** The session of the driver that welcomed the agent; batches carry it so a later driver never gets their results. */
  readonly id: string | undefined
  /** The agent's registration with that driver: results carry the one their tasks came under, so a later registration is not charged with them. */
  readonly registration: string
  /** Whether new batches may start. */
  readonly ready: boolean
  /** The driver has gone silent: results wait for it to answer again (or to be replaced). */
  readonly silent: boolean
}

/** Results kept for a silent driver, with the frames they answer. */
interface Held {
  parts: Parts
  frames: QueuedFrame[]
}

/** Brokered designs: where the task frames came from (a shared-queue transport). */
export interface Broker {
  ack(deliveries: Delivery[]): void
}

/** The counters the runner keeps (a part of the agent's stats). */
export interface RunnerStats {
  tasksDone: number
  badFrames: number
  batches: number
  threadsLost: number
}

export interface RunnerOptions {
  threads: number
  /** Most tasks handed to one thread at once. */
  maxPoolBatch: number
  /** Sends a message to the driver. */
  send: (parts: Parts) => void
  /** A batch of `count` tasks ran in `elapsedMs` (credit measures it). */
  measured: (elapsedMs: number, count: number) => void
  /** Brokered designs only. */
  broker: Broker | undefined
  /** The shared values a batch carries to its thread (all the node holds), if any. */
  shared?: () => SharedTable | undefined
  /** What a batch tells its thread of the cluster (its link to the agent, the node id). */
  context?: () => ThreadInfo
  /** A batch ended with tasks that seceded: they answer later through the thread's link, within `timeout` if they have one. */
  seceded?: (thread: number, ids: readonly number[], driver: string | undefined, registration: string, timeout: SecededTimeout | undefined) => void
}

/** What is left of the timeout of tasks that seceded: `leftMs` of their `timeoutMs`. */
export interface SecededTimeout {
  readonly timeoutMs: number
  readonly leftMs: number
}

/**
 * The agent's work: a queue of task frames, handed to the pool in batches of
 * about one thread's share of the queue, results sent back as each batch
 * ends. A batch whose thread died is split into single tasks to find the one
 * that did it, which alone is reported (crashed, out of memory, timed out).
 * For brokered designs, each frame starts once the driver will know this
 * agent took it, and its delivery is acknowledged once its results are out —
 * or when the driver is gone or leaves it (it sends again what the agent
 * took, so the broker must not).
 */
export class Runner {
  private readonly queue = new Deque<QueuedFrame>()
  private _queued = 0
  private _batchesRunning = 0
  private stopped = false
  private idle: (() => void)[] = []
  private held: Held[] = []

  constructor(
    private readonly pool: WorkerPool,
    private readonly session: SessionView,
    private readonly stats: RunnerStats,
    private readonly options: RunnerOptions,
  ) {}

  /** Tasks received and not yet started. */
  get queued(): number {
    return this._queued
  }

  /** Batches on the pool now. */
  get batchesRunning(): number {
    return this._batchesRunning
  }

  /**
   * Queues a task frame of `count` tasks (with a limit, it runs alone) and
   * starts what it can; with `taken`, the frame waits in the queue until it
   * resolves (frames start in the order they came).
   */
  push(body: Uint8Array, count: number, timeoutMs: number | undefined, delivery?: Delivery, taken?: Promise<void>): void {
    const frame: QueuedFrame = {
      body,
      count,
      timeoutMs,
      solo: timeoutMs !== undefined,
      deliveries: delivery === undefined ? undefined : [delivery],
      split: undefined,
      ready: taken === undefined,
    }
    this.queue.push(frame)
    this._queued += count
    if (taken)
      void taken.then(() => {
        frame.ready = true
        this.pump()
      })
    else this.pump()
  }

  /** Brokered designs: a frame that will never run (malformed) leaves the shared queue. */
  discard(delivery: Delivery): void {
    this.options.broker?.ack([delivery])
  }

  /** Starts batches while the session is ready and fewer than two per thread run. */
  pump(): void {
    const { threads, maxPoolBatch } = this.options
    while (this._batchesRunning < threads * 2 && this.queue.length > 0 && this.queue.peek()!.ready && this.session.ready && !this.stopped) {
      const target = Math.min(maxPoolBatch, Math.max(1, Math.ceil(this._queued / threads)))
      const first = this.queue.shift()!
      const frames = [first]
      let n = first.count
      // Timed and isolated frames run alone; others are grouped up to about one thread's share.
      if (!first.solo) {
        while (this.queue.length > 0 && this.queue.peek()!.ready && !this.queue.peek()!.solo && n + this.queue.peek()!.count <= target) {
          const f = this.queue.shift()!
          frames.push(f)
          n += f.count
        }
      }
      const bodies = frames.map((f) => f.body)
      this._queued -= n
      this._batchesRunning++
      this.start(frames, bodies, first.timeoutMs, this.session.id, this.session.registration, false)
    }
  }

  /**
   * Runs a batch on the pool; `isolated`, a timed one a thread declined (it
   * holds tasks that seceded) on an isolated thread. A timed batch's limit
   * counts from when a thread starts it, not from when a thread declined it.
   */
  private start(
    frames: QueuedFrame[],
    bodies: Uint8Array[],
    timeoutMs: number | undefined,
    driver: string | undefined,
    registration: string,
    isolated: boolean,
  ): void {
    const limit = timeoutMs === undefined ? undefined : new RunLimit(timeoutMs)
    const batch: PoolBatch = { bodies, shared: this.options.shared?.(), context: this.options.context?.() }
    const options: RunOptions = {}
    if (limit) {
      batch.started = limit.port
      options.signal = limit.signal
      options.transferList = [limit.port]
    }
    const run = isolated ? this.pool.runIsolated(batch, options) : this.pool.run(batch, options)
    run.then(
      (r) => {
        limit?.dispose()
        if (r.declined && !this.stopped) this.start(frames, bodies, timeoutMs, driver, registration, true)
        else this.done(driver, registration, r, frames, limit && timeoutMs !== undefined ? { timeoutMs, leftMs: limit.leftMs() } : undefined)
      },
      (err: Error) => {
        limit?.dispose()
        this.failed(driver, registration, frames, err, timeoutMs)
      },
    )
  }

  /** Resolves once no batch runs. */
  drained(): Promise<void> {
    if (this._batchesRunning === 0) return Promise.resolve()
    return new Promise((resolve) => this.idle.push(resolve))
  }

  /**
   * Drops the queued frames: the driver requeues them itself (it knows what
   * this agent took — on brokered designs too, where their deliveries are
   * acknowledged, so that the broker does not hand them out again). Results
   * held for a silent driver are dropped (their driver is gone).
   */
  release(): void {
    this.acknowledge(this.queue.clear())
    this._queued = 0
    for (const h of this.held.splice(0)) this.acknowledge(h.frames)
  }

  /** The silent driver answered again: the results held for it go, and work goes on. */
  resume(): void {
    for (const h of this.held.splice(0)) this.answer(h.parts, h.frames)
    this.pump()
  }

  /** Sends results for the driver whose work the agent holds, or holds them while it is silent. */
  private answer(parts: Parts, frames: QueuedFrame[]): void {
    if (this.session.silent) {
      this.held.push({ parts, frames })
      return
    }
    this.options.send(parts)
    this.acknowledge(frames)
  }

  /** Closing for good: nothing more starts, and batches still running end without a word (their frames are not acknowledged). */
  stop(): void {
    this.stopped = true
  }

  private settled(): void {
    this._batchesRunning--
    if (this._batchesRunning === 0) for (const resolve of this.idle.splice(0)) resolve()
  }

  private done(driver: string | undefined, registration: string, r: PoolResult, frames: QueuedFrame[], timeout: SecededTimeout | undefined): void {
    this.settled()
    if (this.stopped) return
    this.stats.tasksDone += r.count
    this.stats.badFrames += r.bad
    this.stats.batches++
    if (r.seceded) this.options.seceded?.(r.thread, r.seceded, driver, registration, timeout)
    // Results for a driver that has since gone would only confuse the next one.
    if (driver !== undefined && driver === this.session.id && r.count > 0) this.answer([header(MsgType.Results, r.count, registration), r.results], frames)
    else this.acknowledge(frames)
    this.options.measured(r.elapsedMs, r.count)
    this.pump()
  }

  /**
   * The thread running a batch died or was stopped. With several tasks in the
   * batch we cannot tell which one did it: run each alone, at the front of
   * the queue. A task that fails alone is reported, with the cause, for the
   * driver to retry on its infrastructure budget or give up.
   */
  private failed(driver: string | undefined, registration: string, frames: QueuedFrame[], err: Error, timeoutMs: number | undefined): void {
    this.settled()
    if (this.stopped) return
    this.stats.threadsLost++
    const tasks: TaskItem[] = []
    for (const { body } of frames) {
      try {
        // Shared values stay handles: each piece, written again, reads the node's copy, not one of its own.
        tasks.push(...withHandlesKept(() => decodeTaskBody(body)))
      } catch {
        this.stats.badFrames++
      }
    }
    const stale = driver === undefined || driver !== this.session.id
    if (!stale && tasks.length > 1) {
      // The original frames are acknowledged once every piece is answered.
      const group: SplitGroup = { remaining: tasks.length, deliveries: finished(frames) }
      for (let i = tasks.length - 1; i >= 0; i--) {
        const body = writtenHere(() => encodeTaskBody([tasks[i]!]))
        this.queue.unshift({ body, count: 1, timeoutMs: undefined, solo: true, deliveries: undefined, split: group, ready: true })
      }
      this._queued += tasks.length
      this.pump()
      return
    }
    if (!stale && tasks.length === 1) {
      const task = tasks[0]!
      const results = new ResultsWriter()
      results.add(task.id, Status.Failed, toWireError(attribute(String(task.name), err, timeoutMs)))
      this.answer([header(MsgType.Results, 1, registration), results.take()], frames)
    } else {
      this.acknowledge(frames)
    }
    this.pump()
  }

  /**
   * Brokered designs: the frames of a finished batch leave the broker's queue
   * (after their results were sent); pieces of a split batch count down to
   * the acknowledgement of the frames they came from.
   */
  private acknowledge(frames: QueuedFrame[]): void {
    const due = finished(frames)
    if (due.length > 0) this.options.broker?.ack(due)
  }
}

/**
 * A task's time limit, counted from when a thread starts it: the worker says
 * so on `port` as it begins the batch. Handing a batch to the pool is not
 * starting it — the pool may queue it behind batches already running — and a
 * task must not time out for waiting its turn.
 */
class RunLimit {
  private readonly controller = new AbortController()
  private readonly channel = new MessageChannel()
  private timer: NodeJS.Timeout | undefined
  private startedAt: number | undefined

  constructor(private readonly timeoutMs: number) {
    this.channel.port1.once('message', () => {
      this.startedAt = performance.now()
      this.timer = setTimeout(() => this.controller.abort(), timeoutMs)
    })
  }

  /** What is left of the limit (all of it if the batch never said it started). */
  leftMs(): number {
    return this.startedAt === undefined ? this.timeoutMs : Math.max(0, this.timeoutMs - (performance.now() - this.startedAt))
  }

  /** Stops the thread once the limit is passed. */
  get signal(): AbortSignal {
    return this.controller.signal
  }

  /** The worker's end, transferred with the batch. */
  get port(): MessagePort {
    return this.channel.port2
  }

  /** The batch ended: no timer, no channel. */
  dispose(): void {
    clearTimeout(this.timer)
    this.channel.port1.close()
  }
}

/** Why the thread running the task `name` alone died, as the error the driver reports. */
function attribute(name: string, err: Error, timeoutMs: number | undefined): Error {
  if (timeoutMs !== undefined && err.name === 'AbortError') {
    return new TaskTimeoutError(`task "${name}" ran longer than its timeout of ${timeoutMs} ms; its thread was stopped and replaced`)
  }
  if ((err as { code?: unknown }).code === 'ERR_WORKER_OUT_OF_MEMORY') {
    return new OutOfMemoryError(`task "${name}" ran its worker thread out of memory: ${err.message}`, { cause: err })
  }
  return new WorkerCrashedError(`task "${name}" crashed its worker thread: ${err.message}`, { cause: err })
}

/**
 * The broker deliveries that come due as `frames` leave the agent (answered,
 * split further, or handed back): each frame's own, and those of a split
 * batch once its last piece is gone.
 */
function finished(frames: Iterable<QueuedFrame>): Delivery[] {
  const due: Delivery[] = []
  for (const f of frames) {
    if (f.deliveries) due.push(...f.deliveries)
    if (f.split && --f.split.remaining === 0) due.push(...f.split.deliveries)
  }
  return due
}
