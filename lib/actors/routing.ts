/**
 * Which of a thread's requests stay on its node: an ask or a tell to an actor
 * placed on the node goes from the agent straight to the actor's host
 * thread; everything else (other nodes, actors not placed here, spawns,
 * stops, look-ups, puts, calls, and anything malformed) goes to the driver,
 * which checks it and answers as before. The agent reads the Submit body only
 * when the node holds actors, and sends the driver the body as it came when
 * nothing in it stays.
 */
import { setActorRefResolver } from '../protocol/actor-ref.js'
import { readRawRequestBody, RequestWriter } from '../protocol/bodies.js'
import { ContextOp } from '../protocol/messages.js'
import { takeWrittenRefs, withHandlesKept, type SharedRef } from '../protocol/shared-ref.js'
import { isMethodName } from '../driver/requests.js'

/** An ask or a tell from a thread of this node to an actor of this node. */
export interface RoutedMessage {
  /** The sending thread (its link's). */
  readonly thread: number
  /** The sending thread's request id (its thread id × 2³² plus a counter): an ask's reply goes back under it. */
  readonly reqId: number
  readonly tell: boolean
  readonly actorId: string
  readonly method: string
  readonly args: readonly unknown[]
}

/** A Submit body split: the messages that stay on the node, in the order sent, and the rest for the driver. */
export interface SplitRequests {
  readonly local: RoutedMessage[]
  /** The other requests, encoded again (undefined: none). */
  readonly rest: { body: Uint8Array; count: number } | undefined
}

/** What the split asks of the node's actors. */
export interface Placement {
  /** Whether `actorId` is placed on this node and takes messages routed here. */
  here(actorId: string): boolean
  /**
   * A message to `actorId`, placed here, goes through the driver (a Stop, or
   * a message carrying a shared value this node does not hold): so do the
   * later ones, which must not overtake it, while it stays placed.
   */
  viaDriver(actorId: string): void
  /** Whether this node holds the shared value `hash` (a routed message's handles decode to it in the host thread). */
  holds(hash: string): boolean
}

/**
 * Splits a thread's Submit body. Returns undefined when nothing in it stays on
 * the node, or it cannot be read or written again as it came: the body then
 * goes to the driver unread, as before, and the driver answers what is wrong.
 */
export function splitRequests(thread: number, body: Uint8Array, count: number, placement: Placement): SplitRequests | undefined {
  const local: RoutedMessage[] = []
  const rest = new RequestWriter()
  const handles: SharedRef[] = []
  // Set when the body carries a shared value this node does not hold: nothing of it stays (which message carries it is not known).
  let lacking = false
  const read = (reqId: unknown, op: unknown, args: unknown): void => {
    if (!Array.isArray(args) || typeof args[0] !== 'string') {
      rest.addRaw(reqId, op, args)
      return
    }
    const actorId = args[0]
    if ((op === ContextOp.Stop || lacking) && placement.here(actorId)) placement.viaDriver(actorId)
    if (
      !lacking &&
      (op === ContextOp.Ask || op === ContextOp.Tell) &&
      Number.isSafeInteger(reqId) &&
      (reqId as number) >= 0 &&
      args.length === 3 &&
      isMethodName(args[1]) &&
      Array.isArray(args[2]) &&
      placement.here(actorId)
    ) {
      local.push({ thread, reqId: reqId as number, tell: op === ContextOp.Tell, actorId, method: args[1], args: args[2] as unknown[] })
      return
    }
    rest.addRaw(reqId, op, args)
  }
  // References in the body decode as references (not as this thread's working ones, nor as shared values' contents).
  const resolver = setActorRefResolver(undefined)
  try {
    const entries: [unknown, unknown, unknown][] = []
    withHandlesKept(() => readRawRequestBody(body, count, (reqId, op, args) => entries.push([reqId, op, args])), handles)
    lacking = handles.some((h) => !placement.holds(h.hash))
    for (const [reqId, op, args] of entries) read(reqId, op, args)
    if (local.length === 0) return undefined
    const n = rest.count
    return { local, rest: n === 0 ? undefined : { body: rest.take(), count: n } }
  } catch {
    return undefined
  } finally {
    setActorRefResolver(resolver)
    takeWrittenRefs()
  }
}
