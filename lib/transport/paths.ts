/**
 * What the brokered designs are made of, apart from any broker: the two
 * seams (a task path and a message path, each with a driver end and an agent
 * end), the link to a broker they share, and the errors a broker's failure
 * becomes. `brokered.ts` composes these; `redis.ts` and `amqp.ts` implement
 * them. Nothing here imports either, so the module graph stays a tree.
 */
import { TransportError, safeString } from '../errors.js'
import { maskUrl } from './options.js'
import type { Delivery } from './transport.js'

/** The driver's end of the task path. */
export interface DriverTaskPath {
  /** Declares the shared queue and empties it: frames of a crashed earlier run under the same id are gone. */
  open(): Promise<void>
  /** Publishes one frame (durably; a refusal by the broker is reported as a failure). */
  publish(frame: Buffer): void
  /** Puts back what a lost agent had taken and not acknowledged, marked as redelivered. */
  reclaim(agentId: string): void
  /** Deletes the queue. */
  close(): Promise<void>
}

/** An agent's end of the task path. */
export interface AgentTaskPath {
  /** `redelivered`: the broker handed this frame out before (it was given back, or its taker died or was taken out). */
  open(onTask: (frame: Buffer, delivery: Delivery, redelivered: boolean) => void): Promise<void>
  /** Most frames to hold unacknowledged; 0 stops taking. Resolves once the broker applied it (errors are the link's to report). */
  setPrefetch(frames: number): Promise<void>
  ack(deliveries: Delivery[]): Promise<void>
  /** Gives frames back unrun, marked as redelivered. */
  release(deliveries: Delivery[]): Promise<void>
  /** Stops taking and gives back every frame not acknowledged. */
  close(): Promise<void>
}

/** The driver's end of the message path: one inbox for the driver, one per agent. */
export interface DriverMessagePath {
  open(): Promise<void>
  start(onMessage: (frame: Buffer) => void): void
  send(agentId: string, frame: Buffer): void
  /** Drops an agent's inbox. */
  forget(agentId: string): void
  close(): Promise<void>
}

/** An agent's end of the message path. */
export interface AgentMessagePath {
  open(): Promise<void>
  start(onMessage: (frame: Buffer) => void): void
  /** Resolves once the broker holds the message. */
  send(frame: Buffer): Promise<void>
  close(): Promise<void>
}

/** A connection to one broker, shared by the paths that use it (connections per process stay constant). */
export interface BrokerLink {
  readonly url: string
  /** Lets what is under way finish, then closes every connection. Idempotent. */
  close(): Promise<void>
  /** Drops every connection at once, without waiting (the forced step of a close). Idempotent. */
  destroy(): void
}

/**
 * A driver's hold on its cluster id on one broker. Two live drivers of one id
 * would take each other's messages from the one driver inbox, and each would
 * empty the other's task queue at start: the second is refused instead. A
 * driver that dies frees its hold within {@link LEASE_MS} (RabbitMQ: as soon
 * as the broker drops its connection), so the next driver of the id starts.
 */
export interface DriverLease {
  /** Takes the hold; false while another driver has it. */
  take(): Promise<boolean>
  /** Gives it up, if it is still ours. */
  release(): Promise<void>
}

/** How long a driver's hold on its id outlives the driver (a Redis lease, refreshed while the driver lives). */
export const LEASE_MS = 5000

/**
 * Takes every lease, waiting up to {@link LEASE_MS} and a second for one that
 * is held (its driver may have just died), then fails with ERR_ADDRESS_IN_USE
 * naming the id and the broker.
 */
export async function holdClusterId(
  leases: readonly { lease: DriverLease; kind: string; url: string }[],
  clusterId: string,
  closed: () => boolean,
): Promise<void> {
  const deadline = Date.now() + LEASE_MS + 1000
  for (const { lease, kind, url } of leases) {
    while (!(await lease.take())) {
      if (closed()) return
      if (Date.now() >= deadline) {
        throw new TransportError(
          `driver: cluster id ${clusterId} is in use by another driver on ${kind} at ${maskUrl(url)}: two drivers of one cluster would take each other's messages and empty each other's task queue; ` +
            `give this one another clusterId (or none, for a random one), or close the other first (a driver that died frees its id within ${LEASE_MS / 1000} s)`,
          { code: 'ERR_ADDRESS_IN_USE' },
        )
      }
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
  }
}

/** Where a cluster's queues live: names are `ac.<clusterId>.…` (RabbitMQ) or `ac:{<clusterId>}:…` (Redis). */
export interface Namespace {
  readonly clusterId: string
}

/** How long the queues of a crashed run outlive it (Redis key TTL, RabbitMQ `x-expires`). Live ones are refreshed. */
export const QUEUE_TTL_MS = 60_000

/** The error for a broker that cannot be reached at start. */
export function unreachable(kind: string, url: string, role: string, cause: unknown): TransportError {
  const why = cause instanceof Error ? cause.message || cause.name : safeString(cause)
  return new TransportError(`${role} cannot connect to ${kind} at ${maskUrl(url)}: ${why}`, { cause, code: 'ERR_BROKER_UNREACHABLE' })
}

/** The error for a broker connection lost mid-run. */
export function lost(kind: string, url: string, role: string, cause: unknown): TransportError {
  const why = cause instanceof Error ? cause.message || cause.name : cause === undefined ? 'the connection closed' : safeString(cause)
  return new TransportError(`${role} lost its connection to ${kind} at ${maskUrl(url)}: ${why}`, { cause, code: 'ERR_BROKER_LOST' })
}
