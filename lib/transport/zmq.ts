import { randomBytes } from 'node:crypto'
import * as zmq from 'zeromq'
import { TransportError } from '../errors.js'
import type { CloseStep } from '../util/close.js'
import { TransportBase, type TransportLifecycleOptions } from './base.js'
import { partsBytes, type RoutedAgentTransport, type RoutedDriverTransport, type Parts, type TransportFailure } from './transport.js'
import { helloProof, type AgentCurve, type KeyPair } from './curve.js'

export interface ZmqDriverTransportOptions extends TransportLifecycleOptions {
  listen: string
  /** Also bind this in-process endpoint (for agents inside the driver's process). */
  inproc?: string
  maxFrameBytes: number
  onSendError?: (peer: string, err: Error) => void
  /** CURVE: the server key pair, and the ZAP domain under which accepted agent keys are registered. */
  curve?: { server: KeyPair; zapDomain: string }
}

/** How long bind() retries an address in use (it may be a socket of ours, just closed). */
const BIND_RETRY_MS = 1500

/** Messages queued for one peer before sends fail fast (flow control keeps us far below). */
const SEND_HWM = 100_000

/**
 * The driver's side: one ROUTER socket. Sends never block: with
 * `sendTimeout: 0` a full or vanished peer fails the send at once
 * (EAGAIN / EHOSTUNREACH), which we count instead of stalling every other agent.
 */
export class ZmqDriverTransport extends TransportBase implements RoutedDriverTransport {
  readonly kind = 'routed'
  private readonly socket: zmq.Router
  private bound = ''

  constructor(private readonly options: ZmqDriverTransportOptions) {
    super(options)
    this.socket = new zmq.Router({
      mandatory: true,
      handover: true,
      sendTimeout: 0,
      // Long enough for the DriverBye sent on close to reach live agents; a gone peer costs at most this at exit.
      linger: 100,
      sendHighWaterMark: SEND_HWM,
      receiveHighWaterMark: SEND_HWM,
      maxMessageSize: options.maxFrameBytes,
      ...(options.curve
        ? {
            curveServer: true,
            curveSecretKey: options.curve.server.secretKey,
            curvePublicKey: options.curve.server.publicKey,
            zapDomain: options.curve.zapDomain,
          }
        : {}),
    })
  }

  get address(): string {
    return this.bound
  }

  async bind(): Promise<void> {
    const requested = this.options.listen
    // ZeroMQ spells "any free port" as `*`; accept the usual `:0` too.
    const endpoint = requested.replace(/:0$/, ':*')
    // A socket closed a moment ago (a driver restarted in this process) frees its
    // port on ZeroMQ's I/O thread, shortly after close() returns: retry briefly.
    const until = Date.now() + BIND_RETRY_MS
    for (;;) {
      try {
        await this.socket.bind(endpoint)
        break
      } catch (err) {
        const e = err as Error & { code?: string }
        const inUse = e.code === 'EADDRINUSE' || /in use/i.test(e.message)
        if (inUse && Date.now() < until) {
          await new Promise((r) => setTimeout(r, 50))
          continue
        }
        throw new TransportError(inUse ? `cannot listen on ${requested}: address already in use` : `cannot listen on ${requested}: ${e.message}`, {
          cause: err,
          code: inUse ? 'ERR_ADDRESS_IN_USE' : 'ERR_TRANSPORT',
        })
      }
    }
    this.bound = this.socket.lastEndpoint ?? endpoint
    if (this.options.inproc) await this.socket.bind(this.options.inproc)
  }

  send(peer: string, parts: Parts): void {
    if (!this.countOut(parts)) return
    this.socket.send([peer, ...parts]).catch((err: Error) => {
      this.countSendError()
      if (!this.closed) this.options.onSendError?.(peer, err)
    })
  }

  start(onMessage: (peer: string, parts: Parts) => void, onFailure?: TransportFailure): void {
    // The routing id is ZeroMQ's envelope, not part of the message: it is not counted.
    this.receiveFrom(
      this.socket,
      (m) => partsBytes(m) - (m[0]?.byteLength ?? 0),
      onFailure,
      ([id, ...parts]) => {
        if (id) onMessage(id.toString('latin1'), parts)
      },
    )
  }

  protected gracefulSteps(): CloseStep[] {
    // No unbind() first: unbind then close races in libzmq 4.3.5 and aborts the
    // process (pipe.cpp:355). The port is freed shortly after; bind() retries.
    return [{ name: 'ROUTER socket', run: () => this.socket.close() }]
  }
}

export interface ZmqAgentTransportOptions extends TransportLifecycleOptions {
  connect: string
  identity: string
  maxFrameBytes: number
  curve?: AgentCurve | undefined
  /**
   * Keys found on this machine rather than given (a driver on a loopback port
   * makes them per cluster): looked up again at each redial, so an agent
   * serves a driver restarted on the address with new keys.
   */
  findKeys?: (() => AgentCurve | undefined) | undefined
  /** Called when the driver refuses the handshake (wrong or unlisted CURVE keys, or a peer without CURVE). */
  onHandshakeError?: (message: string) => void
}

/** The agent's side: one DEALER socket that reconnects on its own. */
export class ZmqAgentTransport extends TransportBase implements RoutedAgentTransport {
  readonly kind = 'routed'
  private readonly socket: zmq.Dealer
  /** A driver was heard over the connection now up (reset when it drops). */
  private reachesDriver = false
  /** The keys the socket uses for its next connection. */
  private curve: AgentCurve | undefined
  private readonly routingId: string

  constructor(private readonly options: ZmqAgentTransportOptions) {
    super(options)
    this.curve = options.curve
    // The agent id, and a secret only this socket and the driver know (it travels inside the CURVE handshake): a
    // peer that knows the agent id cannot take this connection over (the ROUTER hands an id over to whoever claims it).
    this.routingId = `${options.identity}/${randomBytes(16).toString('hex')}`
    this.socket = new zmq.Dealer({
      routingId: this.routingId,
      sendTimeout: 0,
      linger: 0,
      sendHighWaterMark: SEND_HWM,
      receiveHighWaterMark: SEND_HWM,
      maxMessageSize: options.maxFrameBytes,
      reconnectInterval: 100,
      reconnectMaxInterval: 1000,
      ...(options.curve
        ? { curveServerKey: options.curve.serverPublicKey, curvePublicKey: options.curve.agentKey.publicKey, curveSecretKey: options.curve.agentKey.secretKey }
        : {}),
    })
    this.socket.events.on('disconnect', () => (this.reachesDriver = false))
    const report = options.onHandshakeError
    if (report) {
      this.socket.events.on('handshake:error:auth', (e) => report(`authentication refused by ${e.address}: ${e.error.message}`))
      this.socket.events.on('handshake:error:protocol', (e) => report(`security handshake with ${e.address} failed: ${e.error.message}`))
      this.socket.events.on('handshake:error:other', (e) => report(`security handshake with ${e.address} failed: ${e.error.message}`))
    }
  }

  async connect(): Promise<void> {
    try {
      this.socket.connect(this.options.connect)
    } catch (err) {
      throw new TransportError(`cannot connect to ${this.options.connect}: ${(err as Error).message}`, { cause: err })
    }
  }

  /**
   * A fresh connection. While a driver's port is down, a reconnect attempt
   * to a loopback port in the ephemeral range can be given that very port as
   * its source and connect the socket to itself; ZeroMQ would then never dial
   * again. The agent redials while it hears no driver.
   */
  redial(): void {
    // A silent driver on a live connection is busy: a new connection would lose the frames queued on this one.
    if (this.closed || this.reachesDriver) return
    try {
      this.socket.disconnect(this.options.connect)
    } catch {
      // not connected
    }
    this.refreshKeys()
    this.socket.connect(this.options.connect)
  }

  /** Found keys that changed (a new driver on the address) apply to the next connection; unreadable ones are reported, the old kept. */
  private refreshKeys(): void {
    if (!this.options.findKeys) return
    let found: AgentCurve | undefined
    try {
      found = this.options.findKeys()
    } catch (err) {
      this.options.onHandshakeError?.((err as Error).message)
      return
    }
    if (!found || (found.serverPublicKey === this.curve?.serverPublicKey && found.agentKey.secretKey === this.curve.agentKey.secretKey)) return
    this.curve = found
    this.socket.curveServerKey = found.serverPublicKey
    this.socket.curvePublicKey = found.agentKey.publicKey
    this.socket.curveSecretKey = found.agentKey.secretKey
  }

  proveKey(agentId: string, registration: string): { key: string; proof: string } | undefined {
    return this.curve ? helloProof(this.curve, agentId, registration, this.routingId) : undefined
  }

  driverHeard(): void {
    this.reachesDriver = true
  }

  send(parts: Parts): void {
    if (!this.countOut(parts)) return
    this.socket.send(parts).catch(() => this.countSendError())
  }

  start(onMessage: (parts: Parts) => void, onFailure?: TransportFailure): void {
    this.receiveFrom(this.socket, partsBytes, onFailure, onMessage)
  }

  protected gracefulSteps(): CloseStep[] {
    return [{ name: 'DEALER socket', run: () => this.socket.close() }]
  }
}
