/**
 * Actors on the driver's side: placement (least actors per thread, pinned to
 * a node, or a group spread over the nodes), the record of each live actor and
 * the names they are registered under, its messages (entries in the ledger, held by the
 * actor's node, sent in one frame per node and flush), stop, restart on
 * another node after a loss when the actor was spawned with
 * `restart: 'always'` (within its restart budget), and supervision: an
 * actor spawned by an actor is its child, stops with it, and its parent is
 * told when it is lost for good.
 */
import { randomBytes } from 'node:crypto'
import {
  ActorLostError,
  ActorNameError,
  ActorStoppedError,
  ClusterClosedError,
  InvalidArgumentError,
  RemoteTaskError,
  fromWire,
  rebuildError,
  SerializationError,
  UnknownActorError,
  UnknownMethodError,
  UnknownNodeError,
  WorkerCrashedError,
} from '../errors.js'
import { encodeActorBody } from '../protocol/bodies.js'
import { takeWrittenRefs, type SharedRef } from '../protocol/shared-ref.js'
import { findUnserializable, header } from '../protocol/codec.js'
import { ActorOp, MsgType } from '../protocol/messages.js'
import type { Parts } from '../transport/transport.js'
import type { ActorTarget, Ledger, TaskEntry } from './ledger.js'
import type { ClusterNode, Membership } from './membership.js'
import { makeActorRef } from './proxies.js'
import type { ResolvedSpawnOptions } from './task-options.js'
import type { ActorErrorEvent, ActorFailure, ActorInfo, ActorRef } from './types.js'

interface ActorRecord {
  readonly id: string
  readonly className: string
  readonly args: unknown[]
  readonly restart: boolean
  readonly maxRestarts: number
  readonly restartWindowMs: number
  readonly restartBackoffMs: number
  readonly restartBackoffMaxMs: number
  /** While a restart waits out its back-off: ends the wait at once (a stop, or the cluster closing). */
  endBackoff: (() => void) | undefined
  /** When each restart within the window began (ms, monotonic), oldest first. */
  readonly restarts: number[]
  /** The actor that spawned it; it stops with its parent. */
  readonly parent: ActorRecord | undefined
  /** The actors it spawned that still run (or restart). */
  readonly children: Set<ActorRecord>
  /** Why it was lost for good: its later messages reject with this. */
  failure: ActorLostError | undefined
  /** The name it is registered under, if any (held while it runs or restarts). */
  readonly name: string | undefined
  /** The node id it was pinned to, if any: a restart goes back there while that node is a member. */
  readonly pin: string | undefined
  node: ClusterNode
  state: 'running' | 'restarting' | 'stopped' | 'lost'
  /** While restarting: resolves when the actor runs again (rejects if it cannot). */
  ready: Promise<void> | undefined
  /** Messages sent while restarting, in order: they go once the new instance runs, before any later one. */
  readonly held: HeldMessage[]
  /** The stop under way, graceful or with force: a stop asked for meanwhile settles with it rather than sending another. */
  stopUnderWay: { force: boolean; done: Promise<void> } | undefined
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
  /** Sends a frame, with the shared-value handles it carries (their values go ahead of it). */
  send(peer: string, parts: Parts, refs: readonly SharedRef[]): void
  /** Fails the messages of `entries` that carry a shared value `node` cannot hold, and returns them (see TaskFrames). */
  unfit?(node: ClusterNode, entries: readonly TaskEntry[], refs: readonly SharedRef[]): ReadonlySet<TaskEntry> | undefined
  /** Asks for a flush on the next tick (messages go out in one frame per node). */
  scheduleFlush(): void
  /** The actor classes the driver knows of (its catalog), or undefined to ask the nodes. */
  classNames(): ReadonlySet<string> | undefined
  closed(): boolean
  spawned(info: ActorInfo): void
  stopped(info: ActorInfo): void
  restarted(info: ActorInfo): void
  /** A `tell` failed. */
  toldFailed(info: ActorErrorEvent): void
  /** An actor was lost for good. */
  lost(info: ActorFailure, error: Error): void
  /** A child was lost for good and its parent told. */
  childFailed(info: ActorFailure): void
}

/** The method of a parent actor called (as a tell) when one of its children is lost for good, if the class has it. */
const CHILD_FAILED_METHOD = 'childFailed'

/** The spawns of one `with({ spread: true })` view: how many of them each node got. */
export class SpawnGroup {
  readonly counts = new Map<string, number>()
}

export class Actors {
  private readonly records = new Map<string, ActorRecord>()
  /** Names held, by name: the live (or restarting) actor, or `spawning` while its spawn is under way. */
  private readonly names = new Map<string, ActorRecord | 'spawning'>()
  /** The references handed out, by actor id: `cluster.actor(name)` returns the same one. */
  private readonly refs = new Map<string, ActorRef<object>>()
  /** The references of actors whose stop is under way (forgotten already): a stop with force from a thread still finds them. */
  private readonly stopping = new Map<string, ActorRef<object>>()
  /** Messages waiting for the next flush, per node. */
  private readonly outbox = new Map<ClusterNode, TaskEntry[]>()
  private readonly waiting: (() => void)[] = []
  private seq = 0

  constructor(private readonly cx: ActorsContext) {}

  /** Places one actor and returns its typed reference. */
  async spawn<T extends object>(className: string, args: unknown[], options: ResolvedSpawnOptions, group?: SpawnGroup): Promise<ActorRef<T>> {
    if (this.cx.closed()) throw new ClusterClosedError('the cluster is closed')
    if (typeof className !== 'string') throw new InvalidArgumentError(`actor class name must be a string, got ${typeof className}`)
    const known = this.cx.classNames()
    if (known && !known.has(className)) throw UnknownActorError.of(className, [...known])
    const bad = findUnserializable(args, 'args')
    if (bad) throw new SerializationError(`cannot spawn actor "${className}": ${bad}; msgpack cannot carry it`)
    const parent = options.parent === undefined ? undefined : this.liveParent(options.parent, className)
    const { name } = options
    if (name !== undefined) {
      const holder = this.names.get(name)
      if (holder !== undefined) {
        const who = holder === 'spawning' ? 'an actor being spawned' : `actor ${holder.id} (${holder.className})`
        throw new ActorNameError('ERR_ACTOR_NAME_TAKEN', name, `the actor name "${name}" is taken by ${who}; a name is freed when its actor stops or is lost`)
      }
      this.names.set(name, 'spawning')
    }
    let rec: ActorRecord | undefined
    try {
      // The least-loaded node is chosen and counted in the same turn: spawns issued together each see the ones before.
      const node =
        options.node !== undefined
          ? this.pinned(options.node)
          : group
            ? await this.nodeForGroup(group)
            : (this.cx.membership.leastLoaded() ?? (await this.nodeForActor()))
      rec = {
        id: `${className}-${++this.seq}-${randomBytes(3).toString('hex')}`,
        className,
        args,
        restart: options.restart,
        maxRestarts: options.maxRestarts,
        restartWindowMs: options.restartWindowMs,
        restartBackoffMs: options.restartBackoffMs,
        restartBackoffMaxMs: options.restartBackoffMaxMs,
        endBackoff: undefined,
        restarts: [],
        parent,
        children: new Set(),
        failure: undefined,
        name,
        pin: options.node,
        node,
        state: 'running',
        ready: undefined,
        held: [],
        stopUnderWay: undefined,
      }
      node.actors++
      await this.message(rec, ActorOp.Spawn, className, args)
    } catch (err) {
      if (rec) {
        rec.state = 'lost'
        rec.node.actors--
      }
      if (name !== undefined) this.names.delete(name)
      throw err
    }
    this.records.set(rec.id, rec)
    if (name !== undefined) this.names.set(name, rec)
    this.cx.spawned(this.info(rec))
    if (parent) {
      // The parent stopped or was lost while its child was being spawned: the child goes too.
      if (!this.records.has(parent.id) || parent.state === 'stopped' || parent.state === 'lost') {
        await this.stop(rec).catch(() => {})
        throw new ActorStoppedError(`actor ${parent.id} (${parent.className}) stopped while spawning its child ${rec.id}; the child was stopped with it`)
      }
      parent.children.add(rec)
    }
    const live = rec
    const ref = makeActorRef<T>({
      id: rec.id,
      name,
      node: () => live.node.nodeId,
      send: (method, margs) => this.message(live, ActorOp.Call, method, margs),
      tell: (method, margs) => {
        this.message(live, ActorOp.Call, method, margs).catch((error: unknown) =>
          this.cx.toldFailed({
            actor: { id: live.id, className: live.className, ...(name === undefined ? {} : { name }) },
            method,
            error: error instanceof Error ? error : new Error(String(error)),
          }),
        )
      },
      stop: (force) => this.stop(live, force),
    })
    this.refs.set(rec.id, ref)
    return ref
  }

  /**
   * The reference of actor `id`, as a reference arriving from a thread or in
   * a result decodes on the driver: the one `spawn` returned, or, for an
   * actor not (or no longer) known here, one whose calls fail with
   * ActorLostError.
   */
  refOf(id: string, name: string | undefined): ActorRef<object> {
    const ref = this.refs.get(id) ?? this.stopping.get(id)
    if (ref) return ref
    const gone = () => new ActorLostError(`actor ${id} is not running in this cluster (stopped, lost, or never spawned here)`)
    return makeActorRef<object>({
      id,
      name,
      node: () => '',
      send: () => Promise.reject(gone()),
      tell: (method) => this.cx.toldFailed({ actor: { id, className: '', ...(name === undefined ? {} : { name }) }, method, error: gone() }),
      stop: () => Promise.resolve(),
    })
  }

  /** An ask through the reference of actor `id` (from a thread). */
  ask(id: string, method: string, args: unknown[]): Promise<unknown> {
    const ref = this.refOf(id, undefined) as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>
    return ref[method]!(...args)
  }

  /** A tell through the reference of actor `id` (from a thread): a failure is an `actor:error` event. */
  tell(id: string, method: string, args: unknown[]): void {
    const tell = this.refOf(id, undefined).tell as unknown as Record<string, (...a: unknown[]) => void>
    tell[method]!(...args)
  }

  /** A tell delivered inside a node (between actors of one thread) failed there: one `actor:error`, as for any tell. */
  toldFailedInNode(id: string, method: string, error: unknown): void {
    const rec = this.records.get(id)
    const wire = fromWire(error)
    const err =
      wire.code === 'ERR_TASK_FAILED' || wire.code === undefined
        ? new RemoteTaskError(`${rec?.className ?? ''}.${method}`, wire, rec?.node.nodeId)
        : rebuildError(method, wire, true)
    this.cx.toldFailed({
      actor: { id, className: rec?.className ?? '', ...(rec?.name === undefined ? {} : { name: rec.name }) },
      method,
      error: err,
    })
  }

  /** The reference of the live actor registered under `name`. */
  lookup<T extends object>(name: string): ActorRef<T> {
    if (typeof name !== 'string') throw new InvalidArgumentError(`actor name must be a string, got ${typeof name}`)
    const rec = this.names.get(name)
    const ref = rec === undefined || rec === 'spawning' ? undefined : this.refs.get(rec.id)
    if (!ref) {
      const names = [...this.names.keys()].filter((n) => this.names.get(n) !== 'spawning')
      const some =
        names.length === 0
          ? 'no actor has a name'
          : `the named actors are ${names
              .slice(0, 10)
              .map((n) => `"${n}"`)
              .join(', ')}${names.length > 10 ? ', ...' : ''}`
      throw new ActorNameError('ERR_ACTOR_NOT_FOUND', name, `no live actor is named "${name}"; ${some}`)
    }
    return ref as ActorRef<T>
  }

  /** The record of a running (or restarting) actor spawning a child, or an error saying it is not running. */
  private liveParent(id: string, className: string): ActorRecord {
    const parent = this.records.get(id)
    if (!parent || parent.state === 'stopped' || parent.state === 'lost') {
      throw new ActorStoppedError(`cannot spawn "${className}" as a child of actor ${id}: that actor is not running`)
    }
    return parent
  }

  private info(rec: ActorRecord): ActorInfo {
    return { id: rec.id, className: rec.className, node: rec.node.nodeId, ...(rec.name === undefined ? {} : { name: rec.name }) }
  }

  /** The actor is gone for good: its record, its name and its reference go. */
  private forget(rec: ActorRecord): void {
    this.records.delete(rec.id)
    this.refs.delete(rec.id)
    if (rec.name !== undefined && this.names.get(rec.name) === rec) this.names.delete(rec.name)
    rec.parent?.children.delete(rec)
  }

  /**
   * Stops the actor's children (and theirs, each after its parent): they
   * belong to the instance that spawned them, so they go when it stops or is
   * lost, restarted or not.
   */
  private async stopChildren(rec: ActorRecord, force = false): Promise<void> {
    const children = [...rec.children]
    rec.children.clear()
    await Promise.all(children.map((child) => this.stop(child, force).catch(() => {})))
  }

  /** The member with this node id, or an error naming it and the members. */
  private pinned(nodeId: string): ClusterNode {
    const known: string[] = []
    for (const n of this.cx.membership) {
      if (n.state !== 'up') continue
      if (n.nodeId === nodeId) return n
      known.push(n.nodeId)
    }
    throw new UnknownNodeError(nodeId, known)
  }

  /** For a spread group: the node with the fewest of the group's actors, the least loaded among equals. */
  private async nodeForGroup(group: SpawnGroup): Promise<ClusterNode> {
    await this.nodeForActor()
    let best: ClusterNode | undefined
    let bestCount = Infinity
    for (const n of this.cx.membership) {
      if (n.state !== 'up') continue
      const count = group.counts.get(n.nodeId) ?? 0
      if (!best || count < bestCount || (count === bestCount && n.actors / n.info.threads < best.actors / best.info.threads)) {
        best = n
        bestCount = count
      }
    }
    // nodeForActor found an up node this tick, so there is one.
    group.counts.set(best!.nodeId, bestCount + 1)
    return best!
  }

  /**
   * Lets the actor's queued messages finish and removes it; then its children
   * stop the same way (the parent's last messages still find them running).
   * `force`: at once (ActorOp.Kill, handled on arrival), even while a
   * graceful stop waits behind a method that never settles.
   */
  private stop(rec: ActorRecord, force = false): Promise<void> {
    // A graceful stop joins any stop under way; one with force joins only another with force (it must not wait).
    const under = rec.stopUnderWay
    if (under && (under.force || !force)) return under.done
    const done = this.stopOnce(rec, force)
    const stop = (rec.stopUnderWay = { force, done })
    const over = () => {
      if (rec.stopUnderWay === stop) rec.stopUnderWay = undefined
    }
    done.then(over, over)
    return done
  }

  private async stopOnce(rec: ActorRecord, force: boolean): Promise<void> {
    if (rec.state === 'stopped' || rec.state === 'lost') return
    // A restart waiting out its back-off goes ahead now: its held messages are answered, then it stops.
    rec.endBackoff?.()
    if (rec.ready) await rec.ready.catch(() => {})
    const ref = this.refs.get(rec.id)
    if (ref) this.stopping.set(rec.id, ref)
    this.forget(rec)
    try {
      if (rec.state !== 'running') return
      await this.message(rec, force ? ActorOp.Kill : ActorOp.Stop, 'stop', [])
      // A forced stop may have finished while this one waited: the actor is counted out once.
      if (rec.state !== 'running') return
      rec.state = 'stopped'
      rec.node.actors--
      this.cx.stopped(this.info(rec))
    } finally {
      if (rec.state !== 'running') this.stopping.delete(rec.id)
      await this.stopChildren(rec, force)
    }
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
    // Closing: restarts waiting out a back-off go on, find the cluster closed, and reject their held messages.
    if (this.cx.closed()) for (const rec of this.records.values()) rec.endBackoff?.()
  }

  private message(rec: ActorRecord, op: ActorOp, name: string, args: unknown[]): Promise<unknown> {
    if (this.cx.closed()) return Promise.reject(new ClusterClosedError('the cluster is closed'))
    if (rec.state === 'stopped') return Promise.reject(new ActorStoppedError(`actor ${rec.id} was stopped`))
    if (rec.failure) return Promise.reject(rec.failure)
    // Restarting (waiting for a node, or the new instance's Spawn on its way): in line behind the earlier ones.
    if (rec.ready && op !== ActorOp.Respawn) return new Promise((resolve, reject) => rec.held.push({ op, name, args, resolve, reject }))
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
    for (const [node, waiting] of this.outbox) {
      this.outbox.delete(node)
      let entries: readonly TaskEntry[] = waiting
      // Each round fails at least one message (one carrying a value the node cannot hold) or sends the frame.
      while (entries.length > 0) {
        let body: Buffer
        // Handles written by an earlier round are not this frame's.
        takeWrittenRefs()
        try {
          const { ledger } = this.cx
          body = encodeActorBody(
            entries.map((e) => ({ id: ledger.id(e), op: ledger.op(e), actorId: ledger.actor(e)!.id, name: ledger.name(e), args: ledger.args(e) })),
          )
        } catch (err) {
          for (const e of entries) this.cx.ledger.fail(e, new SerializationError(`cannot send actor message: ${(err as Error).message}`, { cause: err }))
          break
        }
        const refs = takeWrittenRefs()
        const failed = refs.length > 0 ? this.cx.unfit?.(node, entries, refs) : undefined
        if (failed === undefined || failed.size === 0) {
          this.cx.send(node.peer, [header(MsgType.Actor, entries.length), body], refs)
          break
        }
        entries = entries.filter((e) => !failed.has(e))
      }
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
    // A restart under way on this node sees its Spawn fail (above) and tries the next node itself.
    const here = new Set<ActorRecord>()
    for (const rec of this.records.values()) if (rec.node === node && rec.state === 'running' && rec.ready === undefined) here.add(rec)
    for (const rec of here) {
      // One lost with an ancestor goes in that ancestor's stop, neither restarted nor reported to a lost parent.
      if (this.hasAncestorIn(rec, here)) continue
      this.instanceLost(rec, `its node ${node.nodeId} was lost (${reason})`)
    }
  }

  private hasAncestorIn(rec: ActorRecord, set: ReadonlySet<ActorRecord>): boolean {
    for (let p = rec.parent; p !== undefined; p = p.parent) if (set.has(p)) return true
    return false
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
    this.instanceLost(rec, `its host thread on node ${node.nodeId} died`)
  }

  /**
   * The actor's instance is gone: its children stop, and it restarts if its
   * policy and budget allow, or is lost for good.
   */
  private instanceLost(rec: ActorRecord, reason: string): void {
    void this.stopChildren(rec)
    if (rec.restart && !this.cx.closed() && this.budgetAllows(rec)) this.restart(rec)
    else this.fail(rec, reason)
  }

  /** Whether one more restart fits the budget (`maxRestarts` within `restartWindowMs`); if so it is counted. */
  private budgetAllows(rec: ActorRecord): boolean {
    const now = performance.now()
    const since = now - rec.restartWindowMs
    while (rec.restarts.length > 0 && rec.restarts[0]! <= since) rec.restarts.shift()
    if (rec.restarts.length >= rec.maxRestarts) return false
    rec.restarts.push(now)
    return true
  }

  /**
   * The actor is lost for good: its held and later messages reject with
   * ActorLostError, its name is freed, `actor:lost` is emitted, and its
   * parent is told (its `childFailed(info)` method called as a tell, when the
   * class has one; `actor:child-failed`).
   */
  private fail(rec: ActorRecord, reason: string, cause?: unknown): ActorLostError {
    const spent = rec.restart && !this.cx.closed() && rec.restarts.length >= rec.maxRestarts
    const why = spent ? `${reason}; its restart budget is spent (${rec.maxRestarts} restarts within ${rec.restartWindowMs} ms)` : reason
    const error = new ActorLostError(`actor ${rec.id} (${rec.className}) was lost for good: ${why}`, cause === undefined ? undefined : { cause })
    rec.state = 'lost'
    rec.ready = undefined
    rec.failure = error
    // A child being stopped with its parent is not reported to it.
    const parent = rec.parent?.children.has(rec) ? rec.parent : undefined
    this.forget(rec)
    for (const m of rec.held.splice(0)) m.reject(error)
    const info: ActorFailure = {
      actor: { id: rec.id, className: rec.className, ...(rec.name === undefined ? {} : { name: rec.name }) },
      ...(rec.parent === undefined ? {} : { parent: rec.parent.id }),
      reason: why,
      restarts: rec.restarts.length,
    }
    if (this.cx.closed()) return error
    this.cx.lost(info, error)
    if (parent && parent.state !== 'stopped' && parent.state !== 'lost') {
      this.cx.childFailed(info)
      // A tell the parent may not answer: a class without the method is not a failure worth an actor:error.
      this.message(parent, ActorOp.Call, CHILD_FAILED_METHOD, [info]).catch((err: unknown) => {
        if (err instanceof UnknownMethodError) return
        this.cx.toldFailed({
          actor: { id: parent.id, className: parent.className, ...(parent.name === undefined ? {} : { name: parent.name }) },
          method: CHILD_FAILED_METHOD,
          error: err instanceof Error ? err : new Error(String(err)),
        })
      })
    }
    return error
  }

  /**
   * Recreates a restartable actor whose node (or host thread) was lost, from
   * its constructor arguments: on the node it was pinned to while that is a
   * member, else on the least-loaded node. It keeps its id, name and
   * references. A new instance that is lost while starting, or whose
   * constructor throws, is one more restart against the budget.
   */
  private restart(rec: ActorRecord): void {
    rec.state = 'restarting'
    rec.ready = (async () => {
      for (;;) {
        const wait = this.backoff(rec)
        if (wait) await wait
        const pinned = rec.pin === undefined ? undefined : [...this.cx.membership].find((n) => n.nodeId === rec.pin && n.state === 'up')
        const node = pinned ?? this.cx.membership.leastLoaded() ?? (await this.nodeForActor())
        rec.node = node
        node.actors++
        try {
          rec.state = 'running'
          await this.message(rec, ActorOp.Respawn, rec.className, rec.args)
          rec.ready = undefined
          this.cx.restarted(this.info(rec))
          // In the order they were sent, before anything sent from now on.
          for (const m of rec.held.splice(0)) this.message(rec, m.op, m.name, m.args).then(m.resolve, m.reject)
          return
        } catch (err) {
          node.actors--
          rec.state = 'restarting'
          if (this.cx.closed()) {
            // The cluster closes: the held messages reject with why (ClusterClosedError), nothing is reported.
            rec.state = 'lost'
            rec.ready = undefined
            this.forget(rec)
            for (const m of rec.held.splice(0)) m.reject(err)
            throw err
          }
          // Lost again while starting, or the constructor threw or ended its thread: one more restart, if the budget allows.
          const again = err instanceof ActorLostError || err instanceof WorkerCrashedError || err instanceof RemoteTaskError
          if (!again || !this.budgetAllows(rec)) throw this.fail(rec, `its restart on node ${node.nodeId} failed: ${(err as Error).message}`, err)
        }
      }
    })()
    rec.ready.catch(() => {})
  }

  /**
   * Waits before a restart, so an actor that keeps failing does not take a
   * node's time in a tight loop: none for the first restart within the
   * window (the common case, a lost node), then `restartBackoffMs`, doubling
   * with each restart counted in the window, at most `restartBackoffMaxMs`.
   * Once the window passes without a loss the count, and so the wait, starts
   * again.
   */
  private backoff(rec: ActorRecord): Promise<void> | undefined {
    const n = rec.restarts.length
    if (n <= 1 || rec.restartBackoffMs === 0 || this.cx.closed()) return undefined
    const ms = Math.min(rec.restartBackoffMaxMs, rec.restartBackoffMs * 2 ** Math.min(n - 2, 30))
    return new Promise<void>((resolve) => {
      const end = () => {
        clearTimeout(timer)
        rec.endBackoff = undefined
        resolve()
      }
      const timer = setTimeout(end, ms)
      rec.endBackoff = end
    })
  }

  /** The live actors. */
  live(): ActorInfo[] {
    const list: ActorInfo[] = []
    for (const rec of this.records.values()) {
      if (rec.state === 'running' && this.cx.membership.has(rec.node)) list.push(this.info(rec))
    }
    return list
  }
}
