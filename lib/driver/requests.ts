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
 * A node lost while its threads wait: their replies are dropped (their tasks
 * are requeued by the ledger, and run again elsewhere), and the work they
 * asked for runs to its end and is dropped too — a nested tree's children are
 * not cancelled, their results go nowhere.
 */
import { debuglog } from 'node:util'
import { InvalidArgumentError, toWireError } from '../errors.js'
import { readRequestBody, ResultsWriter } from '../protocol/bodies.js'
import { header } from '../protocol/codec.js'
import { ContextOp, MsgType, REQUEST_THREAD_FACTOR, Status } from '../protocol/messages.js'
import type { SharedRef } from '../protocol/shared-ref.js'
import type { Parts } from '../transport/transport.js'
import type { ClusterNode } from './membership.js'
import type { ActorRef } from './types.js'

/** What the requests room asks of the cluster. */
export interface RequestsContext {
  /** A task under these options (unchecked: the cluster resolves and checks them). */
  call(name: string, args: unknown[], options: Record<string, unknown> | undefined): Promise<unknown>
  spawn(className: string, args: unknown[], options: Record<string, unknown> | undefined): Promise<ActorRef<object>>
  lookup(name: string): ActorRef<object>
  put(value: unknown): Promise<SharedRef>
  /** An ask through a reference (ActorLostError for an actor this driver does not know). */
  ask(id: string, method: string, args: unknown[]): Promise<unknown>
  /** A tell through a reference: a failure is an `actor:error` event. */
  tell(id: string, method: string, args: unknown[]): void
  stop(id: string): Promise<void>
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
  private readonly handlers: Record<ContextOp, Handler>

  constructor(private readonly cx: RequestsContext) {
    this.handlers = {
      [ContextOp.Call]: (_node, [name, args, options]) => cx.call(str(name, 'task name'), list(args), opts(options)),
      [ContextOp.Spawn]: (_node, [className, args, options]) => cx.spawn(str(className, 'actor class name'), list(args), opts(options)),
      [ContextOp.Lookup]: (_node, [name]) => Promise.resolve(cx.lookup(str(name, 'actor name'))),
      [ContextOp.Put]: (node, [value]) => this.put(node, value),
      [ContextOp.Release]: (node, [hash]) => this.release(node, str(hash, 'shared value hash')),
      [ContextOp.Ask]: (_node, [id, method, args]) => cx.ask(str(id, 'actor id'), methodName(method), list(args)),
      [ContextOp.Tell]: (_node, [id, method, args]) => {
        cx.tell(str(id, 'actor id'), methodName(method), list(args))
        return undefined
      },
      [ContextOp.Stop]: (_node, [id]) => cx.stop(str(id, 'actor id')),
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

  private async put(node: ClusterNode, value: unknown): Promise<[string, number]> {
    const ref = await this.cx.put(value)
    let held = this.puts.get(node)
    if (!held) this.puts.set(node, (held = new Map()))
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
    if (!threads) this.outbox.set(node, (threads = new Map()))
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

  /** A node is gone: replies to its threads are dropped; the values they put are released. */
  nodeRemoved(node: ClusterNode): void {
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

function list(v: unknown): unknown[] {
  if (!Array.isArray(v)) throw new InvalidArgumentError('malformed request: arguments are not a list')
  return v
}

function opts(v: unknown): Record<string, unknown> | undefined {
  if (v === null || v === undefined) return undefined
  if (typeof v !== 'object' || Array.isArray(v)) throw new InvalidArgumentError('malformed request: options are not an object')
  return v as Record<string, unknown>
}
