/**
 * From the `transport` option to a driver or agent transport. ZeroMQ is
 * built in; the brokered designs (and with them ioredis and amqplib) are
 * imported only when chosen, so importing the package never loads them.
 */
import type { TransportKind } from './options.js'
import type { AgentTransport, DriverTransport } from './transport.js'
import { ZmqAgentTransport, ZmqDriverTransport } from './zmq.js'
import { MemoryAgentTransport, MemoryDriverTransport } from './memory.js'
import { SplitDriverTransport } from './split.js'
import type { AgentCurve, KeyPair } from './curve.js'

export interface DriverTransportSpec {
  transport: TransportKind
  redisUrl: string
  amqpUrl: string
  clusterId: string
  brokerReconnectMs: number
  /** Brokered designs: the cluster's secret (undefined: insecure, no HMAC). */
  brokerKey?: Buffer | undefined
  /** A `memory://` address: the driver binds that alone (no socket). */
  listen: string
  /** zmq: also bind this in-process ZeroMQ endpoint, for local agents. */
  inproc: string | undefined
  /** zmq: also take local agents on this `memory://` address (with a `listen` that is not one). */
  local?: string | undefined
  maxFrameBytes: number
  /** zmq only: CURVE server keys and the ZAP domain of the accepted agent keys. */
  curve?: { server: KeyPair; zapDomain: string } | undefined
}

export interface AgentTransportSpec {
  transport: TransportKind
  redisUrl: string
  amqpUrl: string
  clusterId: string | undefined
  brokerReconnectMs: number
  /** Brokered designs: the cluster's secret (undefined: insecure, no HMAC). */
  brokerKey?: Buffer | undefined
  connect: string
  identity: string
  maxFrameBytes: number
  /** zmq only: CURVE keys. */
  curve?: AgentCurve | undefined
  /** zmq only: where the keys were found (not given): looked up again at each redial. */
  findKeys?: (() => AgentCurve | undefined) | undefined
  onHandshakeError?: (message: string) => void
}

export async function createDriverTransport(s: DriverTransportSpec): Promise<DriverTransport> {
  if (s.transport === 'zmq') {
    const memory = (listen: string) => new MemoryDriverTransport({ listen, maxFrameBytes: s.maxFrameBytes, holdProcess: true })
    if (isMemoryAddress(s.listen)) return memory(s.listen)
    const router = new ZmqDriverTransport({ listen: s.listen, inproc: s.inproc, maxFrameBytes: s.maxFrameBytes, curve: s.curve })
    return s.local === undefined ? router : new SplitDriverTransport(router, memory(s.local))
  }
  const { BrokeredDriverTransport } = await import('./brokered.js')
  return new BrokeredDriverTransport({
    transport: s.transport,
    redisUrl: s.redisUrl,
    amqpUrl: s.amqpUrl,
    clusterId: s.clusterId,
    reconnectMs: s.brokerReconnectMs,
    secret: s.brokerKey,
  })
}

export async function createAgentTransport(s: AgentTransportSpec): Promise<AgentTransport> {
  if (s.transport === 'zmq' && isMemoryAddress(s.connect)) {
    return new MemoryAgentTransport({ connect: s.connect, identity: s.identity, maxFrameBytes: s.maxFrameBytes, curve: s.curve })
  }
  if (s.transport === 'zmq') {
    return new ZmqAgentTransport({
      connect: s.connect,
      identity: s.identity,
      maxFrameBytes: s.maxFrameBytes,
      curve: s.curve,
      findKeys: s.findKeys,
      onHandshakeError: s.onHandshakeError,
    })
  }
  const { BrokeredAgentTransport } = await import('./brokered.js')
  // resolveAgentOptions demands a cluster id for every brokered design.
  return new BrokeredAgentTransport(
    { transport: s.transport, redisUrl: s.redisUrl, amqpUrl: s.amqpUrl, clusterId: s.clusterId!, reconnectMs: s.brokerReconnectMs, secret: s.brokerKey },
    s.identity,
  )
}

/** A driver in this process, reached without a socket (see lib/transport/memory.ts). */
export function isMemoryAddress(address: string): boolean {
  return address.startsWith('memory://')
}
