/**
 * Requests from threads: what code running in a task or an actor method asks
 * of the cluster (`context.call`, `spawn`, `put`, an ask or a tell through a
 * reference...), arriving in Submit frames from its agent. Each one becomes
 * the driver's own ordinary call, spawn or put — the same ledger entry,
 * retries, node-loss handling and exactly-once settlement as a call made
 * here — and its outcome goes back to the asking thread in a Reply frame, one
 * per node and thread per flush. Nothing in a request is trusted: a malformed
 * one is answered with an error naming what was wrong.
 *
 * A node gone (lost or left) while its threads wait: their replies are
 * dropped (their tasks are requeued by the ledger and run again elsewhere,
 * where they ask again), and the tasks they asked for that have not settled
 * are withdrawn, since nobody waits for them any more: see {@link
 * Requests.nodeRemoved}.
 */
import { debuglog } from 'node:util'
import { InvalidArgumentError, TaskCancelledError, toWireError } from '../errors.js'
import { readRequestBody, ResultsWriter } from '../protocol/bodies.js'
import { header } from '../protocol/codec.js'
import { ContextOp, MsgType, REQUEST_THREAD_FACTOR, Status } from '../protocol/messages.js'
import type { SharedRef } from '../protocol/shared-ref.js'
import type { Parts } from '../transport/transport.js'
import type { ClusterNode } from './membership.js'
import type { ResolvedTaskOptions } from './task-options.js'
import type { ActorRef } from './types.js'

/** What the requests room asks of the cluster. */
export interface RequestsContext {
  /** A task under these options. */
  call(name: string, args: unknown[], options: ResolvedTaskOptions): Promise<unknown>
  /** A thread's task options, resolved and checked (an error names the bad field), marked as asked for by `node`. */
  taskOptions(o: Record<string, unknown>, node: ClusterNode): ResolvedTaskOptions
  /** Withdraws the unsettled tasks asked for by `node`'s threads (`err` given the task's name); returns how many. */
  withdrawAskedBy(node: ClusterNode, err: (name: string) => Error): number
  /** A spawn under `with` options as a thread gave them (`group`: the thread's spread view, per node). */
  spawn(node: ClusterNode, className: string, args: unknown[], options: Record<string, unknown> | undefined): Promise<ActorRef<object>>
  lookup(name: string): ActorRef<object>
  put(value: unknown): Promise<SharedRef>
  /** An ask through a reference (ActorLostError for an actor this driver does not know). */
  ask(id: string, method: string, args: unknown[]): Promise<unknown>
  /** A tell through a reference: a failure is an `actor:error` event. */
  tell(id: string, method: string, args: unknown[]): void
  /** `force`: at once (`ref.stop({ force: true })` in a thread). */
  stop(id: string, force: boolean): Promise<void>
  /** A tell delivered inside a node failed there (the error as it travels). */
  toldFailed(id: string, method: string, error: unknown): void
  isMember(node: ClusterNode): boolean
  send(peer: string, parts: Parts): void
  scheduleFlush(): void
}

const debug = debuglog('actor-cluster')

type Handler = (node: ClusterNode, args: readonly unknown[]) => Promise<unknown> | undefined

export class Requests {
  /** Replies waiting for the next flush: per node, per thread. */
  private readonly outbox = new Map<ClusterNode, Map<number, ResultsWriter>>()
  /** Shared values put by each node's threads, by hash: released by them, or when the node goes. */
  private readonly puts = new Map<ClusterNode, Map<string, SharedRef[]>>()
  /** Per node, the options of the calls its threads make without options of their own: they mark the calls as the node's. */
  private readonly plainOptions = new Map<ClusterNode, ResolvedTaskOptions>()
  private readonly handlers: Record<ContextOp, Handler>

  constructor(private readonly cx: RequestsContext) {
    this.handlers = {
      [ContextOp.Call]: (node, [name, args, options]) => cx.call(str(name, 'task name'), list(args), this.callOptions(node, opts(options))),
      [ContextOp.Spawn]: (node, [className, args, options]) => cx.spawn(node, str(className, 'actor class name'), list(args), opts(options)),
      [ContextOp.Lookup]: (_node, [name]) => Promise.resolve(cx.lookup(str(name, 'actor name'))),
      [ContextOp.Put]: (node, [value]) => this.put(node, value),
      [ContextOp.Release]: (node, [hash]) => this.release(node, str(hash, 'shared value hash')),
      [ContextOp.Ask]: (_node, [id, method, args]) => cx.ask(str(id, 'actor id'), methodName(method), list(args)),
      [ContextOp.Tell]: (_node, [id, method, args]) => {
        cx.tell(str(id, 'actor id'), methodName(method), list(args))
        return undefined
      },
      [ContextOp.Stop]: (_node, [id, force]) => cx.stop(str(id, 'actor id'), force === true),
      [ContextOp.ToldFailed]: (_node, [id, method, error]) => {
        cx.toldFailed(str(id, 'actor id'), methodName(method), error)
        return undefined
      },
    }
  }

  /** Handles a Submit frame of `count` requests from `node`. Returns the entries without a usable id (bad). */
  submit(node: ClusterNode, body: Uint8Array | undefined, count: number): number {
    return readRequestBody(
      body,
      count,
      (reqId, op, args) => {
        let outcome: Promise<unknown> | undefined
        try {
          outcome = this.handlers[op](node, args)
        } catch (err) {
          this.answer(node, reqId, Status.Failed, toWireError(err))
          return
        }
        outcome?.then(
          (value) => this.answer(node, reqId, Status.Ok, value),
          (err: unknown) => this.answer(node, reqId, Status.Failed, toWireError(err)),
        )
      },
      (reqId, problem) => this.answer(node, reqId, Status.Failed, toWireError(new InvalidArgumentError(`malformed request: ${problem}`))),
    )
  }

  /** The options of a call `node`'s thread asked for: one object per node for the calls without options of their own. */
  private callOptions(node: ClusterNode, o: Record<string, unknown> | undefined): ResolvedTaskOptions {
    if (o !== undefined) return this.cx.taskOptions(o, node)
    let plain = this.plainOptions.get(node)
    if (!plain) this.plainOptions.set(node, (plain = this.cx.taskOptions({}, node)))
    return plain
  }

  private async put(node: ClusterNode, value: unknown): Promise<[string, number]> {
    const ref = await this.cx.put(value)
    let held = this.puts.get(node)
    if (!held) this.puts.set(node, (held = new Map<string, SharedRef[]>()))
    const list = held.get(ref.hash)
    if (list) list.push(ref)
    else held.set(ref.hash, [ref])
    return [ref.hash, ref.size]
  }

  private async release(node: ClusterNode, hash: string): Promise<null> {
    const held = this.puts.get(node)
    const ref = held?.get(hash)?.pop()
    if (!ref) throw new InvalidArgumentError(`no handle of shared value ${hash} was put by this node`)
    if (held!.get(hash)!.length === 0) held!.delete(hash)
    try {
      await ref.release()
    } catch (err) {
      held!.set(hash, [...(held!.get(hash) ?? []), ref])
      throw err
    }
    return null
  }

  /** Queues one reply for the asking thread (dropped if its node is no longer a member). */
  private answer(node: ClusterNode, reqId: number, status: Status, value: unknown): void {
    if (!this.cx.isMember(node)) return
    const thread = Math.floor(reqId / REQUEST_THREAD_FACTOR)
    let threads = this.outbox.get(node)
    if (!threads) this.outbox.set(node, (threads = new Map<number, ResultsWriter>()))
    let w = threads.get(thread)
    if (!w) threads.set(thread, (w = new ResultsWriter()))
    w.add(reqId, status, value)
    this.cx.scheduleFlush()
  }

  /** Sends the replies gathered: one Reply frame per node and thread. */
  flush(): void {
    if (this.outbox.size === 0) return
    for (const [node, threads] of this.outbox) {
      for (const [thread, w] of threads) {
        const count = w.count
        try {
          this.cx.send(node.peer, [header(MsgType.Reply, count, thread), w.take()])
        } catch (err) {
          // Every value here came off the wire or from the driver's own refs, so it encodes; if not, say so.
          debug('replies to thread %d of node %s could not be encoded: %s', thread, node.nodeId, (err as Error).message)
        }
      }
    }
    this.outbox.clear()
  }

  /**
   * A node is gone (lost or left): nobody waits for what its threads asked
   * for any more — the tasks that asked run again elsewhere (the ledger
   * requeues them) and ask again. So the tasks they asked for that have not
   * settled are withdrawn, as an aborted `signal` withdraws a call: a queued
   * one never runs; one running on a live node is abandoned (it runs to its
   * end there and its result is dropped: a thread cannot be interrupted).
   * This reaches down the tree as far as the dead node's threads went: the
   * grandchildren a child asked for from the dead node are its requests too.
   * What a child running on a live node asks for meanwhile is that node's
   * request and runs (a request names its thread, not its task). Actors its
   * threads spawned are left alone (their supervision decides), and so are
   * messages they sent. Replies to its threads are dropped; the values they
   * put are released. Call it before the ledger reclaims the node's tasks,
   * so the withdrawn ones are not requeued first.
   */
  nodeRemoved(node: ClusterNode, how: 'left' | 'lost', reason: string): void {
    this.plainOptions.delete(node)
    const gone = how === 'lost' ? `was lost (${reason})` : `left (${reason})`
    this.cx.withdrawAskedBy(
      node,
      (name) => new TaskCancelledError(`task "${name}" was asked for by a task on node ${node.nodeId}, which ${gone}: nobody waits for its result`),
    )
    this.outbox.delete(node)
    const held = this.puts.get(node)
    this.puts.delete(node)
    if (held) for (const refs of held.values()) for (const ref of refs) ref.release().catch(() => {})
  }
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > 4096) throw new InvalidArgumentError(`malformed request: ${what} is not a non-empty string`)
  return v
}

/** The reference's own members are not methods of the actor. */
const NOT_METHODS = new Set(['stop', 'id', 'node', 'name', 'tell', 'then', 'constructor'])

function methodName(v: unknown): string {
  const name = str(v, 'method name')
  if (NOT_METHODS.has(name)) throw new InvalidArgumentError(`malformed request: "${name}" is not a method an actor reference can call`)
  return name
}

/** Whether `v` is a method name a request may carry (what the driver accepts; an agent routes nothing else itself). */
export function isMethodName(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= 4096 && !NOT_METHODS.has(v)
}

function list(v: unknown): unknown[] {
  if (!Array.isArray(v)) throw new InvalidArgumentError('malformed request: arguments are not a list')
  return v
}

function opts(v: unknown): Record<string, unknown> | undefined {
  if (v === null || v === undefined) return undefined
  if (typeof v !== 'object' || Array.isArray(v)) throw new InvalidArgumentError('malformed request: options are not an object')
  return v as Record<string, unknown>
}
