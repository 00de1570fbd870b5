/**
 * Micro-benchmarks (tinybench): codec encode/decode of task and result
 * batches, brokered message packing, the ledger's insert/settle pattern, pool
 * dispatch, and one task's round trip over each design.
 *
 *   npm run bench:micro -- [--time 500] [--json out.json] [--compare old.json] [--designs zmq,redis,amqp,amqp+redis]
 *
 * Prints a table; `--json` also writes the results (with the commit) so two
 * commits can be compared with `--compare`.
 */
import { execFileSync } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { Bench } from 'tinybench'
import { Piscina } from 'piscina'
import { Cluster } from '../lib/index.js'
import { createPackr } from '../lib/protocol/codec.js'
import { packParts, unpackParts } from '../lib/transport/frames.js'
import { TRANSPORT_KINDS, type TransportKind } from '../lib/transport/options.js'
import { Deque } from '../lib/util/deque.js'
import type { PoolBatch, PoolResult } from '../lib/agent/worker.js'
import { BENCH_TASKS } from './seed.js'

export interface MicroResult {
  name: string
  opsPerSecond: number
  meanUs: number
  p99Us: number
  samples: number
}

export interface MicroReport {
  commit: string | undefined
  date: string
  node: string
  results: MicroResult[]
}

const BATCH = 1024

function commit(): string | undefined {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return undefined
  }
}

function collect(bench: Bench): MicroResult[] {
  return bench.tasks.map((t) => {
    const r = t.result as { latency?: { mean: number; p99: number; samplesCount?: number }; throughput?: { mean: number } }
    return {
      name: t.name,
      opsPerSecond: Math.round(r.throughput?.mean ?? 0),
      meanUs: (r.latency?.mean ?? 0) * 1000,
      p99Us: (r.latency?.p99 ?? 0) * 1000,
      samples: t.runs,
    }
  })
}

async function codecAndLedger(time: number): Promise<MicroResult[]> {
  const packr = createPackr()
  const tasks: unknown[] = []
  const results: unknown[] = []
  for (let k = 0; k < BATCH; k++) {
    tasks.push(k + 1, 'add', [1, k])
    results.push(k + 1, 0, k + 1)
  }
  const taskBody = packr.pack(tasks)
  const resultBody = packr.pack(results)
  const frame = packParts([Buffer.from('agent-1'), Buffer.from([0x93, 1, 5, 0xcd]), resultBody])
  interface Entry {
    id: number
    resolve: (v: unknown) => void
    settled: boolean
  }
  const bench = new Bench({ time, warmupTime: 100 })
  bench
    .add(`codec: encode a task batch (${BATCH} tasks)`, () => void packr.pack(tasks))
    .add(`codec: decode a task batch (${BATCH} tasks)`, () => void packr.unpack(taskBody))
    .add(`codec: encode a result batch (${BATCH} results)`, () => void packr.pack(results))
    .add(`codec: decode a result batch (${BATCH} results)`, () => void packr.unpack(resultBody))
    .add(`brokered: pack + unpack a result message (${frame.length} bytes)`, () => void unpackParts(packParts([Buffer.from('agent-1'), resultBody])))
    // The driver's ledger pattern: an entry per task in a Map and a queue, settled by id.
    .add(`ledger: insert + settle ${BATCH} entries`, () => {
      const ledger = new Map<number, Entry>()
      const pending = new Deque<Entry>()
      for (let i = 0; i < BATCH; i++) {
        const e: Entry = { id: i, resolve: () => {}, settled: false }
        ledger.set(i, e)
        pending.push(e)
      }
      pending.clear()
      for (let i = 0; i < BATCH; i++) {
        const e = ledger.get(i)!
        ledger.delete(i)
        e.settled = true
        e.resolve(i)
      }
    })
  await bench.run()
  return collect(bench)
}

async function poolDispatch(time: number): Promise<MicroResult[]> {
  const packr = createPackr()
  const one = packr.pack([1, 'add', [1, 2]])
  const flat: unknown[] = []
  for (let k = 0; k < BATCH; k++) flat.push(k + 1, 'add', [1, k])
  const many = packr.pack(flat)
  const pool = new Piscina<PoolBatch, PoolResult>({
    filename: new URL('../lib/agent/worker.js', import.meta.url).href,
    workerData: { tasks: BENCH_TASKS.href },
    minThreads: 1,
    maxThreads: 1,
  })
  try {
    await pool.run({ bodies: [one] })
    const bench = new Bench({ time, warmupTime: 100 })
    bench
      .add('pool: dispatch a batch of 1 task to a worker thread and back', async () => void (await pool.run({ bodies: [one] })))
      .add(`pool: dispatch a batch of ${BATCH} tasks to a worker thread and back`, async () => void (await pool.run({ bodies: [many] })))
    await bench.run()
    return collect(bench)
  } finally {
    await pool.destroy()
  }
}

async function roundTrips(time: number, designs: TransportKind[]): Promise<MicroResult[]> {
  const out: MicroResult[] = []
  for (const transport of designs) {
    let cluster: Cluster
    try {
      cluster = await Cluster.start({ tasks: BENCH_TASKS, transport, threads: 1 })
    } catch (err) {
      process.stderr.write(`skipping ${transport}: ${(err as Error).message}\n`)
      continue
    }
    try {
      for (let k = 0; k < 200; k++) await cluster.call('add', 1, k)
      const bench = new Bench({ time, warmupTime: 100 })
      bench.add(`round trip of one call over ${transport}`, async () => void (await cluster.call('add', 1, 2)))
      await bench.run()
      out.push(...collect(bench))
    } finally {
      await cluster.close()
    }
  }
  return out
}

function table(results: MicroResult[], old: MicroReport | undefined): string {
  const before = new Map(old?.results.map((r) => [r.name, r]))
  const rows = results.map((r) => {
    const o = before.get(r.name)
    const cells = [r.name, r.opsPerSecond.toLocaleString('en-US'), r.meanUs.toFixed(1), r.p99Us.toFixed(1), String(r.samples)]
    if (old) cells.push(o && o.opsPerSecond > 0 ? `${(r.opsPerSecond / o.opsPerSecond).toFixed(2)}×` : '—')
    return cells
  })
  const head = ['benchmark', 'ops/s', 'mean µs', 'p99 µs', 'samples', ...(old ? [`vs ${old.commit ?? 'old'}`] : [])]
  return [
    `| ${head.join(' | ')} |`,
    `| --- | ${head
      .slice(1)
      .map(() => '---:')
      .join(' | ')} |`,
    ...rows.map((c) => `| ${c.join(' | ')} |`),
  ].join('\n')
}

export async function runMicro(o: { time: number; designs: TransportKind[] }): Promise<MicroReport> {
  return {
    commit: commit(),
    date: new Date().toISOString(),
    node: process.version,
    results: [...(await codecAndLedger(o.time)), ...(await poolDispatch(o.time)), ...(await roundTrips(o.time, o.designs))],
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      time: { type: 'string', default: '500' },
      json: { type: 'string' },
      compare: { type: 'string' },
      designs: { type: 'string', default: TRANSPORT_KINDS.join(',') },
    },
  })
  const time = Number(values.time)
  if (!Number.isFinite(time) || time <= 0) throw new Error(`--time must be a positive number of ms, got ${values.time}`)
  const designs = values.designs.split(',').filter(Boolean) as TransportKind[]
  for (const d of designs) if (!TRANSPORT_KINDS.includes(d)) throw new Error(`--designs: unknown design ${JSON.stringify(d)}`)
  const old = values.compare ? (JSON.parse(await readFile(values.compare, 'utf8')) as MicroReport) : undefined
  const report = await runMicro({ time, designs })
  process.stdout.write(`micro-benchmarks — commit ${report.commit ?? '?'}, Node ${report.node}\n\n${table(report.results, old)}\n`)
  if (values.json) {
    await writeFile(values.json, `${JSON.stringify(report, null, 2)}\n`)
    process.stdout.write(`\nwrote ${values.json}\n`)
  }
}

if (process.argv[1] && import.meta.url === new URL(process.argv[1], 'file://').href) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench:micro: ${(err as Error).message}\n`)
    process.exit(1)
  })
}
