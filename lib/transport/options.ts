import { InvalidArgumentError } from '../errors.js'

/**
 * The four designs of the data plane:
 * - `zmq`: brokerless ZeroMQ, the driver's ROUTER and a DEALER per agent (the default);
 * - `redis`: Redis lists (a shared task list taken with BLMOVE, results and control through per-cluster lists);
 * - `amqp`: RabbitMQ durable queues with publisher confirms and manual acks;
 * - `amqp+redis`: tasks through RabbitMQ, results and control through Redis.
 */
export type TransportKind = 'zmq' | 'redis' | 'amqp' | 'amqp+redis'

export const TRANSPORT_KINDS: readonly TransportKind[] = ['zmq', 'redis', 'amqp', 'amqp+redis']

/** Which data plane to use, and where its brokers are. Part of both ClusterOptions and AgentOptions. */
export interface TransportOptions {
  /** The design: `'zmq'` (default), `'redis'`, `'amqp'` or `'amqp+redis'`. */
  transport?: TransportKind
  /** Redis for the `redis` and `amqp+redis` designs. Default `redis://127.0.0.1:6379`. */
  redisUrl?: string
  /** RabbitMQ for the `amqp` and `amqp+redis` designs. Default `amqp://guest:guest@127.0.0.1:5672`. */
  amqpUrl?: string
  /**
   * The namespace of this cluster's queues on the brokers. A driver picks a
   * random one by default (read `cluster.id`); agents of a brokered design must
   * be given it to join. Letters, digits, `-`, `_` and `.`, at most 64.
   */
  clusterId?: string
}

export interface ResolvedTransportOptions {
  readonly transport: TransportKind
  readonly redisUrl: string
  readonly amqpUrl: string
  readonly clusterId: string | undefined
}

export const TRANSPORT_DEFAULTS = {
  transport: 'zmq',
  redisUrl: 'redis://127.0.0.1:6379',
  amqpUrl: 'amqp://guest:guest@127.0.0.1:5672',
} as const

const CLUSTER_ID = /^[A-Za-z0-9_.-]{1,64}$/

export const usesRedis = (t: TransportKind): boolean => t === 'redis' || t === 'amqp+redis'
export const usesAmqp = (t: TransportKind): boolean => t === 'amqp' || t === 'amqp+redis'
export const isBrokered = (t: TransportKind): boolean => t !== 'zmq'

/** A URL with its password replaced by `***`, safe to print. Anything unparsable is shown by scheme only. */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.href.replace(/\/$/, '')
  } catch {
    const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(url)?.[0]
    return scheme ? `${scheme}… (unparsable)` : '(unparsable URL)'
  }
}

function checkUrl(name: string, v: unknown, schemes: readonly string[]): string {
  if (typeof v !== 'string' || v.length === 0) {
    throw new InvalidArgumentError(`options.${name} must be a ${schemes.join(' or ')} URL, got ${typeof v === 'string' ? '""' : String(v)}`)
  }
  let u: URL
  try {
    u = new URL(v)
  } catch {
    throw new InvalidArgumentError(`options.${name} must be a ${schemes.join(' or ')} URL, got ${JSON.stringify(maskUrl(v))}`)
  }
  if (!schemes.includes(u.protocol) || u.hostname === '') {
    throw new InvalidArgumentError(`options.${name} must be a ${schemes.join(' or ')} URL with a host, got ${JSON.stringify(maskUrl(v))}`)
  }
  return v
}

/** Validates the transport fields of cluster or agent options; names the bad field. Pure. */
export function resolveTransportOptions(o: TransportOptions): ResolvedTransportOptions {
  const transport = o.transport ?? TRANSPORT_DEFAULTS.transport
  if (!TRANSPORT_KINDS.includes(transport)) {
    throw new InvalidArgumentError(`options.transport must be one of ${TRANSPORT_KINDS.map((t) => `'${t}'`).join(', ')}, got ${JSON.stringify(transport)}`)
  }
  const redisUrl = checkUrl('redisUrl', o.redisUrl ?? TRANSPORT_DEFAULTS.redisUrl, ['redis:', 'rediss:'])
  const amqpUrl = checkUrl('amqpUrl', o.amqpUrl ?? TRANSPORT_DEFAULTS.amqpUrl, ['amqp:', 'amqps:'])
  if (o.clusterId !== undefined && (typeof o.clusterId !== 'string' || !CLUSTER_ID.test(o.clusterId))) {
    throw new InvalidArgumentError(
      `options.clusterId must be 1 to 64 letters, digits, '-', '_' or '.', got ${typeof o.clusterId === 'string' ? JSON.stringify(o.clusterId) : String(o.clusterId)}`,
    )
  }
  return { transport, redisUrl, amqpUrl, clusterId: o.clusterId }
}
