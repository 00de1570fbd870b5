/**
 * The seed benchmark over the four designs, one after another on this
 * machine, with each transport's naive one-message-per-task baseline
 * (brokerless ZeroMQ, Redis, RabbitMQ) measured in the same run and the
 * seed's 2016 figures as reference rows. Produces a
 * Markdown table, the JSON, and an SVG bar chart (log scale).
 */
import { arch, availableParallelism, cpus, totalmem, platform } from 'node:os'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runSeed } from './seed.js'
import { runNaive, type NaiveBroker } from './naive.js'
import type { TransportKind } from '../lib/transport/options.js'

export interface SeedAllOptions {
  tasks: number
  /** Tasks of the brokered naive baselines (one message each: slow, so fewer by default); naive-zmq runs `tasks`. */
  naiveTasks: number
  runs: number
  redisUrl: string
  amqpUrl: string
}

export type RowKind = 'ours' | 'naive' | 'seed-2016'

export interface SeedAllRow {
  design: string
  kind: RowKind
  tasks: number
  submitSeconds: number | undefined
  roundTripSeconds: number | undefined
  tasksPerSecond: number | undefined
  /** tasks/s over the naive baseline of the same transport (zmq: naive-zmq), same run. */
  timesNaive: number | undefined
  ok: boolean | undefined
  note: string
}

export interface Machine {
  cpu: string
  cores: number
  memoryGiB: number
  os: string
  node: string
  redis: string | undefined
  rabbitmq: string | undefined
}

export interface SeedAllResult {
  date: string
  machine: Machine
  tasks: number
  naiveTasks: number
  runs: number
  rows: SeedAllRow[]
  /** zmq's tasks/s over the best brokered design's, same run. */
  zmqOverBestBrokered: number | undefined
  ok: boolean
}

const DESIGNS: readonly TransportKind[] = ['zmq', 'redis', 'amqp', 'amqp+redis']

/** The seed's own figures (2016: 400 single-core workers, broker on another machine, 100,000 tasks). */
const SEED_2016: readonly SeedAllRow[] = [
  ['Redis, raw (2016)', 19, 73],
  ['RabbitMQ, raw (2016)', 9, 93],
  ['Celery + Redis (2016)', 84, 122],
  ['Celery + RabbitMQ (2016)', 222, 254],
].map(([design, submit, rt]) => ({
  design: design as string,
  kind: 'seed-2016' as const,
  tasks: 100_000,
  submitSeconds: submit as number,
  roundTripSeconds: rt as number,
  tasksPerSecond: Math.round(100_000 / (rt as number)),
  timesNaive: undefined,
  ok: undefined,
  note: '400 cores, 2016',
}))

async function machine(o: SeedAllOptions): Promise<Machine> {
  let redis: string | undefined
  let rabbitmq: string | undefined
  try {
    const { Redis } = await import('ioredis')
    const r = new Redis(o.redisUrl, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    r.on('error', () => {})
    await r.connect()
    redis = /redis_version:(\S+)/.exec(await r.info('server'))?.[1]
    r.disconnect()
  } catch {
    redis = undefined
  }
  try {
    const { connect } = await import('amqplib')
    const c = await connect(o.amqpUrl)
    const v = c.connection.serverProperties.version
    rabbitmq = typeof v === 'string' ? v : undefined
    await c.close()
  } catch {
    rabbitmq = undefined
  }
  return {
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    cores: availableParallelism(),
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    os: `${platform()} ${arch()}`,
    node: process.version,
    redis,
    rabbitmq,
  }
}

function failed(design: string, kind: RowKind, tasks: number, err: unknown): SeedAllRow {
  return {
    design,
    kind,
    tasks,
    submitSeconds: undefined,
    roundTripSeconds: undefined,
    tasksPerSecond: undefined,
    timesNaive: undefined,
    ok: false,
    note: `failed: ${err instanceof Error ? err.message : String(err)}`,
  }
}

/** Runs everything; `progress` hears one line per finished row. */
export async function runSeedAll(o: SeedAllOptions, progress: (line: string) => void = () => {}): Promise<SeedAllResult> {
  const rows: SeedAllRow[] = []
  for (const design of DESIGNS) {
    try {
      const r = await runSeed({
        tasks: o.tasks,
        agents: 1,
        batch: 'auto',
        runs: o.runs,
        warmup: true,
        via: 'call',
        transport: design,
        redisUrl: o.redisUrl,
        amqpUrl: o.amqpUrl,
      })
      rows.push({
        design,
        kind: 'ours',
        tasks: r.tasks,
        submitSeconds: r.submitSeconds,
        roundTripSeconds: r.roundTripSeconds,
        tasksPerSecond: r.tasksPerSecond,
        timesNaive: undefined,
        ok: r.ok,
        note: `1 agent × ${r.threads} threads, batched`,
      })
    } catch (err) {
      rows.push(failed(design, 'ours', o.tasks, err))
    }
    progress(`  ${design}: ${describeRow(rows.at(-1)!)}`)
  }
  for (const broker of ['zmq', 'redis', 'amqp'] as NaiveBroker[]) {
    const design = `naive-${broker}`
    const tasks = broker === 'zmq' ? o.tasks : o.naiveTasks
    try {
      const r = await runNaive({ broker, tasks, workers: availableParallelism(), runs: o.runs, redisUrl: o.redisUrl, amqpUrl: o.amqpUrl })
      rows.push({
        design,
        kind: 'naive',
        tasks: r.tasks,
        submitSeconds: r.submitSeconds,
        roundTripSeconds: r.roundTripSeconds,
        tasksPerSecond: r.tasksPerSecond,
        timesNaive: 1,
        ok: r.ok,
        note: `${r.workers} worker threads, one message per task (the 2016 design${broker === 'zmq' ? ', PUSH/PULL' : ''})`,
      })
    } catch (err) {
      rows.push(failed(design, 'naive', tasks, err))
    }
    progress(`  ${design}: ${describeRow(rows.at(-1)!)}`)
  }
  const tps = (d: string) => rows.find((r) => r.design === d)?.tasksPerSecond
  const naiveAmqp = tps('naive-amqp')
  const baseline: Record<string, number | undefined> = { zmq: tps('naive-zmq'), redis: tps('naive-redis'), amqp: naiveAmqp, 'amqp+redis': naiveAmqp }
  for (const r of rows) {
    const b = baseline[r.design]
    if (r.kind === 'ours' && r.tasksPerSecond !== undefined && b) r.timesNaive = r.tasksPerSecond / b
  }
  const brokered = rows.filter((r) => r.kind === 'ours' && r.design !== 'zmq' && r.tasksPerSecond !== undefined)
  const best = Math.max(0, ...brokered.map((r) => r.tasksPerSecond!))
  const z = tps('zmq')
  return {
    date: new Date().toISOString(),
    machine: await machine(o),
    tasks: o.tasks,
    naiveTasks: o.naiveTasks,
    runs: o.runs,
    rows: [...rows, ...SEED_2016],
    zmqOverBestBrokered: z && best ? z / best : undefined,
    ok: rows.every((r) => r.ok === true),
  }
}

function describeRow(r: SeedAllRow): string {
  if (r.tasksPerSecond === undefined) return r.note
  return `${r.tasksPerSecond.toLocaleString('en-US')} tasks/s (median of runs), check ${r.ok ? 'ok' : 'FAILED'}`
}

const fmtS = (x: number | undefined) => (x === undefined ? '—' : x.toFixed(x < 1 ? 3 : x < 10 ? 2 : 1))
const fmtN = (x: number | undefined) => (x === undefined ? '—' : x.toLocaleString('en-US'))

/** The Markdown table (design, tasks, submit s, round trip s, tasks/s, ×naive, check) and the figures' context. */
export function seedAllMarkdown(r: SeedAllResult): string {
  const lines = ['| design | tasks | submit s | round trip s | tasks/s | ×naive | check |', '| --- | ---: | ---: | ---: | ---: | ---: | --- |']
  for (const x of r.rows) {
    const design = x.kind === 'ours' ? `**${x.design}**` : x.design
    const check = x.ok === undefined ? '—' : x.ok ? 'ok' : x.tasksPerSecond === undefined ? x.note : 'FAILED'
    const times = x.timesNaive === undefined ? '—' : x.kind === 'naive' ? '1×' : `${x.timesNaive.toFixed(0)}×`
    lines.push(`| ${design} | ${fmtN(x.tasks)} | ${fmtS(x.submitSeconds)} | ${fmtS(x.roundTripSeconds)} | ${fmtN(x.tasksPerSecond)} | ${times} | ${check} |`)
  }
  const m = r.machine
  lines.push(
    '',
    `Medians of ${r.runs} runs after one warm-up, ${r.date.slice(0, 10)}. zmq over the best brokered design: ` +
      `${r.zmqOverBestBrokered === undefined ? '—' : `${r.zmqOverBestBrokered.toFixed(1)}×`}. ` +
      '×naive compares each design with the one-message-per-task baseline of the transport that carries its tasks ' +
      "(zmq: naive-zmq, the seed's PUSH/PULL design), measured in the same run. Check: every result arrived and the sum is right.",
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.os}, Node ${m.node}, ` +
      `Redis ${m.redis ?? 'unreachable'}, RabbitMQ ${m.rabbitmq ?? 'unreachable'}; brokers, driver and agent on this one machine.`,
  )
  return lines.join('\n')
}

const COLORS: Record<RowKind, string> = { ours: '#2b6cb0', naive: '#8a8a8a', 'seed-2016': '#dd8a2b' }

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/** A horizontal bar chart of tasks/s on a log scale. */
function seedAllSvg(r: SeedAllResult): string {
  const rows = r.rows.filter((x) => x.tasksPerSecond !== undefined)
  const left = 190
  const width = 820
  const plot = width - left - 110
  const rowH = 26
  const top = 40
  const height = top + rows.length * rowH + 50
  const max = Math.max(...rows.map((x) => x.tasksPerSecond!))
  const lo = 2
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(max)))
  const x = (v: number) => left + ((Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo)) * plot
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${left}" y="20" font-size="14" font-weight="bold">Seed benchmark: tasks/s (log scale), ${r.machine.cores} cores, ${esc(r.date.slice(0, 10))}</text>`,
  ]
  for (let p = lo; p <= hi; p++) {
    const gx = x(10 ** p)
    out.push(`<line x1="${gx}" y1="${top - 6}" x2="${gx}" y2="${top + rows.length * rowH}" stroke="#ddd"/>`)
    out.push(`<text x="${gx}" y="${top + rows.length * rowH + 16}" text-anchor="middle" fill="#555">${(10 ** p).toLocaleString('en-US')}</text>`)
  }
  rows.forEach((row, i) => {
    const y = top + i * rowH
    const w = Math.max(1, x(row.tasksPerSecond!) - left)
    out.push(`<text x="${left - 8}" y="${y + 16}" text-anchor="end">${esc(row.design)}</text>`)
    out.push(`<rect x="${left}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${COLORS[row.kind]}"/>`)
    out.push(`<text x="${left + w + 6}" y="${y + 16}" fill="#333">${row.tasksPerSecond!.toLocaleString('en-US')}</text>`)
  })
  const ly = top + rows.length * rowH + 36
  const legend: [RowKind, string][] = [
    ['ours', 'this project, batched'],
    ['naive', 'naive baseline, one message per task (same run)'],
    ['seed-2016', 'the seed, 2016, 400 cores'],
  ]
  let lx = 20
  for (const [k, label] of legend) {
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${COLORS[k]}"/>`)
    out.push(`<text x="${lx + 16}" y="${ly}">${esc(label)}</text>`)
    lx += 30 + label.length * 6
  }
  out.push('</svg>')
  return out.join('\n') + '\n'
}

/** Writes seed.json, seed.svg and seed.md into `dir`. */
export async function writeSeedAll(r: SeedAllResult, dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true })
  const files = [join(dir, 'seed.json'), join(dir, 'seed.svg'), join(dir, 'seed.md')]
  await writeFile(files[0]!, `${JSON.stringify(r, null, 2)}\n`)
  await writeFile(files[1]!, seedAllSvg(r))
  await writeFile(files[2]!, `${seedAllMarkdown(r)}\n`)
  return files
}
