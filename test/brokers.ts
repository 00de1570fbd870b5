/** Which brokers the tests can reach, a TCP proxy to take one away mid-run, and brokers of a test's own to restart. */
import { Redis } from 'ioredis'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { FIXTURE_TASKS, freePort } from './helpers.js'
import type { TestContext } from 'node:test'
import type { TransportKind } from '../lib/transport/options.js'
import { FrameAuth, type FrameDirection } from '../lib/transport/frames.js'
import { findBrokerSecret } from '../lib/transport/broker-secret.js'

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

/** `cluster agent` arguments for an agent of `design` joining cluster `clusterId` (heartbeats every 300 ms). */
export const brokeredAgentArgs = (design: TransportKind, clusterId: string, threads = 1): string[] => [
  'agent',
  '--transport',
  design,
  '--cluster-id',
  clusterId,
  '--redis',
  REDIS_URL,
  '--amqp',
  AMQP_URL,
  '--tasks',
  FIXTURE_TASKS.href,
  '--threads',
  String(threads),
  '--heartbeat-ms',
  '300',
]

/**
 * A cluster id of its own for each test, and a Redis client that deletes its keys when the test
 * ends (each test closes its agents, then its cluster, before it returns: an agent's Leave would
 * otherwise reach a driver inbox after this cleanup, and stay until it expires).
 */
export function redisFor(t: TestContext, prefix = 'paths') {
  const clusterId = `${prefix}-${randomBytes(4).toString('hex')}`
  const redis = new Redis(REDIS_URL)
  const k = (rest: string) => `ac:{${clusterId}}:${rest}`
  t.after(async () => {
    // This test's keys, and those of any cluster id it derived from its own.
    const left = await redis.keys(`ac:{${clusterId}*`)
    if (left.length > 0) await redis.del(...left)
    redis.disconnect()
  })
  return { clusterId, redis, k }
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

/**
 * A broker of a test's own, on free loopback ports, that the test may stop
 * and start again: never the machine's. Its data lives in a private
 * directory (0700) and survives a restart; a random password, in files of
 * that directory and in the URL, keeps other users out. Stopped and removed
 * when the test ends, pass or fail.
 */
export interface OwnBroker {
  /** With its password: hand it to agents through the environment, never a command line. */
  readonly url: string
  readonly port: number
  /** Stops the server (SIGTERM: it writes what it holds) and waits until it has exited. */
  stop(): Promise<void>
  /** Starts it again on the same port and data, and waits until it accepts connections. */
  start(): Promise<void>
}

/** Why own brokers cannot be started here, or false. */
export function ownBrokerSkip(kind: 'redis' | 'rabbitmq'): string | false {
  const bin = kind === 'redis' ? REDIS_SERVER : RABBITMQ_SERVER
  if (existsSync(bin) || REQUIRE_BROKERS) return false
  return `${bin} is not installed (set REQUIRE_BROKERS=1 to fail instead)`
}

const REDIS_SERVER = process.env['TEST_REDIS_SERVER'] ?? '/usr/bin/redis-server'
const RABBITMQ_SERVER = process.env['TEST_RABBITMQ_SERVER'] ?? '/usr/lib/rabbitmq/bin/rabbitmq-server'

async function listening(port: number, ms: number, what: string, alive: () => boolean): Promise<void> {
  const end = Date.now() + ms
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port })
      s.once('connect', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (!alive()) throw new Error(`${what} exited before it listened on 127.0.0.1:${port}`)
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} to listen on 127.0.0.1:${port}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Whether any process of the group `pgid` is left. */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0)
    return true
  } catch {
    return false
  }
}

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal)
  } catch {
    // Gone already.
  }
}

/**
 * A server process the test owns, in a process group of its own (a start
 * script and the server it runs): stopped with SIGTERM to the whole group
 * (SIGKILL past 15 s), waiting until no process of it is left; killed with
 * the test process too, should that exit or be killed before the test's own
 * cleanup ran (a watchdog then also removes `dir`).
 * `launch` must spawn it `detached`.
 */
function ownProcess(what: string, dir: string, port: number, startMs: number, launch: () => ChildProcess): Pick<OwnBroker, 'stop' | 'start'> {
  let pgid: number | undefined
  let watchdog: ChildProcess | undefined
  let output = ''
  const onExit = () => {
    if (pgid !== undefined) killGroup(pgid, 'SIGKILL')
  }
  const stop = async (): Promise<void> => {
    const g = pgid
    pgid = undefined
    process.off('exit', onExit)
    watchdog?.kill('SIGKILL')
    watchdog = undefined
    if (g === undefined || !groupAlive(g)) return
    killGroup(g, 'SIGTERM')
    const end = Date.now() + 15_000
    while (groupAlive(g)) {
      if (Date.now() > end) killGroup(g, 'SIGKILL')
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  const start = async (): Promise<void> => {
    output = ''
    const c = launch()
    if (c.pid === undefined) throw new Error(`${what} could not be started`)
    pgid = c.pid
    process.on('exit', onExit)
    // A test process killed outright (a runner's timeout) runs no cleanup: this outlives it, then stops the server.
    watchdog = spawn('/bin/sh', ['-c', `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; kill -s KILL -- -${c.pid} 2>/dev/null; rm -rf '${dir}'`], {
      detached: true,
      stdio: 'ignore',
    })
    watchdog.unref()
    c.stdout?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)))
    c.stderr?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)))
    try {
      await listening(port, startMs, what, () => c.exitCode === null && c.signalCode === null)
    } catch (err) {
      throw new Error(`${(err as Error).message}; its output ends:\n${output}`, { cause: err })
    }
  }
  return { stop, start }
}

/**
 * A new directory of mode 0700 (mkdtemp: no one else could have made it). When
 * the test ends, `stop()` runs first — a server still running would write into
 * it again — then the directory is removed.
 */
async function privateDir(t: TestContext, prefix: string, stop: () => Promise<void>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  t.after(async () => {
    await stop()
    await rm(dir, { recursive: true, force: true })
  })
  return dir
}

/** A redis-server of the test's own: append-only file on, so a restart keeps every list. */
export async function ownRedis(t: TestContext): Promise<OwnBroker> {
  let stop = async (): Promise<void> => {}
  const dir = await privateDir(t, 'ac-redis-', () => stop())
  // Outside the ephemeral range: a client dialling a stopped loopback port there could connect to itself.
  const port = await freePort()
  const password = randomBytes(16).toString('hex')
  const conf = join(dir, 'redis.conf')
  await writeFile(
    conf,
    [`port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, 'appendonly yes', 'appendfsync always', 'save ""', `requirepass ${password}`, 'daemonize no', ''].join(
      '\n',
    ),
    { mode: 0o600, flag: 'wx' },
  )
  const p = ownProcess('redis-server', dir, port, 10_000, () => spawn(REDIS_SERVER, [conf], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir, detached: true }))
  stop = p.stop
  await p.start()
  return { url: `redis://:${password}@127.0.0.1:${port}`, port, ...p }
}

/**
 * A RabbitMQ node of the test's own: its own node name, AMQP and
 * distribution ports (loopback only), data and log directories, Erlang
 * cookie (its HOME is the private directory), no plugins, and a random user.
 */
export async function ownRabbit(t: TestContext): Promise<OwnBroker> {
  let stop = async (): Promise<void> => {}
  const dir = await privateDir(t, 'ac-rabbit-', () => stop())
  const port = await freePort()
  const dist = await freePort()
  const user = `u${randomBytes(4).toString('hex')}`
  const password = randomBytes(16).toString('hex')
  await writeFile(
    join(dir, 'rabbitmq.conf'),
    [`listeners.tcp.local = 127.0.0.1:${port}`, `default_user = ${user}`, `default_pass = ${password}`, ''].join('\n'),
    {
      mode: 0o600,
      flag: 'wx',
    },
  )
  await writeFile(join(dir, 'enabled_plugins'), '[].\n', { mode: 0o600, flag: 'wx' })
  const env = {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: dir,
    LANG: 'C.UTF-8',
    RABBITMQ_NODENAME: `rabbit-test-${randomBytes(4).toString('hex')}@localhost`,
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(dist),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq.conf'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_CONF_ENV_FILE: join(dir, 'rabbitmq-env.conf'),
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    ERL_EPMD_ADDRESS: '127.0.0.1',
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
    // A node that fails to boot writes its crash dump here, not into the working directory.
    ERL_CRASH_DUMP: join(dir, 'erl_crash.dump'),
  }
  const p = ownProcess('rabbitmq-server', dir, port, 60_000, () =>
    spawn(RABBITMQ_SERVER, [], { stdio: ['ignore', 'pipe', 'pipe'], env, cwd: dir, detached: true }),
  )
  stop = p.stop
  await p.start()
  return { url: `amqp://${user}:${password}@127.0.0.1:${port}`, port, ...p }
}

/**
 * A message as a holder of cluster `clusterId`'s secret sends it: the parts packed behind their HMAC (the secret the
 * driver of that cluster made and published for this user's agents), for `to` (an agent's id; '' for the driver or the task queue).
 */
export function sealed(clusterId: string, direction: FrameDirection, parts: readonly Uint8Array[], to = ''): Buffer {
  const key = findBrokerSecret(clusterId)
  if (!key) throw new Error(`no broker secret published for cluster ${clusterId}`)
  return new FrameAuth(key, clusterId, direction).seal(parts, to)
}
