/**
 * The piscina worker: runs batches of tasks. It receives the task bodies as
 * they came off the wire, decodes them here (off the agent's main thread), runs
 * every task and returns one encoded results body.
 */
import { workerData } from 'node:worker_threads'
import { performance } from 'node:perf_hooks'
import { getHeapStatistics } from 'node:v8'
import { createPackr, findUnserializable } from '../protocol/codec.js'
import { Status } from '../protocol/messages.js'
import { SerializationError, UnknownTaskError, ProtocolError, toWireError } from '../errors.js'
import { loadCatalog } from '../tasks-module.js'

export interface PoolBatch {
  bodies: Uint8Array[]
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
  const start = performance.now()
  const out: unknown[] = []
  let pending: Promise<void>[] | undefined
  let bad = 0
  for (const body of batch.bodies) {
    let items: unknown
    try {
      items = packr.unpack(body)
    } catch {
      items = undefined
    }
    if (!Array.isArray(items) || items.length % 3 !== 0) {
      bad++
      continue
    }
    for (let i = 0; i + 2 < items.length; i += 3) {
      const id = items[i]
      const name = items[i + 1] as string
      const args = items[i + 2]
      const slot = out.length
      out.push(id, Status.Ok, null)
      const fn = typeof name === 'string' ? functions.get(name) : undefined
      if (!fn) {
        out[slot + 1] = Status.Failed
        out[slot + 2] = toWireError(typeof name === 'string' ? UnknownTaskError.of(name, known) : new ProtocolError('task name is not a string'))
        continue
      }
      if (!Array.isArray(args)) {
        out[slot + 1] = Status.Failed
        out[slot + 2] = toWireError(new ProtocolError(`arguments of task "${name}" are not a list`))
        continue
      }
      try {
        const value = fn(...args)
        if (value !== null && typeof value === 'object' && typeof (value as Promise<unknown>).then === 'function') {
          ;(pending ??= []).push(
            Promise.resolve(value).then(
              (v) => settle(out, slot, name, v),
              (e: unknown) => {
                out[slot + 1] = Status.Threw
                out[slot + 2] = toWireError(e)
              },
            ),
          )
        } else {
          settle(out, slot, name, value)
        }
      } catch (e) {
        out[slot + 1] = Status.Threw
        out[slot + 2] = toWireError(e)
      }
    }
  }
  if (pending) await Promise.all(pending)
  // A fresh copy: the packr's own buffer must not be cloned or transferred whole.
  const results = new Uint8Array(packr.pack(out))
  const elapsedMs = performance.now() - start
  return { results, count: out.length / 3, elapsedMs, bad, heapMb: heapInUseMb() }
}

/** This thread's heap plus the buffers it holds outside the heap, in MB. */
function heapInUseMb(): number {
  const h = getHeapStatistics()
  return (h.used_heap_size + h.external_memory) / 1048576
}

function settle(out: unknown[], slot: number, name: string, value: unknown): void {
  const bad = typeof value === 'object' || typeof value === 'function' || typeof value === 'symbol' || typeof value === 'bigint'
    ? findUnserializable(value, 'result')
    : undefined
  if (bad) {
    out[slot + 1] = Status.Failed
    out[slot + 2] = toWireError(new SerializationError(`task "${name}" returned a value msgpack cannot carry: ${bad}`))
  } else {
    out[slot + 2] = value
  }
}
