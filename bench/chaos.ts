/**
 * The chaos run: N tasks over several agent processes while one agent is
 * SIGKILLed every few seconds and a fresh one started in its place. Reports
 * tasks lost and delivered twice (both must be 0; counted by the id each result
 * carries, over one unordered map) and, for each kill, the time
 * from the SIGKILL until the first of its requeued tasks started elsewhere.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { Cluster, NodeLostError, type RetryInfo } from '../lib/index.js'
import type { TransportKind } from '../lib/transport/options.js'
import { BENCH_TASKS } from './seed.js'
import { median } from './stats.js'

export interface ChaosOptions {
  tasks: number
  agents: number
  killEveryMs: number
  taskUs: number
  heartbeatMs: number
  nodeTimeoutMs: number
  /** The design (default zmq); brokered agents join through the brokers at these URLs. */
  transport?: TransportKind
  redisUrl?: string
  amqpUrl?: string
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
  design: TransportKind
  seconds: number
  tasksPerSecond: number
  lost: number
  /** Task ids whose result arrived more than once. */
  duplicates: number
  /** Results carrying an id no task had. */
  unexpected: number
  kills: KillRecord[]
  medianRecoveryMs: number | undefined
  maxRecoveryMs: number | undefined
  ok: boolean
}

/** What the results of a chaos job say, counted by the task id each result carries. */
export interface Tally {
  /** Results seen for each id. */
  seen: Uint32Array
  /** When each id's (last) result started, and on which process. */
  startedAt: Float64Array
  ranOn: Int32Array
  /** Ids with no result. */
  lost: number
  /** Ids with more than one result. */
  duplicated: number
  /** Results whose id is not one of 0..tasks-1. */
  unexpected: number
}

/** Records every result of `results` under the id it carries (`[id, pid, started]`), then counts ids lost and seen twice. */
export async function tallyResults(results: AsyncIterable<readonly [number, number, number]>, tasks: number): Promise<Tally> {
  const seen = new Uint32Array(tasks)
  const startedAt = new Float64Array(tasks)
  const ranOn = new Int32Array(tasks)
  let unexpected = 0
  for await (const [id, pid, started] of results) {
    if (!Number.isInteger(id) || id < 0 || id >= tasks) {
      unexpected++
      continue
    }
    seen[id]!++
    startedAt[id] = started
    ranOn[id] = pid
  }
  let lost = 0
  let duplicated = 0
  for (const n of seen) {
    if (n === 0) lost++
    else if (n > 1) duplicated++
  }
  return { seen, startedAt, ranOn, lost, duplicated, unexpected }
}

const CLI = new URL('../bin/cluster.js', import.meta.url).pathname

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const design = o.transport ?? 'zmq'
  await using cluster = await Cluster.start({
    tasks: BENCH_TASKS,
    transport: design,
    redisUrl: o.redisUrl,
    amqpUrl: o.amqpUrl,
    ...(design === 'zmq' ? { listen: 'tcp://127.0.0.1:0' } : {}),
    localAgents: 0,
    heartbeatMs: o.heartbeatMs,
    nodeTimeoutMs: o.nodeTimeoutMs,
    // Every task may meet several kills; the point is to see none lost.
    maxRetries: 1000,
  })
  const children = new Set<ChildProcess>()
  // Brokered agents find the cluster by its id on the brokers.
  const where =
    design === 'zmq'
      ? ['--connect', cluster.address]
      : ['--transport', design, '--cluster-id', cluster.id, ...(o.redisUrl ? ['--redis', o.redisUrl] : []), ...(o.amqpUrl ? ['--amqp', o.amqpUrl] : [])]
  const startAgent = () => {
    const child = spawn(
      process.execPath,
      [
        CLI,
        'agent',
        ...where,
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

    const t0 = Date.now()
    let finished = false
    // One map, unordered: every result it yields is recorded under the id it carries, so a task
    // delivered twice shows as an id seen twice (a promise per task would hide the second one).
    const job = tallyResults(
      cluster.map<[number, number, number]>(
        'chaos',
        (function* () {
          for (let i = 0; i < o.tasks; i++) yield [i, o.taskUs]
        })(),
        { ordered: false },
      ),
      o.tasks,
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
    let tally: Tally
    try {
      tally = await job
    } finally {
      clearInterval(killer)
    }
    const { startedAt, ranOn } = tally
    cluster.off('task:retried', onRetry)
    const seconds = (Date.now() - t0) / 1000

    for (const { kill, ids } of lossGroups) {
      let first = Infinity
      for (const k of ids) {
        if (ranOn[k] !== kill.pid) first = Math.min(first, startedAt[k]!)
      }
      if (first !== Infinity) kill.recoveryMs = first - kill.killedAt
    }
    const recoveries = kills.map((k) => k.recoveryMs).filter((x): x is number => x !== undefined)
    return {
      ...o,
      design,
      seconds,
      tasksPerSecond: Math.round(o.tasks / seconds),
      lost: tally.lost,
      duplicates: tally.duplicated,
      unexpected: tally.unexpected,
      kills,
      medianRecoveryMs: recoveries.length ? median(recoveries) : undefined,
      maxRecoveryMs: recoveries.length ? Math.max(...recoveries) : undefined,
      ok: tally.lost === 0 && tally.duplicated === 0 && tally.unexpected === 0 && kills.length > 0,
    }
  } finally {
    for (const c of children) c.kill('SIGKILL')
  }
}

const DESIGNS: readonly TransportKind[] = ['zmq', 'redis', 'amqp', 'amqp+redis']

/** The chaos run over the four designs, one after another; a design that cannot run is a row saying why. */
export async function runChaosAll(
  o: ChaosOptions,
  progress: (line: string) => void = () => {},
): Promise<(ChaosResult | { design: TransportKind; error: string })[]> {
  const rows: (ChaosResult | { design: TransportKind; error: string })[] = []
  for (const design of DESIGNS) {
    try {
      const r = await runChaos({ ...o, transport: design })
      rows.push(r)
      progress(`  ${design}: lost ${r.lost}, delivered twice ${r.duplicates}, ${r.kills.length} kills, ${r.ok ? 'ok' : 'FAILED'}`)
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err)
      rows.push({ design, error })
      progress(`  ${design}: failed: ${error}`)
    }
  }
  return rows
}

/** The Markdown table of {@link runChaosAll}: lost, delivered twice, recovery per design. */
export function chaosAllMarkdown(rows: (ChaosResult | { design: TransportKind; error: string })[]): string {
  const ms = (x: number | undefined) => (x === undefined ? '—' : String(Math.round(x)))
  const lines = [
    '| design | tasks | kills | lost | delivered twice | recovery median ms | recovery max ms | tasks/s | check |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ]
  for (const r of rows) {
    if ('error' in r) lines.push(`| ${r.design} | — | — | — | — | — | — | — | failed: ${r.error} |`)
    else
      lines.push(
        `| ${r.design} | ${r.tasks.toLocaleString('en-US')} | ${r.kills.length} | ${r.lost} | ${r.duplicates} | ${ms(r.medianRecoveryMs)} | ${ms(r.maxRecoveryMs)} | ${r.tasksPerSecond.toLocaleString('en-US')} | ${r.ok ? 'ok' : 'FAILED'} |`,
      )
  }
  return lines.join('\n')
}
