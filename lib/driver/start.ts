/**
 * Start-up of a driver, in the order that fails early: settings, the
 * insecure-bind check, CURVE keys (made here for loopback TCP without keys
 * of its own), the tasks module, the transport and its ZAP domain, the bind,
 * the local keys file; then (from `Cluster.start`) the dashboard and the
 * local agents.
 */
import { randomBytes } from 'node:crypto'
import type { EventEmitter } from 'node:events'
import { Agent } from '../agent/agent.js'
import { TransportError } from '../errors.js'
import { CLUSTER_DEFAULTS, isLoopbackEndpoint, type ClusterOptions, type ResolvedClusterOptions } from '../options.js'
import { resolveClusterSettings } from '../settings.js'
import { loadCatalog, type Catalog } from '../tasks-module.js'
import { checkHelloProof, newKeyPair, registerZapDomain, resolveDriverCurve, unregisterZapDomain, type DriverCurve, type KeyPair } from '../transport/curve.js'
import { isBrokered } from '../transport/options.js'
import { createDriverTransport } from '../transport/resolve.js'
import { clearStaleLocalKeys, publishLocalKeys } from '../transport/local-keys.js'
import { newSecret, publishBrokerSecret, readSecretFile, secretKey } from '../transport/broker-secret.js'
import type { DriverTransport } from '../transport/transport.js'
import type { HelloInfo } from '../protocol/messages.js'
import type { ClusterEvents } from './types.js'

const LOCAL_AGENT_START_MS = 30_000

/** Everything a driver is made of before it runs. */
export interface DriverSetup {
  readonly options: ResolvedClusterOptions
  readonly catalog: Catalog | undefined
  readonly transport: DriverTransport
  readonly clusterId: string
  /** The in-process address local agents use (`memory://`, or ZeroMQ's `inproc://`); undefined to use `address`. */
  readonly localAddress: string | undefined
  readonly curve: DriverCurve | undefined
  /** The ZAP domain under which the accepted agent keys are registered. */
  readonly zapDomain: string | undefined
  /** The key pair of the local agents, accepted by this driver alone. */
  readonly localKey: KeyPair | undefined
  /** The directory where agents on this machine find the keys this driver made (no keys of its own on loopback TCP). */
  readonly localKeys: string | undefined
  /** Brokered designs: the cluster's secret, which local agents are given (undefined: insecure or zmq). */
  readonly brokerKey: Buffer | undefined
  /** Connections refused by CURVE authentication so far. */
  readonly authDenied: { readonly denied: number } | undefined
}

/** Resolves the options and binds the transport; nothing is left open if it fails. */
export async function setUpDriver(options: ClusterOptions): Promise<DriverSetup> {
  const resolved = await resolveClusterSettings(options)
  if (resolved.transport === 'zmq' && resolved.listen !== undefined && !resolved.insecure && !resolved.curve && !isLoopbackEndpoint(resolved.listen)) {
    throw new TransportError(
      `refusing to listen on ${resolved.listen} without authentication: give curve keys (cluster keys), or insecure: true (--insecure) to allow any peer; on a loopback address the driver makes keys for its own machine's agents`,
      { code: 'ERR_INSECURE_BIND' },
    )
  }
  const zmqDesign = resolved.transport === 'zmq'
  // Loopback TCP authenticates too: without keys of its own the driver makes them, for this cluster only.
  const tcp = zmqDesign && (resolved.listen !== undefined || resolved.localTransport === 'tcp')
  const ownKeys = tcp && !resolved.insecure && !resolved.curve
  const curve = resolved.curve && zmqDesign ? resolveDriverCurve(resolved.curve) : ownKeys ? { server: newKeyPair(), authorizedAgents: [] } : undefined
  const catalog = resolved.tasks === undefined ? undefined : await loadCatalog(resolved.tasks, 'the driver')
  const clusterId = resolved.clusterId ?? randomBytes(8).toString('hex')
  // Local agents in this process: in memory (the default), or over ZeroMQ's inproc.
  const inProcess = zmqDesign && resolved.localTransport !== 'tcp'
  const scheme = resolved.localTransport === 'memory' ? 'memory' : 'inproc'
  // No `listen` given: no TCP port at all, only the address the local agents use.
  const inProcessOnly = inProcess && resolved.listen === undefined
  const inProcessAddress =
    inProcess && (inProcessOnly || resolved.localAgents > 0) ? `${scheme}://actor-cluster-${process.pid}-${randomBytes(6).toString('hex')}` : undefined
  const listen = resolved.listen ?? (inProcessOnly ? inProcessAddress! : CLUSTER_DEFAULTS.listen)
  const localAddress = resolved.localAgents > 0 ? inProcessAddress : undefined
  // With `listen` too: the ROUTER also binds the inproc endpoint, or a memory side is joined to it.
  const alongside = inProcessOnly ? undefined : localAddress
  const zapDomain = curve ? `actor-cluster-${process.pid}-${randomBytes(6).toString('hex')}` : undefined
  const localKey = curve && (resolved.localAgents > 0 || ownKeys) ? newKeyPair() : undefined
  // Brokered: the cluster's secret as configured, else one made for this cluster and published (below) for this user's agents.
  const brokered = !zmqDesign && !resolved.insecure
  const madeSecret = brokered && resolved.brokerSecret === undefined && resolved.brokerSecretFile === undefined ? newSecret() : undefined
  const brokerKey = !brokered
    ? undefined
    : madeSecret !== undefined
      ? Buffer.from(madeSecret, 'utf8')
      : resolved.brokerSecret !== undefined
        ? secretKey(resolved.brokerSecret, 'options.brokerSecret')
        : readSecretFile(resolved.brokerSecretFile!)
  const transport = await createDriverTransport({
    ...resolved,
    brokerKey,
    listen,
    clusterId,
    inproc: scheme === 'inproc' ? alongside : undefined,
    local: scheme === 'memory' ? alongside : undefined,
    curve: curve && zapDomain ? { server: curve.server, zapDomain } : undefined,
  })
  let authDenied: { denied: number } | undefined
  let localKeys: string | undefined
  try {
    if (curve && zapDomain) authDenied = await registerZapDomain(zapDomain, localKey ? [...curve.authorizedAgents, localKey.publicKey] : curve.authorizedAgents)
    await transport.bind()
    // The agents' half of keys made here goes where agents of this user on this machine look for it.
    if (ownKeys && curve && localKey) localKeys = publishLocalKeys(transport.address, curve.server.publicKey, localKey)
    else if (tcp && isLoopbackEndpoint(transport.address)) clearStaleLocalKeys(transport.address)
    if (madeSecret !== undefined) localKeys = publishBrokerSecret(clusterId, madeSecret)
  } catch (err) {
    if (zapDomain) await unregisterZapDomain(zapDomain)
    await transport.close()
    throw err
  }
  return { options: resolved, catalog, transport, clusterId, localAddress, curve, zapDomain, localKey, authDenied, localKeys, brokerKey }
}

/** Starts the local agents of a driver and waits until each registered (bounded). */
export async function startLocalAgents(setup: DriverSetup, onStarted: (agent: Agent) => void): Promise<void> {
  const { localAgents, tasks, threads, heartbeatMs, nodeTimeoutMs, maxFrameBytes, localAgentOptions, transport, redisUrl, amqpUrl, brokerReconnectMs } =
    setup.options
  if (localAgents === 0 || tasks === undefined) return
  const { curve, localKey } = setup
  const started: Agent[] = []
  for (let i = 0; i < localAgents; i++) {
    const via = isBrokered(transport)
      ? {
          transport,
          redisUrl,
          amqpUrl,
          clusterId: setup.clusterId,
          brokerReconnectMs,
          brokerSecret: setup.brokerKey?.toString('utf8'),
          insecure: setup.options.insecure,
        }
      : { connect: setup.localAddress ?? setup.transport.address }
    const agent = await Agent.start({
      ...localAgentOptions,
      ...via,
      tasks,
      threads,
      heartbeatMs,
      driverTimeoutMs: nodeTimeoutMs,
      maxFrameBytes,
      curve: curve && localKey ? { serverPublicKey: curve.server.publicKey, agentKey: localKey } : undefined,
    })
    started.push(agent)
    onStarted(agent)
  }
  let timeout: NodeJS.Timeout | undefined
  await Promise.race([
    Promise.all(started.map((a) => a.waitUntilReady())),
    new Promise((_, reject) => {
      timeout = setTimeout(
        () => reject(new TransportError(`local agents did not register with ${setup.transport.address} within ${LOCAL_AGENT_START_MS} ms`)),
        LOCAL_AGENT_START_MS,
      )
    }),
  ]).finally(() => clearTimeout(timeout))
}

/**
 * Resolves once `want` remote agents are members (`options.waitForNodes`,
 * set by `cluster run` inside a Slurm job); rejects after `ms`.
 */
export async function waitForRemoteNodes(
  driver: EventEmitter<ClusterEvents> & { readonly address: string },
  remote: () => number,
  want: number,
  ms: number,
): Promise<void> {
  if (want === 0 || remote() >= want) return
  await new Promise<void>((resolve, reject) => {
    const onJoined = () => {
      if (remote() < want) return
      clearTimeout(timer)
      driver.off('node:joined', onJoined)
      resolve()
    }
    const timer = setTimeout(() => {
      driver.off('node:joined', onJoined)
      reject(new TransportError(`${remote()} of ${want} agents registered with ${driver.address} within ${ms} ms (options.waitForNodes)`))
    }, ms)
    driver.on('node:joined', onJoined)
  })
}

/**
 * With CURVE, the key a Hello proves: one the driver accepts, with a proof
 * made for this connection's routing id (see `checkHelloProof`).
 */
export function keyVerifier(setup: DriverSetup): ((peer: string, info: HelloInfo) => string | undefined) | undefined {
  const { curve, localKey } = setup
  if (!curve) return undefined
  const accepted = new Set(localKey ? [...curve.authorizedAgents, localKey.publicKey] : curve.authorizedAgents)
  return (peer, { agentId, registration, key, proof }) =>
    key !== undefined &&
    proof !== undefined &&
    registration !== undefined &&
    accepted.has(key) &&
    checkHelloProof(curve.server, key, proof, agentId, registration, peer)
      ? key
      : undefined
}
