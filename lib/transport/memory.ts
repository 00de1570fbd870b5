/**
 * A routed transport within one process, without sockets: the reference
 * implementation of the transport contract, and a driver–agent link for
 * tests of the driver and agent that need no ZeroMQ.
 *
 * It behaves as the ZeroMQ ROUTER/DEALER pair does where the runtime can
 * tell: messages arrive asynchronously (never within `send()`), in order per
 * sender, as copies of what was sent; a driver's send to a peer that is not
 * connected fails and is counted (a `mandatory` ROUTER); an agent that
 * connects with the identity of a connected one takes its place (`handover`);
 * a message with a part larger than the receiver's `maxFrameBytes` is dropped
 * (libzmq's maxMessageSize limits each part, not their sum; the driver and
 * the agent drop a message of more parts or bytes than the protocol's, on
 * every transport, see `messageShapeProblem`). Where
 * ZeroMQ would queue (an agent's send while no driver is bound) it drops the
 * message and counts a send error: agents repeat their Hello anyway.
 *
 * Not one of the `transport` designs: it is how local agents reach their
 * driver (`localTransport: 'memory'`, the default; see
 * lib/transport/split.ts when the driver also listens for remote agents),
 * and a driver–agent pair for tests. Only code in this process can reach a
 * memory address; a bound driver holds the process open as a bound socket
 * does (`holdProcess`).
 *
 * @example
 * ```ts
 * const hub = new MemoryHub()
 * const driver = new MemoryDriverTransport({ hub, listen: 'memory://*', maxFrameBytes: 1 << 20 })
 * await driver.bind()
 * const agent = new MemoryAgentTransport({ hub, connect: driver.address, identity: 'a1', maxFrameBytes: 1 << 20 })
 * await agent.connect()
 * driver.start((peer, parts) => driver.send(peer, parts)) // an echo
 * agent.start((parts) => console.log(parts))
 * agent.send([Buffer.from('hello')])
 * ```
 */
import { TransportError } from '../errors.js'
import type { CloseStep } from '../util/close.js'
import { Deque } from '../util/deque.js'
import { TransportBase, type TransportLifecycleOptions } from './base.js'
import { partsBytes, type Parts, type RoutedAgentTransport, type RoutedDriverTransport, type TransportFailure } from './transport.js'
import { helloProof, type AgentCurve } from './curve.js'

const SCHEME = 'memory://'

/**
 * Where memory drivers bind and agents find them, by address. A test that
 * makes its own hub is isolated from every other; `MemoryHub.shared` is the
 * one used when none is given.
 */
export class MemoryHub {
  static readonly shared = new MemoryHub()
  readonly #drivers = new Map<string, MemoryDriverTransport>()
  readonly #agents = new Map<string, Map<string, MemoryAgentTransport>>()
  #unnamed = 0

  /** The addresses bound now. */
  get addresses(): string[] {
    return [...this.#drivers.keys()]
  }

  /** @internal Binds a driver; `memory://*` or `memory://` picks a name. Returns the address. */
  bind(requested: string, driver: MemoryDriverTransport): string {
    let address = parseAddress(requested)
    if (address === SCHEME || address === `${SCHEME}*`) {
      do address = `${SCHEME}${++this.#unnamed}`
      while (this.#drivers.has(address))
    }
    if (this.#drivers.has(address)) throw new TransportError(`cannot listen on ${address}: address already in use`, { code: 'ERR_ADDRESS_IN_USE' })
    this.#drivers.set(address, driver)
    return address
  }

  /** @internal */
  unbind(address: string, driver: MemoryDriverTransport): void {
    if (this.#drivers.get(address) === driver) this.#drivers.delete(address)
  }

  /** @internal */
  driverAt(address: string): MemoryDriverTransport | undefined {
    return this.#drivers.get(address)
  }

  /** @internal An agent with the identity of a connected one takes its place. */
  attach(address: string, identity: string, agent: MemoryAgentTransport): void {
    let peers = this.#agents.get(address)
    if (!peers) this.#agents.set(address, (peers = new Map<string, MemoryAgentTransport>()))
    peers.set(identity, agent)
  }

  /** @internal */
  detach(address: string, identity: string, agent: MemoryAgentTransport): void {
    const peers = this.#agents.get(address)
    if (peers?.get(identity) !== agent) return
    peers.delete(identity)
    if (peers.size === 0) this.#agents.delete(address)
  }

  /** @internal */
  agentAt(address: string, identity: string): MemoryAgentTransport | undefined {
    return this.#agents.get(address)?.get(identity)
  }
}

function parseAddress(address: string): string {
  if (!address.startsWith(SCHEME)) throw new TransportError(`${JSON.stringify(address)} is not a memory address (memory://<name>)`)
  return address
}

/** The size of the largest part: what maxFrameBytes limits. */
function largestPart(parts: Parts): number {
  let n = 0
  for (const p of parts) n = Math.max(n, p.byteLength)
  return n
}

/** Copies the parts, so neither side can change what the other holds. */
function copy(parts: Parts): Buffer[] {
  return parts.map((p) => Buffer.from(p))
}

/**
 * What one side has received and not yet handed over: delivered on a later
 * turn of the event loop (setImmediate, so an exchange that never ends still
 * lets timers and I/O run), in arrival order, once a handler is set.
 */
class Inbox<M> {
  readonly #queue = new Deque<M>()
  #handler: ((m: M) => void) | undefined
  #onError: ((err: Error) => void) | undefined
  #scheduled = false

  push(m: M): void {
    this.#queue.push(m)
    this.#schedule()
  }

  start(handler: (m: M) => void, onError: (err: Error) => void): void {
    this.#handler = handler
    this.#onError = onError
    this.#schedule()
  }

  stop(): void {
    this.#handler = undefined
    this.#queue.clear()
  }

  #schedule(): void {
    if (this.#scheduled || !this.#handler || this.#queue.length === 0) return
    this.#scheduled = true
    setImmediate(() => this.#drain())
  }

  /** Hands over what was there when the turn began; what arrives meanwhile waits for the next turn. */
  #drain(): void {
    this.#scheduled = false
    for (let n = this.#queue.length; n > 0 && this.#handler; n--) {
      const m = this.#queue.shift() as M
      try {
        this.#handler(m)
      } catch (err) {
        // As a ZeroMQ receive loop does when its handler throws: report it and stop receiving.
        const onError = this.#onError
        this.stop()
        onError?.(err instanceof Error ? err : new Error(String(err)))
        return
      }
    }
    this.#schedule()
  }
}

export interface MemoryDriverTransportOptions extends TransportLifecycleOptions {
  /** `memory://<name>`; `memory://*` picks a free name (read `address` after `bind()`). */
  listen: string
  /** Messages from agents with a part larger than this are dropped. */
  maxFrameBytes: number
  /** Default: `MemoryHub.shared`. */
  hub?: MemoryHub | undefined
  /** A send that failed: no such agent connected, or a part over the agent's `maxFrameBytes`. */
  onSendError?: ((peer: string, err: Error) => void) | undefined
  /** While bound, keep the process running, as a bound socket does (a driver's local agents need nothing else to run). */
  holdProcess?: boolean | undefined
}

/** Longest delay setInterval takes: the interval only holds the process open, it never does anything. */
const HOLD_MS = 2 ** 31 - 1

/** The driver's side: an address on a hub, and every agent connected to it, by identity. */
export class MemoryDriverTransport extends TransportBase implements RoutedDriverTransport {
  readonly kind = 'routed'
  readonly #hub: MemoryHub
  readonly #inbox = new Inbox<[peer: string, parts: Buffer[]]>()
  #address = ''
  #hold: NodeJS.Timeout | undefined

  constructor(private readonly options: MemoryDriverTransportOptions) {
    super(options)
    this.#hub = options.hub ?? MemoryHub.shared
    parseAddress(options.listen)
  }

  get address(): string {
    return this.#address
  }

  async bind(): Promise<void> {
    if (this.closed) throw new TransportError(`cannot listen on ${this.options.listen}: the transport is closed`)
    if (this.#address) return
    this.#address = this.#hub.bind(this.options.listen, this)
    if (this.options.holdProcess) this.#hold = setInterval(() => {}, HOLD_MS)
  }

  /** Is an agent with this peer id connected here now? */
  has(peer: string): boolean {
    return this.#address !== '' && this.#hub.agentAt(this.#address, peer) !== undefined
  }

  send(peer: string, parts: Parts): void {
    if (!this.countOut(parts)) return
    const agent = this.#address ? this.#hub.agentAt(this.#address, peer) : undefined
    const refused = agent ? agent.accept(copy(parts)) : `no agent ${JSON.stringify(peer)} is connected to ${this.#address || 'an unbound driver'}`
    if (refused) {
      this.countSendError()
      this.options.onSendError?.(peer, new TransportError(refused))
    }
  }

  start(onMessage: (peer: string, parts: Parts) => void, onFailure?: TransportFailure): void {
    this.#inbox.start(
      ([peer, parts]) => {
        if (this.countIn(partsBytes(parts))) onMessage(peer, parts)
      },
      (err) => onFailure?.(new TransportError(`receiving failed: ${err.message}`, { cause: err })),
    )
  }

  /** @internal A message from an agent: queued, or the reason it was refused. */
  accept(peer: string, parts: Buffer[]): string | undefined {
    if (this.closed) return `${this.#address} is closed`
    const size = largestPart(parts)
    if (size > this.options.maxFrameBytes) return `a part of ${size} bytes exceeds ${this.#address}'s maxFrameBytes (${this.options.maxFrameBytes})`
    this.#inbox.push([peer, parts])
    return undefined
  }

  protected gracefulSteps(): CloseStep[] {
    return [
      {
        name: 'unbind',
        run: () => {
          if (this.#address) this.#hub.unbind(this.#address, this)
          clearInterval(this.#hold)
          this.#inbox.stop()
        },
      },
    ]
  }
}

export interface MemoryAgentTransportOptions extends TransportLifecycleOptions {
  /** The driver's `memory://` address. */
  connect: string
  /** This agent's peer id, as the driver sees it. */
  identity: string
  /** Messages from the driver with a part larger than this are dropped. */
  maxFrameBytes: number
  /** Default: `MemoryHub.shared`. */
  hub?: MemoryHub | undefined
  /** The keys a Hello proves it holds, when the driver accepts agents by key (no handshake here: only the proof). */
  curve?: AgentCurve | undefined
}

/** An agent's side: connected to an address on a hub, whether or not a driver is bound there yet. */
export class MemoryAgentTransport extends TransportBase implements RoutedAgentTransport {
  readonly kind = 'routed'
  readonly #hub: MemoryHub
  readonly #inbox = new Inbox<Buffer[]>()
  #connected = false

  constructor(private readonly options: MemoryAgentTransportOptions) {
    super(options)
    this.#hub = options.hub ?? MemoryHub.shared
    parseAddress(options.connect)
  }

  async connect(): Promise<void> {
    if (this.closed) throw new TransportError(`cannot connect to ${this.options.connect}: the transport is closed`)
    this.#hub.attach(this.options.connect, this.options.identity, this)
    this.#connected = true
  }

  /** The proof a driver with CURVE asks of a Hello, made for this agent's peer id (its identity here). */
  proveKey(agentId: string, registration: string): { key: string; proof: string } | undefined {
    return this.options.curve ? helloProof(this.options.curve, agentId, registration, this.options.identity) : undefined
  }

  /** Nothing to note: the memory hub never leaves a connection stuck. */
  driverHeard(): void {}

  /** Connects again, taking the identity back from any agent that took it over. */
  redial(): void {
    if (this.closed || !this.#connected) return
    this.#hub.detach(this.options.connect, this.options.identity, this)
    this.#hub.attach(this.options.connect, this.options.identity, this)
  }

  send(parts: Parts): void {
    if (!this.countOut(parts)) return
    const driver = this.#connected ? this.#hub.driverAt(this.options.connect) : undefined
    // As a DEALER with sendTimeout 0 whose send cannot go anywhere: dropped and counted.
    if (!driver || driver.accept(this.options.identity, copy(parts)) !== undefined) this.countSendError()
  }

  start(onMessage: (parts: Parts) => void, onFailure?: TransportFailure): void {
    this.#inbox.start(
      (parts) => {
        if (this.countIn(partsBytes(parts))) onMessage(parts)
      },
      (err) => onFailure?.(new TransportError(`receiving failed: ${err.message}`, { cause: err })),
    )
  }

  /** @internal A message from the driver: queued, or the reason it was refused. */
  accept(parts: Buffer[]): string | undefined {
    if (this.closed) return `agent ${this.options.identity} is closed`
    const size = largestPart(parts)
    if (size > this.options.maxFrameBytes)
      return `a part of ${size} bytes exceeds agent ${this.options.identity}'s maxFrameBytes (${this.options.maxFrameBytes})`
    this.#inbox.push(parts)
    return undefined
  }

  protected gracefulSteps(): CloseStep[] {
    return [
      {
        name: 'disconnect',
        run: () => {
          this.#hub.detach(this.options.connect, this.options.identity, this)
          this.#inbox.stop()
        },
      },
    ]
  }
}
