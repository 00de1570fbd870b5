/**
 * The seam between the runtime and the wire. A driver transport talks to many
 * agents, each known by a peer id; an agent transport talks to one driver.
 * Messages are lists of parts (see lib/protocol). Implementations own their
 * sockets or connections; `close()` is idempotent.
 */

export type Parts = Uint8Array[]

export interface TransportStats {
  framesIn: number
  framesOut: number
  bytesIn: number
  bytesOut: number
  sendErrors: number
}

export interface DriverTransport extends AsyncDisposable {
  /** What an agent connects to. Known once `bind()` resolved. */
  readonly address: string
  readonly stats: TransportStats
  bind(): Promise<void>
  /** Queues a message to one agent. Never throws; failures are counted and reported to `onSendError`. */
  send(peer: string, parts: Parts): void
  /** Starts delivering every message received, with the sender's peer id. */
  start(onMessage: (peer: string, parts: Parts) => void): void
  close(): Promise<void>
}

export interface AgentTransport extends AsyncDisposable {
  readonly stats: TransportStats
  connect(): Promise<void>
  send(parts: Parts): void
  start(onMessage: (parts: Parts) => void): void
  close(): Promise<void>
}

export function newStats(): TransportStats {
  return { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0, sendErrors: 0 }
}

export function partsBytes(parts: Parts): number {
  let n = 0
  for (const p of parts) n += p.byteLength
  return n
}
