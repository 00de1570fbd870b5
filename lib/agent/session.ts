import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { ClusterError } from '../errors.js'
import { header } from '../protocol/codec.js'
import { MsgType, type HelloInfo } from '../protocol/messages.js'
import type { AgentTransport } from '../transport/transport.js'

export type AgentState = 'connecting' | 'ready' | 'leaving' | 'closed'

/** What the session asks of the rest of the agent. */
export interface SessionHooks {
  /** The window a Hello announces. */
  window(): number
  /** What a Heartbeat reports. */
  heartbeat(): { busy: number; done: number; queued: number }
  /** A driver welcomed the agent; the state is `ready`. */
  joined(nodeId: string): void
  /**
   * Nothing heard from the driver for `driverTimeoutMs`: the state is
   * `connecting`, Hellos follow under the same registration, and the agent
   * keeps the driver's work and its results until it knows more.
   */
  silent(reason: string): void
  /** The driver that went silent welcomed the agent again: the state is `ready`, held results may go. */
  resumed(nodeId: string): void
  /**
   * The driver is gone for sure (it said goodbye, or another one answered):
   * its work is its own to requeue. `announced`: `silent` already told of it.
   */
  lost(reason: string, announced: boolean): void
}

export interface SessionTiming {
  heartbeatMs: number
  driverTimeoutMs: number
}

/** Unanswered Hellos after which the agent drops its connection and dials again. */
const REDIAL_AFTER = 5

/**
 * The agent's side of its relation with a driver: `connecting` (saying Hello
 * every second, dialling again after five unanswered), `ready` (welcomed,
 * exchanging heartbeats, watching for the driver's silence), `leaving` and
 * `closed`. It knows the driver's session id and the agent's registration id.
 *
 * A driver that falls silent may only be busy (a long synchronous stretch in
 * its program): the agent goes back to saying Hello, under the same
 * registration, and keeps the driver's work and results. It drops them only
 * once it knows the driver changed: a Welcome from another session, or a
 * DriverBye (the driver no longer knows this registration). Then the
 * registration is new.
 */
export class Session {
  private _state: AgentState = 'connecting'
  private _id: string | undefined
  private _registration = newRegistration()
  /** When the driver was last heard, on the monotonic clock (ms): wall-clock jumps must not pass for silence. */
  private lastHeard: number | undefined
  private readonly timers: NodeJS.Timeout[] = []
  private readonly waiters: { resolve(): void; reject(e: Error): void }[] = []

  constructor(
    private readonly transport: AgentTransport,
    private readonly hello: Omit<HelloInfo, 'window' | 'registration'>,
    private readonly timing: SessionTiming,
    private readonly hooks: SessionHooks,
  ) {}

  get state(): AgentState {
    return this._state
  }

  /** The session of the driver whose work the agent holds: the one serving it, or one gone silent. */
  get id(): string | undefined {
    return this._id
  }

  /** The registration the agent's Hellos carry now; results name the one their tasks came under. */
  get registration(): string {
    return this._registration
  }

  /** Whether the driver's work may run: it is serving the agent, or only silent. */
  get ready(): boolean {
    return this._id !== undefined && (this._state === 'ready' || this._state === 'connecting')
  }

  /** The driver has gone silent: results wait until it welcomes the agent again. */
  get silent(): boolean {
    return this._state === 'connecting'
  }

  /** Milliseconds since the driver was last heard; undefined before any driver. */
  get driverAgeMs(): number | undefined {
    return this.lastHeard === undefined ? undefined : performance.now() - this.lastHeard
  }

  /** Says Hello, and keeps saying it until welcomed; starts the heartbeats. */
  start(): void {
    this.sendHello()
    let unanswered = 0
    this.timers.push(
      setInterval(
        () => {
          if (this._state !== 'connecting') {
            unanswered = 0
            return
          }
          // Dial again, in case the connection is stuck (see ZmqAgentTransport.redial).
          if (++unanswered % REDIAL_AFTER === 0 && this.transport.kind === 'routed') this.transport.redial()
          this.sendHello()
        },
        Math.min(1000, this.timing.heartbeatMs),
      ),
      setInterval(() => this.tick(), this.timing.heartbeatMs),
    )
    for (const t of this.timers) t.unref()
  }

  /** A well-formed frame came from the driver. */
  heard(): void {
    this.lastHeard = performance.now()
  }

  /** The driver's Welcome; ignored unless the agent was looking for one. */
  welcome(session: string, nodeId: string): void {
    if (this._state !== 'connecting') return
    const kept = this._id
    if (kept !== undefined && kept !== session) {
      // Another driver: the silent one's work is its own to requeue.
      this._id = undefined
      this.hooks.lost('another driver answered', true)
    }
    this._state = 'ready'
    this._id = session
    if (kept === session) this.hooks.resumed(nodeId)
    else this.hooks.joined(nodeId)
    for (const w of this.waiters.splice(0)) w.resolve()
  }

  /** The driver said goodbye, or that it does not know this registration. */
  bye(): void {
    if (this._state === 'ready') this.forget('the driver closed', false)
    else if (this._state === 'connecting' && this._id !== undefined) this.forget('the driver no longer knows this agent', true)
  }

  /** Resolves once a driver has welcomed the agent; rejects if it was rejected or closed. */
  waitUntilReady(): Promise<void> {
    if (this._state === 'ready') return Promise.resolve()
    if (this._state === 'closed') return Promise.reject(new ClusterError('ERR_CLUSTER_CLOSED', 'agent is closed'))
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }))
  }

  /** Those waiting for a Welcome get `err` instead. */
  fail(err: Error): void {
    for (const w of this.waiters.splice(0)) w.reject(err)
  }

  /** Stops asking for work; returns whether a driver was serving the agent. */
  leave(): boolean {
    const wasReady = this._state === 'ready'
    this._state = 'leaving'
    return wasReady
  }

  /** Closed for good: no more Hellos or heartbeats, no driver; waiters are told. */
  close(): void {
    this._state = 'closed'
    this._id = undefined
    for (const t of this.timers) clearInterval(t)
    this.fail(new ClusterError('ERR_CLUSTER_CLOSED', `agent ${this.hello.agentId} closed before a driver welcomed it`))
  }

  private sendHello(): void {
    const registration = this._registration
    const proof = this.transport.kind === 'routed' ? this.transport.proveKey?.(this.hello.agentId, registration) : undefined
    this.transport.send([header(MsgType.Hello, { ...this.hello, window: this.hooks.window(), registration, ...proof })])
  }

  private tick(): void {
    if (this._state !== 'ready') return
    if (performance.now() - (this.lastHeard ?? 0) > this.timing.driverTimeoutMs) {
      // Silent is not gone: a busy driver answers the next Hello with the same session.
      this._state = 'connecting'
      this.hooks.silent(`no word from the driver for ${this.timing.driverTimeoutMs} ms`)
      this.sendHello()
      return
    }
    this.transport.send([header(MsgType.Heartbeat, this.hooks.heartbeat())])
  }

  /** The driver is gone: its tasks are its own to requeue; wait for the next one, under a new registration. */
  private forget(reason: string, announced: boolean): void {
    this._state = 'connecting'
    this._id = undefined
    this._registration = newRegistration()
    this.hooks.lost(reason, announced)
    this.sendHello()
  }
}

function newRegistration(): string {
  return randomBytes(4).toString('hex')
}
