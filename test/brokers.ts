/** Which brokers the tests can reach, and a TCP proxy to take one away mid-run. */
import { connect, createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import type { TestContext } from 'node:test'
import type { TransportKind } from '../lib/transport/options.js'

export const REDIS_URL = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379'
export const AMQP_URL = process.env['TEST_AMQP_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672'
const REQUIRE_BROKERS = process.env['REQUIRE_BROKERS'] === '1'

function reachable(url: string, defaultPort: number): Promise<boolean> {
  const u = new URL(url)
  return new Promise((resolve) => {
    const s = connect({ host: u.hostname, port: Number(u.port || defaultPort) })
    s.setTimeout(1000)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
    s.once('timeout', () => {
      s.destroy()
      resolve(false)
    })
  })
}

const redisUp = await reachable(REDIS_URL, 6379)
const amqpUp = await reachable(AMQP_URL, 5672)

/**
 * Why the tests of a design cannot run here, or false. Under REQUIRE_BROKERS=1
 * an unreachable broker is not a reason to skip: the caller fails instead.
 */
export function skipReason(design: TransportKind): string | false {
  const missing: string[] = []
  if ((design === 'redis' || design === 'amqp+redis') && !redisUp) missing.push(`Redis at ${REDIS_URL} is unreachable`)
  if ((design === 'amqp' || design === 'amqp+redis') && !amqpUp) missing.push(`RabbitMQ at ${AMQP_URL.replace(/:[^:@/]*@/, ':***@')} is unreachable`)
  if (missing.length === 0 || REQUIRE_BROKERS) return false
  return `${missing.join('; ')} (set REQUIRE_BROKERS=1 to fail instead)`
}

/** A TCP proxy to a broker, so a test can cut the broker away without touching it. */
export interface Proxy {
  port: number
  /** Destroys every connection and stops listening: to its clients, the broker is gone. */
  cut(): Promise<void>
  /** Stops forwarding but keeps every connection open, and new ones too: to its clients, the broker hangs. */
  freeze(): void
}

export async function proxyTo(t: TestContext, url: string, defaultPort: number): Promise<Proxy> {
  const u = new URL(url)
  const sockets = new Set<Socket>()
  let frozen = false
  const server: Server = createServer((client) => {
    if (frozen) {
      // Accepted, never answered.
      sockets.add(client)
      client.on('close', () => sockets.delete(client))
      client.on('error', () => {})
      client.pause()
      return
    }
    const upstream = connect({ host: u.hostname, port: Number(u.port || defaultPort) })
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
      s.on('error', () => {})
    }
    client.pipe(upstream).pipe(client)
    pairs.push([client, upstream])
  })
  const pairs: [Socket, Socket][] = []
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  let cut = false
  const proxy: Proxy = {
    port: (server.address() as { port: number }).port,
    async cut() {
      if (cut) return
      cut = true
      const closed = new Promise((resolve) => server.close(resolve))
      for (const s of sockets) s.destroy()
      await closed
    },
    freeze() {
      frozen = true
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream)
        upstream.unpipe(client)
        client.pause()
        upstream.pause()
      }
    },
  }
  t.after(() => proxy.cut())
  return proxy
}

/** The same URL with another port. */
export function withPort(url: string, port: number): string {
  const u = new URL(url)
  u.port = String(port)
  return u.href.replace(/\/$/, '')
}
