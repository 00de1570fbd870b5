import { header } from '../protocol/codec.js'
import { readActorBody, ResultsWriter } from '../protocol/bodies.js'
import { MsgType } from '../protocol/messages.js'
import type { Parts } from '../transport/transport.js'
import { ActorHosts } from './host.js'
import type { HostReply } from './host-worker.js'

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
}

/**
 * The agent's end of the actor messages: decodes Actor frames onto the
 * actor host threads, and gathers the threads' replies into ActorResults
 * frames, one per tick.
 */
export class ActorFraming {
  private hosts: ActorHosts
  private readonly replies = new ResultsWriter()
  private scheduled = false

  constructor(private readonly options: ActorFramingOptions) {
    this.hosts = this.newHosts()
  }

  private newHosts(): ActorHosts {
    return new ActorHosts(this.options.tasks, this.options.maxThreads, (r) => this.onReply(r))
  }

  /**
   * Hands each message of an Actor frame to its actor's thread. Returns how
   * many entries were malformed (and dropped); throws ProtocolError when the
   * body is not a list of actor messages at all.
   */
  receive(body: Uint8Array | undefined, count: number): number {
    return readActorBody(body, count, (m) => this.hosts.handle(m))
  }

  /** The driver is gone, and with it every actor it spawned here (and their held replies): fresh threads for the next one. */
  reset(): void {
    void this.hosts.close()
    this.hosts = this.newHosts()
    this.replies.take()
  }

  /** Sends the replies held while the driver was silent. */
  flush(): void {
    if (this.replies.count > 0) this.schedule()
  }

  /** Terminates the actor threads. */
  close(): Promise<void> {
    return this.hosts.close()
  }

  private onReply(r: HostReply): void {
    const now = this.options.replies()
    if (now === 'drop') return
    this.replies.add(r.id, r.status, r.value)
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
