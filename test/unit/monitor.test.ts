import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { LATENCY_BOUNDS, PROMETHEUS_BOUNDS, LatencyHistogram, quantile } from '../../lib/monitor/histogram.js'
import { TaskStats } from '../../lib/monitor/task-stats.js'
import { UpdateChannel } from '../../lib/monitor/dashboard.js'
import { Progress } from '../../lib/monitor/progress.js'
import { resolveDashboardOptions, isLoopbackHost, DASHBOARD_DEFAULTS } from '../../lib/monitor/options.js'
import { InvalidArgumentError } from '../../lib/errors.js'
import { waitFor } from '../helpers.js'

test('latency buckets: ascending, ten per decade, and the Prometheus bounds among them', () => {
  assert.equal(LATENCY_BOUNDS[0], 1e-5)
  assert.equal(LATENCY_BOUNDS.at(-1), 1000)
  assert.ok(LATENCY_BOUNDS.every((b, i) => i === 0 || b > LATENCY_BOUNDS[i - 1]!))
  assert.deepEqual(PROMETHEUS_BOUNDS.slice(0, 7), [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01])
  assert.equal(PROMETHEUS_BOUNDS.at(-1), 1000)
  for (const b of PROMETHEUS_BOUNDS) assert.ok(LATENCY_BOUNDS.includes(b), String(b))
})

test('percentiles come out within a bucket of the truth', () => {
  const h = new LatencyHistogram()
  // 1..1000 ms, uniformly: p50 ≈ 500 ms, p90 ≈ 900 ms, p99 ≈ 990 ms.
  for (let ms = 1; ms <= 1000; ms++) h.record(ms / 1000)
  const s = h.summary()
  assert.equal(s.count, 1000)
  assert.equal(s.maxMs, 1000)
  for (const [got, want] of [
    [s.p50Ms, 500],
    [s.p90Ms, 900],
    [s.p99Ms, 990],
  ] as const) {
    assert.ok(Math.abs(got - want) / want < 0.25, `${got} vs ${want}`)
  }
  assert.equal(h.count, 1000)
  assert.ok(Math.abs(h.sum - 500.5) < 1e-9)
  assert.equal(quantile(new Float64Array(LATENCY_BOUNDS.length + 1), 0, 0.5), 0)
})

test('the sliding window forgets old slices; the totals keep everything', () => {
  const h = new LatencyHistogram(3, 10)
  h.record(0.5)
  h.rotate()
  h.record(0.002)
  assert.equal(h.summary().count, 2)
  assert.equal(h.summary().maxMs, 500)
  h.rotate()
  h.rotate()
  // The slice holding 0.5 s is gone.
  assert.equal(h.summary().count, 1)
  assert.equal(h.summary().maxMs, 2)
  assert.equal(h.summary().windowMs, 30)
  h.rotate()
  assert.deepEqual(h.summary(), { count: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0, windowMs: 30 })
  assert.equal(h.count, 2)
  // Beyond the last bound: the +Inf bucket.
  h.record(5000)
  assert.equal(h.totals.at(-1), 1)
})

test('task stats: one task in 16 timed under load, the next when idle; names bounded; failures newest first', () => {
  const s = new TaskStats()
  // Under load, ids run on and every 16th is timed.
  const ids: number[] = []
  let next = 5
  for (let i = 0; i < 160; i++) {
    const id = s.assignId(next, false)
    ids.push(id)
    next = id + 1
  }
  assert.deepEqual(
    ids,
    Array.from({ length: 160 }, (_, i) => 5 + i),
  )
  assert.equal(s.outstandingSamples, 10)
  // Idle: the next timed id is taken.
  assert.equal(s.assignId(165, true), 176)
  assert.equal(s.assignId(176, true), 176)
  assert.equal(s.outstandingSamples, 11)
  for (let i = 0; i < 300; i++) s.succeeded(10_001 + 16 * i, `t${i}`, 0)
  assert.equal(s.byName.size, 257)
  assert.equal(s.byName.get('(other)')!.succeeded, 300 - 256)
  for (let i = 0; i < 60; i++) s.failed(16 * i + 1, 'f', 'n1', new RangeError(`e${i}`), 0)
  const recent = s.recentFailures()
  assert.equal(recent.length, 50)
  assert.equal(recent[0]!.message, 'e59')
  assert.equal(recent[49]!.message, 'e10')
  assert.equal(recent[0]!.error, 'RangeError')
  const long = s.failed(99, 'f', undefined, Object.assign(new Error('m'.repeat(5000)), { code: 'E_X' }), 0)
  assert.equal(long.message.length, 1024)
  assert.equal(long.code, 'E_X')
  assert.ok(long.stack!.length <= 4096)
  assert.equal(s.latency.count, 0)
  const t = performance.now()
  s.succeeded(176, 'timed', t + 250)
  assert.equal(s.latency.count, 1)
  assert.ok(s.latency.sum >= 0.25 && s.latency.sum < 0.3, String(s.latency.sum))
  s.failed(16, 'timed', undefined, new Error('x'), t + 1)
  assert.equal(s.latency.count, 2)
  // A sample is settled once: a later report of the same task (a duplicate) records nothing.
  s.succeeded(176, 'timed', t + 500)
  assert.equal(s.latency.count, 2)
  assert.equal(s.outstandingSamples, 9)
  // Times of tasks that never settle (withdrawn) cannot pile up: the oldest are forgotten.
  for (let i = 0; i < 140_000; i++) s.assignId(1_000_000 + 16 * i, false)
  assert.equal(s.outstandingSamples, 131_072)
})

test('an update channel holds at most one pending update: a stalled reader only ever costs the latest', async () => {
  const written: string[] = []
  let release: (() => void) | undefined
  const ch = new UpdateChannel(async (data) => {
    written.push(data)
    await new Promise<void>((r) => (release = r))
  })
  ch.offer('a')
  for (let i = 0; i < 1000; i++) ch.offer(`b${i}`)
  assert.deepEqual(written, ['a'])
  assert.equal(ch.dropped, 999)
  release!()
  await new Promise((r) => setImmediate(r))
  assert.deepEqual(written, ['a', 'b999'])
  ch.close()
  ch.offer('late')
  release!()
  await ch.closed
  assert.deepEqual(written, ['a', 'b999'])
  // A write that fails closes the channel.
  const broken = new UpdateChannel(() => Promise.reject(new Error('gone')))
  broken.offer('x')
  await broken.closed
})

class Capture extends Writable {
  text = ''
  constructor(readonly isTTY: boolean) {
    super()
  }
  columns = 100
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString()
    cb()
  }
  // cli-progress moves the cursor on a terminal stream.
  cursorTo(): boolean {
    return true
  }
  clearLine(): boolean {
    return true
  }
  moveCursor(): boolean {
    return true
  }
}

test('progress: plain lines off a terminal, a bar with rate and ETA on one, nothing when off', async () => {
  let done = 0
  const lines = new Capture(false)
  const p = new Progress(() => done, { label: 'fit', total: 1000, stream: lines, intervalMs: 20 })
  done = 250
  await waitFor(() => lines.text.includes('\n'), 5000, 'a progress line')
  done = 1000
  const end = p.stop()
  assert.equal(end.done, 1000)
  assert.equal(end.total, 1000)
  const out = lines.text.trim().split('\n')
  assert.ok(out.length >= 2)
  assert.match(out[0]!, /^fit: [\d,]+\/1,000 \(\d+\.\d%\), [\d,]+\/s, ETA /)
  assert.match(out.at(-1)!, /^fit: 1,000\/1,000 done in \d+\.\d s, [\d,]+\/s$/)
  assert.equal(p.stop(), end)

  const tty = new Capture(true)
  const b = new Progress(() => done, { label: 'seed', total: 2000, stream: tty })
  b.update()
  b.stop()
  assert.match(tty.text, /seed \[[█░]+\] 50% \| 1,000\/2,000 \| [\d,]+\/s \| ETA/)

  const endless = new Capture(true)
  const e = new Progress(() => done, { label: 'map', stream: endless })
  e.update()
  e.stop()
  assert.match(endless.text, /\rmap: 1,000, [\d,]+\/s, ETA \?/)
  assert.match(endless.text, /map: 1,000 done in/)

  const quiet = new Capture(true)
  const seen: number[] = []
  const q = new Progress(() => done, { mode: 'off', stream: quiet, onUpdate: (s) => seen.push(s.done) })
  q.update()
  q.stop()
  assert.equal(quiet.text, '')
  assert.deepEqual(seen, [1000, 1000])

  assert.throws(() => new Progress(() => 0, { intervalMs: 1 }), InvalidArgumentError)
  assert.throws(() => new Progress(() => 0, { mode: 'fancy' as 'bar' }), /progress mode must be auto, bar, lines or off, got fancy/)
})

test('dashboard options: defaults, shorthands, and each bad field named', () => {
  assert.equal(resolveDashboardOptions(undefined), undefined)
  assert.equal(resolveDashboardOptions(false), undefined)
  assert.deepEqual(resolveDashboardOptions(true), { ...DASHBOARD_DEFAULTS, token: undefined })
  assert.deepEqual(resolveDashboardOptions(0), { ...DASHBOARD_DEFAULTS, port: 0, token: undefined })
  assert.equal(resolveDashboardOptions({ host: '10.0.0.1', token: 'x'.repeat(16) })!.host, '10.0.0.1')
  const bad: [unknown, RegExp][] = [
    ['8265', /options\.dashboard must be a boolean, a port number or an object, got "8265"/],
    [-1, /options\.dashboard\.port must be an integer from 0 to 65535, got -1/],
    [{ port: 1.5 }, /options\.dashboard\.port/],
    [{ host: '' }, /options\.dashboard\.host must be a host name or IP address/],
    [{ host: 'a b' }, /options\.dashboard\.host/],
    [{ host: '::' }, /options\.dashboard\.token is required to serve the dashboard on ::/],
    [{ token: 'with spaces in the token' }, /options\.dashboard\.token must be a string of at least 16 printable characters/],
    [{ updateMs: 5000 }, /options\.dashboard\.updateMs must be an integer from 20 to 1000, got 5000/],
    [{ maxClients: 0 }, /options\.dashboard\.maxClients must be a positive integer, got 0/],
  ]
  for (const [v, msg] of bad)
    assert.throws(
      () => resolveDashboardOptions(v as number),
      (e: unknown) => e instanceof InvalidArgumentError && msg.test(e.message),
      String(v),
    )
  assert.ok(isLoopbackHost('localhost') && isLoopbackHost('127.1.2.3') && isLoopbackHost('[::1]') && isLoopbackHost('::1'))
  assert.ok(!isLoopbackHost('0.0.0.0') && !isLoopbackHost('192.168.1.1') && !isLoopbackHost('localhost.evil.example'))
})
