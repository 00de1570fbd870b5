import { toWireError } from '../errors.js'
import { header } from '../protocol/codec.js'
import { ActorBodyWriter, readActorBody, ResultsWriter } from '../protocol/bodies.js'
import { ActorOp, MsgType, Status } from '../protocol/messages.js'
import { carriedOf, withHandlesKept, writtenHere, type SharedRef } from '../protocol/shared-ref.js'
import type { Parts } from '../transport/transport.js'
import type { SharedTable } from '../agent/shared-thread.js'
import { ActorHosts, type HostLinks } from './host.js'

export interface ActorFramingOptions {
  /** The tasks module the actor classes come from. */
  tasks: string
  /** Most actor host threads. */
  maxThreads: number
  /** Sends a message to the driver. */
  send: (parts: Parts) => void
  /**
   * What to do with replies now: `send` (a driver is serving the agent, or it
   * is leaving), `hold` (the driver went silent: they go if it answers again),
   * `drop` (no driver).
   */
  replies: () => 'send' | 'hold' | 'drop'
  /** The shared values the node holds: each batch carries them to its thread, where the bodies' handles decode to them. */
  shared?: () => SharedTable | undefined
  /** The threads' links to the agent (`context` in actor methods). */
  links?: HostLinks
  /**
   * Why a message (`what`: `actor call "add"`) that carries the shared value
   * `hash` cannot be read on this node, or undefined when the node holds it.
   */
  lacking?: (hash: string, what: string) => Error | undefined
}

/** Replies kept while the driver is silent. */
interface Held {
  results: Uint8Array
  count: number
}

/**
 * The agent's end of the actor messages: reads Actor frames and hands each
 * host thread its share of a frame in one batch; a thread's batch of replies
 * goes to the driver as one ActorResults frame, as the thread encoded it.
 * Answers given here (a thread that died) are gathered into one frame per
 * tick.
 */
export class ActorFraming {
  private hosts: ActorHosts
  private readonly replies = new ResultsWriter()
  private held: Held[] = []
  private scheduled = false

  constructor(private readonly options: ActorFramingOptions) {
    this.hosts = this.newHosts()
  }

  private newHosts(): ActorHosts {
    return new ActorHosts(
      this.options.tasks,
      this.options.maxThreads,
      {
        replies: (results, count) => this.onReplies(results, count),
        reply: (id, status, value) => this.onReply(id, status, value),
      },
      this.options.links,
    )
  }

  /**
   * Hands the messages of an Actor frame to their actors' threads, one batch
   * per thread. Returns how many entries were malformed (and dropped); throws
   * ProtocolError when the body is not a list of actor messages at all.
   */
  receive(body: Uint8Array | undefined, count: number): number {
    try {
      return this.place(body, count)
    } catch (err) {
      // A message carrying a shared value the node lacks (its cache refused the Put) fails alone; the rest are placed.
      const rest = this.withoutLacking(body, count)
      if (rest === undefined) throw err
      return rest.bad + (rest.count > 0 ? this.place(rest.body, rest.count) : 0)
    }
  }

  /**
   * Reads the body with handles kept (the messages are decoded in their
   * threads; here only where they go is read) and places its messages.
   * Throws, placing none, when one carries a value this node does not hold:
   * whether it does is this agent's word, not the process's (another agent
   * here may hold a value this one lacks, and the thread could not read it).
   */
  private place(body: Uint8Array | undefined, count: number): number {
    const hosts = this.hosts
    const lacking = this.options.lacking
    const handles: SharedRef[] = []
    let checked = lacking === undefined
    const bad = withHandlesKept(
      () =>
        readActorBody(body, count, (id, op, actorId, _name, _args, entry) => {
          // The whole body is decoded before the first message is handed here: `handles` lists all of them.
          if (!checked) {
            checked = true
            for (const ref of handles) {
              const why = lacking!(ref.hash, 'an actor message')
              if (why !== undefined) throw why
            }
          }
          hosts.handle(id, op, actorId, entry)
        }),
      handles,
    )
    hosts.post(body!, count, this.options.shared?.())
    return bad
  }

  /**
   * Answers each message of the body that carries a shared value the node
   * does not hold with why (see {@link ActorFramingOptions.lacking}) and
   * returns the body of the others (read with handles kept, so written again
   * with the same handles) and how many entries were malformed. Undefined
   * when no message lacks a value: the body is bad for another reason.
   */
  private withoutLacking(body: Uint8Array | undefined, count: number): { body: Uint8Array; count: number; bad: number } | undefined {
    const lacking = this.options.lacking
    if (lacking === undefined) return undefined
    const writer = new ActorBodyWriter()
    const failed: [number, Error][] = []
    let bad: number
    let rest: Uint8Array
    let kept: number
    try {
      bad = withHandlesKept(() =>
        readActorBody(body, count, (id, op, actorId, name, args) => {
          const what = op === ActorOp.Spawn || op === ActorOp.Respawn ? `spawn of "${name}"` : `actor call "${name}"`
          let why: Error | undefined
          carriedOf(args, (hash) => (why = lacking(hash, what)) !== undefined)
          if (why === undefined) writer.add(id, op, actorId, name, args)
          else failed.push([id, why])
        }),
      )
      kept = writer.count
      rest = writtenHere(() => writer.take())
    } catch {
      return undefined
    }
    if (failed.length === 0) return undefined
    for (const [id, why] of failed) this.onReply(id, Status.Failed, toWireError(why))
    return { body: rest, count: kept, bad }
  }

  /** A thread's requests: those for actors of this node go to their host threads; returns the rest for the driver (see ActorHosts.route). */
  route(thread: number, body: Uint8Array, count: number): { body: Uint8Array; count: number } | undefined {
    return this.hosts.route(thread, body, count, this.options.shared?.())
  }

  /** The driver is gone, and with it every actor it spawned here (and their held replies): fresh threads for the next one. */
  reset(): void {
    void this.hosts.close()
    this.hosts = this.newHosts()
    this.replies.take()
    this.held = []
  }

  /** Sends the replies held while the driver was silent. */
  flush(): void {
    if (this.options.replies() !== 'send') return
    for (const h of this.held.splice(0)) this.options.send([header(MsgType.ActorResults, h.count), h.results])
    if (this.replies.count > 0) this.schedule()
  }

  /** Terminates the actor threads. */
  close(): Promise<void> {
    return this.hosts.close()
  }

  private onReplies(results: Uint8Array, count: number): void {
    const now = this.options.replies()
    if (now === 'send') this.options.send([header(MsgType.ActorResults, count), results])
    else if (now === 'hold') this.held.push({ results, count })
  }

  private onReply(id: number, status: Status, value: unknown): void {
    const now = this.options.replies()
    if (now === 'drop') return
    this.replies.add(id, status, value)
    if (now === 'send') this.schedule()
  }

  private schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    process.nextTick(() => {
      this.scheduled = false
      const count = this.replies.count
      // Held again (the driver went silent within this tick), or dropped with a reset.
      if (count === 0 || this.options.replies() !== 'send') return
      this.options.send([header(MsgType.ActorResults, count), this.replies.take()])
    })
  }
}
