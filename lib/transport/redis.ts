/**
 * Redis for the brokered designs (loaded only when one is chosen).
 *
 * Keys of one cluster share the hash tag `{<clusterId>}`:
 * - `ac:{id}:tasks` — the shared task list. The driver LPUSHes frames; an
 *   agent BLMOVEs one frame at a time from its right end into its own
 *   `ac:{id}:processing:<agent>` list, only while it has room (pop-only-when-
 *   idle is the flow control), and LREMs it from there once its results are
 *   with Redis (the reliable-queue pattern). When an agent is lost, the driver
 *   moves its processing list back; an agent that leaves moves it back itself.
 *   A frame moved back starts with one byte {@link REDELIVERED}, so its next
 *   taker knows it is a redelivery (as RabbitMQ's `redelivered` flag says).
 * - `ac:{id}:driver` — the driver's inbox (results and control, from agents).
 * - `ac:{id}:agent:<agent>` — one agent's inbox (control and actor messages).
 * - `…:taking` beside each inbox — the messages its reader is taking, deleted
 *   once delivered (a reply lost with the connection loses nothing).
 *
 * Every key carries a TTL ({@link QUEUE_TTL_MS}) that its owner refreshes, so
 * what a crashed run leaves behind expires. Each process holds a constant
 * number of connections: one for commands, plus one per blocking loop. A lost
 * connection is dialled again for up to `brokerReconnectMs` (see RedisLink).
 */
import { randomBytes } from 'node:crypto'
import type * as IORedis from 'ioredis'
import { loadOptional } from './optional.js'
// An optional peer dependency: loaded here, with an install hint if it is missing.
const { Redis } = await loadOptional<typeof IORedis>('ioredis')
type Redis = IORedis.Redis
import { TransportError } from '../errors.js'
import {
  lost,
  QUEUE_TTL_MS,
  unreachable,
  type AgentMessagePath,
  type AgentTaskPath,
  type BrokerLink,
  type DriverMessagePath,
  type DriverLease,
  type DriverTaskPath,
  type Namespace,
  LEASE_MS,
} from './paths.js'
import { maskUrl, redisDatabase } from './options.js'
import type { Delivery } from './transport.js'

/** Seconds a blocking pop waits before looking again (bounds how long close() waits for nothing). */
const BLOCK_SECONDS = 1
/** How long a connection attempt may take, handshake included. */
const CONNECT_TIMEOUT_MS = 5000
/** A server that owes a reply and sends nothing for this long is taken for gone. */
const SILENCE_TIMEOUT_MS = 10_000
/** Messages taken from an inbox in one round trip after a blocking pop returned one. */
const DRAIN = 1024

/**
 * The first byte of a frame that goes back to the task list (given back, or
 * moved back from a lost agent): the taker sees a redelivery. A packed
 * message starts with its part count (at most 8), so it cannot be mistaken.
 */
const REDELIVERED = 0xff
const MARK = `local function mark(v) if string.byte(v, 1) == 255 then return v end return '\\255' .. v end`

/** Moves every element of KEYS[1] to the taking end of KEYS[2], marked as redelivered, atomically. */
const MOVE_ALL = `${MARK}
local n = 0
while true do
  local v = redis.call('RPOP', KEYS[1])
  if not v then break end
  redis.call('RPUSH', KEYS[2], mark(v))
  n = n + 1
end
if n > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
return n`

/** Gives one taken frame back, marked as redelivered, unless the driver already moved it (so nothing runs twice for that reason). */
const RELEASE = `${MARK}
if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then
  redis.call('RPUSH', KEYS[2], mark(ARGV[1]))
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0`

/**
 * Moves up to ARGV[1] more messages from an inbox (KEYS[1]) onto the list of
 * messages being taken (KEYS[2]) and returns that whole list. Nothing leaves
 * it until the reader has them (a DEL after delivery): a reply lost with a
 * connection loses no message, the next read returns them again.
 */
const TAKE = `
for i = 1, tonumber(ARGV[1]) do
  if not redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') then break end
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('LRANGE', KEYS[2], 0, -1)`

function keys(ns: Namespace) {
  const p = `ac:{${ns.clusterId}}:`
  return {
    prefix: p,
    tasks: `${p}tasks`,
    driver: `${p}driver`,
    agent: (id: string) => `${p}agent:${id}`,
    processing: (id: string) => `${p}processing:${id}`,
    /** The driver's hold on the cluster id (see RedisDriverLease). */
    lease: `${p}driver-lease`,
    /** Messages of an inbox being taken by its reader (see TAKE). */
    taking: (inbox: string) => `${inbox}:taking`,
  }
}

/** Counts the times a connection came back after a loss (its first 'ready' is not one). */
function comebacks(conn: Redis): { readonly count: number } {
  const c = { count: 0 }
  let ready = false
  conn.on('ready', () => {
    if (ready) c.count++
    ready = true
  })
  if (conn.status === 'ready') ready = true
  return c
}

/** Backoff between attempts to dial a lost connection again: 50 ms, doubling, at most 1 s. */
function backoff(attempt: number): number {
  return Math.min(1000, 50 * 2 ** Math.min(attempt - 1, 5))
}

/**
 * The Redis connections of one process. A lost connection is dialled again
 * (ioredis, with backoff); commands issued meanwhile wait in ioredis' offline
 * queue and those the old connection left unanswered are sent again. A broker
 * gone longer than `reconnectMs` is a failure, reported once, naming the URL.
 */
export class RedisLink implements BrokerLink {
  readonly cmd: Redis
  private readonly blocking: Redis[] = []
  private readonly pending = new Set<Promise<unknown>>()
  /** Connections we ended on purpose: their 'end' is no failure. */
  private readonly ended = new WeakSet<Redis>()
  /** Connections that were ready once: only their loss is an outage (a failed first dial is an error at start). */
  private readonly opened = new WeakSet<Redis>()
  /** Connections lost and not yet back. */
  private readonly down = new Set<Redis>()
  private outage: NodeJS.Timeout | undefined
  private closing = false
  private gaveUp = false
  private lastError: Error | undefined
  /**
   * Rejects when the link gives up or closes. ioredis never settles a command
   * that was in flight when its connection dropped if that connection then
   * ends without coming back: every wait on a command races this.
   */
  private readonly abandoned: Promise<never>
  private abandon!: (err: Error) => void

  private constructor(
    readonly url: string,
    private readonly role: string,
    private readonly reconnectMs: number,
    private readonly onFailure: (err: Error) => void,
  ) {
    this.abandoned = new Promise<never>((_, reject) => (this.abandon = reject))
    this.abandoned.catch(() => {})
    this.cmd = this.make('cmd')
  }

  /** `p`, or the link's end if that comes first. */
  guard<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.abandoned])
  }

  private make(name: string): Redis {
    const r: Redis = new Redis(this.url, {
      lazyConnect: true,
      // Dialled again until the broker is back or `reconnectMs` has passed (then giveUp() ends it).
      retryStrategy: (attempt: number) => (this.closing || this.gaveUp || this.ended.has(r) ? null : backoff(attempt)),
      // Commands wait for the connection to come back, however long: giving up is the outage timer's decision.
      enableOfflineQueue: true,
      maxRetriesPerRequest: null,
      connectTimeout: CONNECT_TIMEOUT_MS,
      // A server that stops answering is a lost connection, dialled again, not a command that waits forever.
      // Blocking pops answer at least every BLOCK_SECONDS, so they never trip it.
      socketTimeout: SILENCE_TIMEOUT_MS,
      connectionName: `actor-cluster:${this.role.replace(/[^A-Za-z0-9_.:-]/g, '_')}:${name}`,
    })
    r.on('error', (err: Error) => (this.lastError = err))
    r.on('ready', () => this.connectionUp(r))
    // A new attempt of a connection no longer wanted (its link gave up or closed while it waited to dial):
    // end it now, even if the server accepts and never answers, so its commands fail instead of waiting.
    r.on('connect', () => {
      if (this.closing || this.gaveUp || this.ended.has(r)) r.disconnect()
    })
    r.on('close', () => this.connectionDown(r))
    r.on('end', () => {
      if (!this.closing && !this.ended.has(r)) this.giveUp()
    })
    return r
  }

  private connectionUp(r: Redis): void {
    // Back after the link gave up or closed: not wanted any more.
    if (this.closing || this.gaveUp || this.ended.has(r)) {
      r.disconnect()
      return
    }
    this.opened.add(r)
    this.down.delete(r)
    if (this.down.size === 0) {
      clearTimeout(this.outage)
      this.outage = undefined
    }
  }

  private connectionDown(r: Redis): void {
    if (this.closing || this.gaveUp || this.ended.has(r) || !this.opened.has(r)) return
    this.down.add(r)
    if (this.outage !== undefined) return
    if (this.reconnectMs === 0) this.giveUp()
    else this.outage = setTimeout(() => this.giveUp(), this.reconnectMs)
  }

  /** The broker stayed away past the limit (or reconnecting is off): the link fails, every command waiting fails with it. */
  private giveUp(): void {
    if (this.closing || this.gaveUp) return
    this.gaveUp = true
    clearTimeout(this.outage)
    const why =
      this.reconnectMs === 0
        ? this.lastError
        : new Error(`gone for more than ${this.reconnectMs} ms (brokerReconnectMs)${this.lastError ? `; last error: ${this.lastError.message}` : ''}`)
    const err = lost('Redis', this.url, this.role, why)
    this.onFailure(err)
    this.abandon(err)
    for (const r of [this.cmd, ...this.blocking]) this.end(r)
  }

  /** True while a connection is lost and being dialled again. */
  get reconnecting(): boolean {
    return this.down.size > 0 && !this.gaveUp && !this.closing
  }

  /** Connects the command connection; an unreachable or refusing server is a TransportError naming the masked URL. */
  static async connect(url: string, role: string, reconnectMs: number, onFailure: (err: Error) => void): Promise<RedisLink> {
    const link = new RedisLink(url, role, reconnectMs, onFailure)
    await link.open(link.cmd)
    // ioredis reports a failed SELECT only as an 'error' event, and goes on in database 0.
    const db = redisDatabase(url)
    if (db > 0) {
      try {
        await link.guard(link.cmd.select(db))
      } catch (err) {
        link.destroy()
        const why = err instanceof Error ? err.message : String(err)
        throw unreachable('Redis', url, role, new Error(`database ${db}: ${why}`, { cause: err }))
      }
    }
    return link
  }

  private async open(r: Redis): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        r.connect(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS)
        }),
      ]).finally(() => clearTimeout(timer))
    } catch (err) {
      this.end(r)
      throw unreachable('Redis', this.url, this.role, err instanceof Error && /no answer/.test(err.message) ? err : (this.lastError ?? err))
    }
  }

  /** Another connection, for one blocking loop. */
  async blockingConnection(name: string): Promise<Redis> {
    const r = this.make(name)
    this.blocking.push(r)
    await this.open(r)
    return r
  }

  /** Closes one connection on purpose (a blocking loop that stops). */
  end(r: Redis | undefined): void {
    if (!r) return
    this.ended.add(r)
    this.down.delete(r)
    // Waiting to dial again: disconnect() would only cancel the wait and leave its commands queued for good.
    // Its next attempt asks retryStrategy, which now says no: the connection ends and its commands fail.
    if (r.status !== 'reconnecting') r.disconnect()
  }

  /** Keeps a command until it settles; a failure is reported as the link's. */
  track<T>(p: Promise<T>, what: string): Promise<T | undefined> {
    const t = this.guard(p).catch((err: unknown) => {
      if (!this.closing) this.fail(what, err)
      return undefined
    })
    this.pending.add(t)
    void t.finally(() => this.pending.delete(t))
    return t
  }

  /** Runs a pipeline; any failed command fails the whole (a refusal by Redis is not silently dropped). */
  async exec(p: ReturnType<Redis['pipeline']>): Promise<void> {
    const res = await this.guard(p.exec())
    for (const [err] of res ?? []) if (err) throw err
  }

  fail(what: string, err: unknown): void {
    const why = err instanceof Error ? err.message : String(err)
    this.onFailure(new TransportError(`${this.role}: Redis at ${maskUrl(this.url)} failed ${what}: ${why}`, { cause: err, code: 'ERR_BROKER_LOST' }))
  }

  /** True once close() began; loops end quietly then. */
  get closed(): boolean {
    return this.closing
  }

  /** Lets pending commands finish, then closes every connection. Idempotent. */
  async close(): Promise<void> {
    for (const r of this.blocking) this.end(r)
    // A broker that is away now would hold the commands until it is back: they are not waited for then.
    if (this.down.size === 0) while (this.pending.size > 0) await Promise.allSettled([...this.pending])
    if (this.closing) return
    this.closing = true
    clearTimeout(this.outage)
    this.abandon(new TransportError(`${this.role}: the Redis link is closed`))
    if (this.cmd.status === 'ready') await this.cmd.quit().catch(() => this.cmd.disconnect())
    else this.end(this.cmd)
  }

  destroy(): void {
    this.closing = true
    clearTimeout(this.outage)
    this.abandon(new TransportError(`${this.role}: the Redis link is closed`))
    for (const r of this.blocking) this.end(r)
    this.end(this.cmd)
  }
}

async function deleteMatching(r: Redis, pattern: string): Promise<void> {
  let cursor = '0'
  do {
    const [next, found] = await r.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next
    if (found.length > 0) await r.del(...found)
  } while (cursor !== '0')
}

/**
 * Runs `step` until `stop()`; a connection error ends the loop and is reported
 * unless the link is closing.
 */
function loop(link: RedisLink, what: string, isStopped: () => boolean, step: () => Promise<void>): void {
  void (async () => {
    while (!isStopped()) {
      try {
        await link.guard(step())
      } catch (err) {
        if (!isStopped() && !link.closed) link.fail(what, err)
        return
      }
    }
  })()
}

/** Keeps the lease (ARGV[1]) for ARGV[2] ms more if it is ours, or takes it again if it lapsed (a stall); 0 if another driver has it. */
const RENEW = `
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`

/** Deletes the lease if it is ours. */
const DROP = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`

/**
 * The driver's hold on its cluster id: a key with a random token and a TTL of
 * LEASE_MS, renewed five times per TTL. A driver that dies frees it when the
 * key expires; one whose lease lapsed during a stall takes it again, unless
 * another driver took it meanwhile (a failure of the link).
 */
export class RedisDriverLease implements DriverLease {
  private readonly key: string
  private readonly token = randomBytes(16).toString('hex')
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly link: RedisLink,
    private readonly ns: Namespace,
  ) {
    this.key = keys(ns).lease
  }

  async take(): Promise<boolean> {
    if ((await this.link.guard(this.link.cmd.eval(RENEW, 1, this.key, this.token, LEASE_MS))) !== 1) return false
    this.timer ??= setInterval(() => {
      if (this.link.reconnecting) return
      void this.link.track(
        this.link.guard(this.link.cmd.eval(RENEW, 1, this.key, this.token, LEASE_MS)).then((held) => {
          if (held !== 1) throw new Error(`another driver took cluster id ${this.ns.clusterId}`)
        }),
        'holding the cluster id',
      )
    }, LEASE_MS / 5)
    this.timer.unref()
    return true
  }

  async release(): Promise<void> {
    clearInterval(this.timer)
    await this.link.track(this.link.cmd.eval(DROP, 1, this.key, this.token), 'DEL of the lease')
  }
}

/** The driver's end of the Redis task list. */
export class RedisDriverTasks implements DriverTaskPath {
  private readonly k: ReturnType<typeof keys>
  private timer: NodeJS.Timeout | undefined
  private readonly sweeps = new Set<NodeJS.Timeout>()

  constructor(
    private readonly link: RedisLink,
    ns: Namespace,
  ) {
    this.k = keys(ns)
  }

  async open(): Promise<void> {
    // Frames of a crashed run under the same id must not run in this one.
    await this.link.cmd.del(this.k.tasks)
    await deleteMatching(this.link.cmd, `${this.k.prefix}processing:*`)
    this.timer = setInterval(() => void this.link.track(this.link.cmd.pexpire(this.k.tasks, QUEUE_TTL_MS), 'PEXPIRE'), QUEUE_TTL_MS / 4)
    this.timer.unref()
  }

  publish(frame: Buffer): void {
    const p = this.link.cmd.pipeline().lpush(this.k.tasks, frame).pexpire(this.k.tasks, QUEUE_TTL_MS)
    void this.link.track(this.link.exec(p), 'LPUSH of a task frame')
  }

  reclaim(agentId: string): void {
    const sweep = () =>
      void this.link.track(this.link.cmd.eval(MOVE_ALL, 2, this.k.processing(agentId), this.k.tasks, QUEUE_TTL_MS), "moving a lost agent's tasks back")
    sweep()
    // A BLMOVE the agent sent before it froze may still take a frame into its list (Redis serves it, however frozen
    // its client), up to BLOCK_SECONDS later: look once more after that. A redelivery is never run twice (its taker
    // drops it), so a frame moved back needlessly costs one message.
    const t = setTimeout(
      () => {
        this.sweeps.delete(t)
        sweep()
      },
      2 * BLOCK_SECONDS * 1000,
    )
    t.unref()
    this.sweeps.add(t)
  }

  async close(): Promise<void> {
    clearInterval(this.timer)
    for (const t of this.sweeps) clearTimeout(t)
    this.sweeps.clear()
    await this.link.track(this.link.cmd.del(this.k.tasks), 'DEL')
    await this.link.track(deleteMatching(this.link.cmd, `${this.k.prefix}processing:*`), 'DEL')
  }
}

/**
 * An agent's end of the Redis task list: BLMOVE into its processing list
 * while it has room, LREM on ack. After its connection came back, frames in
 * the processing list that the agent does not hold (a BLMOVE whose reply was
 * lost with the connection) go back to the task list.
 */
export class RedisAgentTasks implements AgentTaskPath {
  private readonly k: ReturnType<typeof keys>
  private readonly processing: string
  private conn: Redis | undefined
  private prefetch = 0
  private held = 0
  /** Frames taken whose LREM (or release) has not been answered yet: they are in the processing list, and ours. */
  private readonly mine = new Set<Buffer>()
  private closed = false
  private wake: (() => void) | undefined
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly link: RedisLink,
    ns: Namespace,
    agentId: string,
  ) {
    this.k = keys(ns)
    this.processing = this.k.processing(agentId)
  }

  async open(onTask: (frame: Buffer, delivery: Delivery, redelivered: boolean) => void): Promise<void> {
    const conn = (this.conn = await this.link.blockingConnection('tasks'))
    const back = comebacks(conn)
    // An earlier agent of the same id that crashed: its frames go back first.
    await this.link.cmd.eval(MOVE_ALL, 2, this.processing, this.k.tasks, QUEUE_TTL_MS)
    this.timer = setInterval(() => void this.link.track(this.link.cmd.pexpire(this.processing, QUEUE_TTL_MS), 'PEXPIRE'), QUEUE_TTL_MS / 4)
    this.timer.unref()
    loop(
      this.link,
      'BLMOVE from the task list',
      () => this.closed,
      async () => {
        if (this.held >= this.prefetch) {
          await new Promise<void>((resolve) => (this.wake = resolve))
          return
        }
        const before = back.count
        const frame = await conn.blmoveBuffer(this.k.tasks, this.processing, 'RIGHT', 'LEFT', BLOCK_SECONDS)
        // Taken after close began: it sits in the processing list, which close() moves back.
        if (frame) {
          // BLMOVE made the key without a TTL: give it one now, so it cannot outlive a crash of both ends.
          void this.link.track(this.link.cmd.pexpire(this.processing, QUEUE_TTL_MS), 'PEXPIRE')
        }
        if (frame && !this.closed) {
          this.held++
          this.mine.add(frame)
          // The delivery is the bytes as stored (LREM finds them by value); the frame is what follows the mark.
          const redelivered = frame[0] === REDELIVERED
          onTask(redelivered ? frame.subarray(1) : frame, frame, redelivered)
        }
        // The connection was lost while this BLMOVE waited: an earlier one may have moved a frame whose reply never came.
        if (back.count !== before && !this.closed) await this.returnStrays(conn)
      },
    )
  }

  /** Frames in the processing list that this agent does not hold go back to the task list. */
  private async returnStrays(conn: Redis): Promise<void> {
    const listed = await conn.lrangeBuffer(this.processing, 0, -1)
    const mine = [...this.mine]
    for (const frame of listed) {
      if (mine.some((m) => m.equals(frame))) continue
      await this.link.cmd.eval(RELEASE, 2, this.processing, this.k.tasks, frame, QUEUE_TTL_MS)
    }
  }

  private wakeUp(): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }

  async setPrefetch(frames: number): Promise<void> {
    this.prefetch = frames
    this.wakeUp()
  }

  async ack(deliveries: Delivery[]): Promise<void> {
    this.held -= deliveries.length
    this.wakeUp()
    const p = this.link.cmd.pipeline()
    for (const d of deliveries) p.lrem(this.processing, 1, d as Buffer)
    p.pexpire(this.processing, QUEUE_TTL_MS)
    try {
      await this.link.exec(p)
    } finally {
      for (const d of deliveries) this.mine.delete(d as Buffer)
    }
  }

  async release(deliveries: Delivery[]): Promise<void> {
    this.held -= deliveries.length
    this.wakeUp()
    try {
      await this.link.guard(Promise.all(deliveries.map((d) => this.link.cmd.eval(RELEASE, 2, this.processing, this.k.tasks, d as Buffer, QUEUE_TTL_MS))))
    } finally {
      for (const d of deliveries) this.mine.delete(d as Buffer)
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.timer)
    this.wakeUp()
    this.link.end(this.conn)
    // Whatever is still taken and unacknowledged goes back for another agent.
    await this.link.track(this.link.cmd.eval(MOVE_ALL, 2, this.processing, this.k.tasks, QUEUE_TTL_MS), 'giving tasks back')
  }
}

/**
 * Reads an inbox: waits up to BLOCK_SECONDS for one message, then takes what
 * else is there in one round trip. Messages are moved onto a list of their
 * own and deleted from there only once delivered, so a reply lost with the
 * connection loses nothing: after a comeback that list is read again.
 */
class InboxReader {
  private readonly taking: string
  private readonly back: { readonly count: number }
  private seen = 0

  constructor(
    private readonly conn: Redis,
    private readonly inbox: string,
    taking: string,
  ) {
    this.taking = taking
    this.back = comebacks(conn)
  }

  async step(onMessage: (frame: Buffer) => void, stopped: () => boolean): Promise<void> {
    const first = await this.conn.blmoveBuffer(this.inbox, this.taking, 'LEFT', 'RIGHT', BLOCK_SECONDS)
    const recovering = this.back.count !== this.seen
    if ((!first && !recovering) || stopped()) return
    const all = (await this.conn.callBuffer('EVAL', [TAKE, 2, this.inbox, this.taking, DRAIN, QUEUE_TTL_MS])) as Buffer[]
    this.seen = this.back.count
    for (const m of all) {
      if (stopped()) return
      onMessage(m)
    }
    await this.conn.del(this.taking)
  }
}

/** The driver's inbox and the agents' inboxes, as Redis lists. */
export class RedisDriverMessages implements DriverMessagePath {
  private readonly k: ReturnType<typeof keys>
  private conn: Redis | undefined
  private closed = false

  constructor(
    private readonly link: RedisLink,
    ns: Namespace,
  ) {
    this.k = keys(ns)
  }

  async open(): Promise<void> {
    await this.link.cmd.del(this.k.driver, this.k.taking(this.k.driver))
    this.conn = await this.link.blockingConnection('inbox')
  }

  start(onMessage: (frame: Buffer) => void): void {
    const reader = new InboxReader(this.conn!, this.k.driver, this.k.taking(this.k.driver))
    loop(
      this.link,
      'reading the driver inbox',
      () => this.closed,
      () => reader.step(onMessage, () => this.closed),
    )
  }

  send(agentId: string, frame: Buffer): void {
    const key = this.k.agent(agentId)
    void this.link.track(this.link.exec(this.link.cmd.pipeline().rpush(key, frame).pexpire(key, QUEUE_TTL_MS)), 'RPUSH to an agent inbox')
  }

  forget(agentId: string): void {
    void this.link.track(this.link.cmd.del(this.k.agent(agentId), this.k.taking(this.k.agent(agentId))), 'DEL')
  }

  async close(): Promise<void> {
    this.closed = true
    this.link.end(this.conn)
    await this.link.track(this.link.cmd.del(this.k.driver, this.k.taking(this.k.driver)), 'DEL')
  }
}

/** An agent's inbox, and its sends to the driver's. */
export class RedisAgentMessages implements AgentMessagePath {
  private readonly k: ReturnType<typeof keys>
  private readonly inbox: string
  private conn: Redis | undefined
  private closed = false

  constructor(
    private readonly link: RedisLink,
    ns: Namespace,
    agentId: string,
  ) {
    this.k = keys(ns)
    this.inbox = this.k.agent(agentId)
  }

  async open(): Promise<void> {
    await this.link.cmd.del(this.inbox, this.k.taking(this.inbox))
    this.conn = await this.link.blockingConnection('inbox')
  }

  start(onMessage: (frame: Buffer) => void): void {
    const reader = new InboxReader(this.conn!, this.inbox, this.k.taking(this.inbox))
    loop(
      this.link,
      'reading the agent inbox',
      () => this.closed,
      () => reader.step(onMessage, () => this.closed),
    )
  }

  async send(frame: Buffer): Promise<void> {
    await this.link.exec(this.link.cmd.pipeline().rpush(this.k.driver, frame).pexpire(this.k.driver, QUEUE_TTL_MS))
  }

  async close(): Promise<void> {
    this.closed = true
    this.link.end(this.conn)
    await this.link.track(this.link.cmd.del(this.inbox, this.k.taking(this.inbox)), 'DEL')
  }
}
