import { Worker } from 'node:worker_threads'
import { ActorOp, Status } from '../protocol/messages.js'
import { ActorLostError, WorkerCrashedError, toWireError } from '../errors.js'
import type { HostReply, HostRequest } from './host-worker.js'

interface HostThread {
  worker: Worker
  actors: Set<string>
  /** Requests sent to this thread and not yet answered, by request id. */
  waiting: Set<number>
}

/**
 * The agent's actor threads. They are separate from the task pool because an
 * actor must stay on the thread that holds its state, while the pool hands
 * work to whichever thread is free. Threads start on the first spawn, up to
 * `maxThreads`; a new actor goes to the thread with the fewest actors.
 */
export class ActorHosts {
  private readonly threads: HostThread[] = []
  private readonly placement = new Map<string, HostThread>()
  /** Actors whose thread died: their messages are answered with ActorLostError, so the driver learns of it. */
  private readonly gone = new Set<string>()
  private closed = false

  constructor(
    private readonly tasks: string,
    private readonly maxThreads: number,
    private readonly onReply: (reply: HostReply) => void,
  ) {}

  handle(req: HostRequest): void {
    let host = this.placement.get(req.actorId)
    if (!host && this.gone.has(req.actorId)) {
      if (req.op === ActorOp.Spawn) {
        this.gone.delete(req.actorId)
      } else {
        // It died with its thread: a Stop has nothing left to do; anything else never runs.
        if (req.op === ActorOp.Stop) this.gone.delete(req.actorId)
        const lost = new ActorLostError(`actor ${req.actorId} was lost: its host thread died; the message did not run`)
        this.onReply(req.op === ActorOp.Stop ? { id: req.id, status: Status.Ok, value: null } : { id: req.id, status: Status.Failed, value: toWireError(lost) })
        return
      }
    }
    if (req.op === ActorOp.Spawn && !host) {
      host = this.pickThread()
      this.placement.set(req.actorId, host)
      host.actors.add(req.actorId)
    }
    if (!host) {
      // The host thread decides how to answer an actor it does not hold.
      host = this.threads[0] ?? this.pickThread()
    } else if (req.op === ActorOp.Stop) {
      this.placement.delete(req.actorId)
      host.actors.delete(req.actorId)
    }
    host.waiting.add(req.id)
    host.worker.postMessage(req)
  }

  private pickThread(): HostThread {
    if (this.threads.length < this.maxThreads) return this.startThread()
    let best = this.threads[0]!
    for (const t of this.threads) if (t.actors.size < best.actors.size) best = t
    return best
  }

  private startThread(): HostThread {
    const worker = new Worker(new URL('./host-worker.js', import.meta.url), { workerData: { tasks: this.tasks } })
    const thread: HostThread = { worker, actors: new Set(), waiting: new Set() }
    worker.on('message', (reply: HostReply) => {
      thread.waiting.delete(reply.id)
      this.onReply(reply)
    })
    const fail = (err: Error) => {
      const i = this.threads.indexOf(thread)
      if (i >= 0) this.threads.splice(i, 1)
      for (const id of thread.actors) {
        this.placement.delete(id)
        this.gone.add(id)
      }
      if (this.closed) return
      const wire = toWireError(new WorkerCrashedError(`actor host thread died: ${err.message}; its actors are gone`, { cause: err }))
      for (const id of thread.waiting) this.onReply({ id, status: Status.Failed, value: wire })
      thread.waiting.clear()
    }
    worker.on('error', fail)
    worker.on('exit', (code) => fail(new Error(`exit code ${code}`)))
    worker.unref()
    this.threads.push(thread)
    return thread
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await Promise.all(this.threads.map((t) => t.worker.terminate()))
    this.threads.length = 0
    this.placement.clear()
  }
}
