/**
 * The piscina worker: runs batches of tasks. It receives the task bodies as
 * they came off the wire, decodes them here (off the agent's main thread), runs
 * every task and returns one encoded results body.
 */
import { workerData, type MessagePort } from 'node:worker_threads'
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

export interface PoolBatch {
  bodies: Uint8Array[]
  /** The shared values the node holds (the bodies' handles decode to them). */
  shared?: SharedTable | undefined
  /** A timed batch: told when the batch starts, which is when its limit starts to count. */
  started?: MessagePort
}

export interface PoolResult {
  results: Uint8Array
  count: number
  elapsedMs: number
  /** Bodies that did not decode; dropped. */
  bad: number
  /** This thread's heap in use after the batch, in MB (for recycling). */
  heapMb: number
}

const { tasks } = workerData as { tasks: string }
const catalog = await loadCatalog(tasks, 'a worker thread')
const functions = catalog.functions
const known = [...functions.keys()]
const packr = createPackr()

export default async function runBatch(batch: PoolBatch): Promise<PoolResult> {
  batch.started?.postMessage(null)
  const start = performance.now()
  const out = (current = new ResultsWriter())
  pending = undefined
  let bad = 0
  useSharedTable(batch.shared, packr)
  for (const body of batch.bodies) if (!readTaskBody(packr, body, runTask)) bad++
  const waiting = pending
  if (waiting) await Promise.all(waiting)
  const count = out.count
  // A fresh copy: the packr's own buffer must not be cloned or transferred whole.
  const bytes = new Uint8Array(out.take(packr))
  const elapsedMs = performance.now() - start
  return { results: bytes, count, elapsedMs, bad, heapMb: heapInUseMb() }
}

// The batch being run, one at a time per thread (concurrentTasksPerWorker is 1). Module state rather than a
// closure per batch: the closure's context costs the per-task loop about a tenth of its time.
let current = new ResultsWriter()
let pending: Promise<void>[] | undefined

/** Runs one task of the current batch; its result goes to the slot it was given, now or when it settles. */
function runTask(id: unknown, name: unknown, args: unknown): void {
  const out = current
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
      ;(pending ??= []).push(
        Promise.resolve(value).then(
          (v) => settle(out, slot, name, v),
          (e: unknown) => out.set(slot, Status.Threw, toWireError(e)),
        ),
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

function settle(out: ResultsWriter, slot: number, name: string, value: unknown): void {
  const bad =
    typeof value === 'object' || typeof value === 'function' || typeof value === 'symbol' || typeof value === 'bigint'
      ? findUnserializable(value, 'result')
      : undefined
  if (bad) out.set(slot, Status.Failed, toWireError(new SerializationError(`task "${name}" returned a value msgpack cannot carry: ${bad}`)))
  else out.set(slot, Status.Ok, value)
}
