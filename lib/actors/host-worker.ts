/**
 * An actor host thread: holds actor instances and runs their method calls.
 * Each actor has a mailbox: its messages run one at a time in arrival order,
 * even when a method is async; different actors on one thread interleave only
 * at their awaits.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { loadCatalog } from '../tasks-module.js'
import { findUnserializable } from '../protocol/codec.js'
import { ActorOp, Status } from '../protocol/messages.js'
import { ActorStoppedError, SerializationError, UnknownActorError, UnknownMethodError, toWireError } from '../errors.js'

export interface HostRequest {
  id: number
  op: ActorOp
  actorId: string
  name: string
  args: readonly unknown[]
}

export interface HostReply {
  id: number
  status: Status
  value: unknown
}

interface Live {
  className: string
  instance: Record<string, unknown>
  mailbox: Promise<void>
  stopped: boolean
}

const { tasks } = workerData as { tasks: string }
const catalog = await loadCatalog(tasks, 'an actor host thread')
const actors = new Map<string, Live>()
const port = parentPort!

function reply(id: number, status: Status, value: unknown): void {
  port.postMessage({ id, status, value } satisfies HostReply)
}

async function invoke(live: Live, req: HostRequest): Promise<void> {
  const method = live.instance[req.name]
  if (typeof method !== 'function' || req.name === 'constructor' || req.name.startsWith('_')) {
    reply(req.id, Status.Failed, toWireError(UnknownMethodError.of(live.className, req.name)))
    return
  }
  try {
    const value = await Reflect.apply(method as (...a: unknown[]) => unknown, live.instance, req.args)
    const bad = findUnserializable(value, 'result')
    if (bad) {
      reply(req.id, Status.Failed, toWireError(new SerializationError(`${live.className}.${req.name} returned a value msgpack cannot carry: ${bad}`)))
    } else {
      reply(req.id, Status.Ok, value)
    }
  } catch (err) {
    reply(req.id, Status.Threw, toWireError(err))
  }
}

port.on('message', (req: HostRequest) => {
  switch (req.op) {
    case ActorOp.Spawn: {
      const Cls = catalog.classes.get(req.name)
      if (!Cls) {
        reply(req.id, Status.Failed, toWireError(UnknownActorError.of(req.name, [...catalog.classes.keys()])))
        return
      }
      try {
        const instance = new Cls(...req.args) as Record<string, unknown>
        actors.set(req.actorId, { className: req.name, instance, mailbox: Promise.resolve(), stopped: false })
        reply(req.id, Status.Ok, req.actorId)
      } catch (err) {
        reply(req.id, Status.Threw, toWireError(err))
      }
      return
    }
    case ActorOp.Call:
    case ActorOp.Stop: {
      const live = actors.get(req.actorId)
      if (!live || live.stopped) {
        reply(req.id, Status.Failed, toWireError(new ActorStoppedError(`actor ${req.actorId} is not running on this node`)))
        return
      }
      if (req.op === ActorOp.Stop) {
        live.stopped = true
        live.mailbox = live.mailbox.then(() => {
          actors.delete(req.actorId)
          reply(req.id, Status.Ok, null)
        })
      } else {
        live.mailbox = live.mailbox.then(() => invoke(live, req))
      }
      return
    }
  }
})
