/**
 * Inbound dispatch: every frame an agent sends the driver, checked and
 * handed to the room it concerns. Nothing from the network is trusted: a
 * malformed frame, or one from a peer that is not a member, is counted and
 * dropped.
 */
import { fromWire, rebuildError } from '../errors.js'
import { readResultsBody } from '../protocol/bodies.js'
import { header, messageShapeProblem, parseHeader, VersionMismatch, type Header } from '../protocol/codec.js'
import { MsgType, Status } from '../protocol/messages.js'
import type { Parts } from '../transport/transport.js'
import { retryKindOf, type ActorTarget, type Ledger, type TaskEntry } from './ledger.js'
import type { ClusterNode, Membership } from './membership.js'
import type { Scheduler, SharedQueueScheduler } from './scheduler.js'

export interface Inbound {
  readonly ledger: Ledger
  readonly membership: Membership
  readonly scheduler: Pick<Scheduler, 'enqueue' | 'requeue'>
  /** Brokered designs: the frames published and not yet taken (see SharedQueueScheduler). */
  readonly frames: Pick<SharedQueueScheduler, 'claim'> | undefined
  send(peer: string, parts: Parts): void
  scheduleFlush(): void
  /** Most bytes in one message, all parts together (`maxFrameBytes`). */
  readonly maxFrameBytes: number
  /** Retries stop once the driver closes. */
  closing(): boolean
  /** The agent says an actor's host thread died: the actor is lost or restarted. */
  actorHostLost(actor: ActorTarget, node: ClusterNode): void
  badFrame(): void
  /** Brokered designs: the node took a frame needing shared values it lacks (a Fetch); they are sent to it. */
  fetch?(node: ClusterNode, hashes: readonly string[]): void
  /** Frames counted by type: Results frames received from members. */
  readonly frameCounts?: { results: number }
  /** What threads ask of the cluster (Submit frames); returns the requests without a usable id. */
  submit?(node: ClusterNode, body: Uint8Array | undefined, count: number): number
  /** How values from the network decode here: actor references and shared-value handles become the driver's own. */
  decodeScope?<T>(run: () => T): T
}

/** Handles one message from `peer`. */
export function dispatch(cx: Inbound, peer: string, parts: Parts): void {
  // Too many parts, or too many bytes in all: nothing this protocol sends.
  if (messageShapeProblem(parts, cx.maxFrameBytes) !== undefined) {
    cx.badFrame()
    return
  }
  let h: Header
  try {
    h = parseHeader(parts[0])
  } catch (err) {
    cx.badFrame()
    if (err instanceof VersionMismatch && err.type === MsgType.Hello) {
      cx.send(peer, [header(MsgType.Reject, `protocol version mismatch: ${err.message}`)])
    }
    return
  }
  if (h.type === MsgType.Hello) {
    cx.membership.hello(peer, h.info)
    return
  }
  // A peer that never said Hello, or an agent from before a restart or a loss: its frame is dropped.
  const node = cx.membership.heard(peer)
  if (!node) {
    // A node taken out (lost, or registered again) may still answer what it held: late, not malformed.
    if ((h.type === MsgType.Results || h.type === MsgType.ActorResults) && cx.membership.wasMember(peer)) late(cx, parts[1], h.count)
    // It may also have taken frames before it knew: they are ours to send again, as if it had been lost holding them.
    else if (h.type === MsgType.Taken && cx.membership.wasMember(peer)) taken(cx, peer, undefined, h.frameId, h.dropped)
    // Or an agent that never joined us took one of our frames: it still serves an earlier driver of this cluster
    // id (gone, and not yet found silent) and answers that one, not us. Sent again, uncharged, as if it had
    // dropped the frame. Any other Taken from a stranger is a bad frame.
    else if (h.type !== MsgType.Taken || !taken(cx, peer, undefined, h.frameId, true)) cx.badFrame()
    return
  }
  switch (h.type) {
    case MsgType.Results:
      if (cx.frameCounts) cx.frameCounts.results++
      // Tasks of an earlier registration of this agent were taken back when it registered again (on the brokered
      // designs too: the node that said it took them was removed); its results for them are late, and do not count
      // against what this registration holds.
      if (h.registration !== undefined && h.registration !== node.info.registration) {
        late(cx, parts[1], h.count)
        return
      }
      node.inFlight = Math.max(0, node.inFlight - h.count)
      node.tasksDone += h.count
      scoped(cx, () => results(cx, node, parts[1], h.count))
      cx.scheduleFlush()
      return
    case MsgType.ActorResults:
      scoped(cx, () => results(cx, node, parts[1], h.count))
      return
    case MsgType.Submit:
      if (!cx.submit) {
        cx.badFrame()
        return
      }
      try {
        if (scoped(cx, () => cx.submit!(node, parts[1], h.count)) > 0) cx.badFrame()
      } catch {
        cx.badFrame()
      }
      return
    case MsgType.ActorsLost:
      for (const id of h.actorIds) cx.actorHostLost({ id }, node)
      return
    case MsgType.Credit:
      node.window = h.window
      cx.scheduleFlush()
      return
    case MsgType.Heartbeat:
      if (h.load) node.busyThreads = h.load.busy
      return
    case MsgType.Leave:
      cx.membership.remove(node, 'left')
      return
    case MsgType.Taken:
      taken(cx, peer, node, h.frameId, h.dropped)
      return
    case MsgType.Fetch:
      if (cx.fetch) cx.fetch(node, h.hashes)
      else cx.badFrame()
      return
    default:
      cx.badFrame()
  }
}

/** Runs `run` with the driver's decoders installed, if it has any. */
function scoped<T>(cx: Inbound, run: () => T): T {
  return cx.decodeScope ? cx.decodeScope(run) : run()
}

/** Settles what a Results or ActorResults body answers; a failed attempt runs again if its budget allows. */
function results(cx: Inbound, node: ClusterNode, body: Uint8Array | undefined, count: number): void {
  const { ledger } = cx
  const now = performance.now()
  // Only the node holding a task may answer it (brokered designs: the node that said it took it).
  const from = node
  try {
    readResultsBody(body, count, (id, status, value) => {
      const e = ledger.answered(id, from)
      if (e === undefined) return
      if (status === Status.Ok) {
        ledger.succeed(e, value, now)
        return
      }
      const wire = fromWire(value)
      const threw = status === Status.Threw
      const actor = ledger.actor(e)
      const err = rebuildError(ledger.name(e), wire, !threw, node.nodeId)
      if (actor && !threw && (wire.code === 'ERR_ACTOR_LOST' || wire.code === 'ERR_WORKER_CRASHED')) cx.actorHostLost(actor, node)
      const kind = actor ? undefined : retryKindOf(threw, wire.code)
      if (kind !== undefined && !cx.closing() && ledger.retry(e, kind, err)) {
        cx.scheduler.enqueue(e)
        cx.scheduleFlush()
      } else {
        ledger.fail(e, err, node.nodeId)
      }
    })
  } catch {
    cx.badFrame()
  }
}

/** Results from a peer that was a member: counted as late results if well formed, else as a bad frame. */
function late(cx: Inbound, body: Uint8Array | undefined, count: number): void {
  try {
    let n = 0
    readResultsBody(body, count, () => n++)
    cx.ledger.dropLate(n)
  } catch {
    cx.badFrame()
  }
}

/**
 * Brokered designs: `peer` took frame `frameId` from the shared queue. Its
 * tasks still there are now held by that node (answerable for them, and sent
 * again if it is lost); dropped (a redelivery the agent gave up unrun), they
 * go back to the queue, uncharged; taken by a node already out, they are
 * charged as lost with it and sent again. A frame taken before is not
 * claimed again: its tasks are wherever the first taker's fate put them.
 * False when the frame is not one of ours, or was claimed before.
 */
function taken(cx: Inbound, peer: string, node: ClusterNode | undefined, frameId: number, dropped: boolean): boolean {
  if (!cx.frames) {
    cx.badFrame()
    return true
  }
  const frame = cx.frames.claim(frameId)
  if (frame === undefined) return false
  const entries: readonly TaskEntry[] = frame.entries
  if (node && !dropped) {
    for (const e of entries) cx.ledger.move(e, node)
    // Credit comes back with its Results, which answer every task of the frame.
    node.inFlight += frame.size
    return true
  }
  if (entries.length === 0) return true
  const how = dropped ? 'left' : 'lost'
  cx.scheduler.requeue(cx.ledger.takeBack(entries, how, () => ({ node: peer, reason: 'it took them after it was taken out' })))
  cx.scheduleFlush()
  return true
}
