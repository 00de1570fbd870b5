/**
 * Actors on the driver's side: placement (least actors per thread), the
 * record of each live actor, its messages (entries in the ledger, held by the
 * actor's node, sent in one frame per node and flush), stop, and restart on
 * another node after a loss when the actor was spawned with
 * `restart: 'always'`.
 */
import { randomBytes } from 'node:crypto'
import { ActorLostError, ActorStoppedError, ClusterClosedError, InvalidArgumentError, SerializationError, UnknownActorError } from '../errors.js'
import { encodeActorBody } from '../protocol/bodies.js'
import { findUnserializable, header } from '../protocol/codec.js'
import { ActorOp, MsgType } from '../protocol/messages.js'
import type { Parts } from '../transport/transport.js'
import type { ActorTarget, Ledger, TaskEntry } from './ledger.js'
import type { ClusterNode, Membership } from './membership.js'
import { makeActorRef } from './proxies.js'
import type { ActorInfo, ActorRef } from './types.js'

interface ActorRecord {
  readonly id: string
  readonly className: string
  readonly args: unknown[]
  readonly restart: boolean
  node: ClusterNode
  state: 'running' | 'restarting' | 'stopped' | 'lost'
  /** While restarting: resolves when the actor runs again (rejects if it cannot). */
  ready: Promise<void> | undefined
  /** Messages sent while restarting, in order: they go once the new instance runs, before any later one. */
  readonly held: HeldMessage[]
}

interface HeldMessage {
  op: ActorOp
  name: string
  args: unknown[]
  resolve: (value: unknown) => void
  reject: (err: unknown) => void
}

export interface ActorsContext {
  readonly ledger: Ledger
  readonly membership: Membership
  send(peer: string, parts: Parts): void
  /** Asks for a flush on the next tick (messages go out in one frame per node). */
  scheduleFlush(): void
  /** The actor classes the driver knows of (its catalog), or undefined to ask the nodes. */
  classNames(): ReadonlySet<string> | undefined
  closed(): boolean
  spawned(info: ActorInfo): void
  stopped(info: ActorInfo): void
  restarted(info: ActorInfo): void
}

export class Actors {
  private readonly records = new Map<string, ActorRecord>()
  /** Messages waiting for the next flush, per node. */
  private readonly outbox = new Map<ClusterNode, TaskEntry[]>()
  private readonly waiting: (() => void)[] = []
  private seq = 0

  constructor(private readonly cx: ActorsContext) {}

  /** Places one actor and returns its typed reference. */
  async spawn<T extends object>(className: string, args: unknown[], restart: boolean): Promise<ActorRef<T>> {
    if (this.cx.closed()) throw new ClusterClosedError('the cluster is closed')
    if (typeof className !== 'string') throw new InvalidArgumentError(`actor class name must be a string, got ${typeof className}`)
    const known = this.cx.classNames()
    if (known && !known.has(className)) throw UnknownActorError.of(className, [...known])
    const bad = findUnserializable(args, 'args')
    if (bad) throw new SerializationError(`cannot spawn actor "${className}": ${bad}; msgpack cannot carry it`)
    const node = await this.nodeForActor()
    const rec: ActorRecord = {
      id: `${className}-${++this.seq}-${randomBytes(3).toString('hex')}`,
      className,
      args,
      restart,
      node,
      state: 'running',
      ready: undefined,
      held: [],
    }
    node.actors++
    try {
      await this.message(rec, ActorOp.Spawn, className, args)
    } catch (err) {
      rec.state = 'lost'
      rec.node.actors--
      throw err
    }
    this.records.set(rec.id, rec)
    this.cx.spawned({ id: rec.id, className, node: node.nodeId })
    return makeActorRef<T>(
      rec.id,
      () => rec.node.nodeId,
      (method, margs) => this.message(rec, ActorOp.Call, method, margs),
      () => this.stop(rec),
    )
  }

  private async stop(rec: ActorRecord): Promise<void> {
    if (rec.state === 'stopped' || rec.state === 'lost') return
    if (rec.ready) await rec.ready.catch(() => {})
    this.records.delete(rec.id)
    if (rec.state !== 'running') return
    await this.message(rec, ActorOp.Stop, 'stop', [])
    rec.state = 'stopped'
    rec.node.actors--
    this.cx.stopped({ id: rec.id, className: rec.className, node: rec.node.nodeId })
  }

  /** The node with the fewest actors per thread; waits for one to join if there is none. */
  private async nodeForActor(): Promise<ClusterNode> {
    let node = this.cx.membership.leastLoaded()
    while (!node) {
      await new Promise<void>((resolve) => this.waiting.push(resolve))
      if (this.cx.closed()) throw new ClusterClosedError('the cluster is closed')
      node = this.cx.membership.leastLoaded()
    }
    return node
  }

  /** A node joined (or the cluster closes): spawns waiting for a node look again. */
  wake(): void {
    for (const w of this.waiting.splice(0)) w()
  }

  private message(rec: ActorRecord, op: ActorOp, name: string, args: unknown[]): Promise<unknown> {
    if (this.cx.closed()) return Promise.reject(new ClusterClosedError('the cluster is closed'))
    if (rec.state === 'stopped') return Promise.reject(new ActorStoppedError(`actor ${rec.id} was stopped`))
    // Restarting (waiting for a node, or the new instance's Spawn on its way): in line behind the earlier ones.
    if (rec.ready && op !== ActorOp.Spawn) return new Promise((resolve, reject) => rec.held.push({ op, name, args, resolve, reject }))
    if (rec.state === 'lost' || !this.cx.membership.has(rec.node)) {
      return Promise.reject(new ActorLostError(`actor ${rec.id} was lost with its node ${rec.node.nodeId}`))
    }
    if (op === ActorOp.Call) {
      const bad = findUnserializable(args, 'args')
      if (bad) return Promise.reject(new SerializationError(`cannot call ${rec.className}.${name}: ${bad}; msgpack cannot carry it`))
    }
    return new Promise((resolve) => {
      const { ledger } = this.cx
      const e = ledger.add(ledger.nextId, name, args, resolve, 0, rec, op, undefined, rec.node)
      let box = this.outbox.get(rec.node)
      if (!box) this.outbox.set(rec.node, (box = []))
      box.push(e)
      this.cx.scheduleFlush()
    })
  }

  /** Sends each node's waiting messages, one frame per node. */
  flush(): void {
    for (const [node, entries] of this.outbox) {
      this.outbox.delete(node)
      let body: Buffer
      try {
        const { ledger } = this.cx
        body = encodeActorBody(
          entries.map((e) => ({ id: ledger.id(e), op: ledger.op(e), actorId: ledger.actor(e)!.id, name: ledger.name(e), args: ledger.args(e) })),
        )
      } catch (err) {
        for (const e of entries) this.cx.ledger.fail(e, new SerializationError(`cannot send actor message: ${(err as Error).message}`, { cause: err }))
        continue
      }
      this.cx.send(node.peer, [header(MsgType.Actor, entries.length), body])
    }
  }

  /** A node is out: its messages in flight fail, its actors restart elsewhere or are lost. */
  nodeRemoved(node: ClusterNode, reason: string): void {
    this.outbox.delete(node)
    for (const e of this.cx.ledger.entriesHeldBy(node)) {
      const actor = this.cx.ledger.actor(e)
      if (actor)
        this.cx.ledger.fail(e, new ActorLostError(`actor ${actor.id} was lost with its node ${node.nodeId} (${reason}); the message may or may not have run`))
    }
    for (const rec of this.records.values()) {
      // A restart under way on this node sees its Spawn fail (above) and tries the next node itself.
      if (rec.node !== node || rec.state !== 'running' || rec.ready !== undefined) continue
      if (rec.restart && !this.cx.closed()) {
        this.restart(rec)
      } else {
        rec.state = 'lost'
        this.records.delete(rec.id)
      }
    }
  }

  /**
   * The agent reports the actor's host thread dead (this message crashed it,
   * or found the actor gone with it): the actor is lost, or restarted on the
   * node with the fewest actors, as after the loss of its node. Messages
   * sent after the restart began wait for the new instance.
   */
  hostLost(actor: ActorTarget, node: ClusterNode): void {
    const rec = this.records.get(actor.id)
    // Already known (lost, restarting, or elsewhere now).
    if (!rec || rec.node !== node || rec.state !== 'running' || rec.ready !== undefined) return
    node.actors--
    if (rec.restart && !this.cx.closed()) {
      this.restart(rec)
    } else {
      rec.state = 'lost'
      this.records.delete(rec.id)
    }
  }

  /** Recreates a restartable actor whose node was lost, on another node, from its constructor arguments. */
  private restart(rec: ActorRecord): void {
    rec.state = 'restarting'
    rec.ready = (async () => {
      for (;;) {
        const node = await this.nodeForActor()
        rec.node = node
        node.actors++
        try {
          rec.state = 'running'
          await this.message(rec, ActorOp.Spawn, rec.className, rec.args)
          rec.ready = undefined
          this.cx.restarted({ id: rec.id, className: rec.className, node: node.nodeId })
          // In the order they were sent, before anything sent from now on.
          for (const m of rec.held.splice(0)) this.message(rec, m.op, m.name, m.args).then(m.resolve, m.reject)
          return
        } catch (err) {
          node.actors--
          // Lost again while starting: try the next node; anything else is final.
          if (!(err instanceof ActorLostError) || this.cx.closed()) {
            rec.state = 'lost'
            rec.ready = undefined
            for (const m of rec.held.splice(0)) m.reject(err)
            throw err
          }
          rec.state = 'restarting'
        }
      }
    })()
    rec.ready.catch(() => {})
  }

  /** The live actors. */
  live(): ActorInfo[] {
    const list: ActorInfo[] = []
    for (const rec of this.records.values()) {
      if (rec.state === 'running' && this.cx.membership.has(rec.node)) list.push({ id: rec.id, className: rec.className, node: rec.node.nodeId })
    }
    return list
  }
}
