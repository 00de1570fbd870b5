/**
 * Actor references on the wire: an `ActorRef` inside a task or method
 * argument, a result, or a reply travels as a msgpack extension carrying the
 * actor's id and name. The decoder hands them to whatever resolver the reading
 * thread installed — the driver's own reference for that id, or a thread's
 * reference that sends through its agent — so a reference arrives as a
 * working one.
 */
import { addExtension } from 'msgpackr'
import { ProtocolError } from '../errors.js'

/** The msgpack extension type of an actor reference (0x21 is a shared value's). */
const ACTOR_REF_EXT = 0x22

/**
 * In the prototype chain of every actor reference (references are proxies
 * over an object of this class), so the encoder recognises them and
 * `isActorRef` tells them from plain objects.
 */
export class ActorRefBase {}

/** Whether `v` is an actor reference (the driver's or a thread's). */
export function isActorRef(v: unknown): boolean {
  return v instanceof ActorRefBase
}

/** Turns a received reference into a working one where it is decoded. */
export type ActorRefResolver = (id: string, name: string | undefined) => unknown

let resolver: ActorRefResolver | undefined

/** Installs how actor references decode in this thread. Returns the one it replaces. */
export function setActorRefResolver(r: ActorRefResolver | undefined): ActorRefResolver | undefined {
  const before = resolver
  resolver = r
  return before
}

/** A reference decoded where no resolver is installed (the agent's main thread, which only places messages). */
class InertActorRef extends ActorRefBase {
  constructor(
    readonly id: string,
    readonly name: string | undefined,
  ) {
    super()
  }
}

addExtension({
  Class: ActorRefBase,
  type: ACTOR_REF_EXT,
  write(ref: ActorRefBase): [string, string | null] {
    const r = ref as { id?: unknown; name?: unknown }
    return [String(r.id), typeof r.name === 'string' ? r.name : null]
  },
  read(data: unknown): unknown {
    if (
      !Array.isArray(data) ||
      typeof data[0] !== 'string' ||
      data[0].length > 256 ||
      (data[1] !== null && (typeof data[1] !== 'string' || data[1].length > 1024))
    )
      throw new ProtocolError('malformed actor reference')
    const id = data[0]
    const name = (data[1] as string | null) ?? undefined
    return resolver ? resolver(id, name) : new InertActorRef(id, name)
  },
})
