/**
 * The piscina worker: runs batches of tasks. It receives the task bodies as
 * they came off the wire, decodes them here (off the agent's main thread), runs
 * every task and returns one encoded results body.
 */
import { threadId, workerData, type MessagePort } from 'node:worker_threads'
import { performance } from 'node:perf_hooks'
import { getHeapStatistics } from 'node:v8'
import { createPackr, findUnserializable } from '../protocol/codec.js'
import { Status } from '../protocol/messages.js'
import { readTaskBody, ResultsWriter } from '../protocol/bodies.js'
import { SerializationError, UnknownTaskError, ProtocolError, toWireError } from '../errors.js'
import { loadCatalog } from '../tasks-module.js'
import { useSharedTable, type SharedTable } from './shared-thread.js'
import { isReduceTaskName } from '../protocol/reduce.js'
import { runReduceChunk } from './reduce-chunk.js'
import { bindAgent, currentLink, type ThreadInfo } from '../worker/context.js'
import { activity } from '../worker/link.js'

export interface PoolBatch {
  bodies: Uint8Array[]
  /** The shared values the node holds (the bodies' handles decode to them). */
  shared?: SharedTable | undefined
  /** A timed batch: told when the batch starts, which is when its limit starts to count. */
  started?: MessagePort
  /** The agent the batch comes from: `context` calls and late results go through its link. */
  context?: ThreadInfo | undefined
}

export interface PoolResult {
  results: Uint8Array
  count: number
  elapsedMs: number
  /** Bodies that did not decode; dropped. */
  bad: number
  /** This thread's heap in use after the batch, in MB (for recycling). */
  heapMb: number
  /** The thread that ran it (its link to the agent). */
  thread: number
  /**
   * Tasks that seceded: they wait on work they asked the cluster for, so the
   * batch ended without them and freed the thread; each one's result goes up
   * the thread's link when it settles. Absent when none did.
   */
  seceded?: number[]
  /**
   * A timed batch this thread would not start: it holds tasks that seceded,
   * which stopping the thread at the batch's limit would end too. Nothing ran;
   * the batch goes to an isolated thread.
   */
  declined?: true
}

/** `isolated`: this thread's batches never secede (they hold the thread until their tasks settle), so a timed one is alone on it. */
const { tasks, isolated } = workerData as { tasks: string; isolated?: boolean }
const catalog = await loadCatalog(tasks, 'a worker thread')
const functions = catalog.functions
const known = [...functions.keys()]
const packr = createPackr()

export default async function runBatch(batch: PoolBatch): Promise<PoolResult> {
  if (batch.started && held > 0) {
    batch.started.close()
    return { results: new Uint8Array(0), count: 0, elapsedMs: 0, bad: 0, heapMb: heapInUseMb(), thread: threadId, declined: true }
  }
  batch.started?.postMessage(null)
  const start = performance.now()
  const b = (current = new BatchState())
  pending = undefined
  let bad = 0
  useSharedTable(batch.shared, packr)
  if (batch.context) bindAgent(batch.context)
  const requestsBefore = activity.requests
  for (const body of batch.bodies) if (!readTaskBody(packr, body, runTask)) bad++
  const waiting = pending
  if (waiting) await Promise.all(waiting)
  if (b.open > 0) await untilSettledOrWaiting(b, batch.context !== undefined && !isolated, requestsBefore)
  let seceded: number[] | undefined
  let count = b.out.count
  let bytes: Uint8Array
  if (b.open > 0) {
    const ids = [...b.waiting.values()]
    seceded = ids
    held += ids.length
    b.seceded = currentLink()
    count -= ids.length
    bytes = new Uint8Array(b.out.takeExcept(b.waiting.keys(), packr))
  } else {
    // A fresh copy: the packr's own buffer must not be cloned or transferred whole.
    bytes = new Uint8Array(b.out.take(packr))
  }
  const elapsedMs = performance.now() - start
  const result: PoolResult = { results: bytes, count, elapsedMs, bad, heapMb: heapInUseMb(), thread: threadId }
  if (seceded) result.seceded = seceded
  return result
}

/**
 * Waits until the batch's async tasks have all settled, or until they wait
 * on the cluster: a task that asked for work (`context.call` ...) and awaits
 * it must not hold the thread, or the work it waits for could never run here
 * (a recursive `fib` on one thread). Any request made by this thread since
 * the batch began, or while it waits, makes the batch secede.
 */
function untilSettledOrWaiting(b: BatchState, linked: boolean, requestsBefore: number): Promise<void> {
  if (linked && activity.requests !== requestsBefore) return Promise.resolve()
  return new Promise<void>((resolve) => {
    b.settled = resolve
    if (linked)
      activity.wake = () => {
        activity.wake = undefined
        resolve()
      }
  }).finally(() => {
    activity.wake = undefined
    b.settled = undefined
  })
}

/** The batch being run: its results, and its async tasks not yet settled (slot → task id). */
class BatchState {
  readonly out = new ResultsWriter()
  readonly waiting = new Map<number, number>()
  open = 0
  /** Set once the batch seceded: its remaining tasks answer through this link. */
  seceded: { result(id: number, status: Status, value: unknown): void } | undefined
  settled: (() => void) | undefined
}

// The batch being run, one at a time per thread (concurrentTasksPerWorker is 1). Module state rather than a
// closure per batch: the closure's context costs the per-task loop about a tenth of its time.
let current = new BatchState()
let pending: Promise<void>[] | undefined
/** Tasks that seceded on this thread and have not settled: a timed batch is declined while there are any. */
let held = 0

/** Runs one task of the current batch; its result goes to the slot it was given, now or when it settles. */
function runTask(id: unknown, name: unknown, args: unknown): void {
  const b = current
  const out = b.out
  const slot = out.add(id)
  if (typeof name !== 'string') {
    out.set(slot, Status.Failed, toWireError(new ProtocolError('task name is not a string')))
    return
  }
  const fn = functions.get(name)
  if (!fn) {
    if (isReduceTaskName(name)) {
      const chunk = runReduceChunk(functions, known, name, args, out, slot, settle)
      if (chunk) (pending ??= []).push(chunk)
      return
    }
    out.set(slot, Status.Failed, toWireError(UnknownTaskError.of(name, known)))
    return
  }
  if (!Array.isArray(args)) {
    out.set(slot, Status.Failed, toWireError(new ProtocolError(`arguments of task "${name}" are not a list`)))
    return
  }
  try {
    const value = fn(...(args as unknown[]))
    if (value !== null && typeof value === 'object' && typeof (value as Promise<unknown>).then === 'function') {
      b.open++
      b.waiting.set(slot, id as number)
      Promise.resolve(value).then(
        (v) => settleLater(b, slot, id, name, v),
        (e: unknown) => settledLater(b, slot, id, Status.Threw, toWireError(e)),
      )
    } else {
      settle(out, slot, name, value)
    }
  } catch (e) {
    out.set(slot, Status.Threw, toWireError(e))
  }
}

/** This thread's heap plus the buffers it holds outside the heap, in MB. */
function heapInUseMb(): number {
  const h = getHeapStatistics()
  return (h.used_heap_size + h.external_memory) / 1048576
}

/** An async task settled: into the batch's results, or up the link when the batch seceded. */
function settleLater(b: BatchState, slot: number, id: unknown, name: string, value: unknown): void {
  const bad = unserializable(value)
  if (bad) settledLater(b, slot, id, Status.Failed, toWireError(new SerializationError(`task "${name}" returned a value msgpack cannot carry: ${bad}`)))
  else settledLater(b, slot, id, Status.Ok, value)
}

function settledLater(b: BatchState, slot: number, id: unknown, status: Status, value: unknown): void {
  if (b.seceded) {
    held--
    b.seceded.result(id as number, status, value)
    return
  }
  b.out.set(slot, status, value)
  b.waiting.delete(slot)
  if (--b.open === 0) b.settled?.()
}

function unserializable(value: unknown): string | undefined {
  return typeof value === 'object' || typeof value === 'function' || typeof value === 'symbol' || typeof value === 'bigint'
    ? findUnserializable(value, 'result')
    : undefined
}

function settle(out: ResultsWriter, slot: number, name: string, value: unknown): void {
  const bad =
    typeof value === 'object' || typeof value === 'function' || typeof value === 'symbol' || typeof value === 'bigint'
      ? findUnserializable(value, 'result')
      : undefined
  if (bad) out.set(slot, Status.Failed, toWireError(new SerializationError(`task "${name}" returned a value msgpack cannot carry: ${bad}`)))
  else out.set(slot, Status.Ok, value)
}
