/**
 * A driver that listens for remote agents and also runs local ones: remote
 * agents reach its ZeroMQ ROUTER, local agents reach it in this process's
 * memory (`localTransport: 'memory'`, the default), so a message between the
 * driver and a local agent crosses no socket and no I/O thread.
 *
 * To the driver it is one routed transport: every message from either side
 * comes to the one handler with its peer id, a send goes to the side where
 * that peer is connected (a peer connected on neither fails on the ROUTER,
 * and is counted there), and the counters are the sum of both sides.
 * `address` is the ROUTER's (what remote agents connect to); local agents
 * are given the memory side's address when they start.
 *
 * @example
 * ```ts
 * const t = new SplitDriverTransport(
 *   new ZmqDriverTransport({ listen: 'tcp://127.0.0.1:*', maxFrameBytes }),
 *   new MemoryDriverTransport({ listen: 'memory://*', maxFrameBytes, holdProcess: true }),
 * )
 * await t.bind() // t.address: tcp://127.0.0.1:40123
 * ```
 */
import type { MemoryDriverTransport } from './memory.js'
import type { Parts, RoutedDriverTransport, TransportFailure, TransportStats } from './transport.js'
import type { ZmqDriverTransport } from './zmq.js'

export class SplitDriverTransport implements RoutedDriverTransport {
  readonly kind = 'routed'
  #closing: Promise<void> | undefined

  constructor(
    private readonly remote: ZmqDriverTransport,
    private readonly local: MemoryDriverTransport,
  ) {}

  /** What remote agents connect to. */
  get address(): string {
    return this.remote.address
  }

  /** Both sides' counters, summed (a snapshot: read it again for later counts). */
  get stats(): TransportStats {
    const a = this.remote.stats
    const b = this.local.stats
    return {
      framesIn: a.framesIn + b.framesIn,
      framesOut: a.framesOut + b.framesOut,
      bytesIn: a.bytesIn + b.bytesIn,
      bytesOut: a.bytesOut + b.bytesOut,
      sendErrors: a.sendErrors + b.sendErrors,
    }
  }

  /** Binds the memory side, then the ROUTER; if the ROUTER cannot bind, the memory side is closed again. */
  async bind(): Promise<void> {
    await this.local.bind()
    try {
      await this.remote.bind()
    } catch (err) {
      await this.local.close()
      throw err
    }
  }

  send(peer: string, parts: Parts): void {
    if (this.local.has(peer)) this.local.send(peer, parts)
    else this.remote.send(peer, parts)
  }

  /** `onFailure` is called once, for whichever side fails first. */
  start(onMessage: (peer: string, parts: Parts) => void, onFailure?: TransportFailure): void {
    let failed = false
    const once = (err: Error) => {
      if (failed) return
      failed = true
      onFailure?.(err)
    }
    this.local.start(onMessage, once)
    this.remote.start(onMessage, once)
  }

  /** Closes both sides at once; idempotent, and never rejects (each side's close never does). */
  close(): Promise<void> {
    return (this.#closing ??= Promise.all([this.local.close(), this.remote.close()]).then(() => undefined))
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}
