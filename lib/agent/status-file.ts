import { hostname } from 'node:os'
import { rename, writeFile } from 'node:fs/promises'
import type { Agent, AgentState } from './agent.js'
import { VERSION } from '../version.js'

/** What `cluster agent --status-file` writes, about once per heartbeat. */
export interface AgentStatus {
  id: string
  pid: number
  host: string
  threads: number
  version: string
  /** `ready` once a driver welcomed it; `connecting` while it waits for one. */
  state: AgentState
  connect: string
  tasksDone: number
  busy: number
  queued: number
  /** Milliseconds since the driver was last heard; null before any driver. */
  driverAgeMs: number | null
  startedAt: number
  /** When this was written (ms since the epoch, the host's clock). */
  updatedAt: number
}

/**
 * Keeps a JSON status file up to date for an agent: rewritten (atomically,
 * by rename) every heartbeat and on every change of driver. `cluster up`
 * waits on it for registration; `cluster status` reads it.
 */
export class StatusFile {
  private readonly timer: NodeJS.Timeout
  private writing: Promise<void> = Promise.resolve()
  private readonly startedAt = Date.now()

  constructor(
    private readonly agent: Agent,
    private readonly path: string,
  ) {
    // update() never rejects: a write that fails is reported on stderr.
    this.timer = setInterval(() => void this.update(), agent.options.heartbeatMs)
    this.timer.unref()
    agent.on('driver:joined', () => void this.update())
    agent.on('driver:lost', () => void this.update())
    void this.update()
  }

  snapshot(): AgentStatus {
    const a = this.agent.activity()
    return {
      id: this.agent.id,
      pid: process.pid,
      host: hostname(),
      threads: this.agent.options.threads,
      version: VERSION,
      state: a.state,
      connect: this.agent.options.connect,
      tasksDone: this.agent.stats.tasksDone,
      busy: a.busy,
      queued: a.queued,
      driverAgeMs: a.driverAgeMs ?? null,
      startedAt: this.startedAt,
      updatedAt: Date.now(),
    }
  }

  /** Writes the file now (after any write in progress). */
  update(): Promise<void> {
    const tmp = `${this.path}.tmp`
    this.writing = this.writing
      .then(() => writeFile(tmp, `${JSON.stringify(this.snapshot())}\n`))
      .then(() => rename(tmp, this.path))
      .catch((err: Error) => {
        process.stderr.write(`[agent] cannot write status file ${this.path}: ${err.message}\n`)
      })
    return this.writing
  }

  /** Stops updating; writes a last snapshot. */
  async close(): Promise<void> {
    clearInterval(this.timer)
    await this.update()
  }
}
