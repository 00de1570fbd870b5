/**
 * The chaos run: N tasks over several agent processes while one agent is
 * SIGKILLed every few seconds and a fresh one started in its place. Reports
 * tasks lost and delivered twice (both must be 0) and, for each kill, the time
 * from the SIGKILL until the first of its requeued tasks started elsewhere.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { Cluster, NodeLostError, type RetryInfo } from '../lib/index.js'
import { BENCH_TASKS } from './seed.js'
import { median } from './stats.js'

export interface ChaosOptions {
  tasks: number
  agents: number
  killEveryMs: number
  taskUs: number
  heartbeatMs: number
  nodeTimeoutMs: number
}

export interface KillRecord {
  pid: number
  killedAt: number
  detectedMs: number | undefined
  requeued: number
  /** SIGKILL → first requeued task started on another agent. */
  recoveryMs: number | undefined
}

export interface ChaosResult extends ChaosOptions {
  seconds: number
  tasksPerSecond: number
  lost: number
  duplicates: number
  kills: KillRecord[]
  medianRecoveryMs: number | undefined
  maxRecoveryMs: number | undefined
  ok: boolean
}

const CLI = new URL('../bin/cluster.js', import.meta.url).pathname

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  await using cluster = await Cluster.start({
    tasks: BENCH_TASKS,
    listen: 'tcp://127.0.0.1:0',
    localAgents: 0,
    heartbeatMs: o.heartbeatMs,
    nodeTimeoutMs: o.nodeTimeoutMs,
    // Every task may meet several kills; the point is to see none lost.
    maxRetries: 1000,
  })
  const children = new Set<ChildProcess>()
  const startAgent = () => {
    const child = spawn(
      process.execPath,
      [
        CLI,
        'agent',
        '--connect',
        cluster.address,
        '--tasks',
        BENCH_TASKS.href,
        '--threads',
        '1',
        '--heartbeat-ms',
        String(o.heartbeatMs),
        '--driver-timeout-ms',
        String(o.nodeTimeoutMs),
      ],
      { stdio: 'ignore' },
    )
    children.add(child)
    child.on('exit', () => children.delete(child))
    return child
  }
  try {
    for (let i = 0; i < o.agents; i++) startAgent()
    const joinBy = Date.now() + 30_000
    while (cluster.nodes().length < o.agents) {
      if (Date.now() > joinBy) throw new Error(`only ${cluster.nodes().length} of ${o.agents} agents joined within 30 s`)
      await new Promise((r) => setTimeout(r, 50))
    }

    const kills: KillRecord[] = []
    // Inputs (the task's first argument) requeued by the next loss.
    const requeuedIds: number[] = []
    const lossGroups: { kill: KillRecord; ids: Set<number> }[] = []
    const onRetry = (info: RetryInfo) => {
      if (info.cause instanceof NodeLostError) requeuedIds.push(info.args[0] as number)
    }
    cluster.on('task:retried', onRetry)
    cluster.on('node:lost', (node) => {
      const kill = kills.find((k) => k.pid === node.pid)
      const ids = new Set(requeuedIds.splice(0))
      if (kill) {
        kill.detectedMs = Date.now() - kill.killedAt
        kill.requeued = ids.size
        lossGroups.push({ kill, ids })
      }
    })

    const delivered = new Uint8Array(o.tasks)
    const startedAt = new Float64Array(o.tasks)
    const ranOn = new Int32Array(o.tasks)
    const t0 = Date.now()
    let finished = false
    const job = Promise.all(
      Array.from({ length: o.tasks }, (_, i) =>
        cluster.call<[number, number, number]>('chaos', i, o.taskUs).then(([k, pid, started]) => {
          delivered[k]!++
          startedAt[k] = started
          ranOn[k] = pid
        }),
      ),
    ).finally(() => (finished = true))
    let victim = 0
    const killer = setInterval(() => {
      if (finished) return
      const alive = [...children].filter((c) => c.exitCode === null && c.pid !== undefined)
      const child = alive[victim++ % alive.length]
      if (!child?.pid) return
      kills.push({ pid: child.pid, killedAt: Date.now(), detectedMs: undefined, requeued: 0, recoveryMs: undefined })
      child.kill('SIGKILL')
      startAgent()
    }, o.killEveryMs)
    await job
    clearInterval(killer)
    cluster.off('task:retried', onRetry)
    const seconds = (Date.now() - t0) / 1000

    for (const { kill, ids } of lossGroups) {
      let first = Infinity
      for (const k of ids) {
        if (ranOn[k] !== kill.pid) first = Math.min(first, startedAt[k]!)
      }
      if (first !== Infinity) kill.recoveryMs = first - kill.killedAt
    }
    let lost = 0
    let duplicates = 0
    for (const d of delivered) {
      if (d === 0) lost++
      else if (d > 1) duplicates++
    }
    const recoveries = kills.map((k) => k.recoveryMs).filter((x): x is number => x !== undefined)
    return {
      ...o,
      seconds,
      tasksPerSecond: Math.round(o.tasks / seconds),
      lost,
      duplicates,
      kills,
      medianRecoveryMs: recoveries.length ? median(recoveries) : undefined,
      maxRecoveryMs: recoveries.length ? Math.max(...recoveries) : undefined,
      ok: lost === 0 && duplicates === 0 && kills.length > 0,
    }
  } finally {
    for (const c of children) c.kill('SIGKILL')
  }
}
