import * as zmq from 'zeromq'
import { TransportError } from '../errors.js'
import { newStats, partsBytes, type AgentTransport, type DriverTransport, type Parts } from './transport.js'

export interface ZmqDriverTransportOptions {
  listen: string
  /** Also bind this in-process endpoint (for agents inside the driver's process). */
  inproc?: string
  maxFrameBytes: number
  onSendError?: (peer: string, err: Error) => void
}

/** Messages queued for one peer before sends fail fast (flow control keeps us far below). */
const SEND_HWM = 100_000

/** A port given up by a socket closed in this process is free again within this time. */
const BIND_RETRY_MS = 1000

function isInUse(e: Error & { code?: string }): boolean {
  return e.code === 'EADDRINUSE' || /in use/i.test(e.message)
}

/** Binds, retrying for a moment while the address is in use: a driver restarted on its address must get it back. */
async function bindRetrying(socket: zmq.Router, endpoint: string): Promise<void> {
  const end = Date.now() + BIND_RETRY_MS
  for (;;) {
    try {
      await socket.bind(endpoint)
      return
    } catch (err) {
      if (!isInUse(err as Error) || endpoint.endsWith(':*') || Date.now() > end) throw err
      await new Promise((r) => setTimeout(r, 20))
    }
  }
}

/**
 * The driver's side: one ROUTER socket. Sends never block: with
 * `sendTimeout: 0` a full or vanished peer fails the send at once
 * (EAGAIN / EHOSTUNREACH), which we count instead of stalling every other agent.
 */
export class ZmqDriverTransport implements DriverTransport {
  readonly stats = newStats()
  private readonly socket: zmq.Router
  private closed = false
  private bound = ''

  constructor(private readonly options: ZmqDriverTransportOptions) {
    this.socket = new zmq.Router({
      mandatory: true,
      handover: true,
      sendTimeout: 0,
      linger: 0,
      sendHighWaterMark: SEND_HWM,
      receiveHighWaterMark: SEND_HWM,
      maxMessageSize: options.maxFrameBytes,
    })
  }

  get address(): string {
    return this.bound
  }

  async bind(): Promise<void> {
    const requested = this.options.listen
    // ZeroMQ spells "any free port" as `*`; accept the usual `:0` too.
    const endpoint = requested.replace(/:0$/, ':*')
    try {
      await bindRetrying(this.socket, endpoint)
    } catch (err) {
      const e = err as Error & { code?: string }
      const inUse = isInUse(e)
      throw new TransportError(
        inUse ? `cannot listen on ${requested}: address already in use` : `cannot listen on ${requested}: ${e.message}`,
        { cause: err, code: inUse ? 'ERR_ADDRESS_IN_USE' : 'ERR_TRANSPORT' },
      )
    }
    this.bound = this.socket.lastEndpoint ?? endpoint
    if (this.options.inproc) await this.socket.bind(this.options.inproc)
  }

  send(peer: string, parts: Parts): void {
    if (this.closed) return
    this.stats.framesOut++
    this.stats.bytesOut += partsBytes(parts)
    this.socket.send([peer, ...parts]).catch((err: Error) => {
      this.stats.sendErrors++
      if (!this.closed) this.options.onSendError?.(peer, err)
    })
  }

  start(onMessage: (peer: string, parts: Parts) => void): void {
    void (async () => {
      try {
        for await (const [id, ...parts] of this.socket) {
          if (!id) continue
          this.stats.framesIn++
          this.stats.bytesIn += partsBytes(parts)
          onMessage(id.toString('latin1'), parts)
        }
      } catch (err) {
        if (!this.closed) throw err
      }
    })()
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    // No unbind() first: unbinding while peers' pipes are terminating trips an
    // assertion inside libzmq (pipe.cpp, `term_ack_sent`) and aborts the
    // process. close() releases the port shortly after, on ZeroMQ's I/O
    // thread; bind() waits for it (see BIND_RETRY_MS).
    this.socket.close()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

export interface ZmqAgentTransportOptions {
  connect: string
  identity: string
  maxFrameBytes: number
}

/** The agent's side: one DEALER socket that reconnects on its own. */
export class ZmqAgentTransport implements AgentTransport {
  readonly stats = newStats()
  private readonly socket: zmq.Dealer
  private closed = false

  constructor(private readonly options: ZmqAgentTransportOptions) {
    this.socket = new zmq.Dealer({
      routingId: options.identity,
      sendTimeout: 0,
      linger: 0,
      sendHighWaterMark: SEND_HWM,
      receiveHighWaterMark: SEND_HWM,
      maxMessageSize: options.maxFrameBytes,
      reconnectInterval: 100,
      reconnectMaxInterval: 1000,
    })
  }

  async connect(): Promise<void> {
    try {
      this.socket.connect(this.options.connect)
    } catch (err) {
      throw new TransportError(`cannot connect to ${this.options.connect}: ${(err as Error).message}`, { cause: err })
    }
  }

  send(parts: Parts): void {
    if (this.closed) return
    this.stats.framesOut++
    this.stats.bytesOut += partsBytes(parts)
    this.socket.send(parts).catch(() => {
      this.stats.sendErrors++
    })
  }

  start(onMessage: (parts: Parts) => void): void {
    void (async () => {
      try {
        for await (const parts of this.socket) {
          this.stats.framesIn++
          this.stats.bytesIn += partsBytes(parts)
          onMessage(parts)
        }
      } catch (err) {
        if (!this.closed) throw err
      }
    })()
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.socket.close()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}
