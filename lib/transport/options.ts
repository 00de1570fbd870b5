import { InvalidArgumentError } from '../errors.js'
import { describe, integerOption, maskUrl, oneOfOption, urlOption } from '../validate.js'

export { maskUrl }

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
  /**
   * Brokered designs: how long a broker may be gone before its loss is final,
   * in ms. Within it, a lost connection is dialled again (with backoff), what
   * was sent meanwhile goes out once it is back, and nothing is lost; past
   * it, the driver fails its pending tasks with a `TransportError`
   * (`ERR_BROKER_LOST`) and an agent closes. 0 gives up at once. Default 30000.
   */
  brokerReconnectMs?: number
  /**
   * Brokered designs: the cluster's secret, at least 32 characters (e.g. 64
   * hex digits). Every frame on the brokers carries an HMAC-SHA-256 keyed by
   * it; frames without the right one are dropped and counted. Prefer
   * `brokerSecretFile`. Given neither, the driver makes one per cluster and
   * leaves it where agents of the same user on the same machine find it.
   */
  brokerSecret?: string
  /** Brokered designs: a file (the user's own, mode 0600) holding the cluster's secret. */
  brokerSecretFile?: string
}

export interface ResolvedTransportOptions {
  readonly transport: TransportKind
  readonly redisUrl: string
  readonly amqpUrl: string
  readonly clusterId: string | undefined
  readonly brokerReconnectMs: number
  readonly brokerSecret: string | undefined
  readonly brokerSecretFile: string | undefined
}

export const TRANSPORT_DEFAULTS = {
  transport: 'zmq',
  redisUrl: 'redis://127.0.0.1:6379',
  amqpUrl: 'amqp://guest:guest@127.0.0.1:5672',
  brokerReconnectMs: 30_000,
} as const

export const CLUSTER_ID = /^[A-Za-z0-9_.-]{1,64}$/
export const REDIS_SCHEMES = ['redis:', 'rediss:'] as const
export const AMQP_SCHEMES = ['amqp:', 'amqps:'] as const

export const usesRedis = (t: TransportKind): boolean => t === 'redis' || t === 'amqp+redis'
export const usesAmqp = (t: TransportKind): boolean => t === 'amqp' || t === 'amqp+redis'
export const isBrokered = (t: TransportKind): boolean => t !== 'zmq'

/**
 * The database a Redis URL names in its path (`redis://host:port/N`), 0 if none.
 * Anything but a number is refused: ioredis would send `SELECT NaN` on
 * connect, and its reply error would crash the process.
 */
export function redisDatabase(url: string): number {
  const path = new URL(url).pathname
  if (path === '' || path === '/') return 0
  if (!/^\/\d{1,9}$/.test(path))
    throw new InvalidArgumentError(
      `options.redisUrl's path must be a database number (redis://host:port/N), got ${JSON.stringify(decodeURIComponent(path))} in ${JSON.stringify(maskUrl(url))}`,
    )
  return Number(path.slice(1))
}

/** Validates the transport fields of cluster or agent options; names the bad field. Pure. */
export function resolveTransportOptions(o: TransportOptions): ResolvedTransportOptions {
  const transport = oneOfOption('transport', o.transport, TRANSPORT_KINDS) ?? TRANSPORT_DEFAULTS.transport
  const redisUrl = urlOption('redisUrl', o.redisUrl ?? TRANSPORT_DEFAULTS.redisUrl, REDIS_SCHEMES)
  redisDatabase(redisUrl)
  const amqpUrl = urlOption('amqpUrl', o.amqpUrl ?? TRANSPORT_DEFAULTS.amqpUrl, AMQP_SCHEMES)
  if (o.clusterId !== undefined && (typeof o.clusterId !== 'string' || !CLUSTER_ID.test(o.clusterId))) {
    throw new InvalidArgumentError(`options.clusterId must be 1 to 64 letters, digits, '-', '_' or '.', got ${describe(o.clusterId)}`)
  }
  const brokerReconnectMs = integerOption('brokerReconnectMs', o.brokerReconnectMs, 0) ?? TRANSPORT_DEFAULTS.brokerReconnectMs
  for (const key of ['brokerSecret', 'brokerSecretFile'] as const) {
    const v = o[key]
    if (v !== undefined && (typeof v !== 'string' || v.trim() === ''))
      throw new InvalidArgumentError(`options.${key} must be a non-empty string, got ${typeof v}`)
  }
  return { transport, redisUrl, amqpUrl, clusterId: o.clusterId, brokerReconnectMs, brokerSecret: o.brokerSecret, brokerSecretFile: o.brokerSecretFile }
}
