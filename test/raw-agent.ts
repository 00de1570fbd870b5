import type { TestContext } from 'node:test'
import * as zmq from 'zeromq'
import { Packr } from 'msgpackr'
import { Cluster, type ClusterOptions } from '../lib/index.js'
import { MsgType, PROTOCOL_VERSION } from '../lib/protocol/messages.js'
import { FIXTURE_TASKS, waitFor } from './helpers.js'

const packr = new Packr()
const V = PROTOCOL_VERSION

/** A task as the driver sent it to a raw agent, with the frame's timeout. */
export interface SentTask {
  id: number
  name: string
  args: unknown[]
  timeoutMs: number | undefined
}

export interface RawAgentOptions {
  /** Hello fields over the defaults (`agentId` the routing id, one thread, tasks `add` and `sleep`, a window of 1000). */
  hello?: Record<string, unknown>
  /** DEALER options over `{ routingId, linger: 0, sendTimeout: 0 }`: CURVE keys, a reconnect interval. */
  socket?: Partial<zmq.SocketOptions<zmq.Dealer>>
}

/** A DEALER speaking the agent protocol by hand. */
export interface RawAgent {
  socket: zmq.Dealer
  /** Every message the driver sent, each part unpacked. */
  received: unknown[][]
  /** Every task the driver sent, in order. */
  tasks: SentTask[]
  /** Why the CURVE handshake was refused, once per refusal. */
  refused: string[]
  /** Whether a Welcome came. */
  welcomed: () => boolean
  /** Sends one Results frame: `[id, status, value]` triples. */
  answer: (items: [number, number, unknown][]) => Promise<void>
  /** Announces a window. */
  credit: (window: number) => Promise<void>
  /** Sends a heartbeat every `ms` until the test ends, so the driver keeps the node. */
  beat: (ms: number) => void
}

/**
 * A raw DEALER that connects to `address` as `routingId` and says Hello at once (queued until a connection is up,
 * never delivered if the handshake fails); it records what the driver sends it and answers only when told. Closed
 * when the test ends.
 */
export function rawAgent(t: TestContext, address: string, routingId: string, options: RawAgentOptions = {}): RawAgent {
  const socket = new zmq.Dealer({ routingId, linger: 0, sendTimeout: 0, ...options.socket })
  const refused: string[] = []
  socket.events.on('handshake:error:auth', (e) => refused.push(e.error.message))
  socket.events.on('handshake:error:protocol', (e) => refused.push(e.error.message))
  let beat: NodeJS.Timeout | undefined
  t.after(() => {
    clearInterval(beat)
    socket.close()
  })
  socket.connect(address)
  const received: unknown[][] = []
  const tasks: SentTask[] = []
  void (async () => {
    try {
      for await (const parts of socket) {
        const m = parts.map((p) => packr.unpack(p) as unknown)
        received.push(m)
        const h = m[0] as unknown[]
        if (h[1] !== MsgType.Tasks) continue
        const flat = m[1] as unknown[]
        for (let i = 0; i < flat.length; i += 3) {
          tasks.push({ id: flat[i] as number, name: flat[i + 1] as string, args: flat[i + 2] as unknown[], timeoutMs: h[3] as number | undefined })
        }
      }
    } catch {
      // closed
    }
  })()
  const send = (parts: Buffer[]) => socket.send(parts)
  const hello = {
    agentId: routingId,
    threads: 1,
    pid: process.pid,
    host: 'raw',
    version: '0',
    tasks: ['add', 'sleep'],
    actors: [],
    window: 1000,
    ...options.hello,
  }
  void send([packr.pack([V, MsgType.Hello, hello])]).catch(() => {})
  return {
    socket,
    received,
    tasks,
    refused,
    welcomed: () => received.some((m) => (m[0] as unknown[])[1] === MsgType.Welcome),
    answer: (items) => send([packr.pack([V, MsgType.Results, items.length]), packr.pack(items.flat())]),
    credit: (window) => send([packr.pack([V, MsgType.Credit, window])]),
    beat: (ms) => {
      clearInterval(beat)
      beat = setInterval(() => void send([packr.pack([V, MsgType.Heartbeat, { busy: 0, done: 0, queued: 0 }])]).catch(() => {}), ms)
    },
  }
}

/** A {@link rawAgent} of `window` that the driver has welcomed (within 10 s). */
export async function welcomedRawAgent(t: TestContext, address: string, id: string, window: number): Promise<RawAgent> {
  const raw = rawAgent(t, address, id, { hello: { window } })
  await waitFor(raw.welcomed, 10_000, `a Welcome for ${id}`)
  return raw
}

/** A driver on the fixtures that raw agents can join: a free loopback port without keys (`insecure`), no agent of its own; `more` over that. */
export function openDriver(more: ClusterOptions = {}): Promise<Cluster> {
  return Cluster.start({ tasks: FIXTURE_TASKS, listen: 'tcp://127.0.0.1:0', insecure: true, localAgents: 0, ...more })
}
