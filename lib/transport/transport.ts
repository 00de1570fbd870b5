/**
 * The seam between the runtime and the wire. A driver transport talks to many
 * agents, each known by a peer id; an agent transport talks to one driver.
 * Messages are lists of parts (see lib/protocol). Implementations own their
 * sockets or connections and extend TransportBase (lib/transport/base.ts),
 * which counts what passes and makes `close()` idempotent and bounded.
 * Stats count the bytes of the parts only: a routing id or a broker's packing
 * is envelope.
 */

export type Parts = Uint8Array[]

/** A broker's handle on one task frame an agent took: acknowledged once its results are out, or released. Opaque. */
export type Delivery = unknown

/** Called once when a transport fails for good (e.g. its broker connection was lost). */
export type TransportFailure = (err: Error) => void

export interface TransportStats {
  framesIn: number
  framesOut: number
  bytesIn: number
  bytesOut: number
  sendErrors: number
}

interface DriverTransportBase extends AsyncDisposable {
  /** What an agent connects to. Known once `bind()` resolved. */
  readonly address: string
  readonly stats: TransportStats
  bind(): Promise<void>
  /** Queues a message to one agent. Never throws; failures are counted. */
  send(peer: string, parts: Parts): void
  /** Starts delivering every message received, with the sender's peer id. */
  start(onMessage: (peer: string, parts: Parts) => void, onFailure?: TransportFailure): void
  /** Idempotent and bounded: every call returns the same promise, which never rejects. Sends after it are dropped. */
  close(): Promise<void>
}

/** ZeroMQ: the driver addresses every frame to one agent, so it picks where each task runs. */
export interface RoutedDriverTransport extends DriverTransportBase {
  readonly kind: 'routed'
}

/**
 * Brokered designs: tasks go to one shared queue that every agent takes
 * from, and the broker, not the driver, picks the agent.
 */
export interface SharedQueueDriverTransport extends DriverTransportBase {
  readonly kind: 'shared-queue'
  /** Puts one task frame on the shared queue. */
  publishTasks(parts: Parts): void
  /** An agent was taken out (it left or was lost): hand back what it held, marked as redelivered; drop its queues. */
  peerGone(peer: string): void
  /**
   * True while a broker connection is lost and being dialled again: agents
   * cannot be heard meanwhile, and their silence is not held against them.
   */
  readonly reconnecting: boolean
}

export type DriverTransport = RoutedDriverTransport | SharedQueueDriverTransport

interface AgentTransportBase extends AsyncDisposable {
  readonly stats: TransportStats
  connect(): Promise<void>
  send(parts: Parts): void
  /** Idempotent and bounded: every call returns the same promise, which never rejects. Sends after it are dropped. */
  close(): Promise<void>
}

/** ZeroMQ: one connection to the driver, which sends this agent its own task frames. */
export interface RoutedAgentTransport extends AgentTransportBase {
  readonly kind: 'routed'
  start(onMessage: (parts: Parts) => void, onFailure?: TransportFailure): void
  /**
   * Drops the connection and dials again (an agent that hears no driver for a
   * while) — unless a driver was heard over the connection now up: that
   * driver is busy, not gone, and dropping the connection would drop what is
   * on its way.
   */
  redial(): void
  /** A frame from the driver itself arrived (not merely a well-formed one): the connection reaches a driver. */
  driverHeard(): void
  /** With CURVE: the agent key, and the proof for a Hello that the agent holds its secret half. */
  proveKey?(agentId: string, registration: string): { key: string; proof: string } | undefined
}

/** Brokered designs: task frames come from a shared queue, taken while the agent has room (see `setWindow`). */
export interface SharedQueueAgentTransport extends AgentTransportBase {
  readonly kind: 'shared-queue'
  /**
   * Task frames from the shared queue come with their `delivery`, to `ack` or `release`, and whether the broker
   * delivered the frame before (`redelivered`: to an agent that gave it back, died or was taken out); messages
   * come without.
   */
  start(onMessage: (parts: Parts, delivery?: Delivery, redelivered?: boolean) => void, onFailure?: TransportFailure): void
  /** How many task frames the agent wants to hold unacknowledged; 0 stops taking tasks. */
  setWindow(frames: number): void
  /** These deliveries were answered by the messages sent so far: acknowledge them once the broker holds those. */
  ack(deliveries: Delivery[]): void
  /** Gives deliveries back to the queue unrun; they come back marked as redelivered. */
  release(deliveries: Delivery[]): void
  /** Resolves once every message sent so far is with the broker (a failure is the link's to report: it resolves then too). */
  sent(): Promise<void>
  /** Resolves when everything sent, acknowledged or released so far, and the last window set, are with the broker (errors are reported, not thrown). */
  flush(): Promise<void>
}

export type AgentTransport = RoutedAgentTransport | SharedQueueAgentTransport

export function newStats(): TransportStats {
  return { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0, sendErrors: 0 }
}

export function partsBytes(parts: Parts): number {
  let n = 0
  for (const p of parts) n += p.byteLength
  return n
}
