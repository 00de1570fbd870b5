/**
 * Membership: which agents serve this driver. It answers Hellos (welcome,
 * a repeated Hello, a re-registration, a mismatched id), tracks liveness by
 * heartbeats on a monotonic clock, and takes a node out when it leaves or
 * goes silent past `nodeTimeoutMs` — telling the driver, which returns the
 * node's tasks to the queue. A stall of the driver's own event loop is not
 * held against the agents: after one, no verdict is passed until they have
 * had a heartbeat's time to be heard.
 */
import { header } from '../protocol/codec.js'
import { MsgType, type HelloInfo } from '../protocol/messages.js'
import type { Parts } from '../transport/transport.js'
import type { TaskHolder } from './ledger.js'
import type { NodeInfo } from './types.js'

/** One agent, as the driver sees it. */
export class ClusterNode implements TaskHolder {
  readonly tasks: ReadonlySet<string>
  readonly actorClasses: ReadonlySet<string>
  state: 'up' | 'leaving' = 'up'
  /** Tasks the node asks to hold at once (its credit). */
  window: number
  /** Tasks sent to the node and not yet answered. */
  inFlight = 0
  tasksDone = 0
  busyThreads = 0
  actors = 0
  /** When it was last heard from, on the monotonic clock (ms). */
  lastSeen: number

  constructor(
    readonly peer: string,
    readonly info: HelloInfo,
    readonly local: boolean,
    now: number,
  ) {
    this.tasks = new Set(info.tasks)
    this.actorClasses = new Set(info.actors)
    this.window = info.window
    this.lastSeen = now
  }

  get nodeId(): string {
    return this.info.agentId
  }

  /** Credit returns with each Results frame, not per settled task. */
  taskLeft(): void {}

  /** Free credit: tasks it can take now. */
  get free(): number {
    return this.state === 'up' ? this.window - this.inFlight : 0
  }

  describe(now: number): NodeInfo {
    return {
      id: this.info.agentId,
      host: this.info.host,
      pid: this.info.pid,
      threads: this.info.threads,
      version: this.info.version,
      state: this.state,
      local: this.local,
      window: this.window,
      inFlight: this.inFlight,
      tasksDone: this.tasksDone,
      busyThreads: this.busyThreads,
      actors: this.actors,
      heartbeatAgeMs: Math.round(now - this.lastSeen),
    }
  }
}

export interface MembershipOptions {
  readonly heartbeatMs: number
  readonly nodeTimeoutMs: number
  /** This driver's session id, told to agents in Welcome. */
  readonly session: string
  /** Ids of the agents this process started (listed as local). */
  readonly localIds: ReadonlySet<string>
  /** The monotonic clock, in ms (tests pass their own). */
  readonly now?: () => number
  /**
   * With CURVE: the agent key a Hello proves (see `checkHelloProof`), or
   * undefined when it proves none. An agent id is bound to the first key
   * that registered it: a Hello under that id proving another key is refused.
   */
  readonly verifyKey?: (peer: string, info: HelloInfo) => string | undefined
}

export interface MembershipEvents {
  send(peer: string, parts: Parts): void
  joined(node: ClusterNode): void
  /** The node is out (already removed from the list): requeue its tasks, restart its actors. */
  removed(node: ClusterNode, how: 'left' | 'lost', reason: string): void
  /** A frame that breaks the protocol (a Hello whose id does not match its socket). */
  badFrame(): void
}

/** Peers told to say Hello again are remembered this long, so a flood of stray frames gets one answer a second. */
const BYE_EVERY_MS = 1000
const MAX_BYE_PEERS = 10_000

export class Membership {
  private readonly nodes = new Map<string, ClusterNode>()
  private readonly byeSent = new Map<string, number>()
  /**
   * Peers taken out (lost, left, registered again), with the registration they
   * had: what they still send is late, not malformed, and a Hello under that
   * registration is from an agent that still holds work we took back.
   */
  private readonly former = new Map<string, string | undefined>()
  /** The members by agent id (a restarted agent comes back over a new connection, under a new routing id). */
  private readonly byAgent = new Map<string, ClusterNode>()
  /** With CURVE: the key each agent id registered with first. */
  private readonly keys = new Map<string, string>()
  private readonly now: () => number
  private lastTick: number
  nodesLost = 0
  /** Hellos refused for their key: none proven, or not the one the agent id is bound to. */
  keysRefused = 0

  constructor(
    private readonly options: MembershipOptions,
    private readonly events: MembershipEvents,
  ) {
    this.now = options.now ?? (() => performance.now())
    this.lastTick = this.now()
  }

  get size(): number {
    return this.nodes.size
  }

  get(peer: string): ClusterNode | undefined {
    return this.nodes.get(peer)
  }

  /** Is this node still a member (not removed, not replaced by a re-registration)? */
  has(node: ClusterNode): boolean {
    return this.nodes.get(node.peer) === node
  }

  [Symbol.iterator](): IterableIterator<ClusterNode> {
    return this.nodes.values()
  }

  list(): NodeInfo[] {
    const now = this.now()
    return [...this.nodes.values()].map((n) => n.describe(now))
  }

  private welcome(peer: string, info: HelloInfo): void {
    this.events.send(peer, [header(MsgType.Welcome, { nodeId: info.agentId, heartbeatMs: this.options.heartbeatMs, session: this.options.session })])
  }

  /** An agent says Hello: welcome it, again if it repeated itself, or as a new node if it had lost us. */
  hello(peer: string, info: HelloInfo): void {
    if (!ownsPeer(info.agentId, peer)) {
      this.events.badFrame()
      this.events.send(peer, [header(MsgType.Reject, `agent id ${info.agentId} does not match its socket identity`)])
      return
    }
    let key: string | undefined
    if (this.options.verifyKey) {
      key = this.options.verifyKey(peer, info)
      const bound = this.keys.get(info.agentId)
      const refusal =
        key === undefined
          ? `agent ${info.agentId} did not prove its CURVE key`
          : bound !== undefined && bound !== key
            ? `agent id ${info.agentId} belongs to another agent key`
            : undefined
      if (refusal !== undefined) {
        this.keysRefused++
        this.events.send(peer, [header(MsgType.Reject, refusal)])
        return
      }
    }
    const old = this.nodes.get(peer)
    // A Hello sent again before our Welcome reached the agent (a busy agent process): welcome it again, change nothing.
    if (old && info.registration !== undefined && old.info.registration === info.registration) {
      old.lastSeen = this.now()
      this.welcome(peer, info)
      return
    }
    // An agent we took out, back under the same registration (it was frozen, or cut off): it still holds work we
    // gave to others. Told we do not know it, it drops that work and says Hello under a new registration.
    if (!old && info.registration !== undefined && this.former.get(peer) === info.registration) {
      this.events.send(peer, [header(MsgType.DriverBye)])
      return
    }
    if (old) this.remove(old, 'lost', 'it registered again (it had lost this driver)')
    // The same agent id over another connection (the agent restarted, or its socket did): the old one is gone.
    const holder = this.byAgent.get(info.agentId)
    if (holder) this.remove(holder, 'lost', 'it registered again over a new connection')
    const node = new ClusterNode(peer, info, this.options.localIds.has(info.agentId), this.now())
    this.nodes.set(peer, node)
    this.byAgent.set(info.agentId, node)
    if (key !== undefined) this.keys.set(info.agentId, key)
    this.welcome(peer, info)
    this.events.joined(node)
  }

  /**
   * A frame from `peer`: the node it came from, marked alive; undefined for a
   * peer that never said Hello (or was removed), which is told to introduce
   * itself again (at most once a second per peer).
   */
  heard(peer: string): ClusterNode | undefined {
    const node = this.nodes.get(peer)
    if (node) {
      node.lastSeen = this.now()
      return node
    }
    const now = this.now()
    const last = this.byeSent.get(peer)
    if (last === undefined || now - last > BYE_EVERY_MS) {
      if (this.byeSent.size > MAX_BYE_PEERS) this.byeSent.clear()
      this.byeSent.set(peer, now)
      this.events.send(peer, [header(MsgType.DriverBye)])
    }
    return undefined
  }

  /** Was `peer` a member once (and is no longer)? */
  wasMember(peer: string): boolean {
    return this.former.has(peer) && !this.nodes.has(peer)
  }

  /**
   * Heartbeat round: nodes silent past the timeout are lost; the others get a
   * heartbeat. `excused`: the agents could not be heard (the broker is being
   * reconnected), so no verdicts, as after a stall.
   */
  tick(excused = false): void {
    const now = this.now()
    // After a stall of our own event loop the agents' heartbeats are still unread: no verdicts then.
    const stalled = excused || now - this.lastTick > 2 * this.options.heartbeatMs
    this.lastTick = now
    for (const node of [...this.nodes.values()]) {
      if (stalled) node.lastSeen = now
      else if (now - node.lastSeen > this.options.nodeTimeoutMs) {
        this.remove(node, 'lost', `no heartbeat for ${Math.round(now - node.lastSeen)} ms`)
        continue
      }
      this.events.send(node.peer, [header(MsgType.Heartbeat)])
    }
  }

  /** Takes a node out; false if it was already out. */
  remove(node: ClusterNode, how: 'left' | 'lost', reason: string = how): boolean {
    if (!this.has(node)) return false
    this.nodes.delete(node.peer)
    if (this.byAgent.get(node.nodeId) === node) this.byAgent.delete(node.nodeId)
    if (this.former.size > MAX_BYE_PEERS) this.former.clear()
    this.former.set(node.peer, node.info.registration)
    if (how === 'lost') this.nodesLost++
    this.events.removed(node, how, reason)
    return true
  }

  /** The driver closes: every remote node is told, and the list is emptied. */
  clear(): void {
    for (const node of this.nodes.values()) if (!node.local) this.events.send(node.peer, [header(MsgType.DriverBye)])
    this.nodes.clear()
    this.byAgent.clear()
  }

  /** The node with the fewest actors per thread, among those up. */
  leastLoaded(): ClusterNode | undefined {
    let best: ClusterNode | undefined
    for (const n of this.nodes.values()) {
      if (n.state === 'up' && (!best || n.actors / n.info.threads < best.actors / best.info.threads)) best = n
    }
    return best
  }

  /** Names offered by the nodes (when the driver has no catalog of its own); undefined with no node. */
  offered(pick: (n: ClusterNode) => ReadonlySet<string>): Set<string> | undefined {
    if (this.nodes.size === 0) return undefined
    const names = new Set<string>()
    for (const n of this.nodes.values()) for (const t of pick(n)) names.add(t)
    return names
  }
}

/**
 * Is `peer` a routing id agent `agentId` may use: the id itself (brokered
 * designs, other clients), or the id, `/` and 32 hex digits (the ZeroMQ agent:
 * a secret part, so no other peer can claim its connection)?
 */
function ownsPeer(agentId: string, peer: string): boolean {
  return peer === agentId || (peer.length === agentId.length + 33 && peer.startsWith(`${agentId}/`) && /^[0-9a-f]{32}$/.test(peer.slice(-32)))
}
