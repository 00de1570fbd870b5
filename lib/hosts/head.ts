import { randomBytes } from 'node:crypto'
import * as zmq from 'zeromq'
import { Cluster } from '../driver/cluster.js'
import { TransportError } from '../errors.js'
import { header, parseHeader } from '../protocol/codec.js'
import { MsgType } from '../protocol/messages.js'
import type { HostsPlan } from './plan.js'
import type { AgentKeys } from './remote.js'

/**
 * Asks whatever listens at `address` whether it is an actor-cluster driver,
 * without joining: a heartbeat from a peer it does not know makes a driver
 * answer `DriverBye` ("introduce yourself"). Resolves false on silence.
 */
async function pingDriver(address: string, keys?: AgentKeys, timeoutMs = 2000): Promise<boolean> {
  const dealer = new zmq.Dealer({
    routingId: `probe-${randomBytes(6).toString('hex')}`,
    linger: 0,
    receiveTimeout: timeoutMs,
    sendTimeout: timeoutMs,
    ...(keys ? { curveServerKey: keys.serverPublicKey, curvePublicKey: keys.agentKey.publicKey, curveSecretKey: keys.agentKey.secretKey } : {}),
  })
  try {
    dealer.connect(address)
    await dealer.send([header(MsgType.Heartbeat)])
    const [reply] = await dealer.receive()
    return reply !== undefined && parseHeader(reply).type === MsgType.DriverBye
  } catch {
    return false
  } finally {
    dealer.close()
  }
}

/** A head for agents to register with while `cluster up` runs. */
export interface Head {
  /** The registrar `cluster up` bound itself; undefined when a driver was already serving the head address. */
  readonly registrar: Cluster | undefined
  close(): Promise<void>
}

/**
 * Makes sure agents have a head to register with: binds the head address
 * with an empty driver (agents wait for the real one once `up` is done), or
 * finds a running driver there (hosts added while a job runs join it). An
 * address taken by anything else, or neither bindable here nor answering, is
 * an error before any host is touched.
 */
export async function openHead(plan: HostsPlan, keys?: AgentKeys): Promise<Head> {
  const listen = plan.listen!
  const head = plan.head!
  try {
    const registrar = await Cluster.start({
      config: {},
      listen,
      localAgents: 0,
      waitForNodes: 0,
      insecure: plan.insecure,
      ...(plan.curve ? { curve: plan.curve } : {}),
      ...(plan.heartbeatMs !== undefined ? { heartbeatMs: plan.heartbeatMs } : {}),
      ...(plan.nodeTimeoutMs !== undefined ? { nodeTimeoutMs: plan.nodeTimeoutMs } : {}),
    })
    return { registrar, close: () => registrar.close() }
  } catch (err) {
    if (err instanceof TransportError && err.code === 'ERR_INSECURE_BIND') throw err
    if (await pingDriver(head, keys)) return { registrar: undefined, close: async () => {} }
    if (err instanceof TransportError && err.code === 'ERR_ADDRESS_IN_USE') {
      throw new TransportError(`${listen} is in use by a program that is not an actor-cluster driver: stop it, or choose another port for listen/head`, {
        code: 'ERR_ADDRESS_IN_USE',
        cause: err,
      })
    }
    throw new TransportError(
      `cannot listen on ${listen} here (${(err as Error).message}) and no driver answers at ${head}: run cluster up on the head machine, or start the driver first`,
      { cause: err },
    )
  }
}
