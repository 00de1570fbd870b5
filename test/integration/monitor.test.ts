import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import { connect, createServer, type Socket } from 'node:net'
import { once } from 'node:events'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import {
  Cluster,
  ClusterError,
  InvalidArgumentError,
  RemoteTaskError,
  SerializationError,
  TransportError,
  fetchSnapshot,
  type ClusterSnapshot,
  type NodeInfo,
  type TaskFailedEvent,
  type RetryInfo,
  type ActorInfo,
} from '../../lib/index.js'
import type * as Tasks from '../fixtures/tasks.js'
import { FIXTURE_TASKS, agentArgs, freePort, runCli, waitFor } from '../helpers.js'

async function json<T>(url: string, init?: RequestInit): Promise<{ status: number; body: T }> {
  const r = await fetch(url, init)
  const text = await r.text()
  return { status: r.status, body: (r.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text) as T }
}

/** A GET with a Host header of our choosing (fetch does not allow setting it). */
function getWithHost(url: string, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { Host: host } }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', reject)
    req.end()
  })
}

/** Reads `n` server-sent events of type snapshot from /api/events. */
async function readSnapshots(url: string, n: number, init?: RequestInit): Promise<ClusterSnapshot[]> {
  const ac = new AbortController()
  const res = await fetch(new URL('api/events', url), { ...init, signal: ac.signal })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/)
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  const decoder = new TextDecoder()
  let buf = ''
  const out: ClusterSnapshot[] = []
  while (out.length < n) {
    const { done, value } = await reader.read()
    if (done) break
    buf += decoder.decode(value, { stream: true })
    for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
      const event = buf.slice(0, i)
      buf = buf.slice(i + 2)
      assert.match(event, /^event: snapshot\n/)
      out.push(
        JSON.parse(
          event
            .split('\n')
            .filter((l) => l.startsWith('data: '))
            .map((l) => l.slice(6))
            .join('\n'),
        ) as ClusterSnapshot,
      )
    }
  }
  ac.abort()
  return out
}

test('snapshot, events and the latency sample follow tasks that succeed and fail', async () => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2 })
  const failed: TaskFailedEvent[] = []
  cluster.on('task:failed', (f) => failed.push(f))
  const sums = await Promise.all(Array.from({ length: 1000 }, (_, k) => cluster.call<number>('add', 1, k)))
  assert.equal(sums.length, 1000)
  await assert.rejects(cluster.call('fail', 'parameter set 7 diverged'), RemoteTaskError)
  await assert.rejects(
    cluster.call('echo', () => 1),
    SerializationError,
  )

  const s = cluster.snapshot()
  const node = cluster.nodes()[0]!
  // The unserialisable call failed when its frame was encoded: a task that never reached a node, as an oversized one.
  assert.equal(s.tasks.submitted, 1002)
  assert.equal(s.tasks.succeeded, 1000)
  assert.equal(s.tasks.failed, 2)
  assert.equal(s.tasks.pending + s.tasks.running, 0)
  assert.deepEqual(
    s.taskNames.map((n) => [n.name, n.succeeded, n.failed]),
    [
      ['add', 1000, 0],
      ['fail', 0, 1],
      ['echo', 0, 1],
    ],
  )
  // A bulk submission is sampled one task in 16 (plus the first, sent to an idle driver); a lone call every time.
  assert.ok(s.latency.count >= 1000 / 16 && s.latency.count <= 1000 / 16 + 3, `latency samples: ${s.latency.count}`)
  assert.ok(s.latency.p50Ms > 0 && s.latency.p50Ms <= s.latency.p99Ms && s.latency.p99Ms <= s.latency.maxMs)
  assert.equal(s.nodes.length, 1)
  assert.equal(s.nodes[0]!.id, node.id)
  assert.equal(s.nodes[0]!.tasksDone, 1001)
  assert.equal(s.transport.name, 'zmq')
  assert.ok(s.transport.bytesIn > 0 && s.transport.framesOut > 0)
  assert.equal(s.address, cluster.address)
  assert.equal(s.heartbeatMs, 1000)
  assert.equal(s.failures.length, 2)
  assert.deepEqual(
    s.failures.map((x) => [x.task, x.node, x.code]),
    [
      ['echo', undefined, 'ERR_SERIALIZATION'],
      ['fail', node.id, 'ERR_TASK_FAILED'],
    ],
    'most recent first',
  )
  const f = s.failures[1]!
  assert.equal(f.task, 'fail')
  assert.equal(f.node, node.id)
  assert.equal(f.error, 'RemoteTaskError')
  assert.equal(f.code, 'ERR_TASK_FAILED')
  assert.equal(f.message, 'parameter set 7 diverged')
  assert.match(f.stack ?? '', /at fail \(/)
  // JSON round trip: the snapshot is plain data.
  assert.deepEqual(JSON.parse(JSON.stringify(s)), s)

  // The serialisation failure never reached a node; it is an event but not a task outcome on the wire.
  assert.deepEqual(
    failed.map((e) => [e.name, e.node, e.error.constructor]),
    [
      ['fail', node.id, RemoteTaskError],
      ['echo', undefined, SerializationError],
    ],
  )
})

test('throughput history fills once a second; tasks that fail before reaching a node are events too', async () => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, maxFrameBytes: 64 * 1024 })
  const failed: TaskFailedEvent[] = []
  cluster.on('task:failed', (f) => failed.push(f))
  await assert.rejects(cluster.call('echo', 'x'.repeat(100_000)), SerializationError)
  assert.equal(failed.length, 1)
  assert.equal(failed[0]!.node, undefined)
  assert.ok(failed[0]!.error instanceof SerializationError)
  assert.equal(cluster.snapshot().failures[0]!.node, undefined)
  await Promise.all(Array.from({ length: 500 }, (_, k) => cluster.call('add', 1, k)))
  // A point is published when its second ends: the 500 may still be in the second under way when two points exist.
  await waitFor(
    () => {
      const { t, done } = cluster.snapshot().throughput
      return t.length >= 2 && done.some((v) => v > 0)
    },
    5000,
    'two throughput points, one of them showing the 500 tasks',
  )
  const tp = cluster.snapshot().throughput
  assert.equal(tp.t.length, tp.done.length)
  assert.equal(tp.t.length, tp.failed.length)
  assert.ok(
    tp.t.every((t, i) => i === 0 || t > tp.t[i - 1]!),
    'points are one per second, in order',
  )
  assert.ok(
    tp.done.some((v) => v > 0),
    `some point shows the 500 tasks: ${JSON.stringify(tp)}`,
  )
})

test('actors are listed while they live; actor events are emitted', async () => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1 })
  const events: [string, ActorInfo][] = []
  cluster.on('actor:spawned', (a) => events.push(['spawned', a]))
  cluster.on('actor:stopped', (a) => events.push(['stopped', a]))
  const c = await cluster.spawn<Tasks.Counter>('Counter', 3)
  assert.equal(await c.inc(), 4)
  const node = cluster.nodes()[0]!.id
  assert.deepEqual(cluster.liveActors(), [{ id: c.id, className: 'Counter', node }])
  assert.deepEqual(cluster.snapshot().actors, { count: 1, list: [{ id: c.id, className: 'Counter', node }] })
  await c.stop()
  assert.deepEqual(cluster.liveActors(), [])
  assert.deepEqual(events, [
    ['spawned', { id: c.id, className: 'Counter', node }],
    ['stopped', { id: c.id, className: 'Counter', node }],
  ])
})

test('a lost node: node:lost, task:retried, missed heartbeats, in the snapshot and the metrics', async (t) => {
  await using cluster = await Cluster.start({
    tasks: FIXTURE_TASKS,
    threads: 1,
    listen: 'tcp://127.0.0.1:0',
    heartbeatMs: 200,
    nodeTimeoutMs: 2500,
    localTransport: 'tcp',
  })
  const remote = runCli(t, agentArgs(cluster.address, 1, '--heartbeat-ms', '200', '--id', 'doomed-agent'))
  await waitFor(() => cluster.nodes().length === 2, 15_000, 'the remote agent')
  const lost: [NodeInfo, string][] = []
  const retried: RetryInfo[] = []
  cluster.on('node:lost', (n, reason) => lost.push([n, reason]))
  cluster.on('task:retried', (r) => retried.push(r))
  const results = Promise.all(Array.from({ length: 60 }, (_, i) => cluster.call<number>('sleep', 20, i)))
  await waitFor(() => cluster.nodes().find((n) => n.id === 'doomed-agent')!.inFlight > 0, 5000, 'work on the remote agent')
  remote.child.kill('SIGSTOP')
  await waitFor(() => lost.length === 1, 10_000, 'the stopped agent to be declared lost')
  assert.deepEqual(
    (await results).sort((a, b) => a - b),
    Array.from({ length: 60 }, (_, i) => i),
  )
  assert.equal(lost[0]![0].id, 'doomed-agent')
  assert.match(lost[0]![1], /no heartbeat for \d+ ms/)
  assert.ok(retried.length > 0)
  assert.ok(retried.every((r) => r.name === 'sleep' && /node doomed-agent was lost \(no heartbeat for \d+ ms\)/.test(r.cause.message)))
  const s = cluster.snapshot()
  assert.equal(s.tasks.retried, retried.length)
  assert.equal(s.taskNames.find((n) => n.name === 'sleep')!.retried, retried.length)
  assert.ok(s.heartbeatsMissed >= 1, `heartbeats missed: ${s.heartbeatsMissed}`)
  assert.deepEqual(
    s.nodes.map((n) => n.id),
    [cluster.nodes()[0]!.id],
  )
  const text = await cluster.metricsText()
  assert.match(text, new RegExp(`^actor_cluster_tasks_total\\{name="sleep",state="retried"\\} ${retried.length}$`, 'm'))
  assert.match(text, new RegExp(`^actor_cluster_heartbeats_missed_total ${s.heartbeatsMissed}$`, 'm'))
  remote.child.kill('SIGKILL')
})

test('/api/stats, /metrics and the live stream serve the same snapshot', async () => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2, dashboard: { port: 0, updateMs: 50 } })
  const url = cluster.dashboardUrl!
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/)
  assert.notEqual(new URL(url).port, '8265')
  await Promise.all(Array.from({ length: 300 }, (_, k) => cluster.call('add', 1, k)))
  await cluster.call('fail', 'no').catch(() => {})

  const stats = await json<ClusterSnapshot>(`${url}api/stats`)
  assert.equal(stats.status, 200)
  assert.equal(stats.body.tasks.succeeded, 300)
  assert.equal(stats.body.tasks.failed, 1)
  assert.deepEqual(
    stats.body.nodes.map((n) => n.id),
    cluster.nodes().map((n) => n.id),
  )

  const metrics = await fetch(`${url}metrics`)
  assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
  const text = await metrics.text()
  const node = cluster.nodes()[0]!
  for (const line of [
    'actor_cluster_tasks_total{name="add",state="succeeded"} 300',
    'actor_cluster_tasks_total{name="fail",state="failed"} 1',
    'actor_cluster_tasks{state="pending"} 0',
    'actor_cluster_queue_depth 0',
    'actor_cluster_nodes 1',
    `actor_cluster_node_threads{node="${node.id}",host="${node.host}"} 2`,
    'actor_cluster_bad_frames_total 0',
    '# TYPE actor_cluster_task_duration_seconds histogram',
    '# TYPE actor_cluster_node_busy_threads gauge',
  ]) {
    assert.ok(text.split('\n').includes(line), `missing line ${line}`)
  }
  const count = Number(/^actor_cluster_task_duration_seconds_count (\d+)$/m.exec(text)?.[1])
  const inf = Number(/^actor_cluster_task_duration_seconds_bucket\{le="\+Inf"\} (\d+)$/m.exec(text)?.[1])
  assert.ok(count > 0 && inf === count)
  assert.match(text, /^actor_cluster_transport_bytes_total\{direction="in"\} [1-9]\d*$/m)
  assert.match(text, /^process_cpu_seconds_total \d/m)
  // Every metric the example Grafana dashboard queries exists.
  const grafana = readFileSync(new URL('../../../docs/grafana-dashboard.json', import.meta.url), 'utf8')
  const names = new Set([...grafana.matchAll(/actor_cluster_[a-z_]+/g)].map((m) => m[0].replace(/_bucket$/, '')))
  assert.ok(names.size >= 10)
  for (const n of names) assert.match(text, new RegExp(`^# TYPE ${n} `, 'm'), `the Grafana dashboard queries ${n}`)

  const snaps = await readSnapshots(url, 3)
  assert.equal(snaps.length, 3)
  assert.ok(snaps[0]!.time <= snaps[1]!.time && snaps[1]!.time < snaps[2]!.time)
  assert.equal(snaps[2]!.tasks.succeeded, 300)
  assert.equal(snaps[2]!.dashboard!.clients, 1)

  const page = await fetch(url, { headers: { 'Accept-Encoding': 'gzip' } })
  assert.equal(page.status, 200)
  assert.match(await page.text(), /<script src="assets\/app\.js"/)
  for (const asset of ['assets/app.js', 'assets/app.css', 'assets/uPlot.min.js', 'assets/uPlot.min.css']) {
    assert.equal((await fetch(url + asset)).status, 200, asset)
  }
  const missing = await fetch(`${url}nope`)
  assert.equal(missing.status, 404)
  assert.match(await missing.text(), /not found: \/nope/)
})

test('a token guards /api and /metrics; without one only loopback Host names are served', async () => {
  const token = 'a-long-enough-secret-1234'
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, dashboard: { port: 0, token } })
  const url = new URL(cluster.dashboardUrl!)
  assert.equal(url.searchParams.get('token'), token)
  const base = `${url.origin}/`
  assert.equal((await fetch(`${base}api/stats`)).status, 401)
  assert.equal((await fetch(`${base}metrics`)).status, 401)
  assert.equal((await fetch(`${base}api/stats?token=wrong-token-wrong-token`)).status, 401)
  assert.equal((await fetch(`${base}api/stats`, { headers: { Authorization: 'Bearer nope' } })).status, 401)
  assert.equal((await fetch(`${base}api/stats?token=${token}`)).status, 200)
  assert.equal((await fetch(`${base}metrics`, { headers: { Authorization: `Bearer ${token}` } })).status, 200)
  assert.equal((await readSnapshots(base, 1, { headers: { Authorization: `Bearer ${token}` } })).length, 1)
  // The page itself holds no data and loads without the token (it passes the token on).
  assert.equal((await fetch(base)).status, 200)
  assert.ok(cluster.snapshot().dashboard!.rejected >= 4)

  await using open = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, dashboard: 0 })
  const u = open.dashboardUrl!
  assert.equal(await getWithHost(`${u}api/stats`, 'evil.example:80'), 403)
  assert.equal(await getWithHost(`${u}api/stats`, `localhost:${new URL(u).port}`), 200)
  assert.equal(await getWithHost(`${u}api/stats`, `127.0.0.1:${new URL(u).port}`), 200)
})

test('bad dashboard options are clear errors; a port in use is ERR_ADDRESS_IN_USE and leaves nothing behind', async () => {
  await assert.rejects(
    Cluster.start({ tasks: FIXTURE_TASKS, dashboard: { host: '0.0.0.0' } }),
    (e: unknown) => e instanceof InvalidArgumentError && /options\.dashboard\.token is required to serve the dashboard on 0\.0\.0\.0/.test(e.message),
  )
  await assert.rejects(Cluster.start({ tasks: FIXTURE_TASKS, dashboard: 70000 }), /options\.dashboard\.port must be an integer from 0 to 65535, got 70000/)
  await assert.rejects(Cluster.start({ tasks: FIXTURE_TASKS, dashboard: { token: 'short' } }), /options\.dashboard\.token must be a string of at least 16/)
  await assert.rejects(
    Cluster.start({ tasks: FIXTURE_TASKS, logLevel: 'loud' as 'info' }),
    /options\.logLevel must be one of trace, debug, info, warn, error, fatal, silent, got "loud"/,
  )

  const blocker = createServer()
  blocker.listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  const port = (blocker.address() as { port: number }).port
  const listen = `tcp://127.0.0.1:${await freePort()}`
  try {
    await assert.rejects(Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, listen, dashboard: port }), (e: unknown) => {
      assert.ok(e instanceof TransportError && e instanceof ClusterError)
      assert.equal(e.code, 'ERR_ADDRESS_IN_USE')
      assert.equal(e.message, `the dashboard cannot listen on 127.0.0.1:${port}: address already in use (choose another port, or 0 for a free one)`)
      return true
    })
    // The failed start released everything: the same driver address binds again.
    await using again = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, listen, dashboard: 0 })
    assert.equal(again.address, listen)
    assert.ok(again.dashboardUrl)
  } finally {
    blocker.close()
  }
})

test('slow or vanished pages do not hold the cluster: updates to them are dropped, extra pages refused', async () => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2, dashboard: { port: 0, updateMs: 20, maxClients: 4 } })
  const url = new URL(cluster.dashboardUrl!)
  // Twenty failures with long stacks make each update ~100 KB, so a page that reads nothing fills its socket fast.
  for (let i = 0; i < 20; i++) await cluster.call('fail', `failure ${i} ${'x'.repeat(900)}`).catch(() => {})
  const stalled: Socket[] = []
  for (let i = 0; i < 3; i++) {
    const s = connect(Number(url.port), url.hostname)
    s.on('error', () => {})
    s.write(`GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:${url.port}\r\n\r\n`)
    s.pause()
    stalled.push(s)
  }
  try {
    await waitFor(() => cluster.snapshot().dashboard!.clients === 3, 5000, 'three stalled pages')
    // One more page fits; the fifth is refused.
    const live = readSnapshots(url.href, 30)
    await waitFor(() => cluster.snapshot().dashboard!.clients === 4, 5000, 'the live page')
    const refused = await fetch(new URL('api/events', url))
    assert.equal(refused.status, 503)
    assert.match(await refused.text(), /too many dashboard clients \(maxClients 4\)/)
    // Work goes on at full pace while the stalled pages hold their sockets.
    const sums = await Promise.all(Array.from({ length: 20_000 }, (_, k) => cluster.call<number>('add', 1, k)))
    assert.equal(
      sums.reduce((a, b) => a + b, 0),
      20_000 + (20_000 * 19_999) / 2,
    )
    assert.equal((await live).length, 30)
    await waitFor(() => cluster.snapshot().dashboard!.updatesDropped > 0, 10_000, 'updates to the stalled pages to be dropped')
  } finally {
    for (const s of stalled) s.destroy()
  }
  // Pages that vanish are forgotten.
  await waitFor(() => cluster.snapshot().dashboard!.clients === 0, 5000, 'the vanished pages to be removed')
})

test('logs: quiet by default; a logger gets membership and failures as structured lines', async (t) => {
  const lines: Record<string, unknown>[] = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>)
      cb()
    },
  })
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, logger: pino({ level: 'info' }, sink), dashboard: 0 })
  t.after(() => cluster.close())
  await cluster.call('fail', 'logged failure').catch(() => {})
  await cluster.close()
  const joined = lines.find((l) => l['msg'] === 'node joined')
  assert.ok(joined, JSON.stringify(lines))
  assert.equal(joined['level'], 30)
  assert.equal(joined['threads'], 1)
  const failure = lines.find((l) => l['msg'] === 'task failed')
  assert.equal(failure?.['level'], 40)
  assert.equal(failure?.['task'], 'fail')
  assert.match(String((failure?.['err'] as { message?: string }).message), /logged failure/)
  assert.ok(lines.some((l) => l['msg'] === 'dashboard listening' && String(l['url']).startsWith('http://127.0.0.1:')))
})

test('map reports progress to a callback: done, total and a final state', async () => {
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2 })
  const states: { done: number; total: number | undefined }[] = []
  let n = 0
  for await (const _ of cluster.map(
    'sleep',
    Array.from({ length: 400 }, (_, i) => [5, i]),
    { ordered: false, progress: (p) => states.push(p) },
  ))
    n++
  assert.equal(n, 400)
  const last = states.at(-1)!
  assert.equal(last.done, 400)
  assert.equal(last.total, 400)
  assert.ok(states.length >= 2, 'at least one update before the final one')
  await assert.rejects(async () => {
    for await (const _ of cluster.map('add', [[1, 2]], { progress: true, total: -1 })) void _
  }, /options\.total must be a non-negative integer, got -1/)
})

test('CLUSTER_DASHBOARD turns the dashboard on in a program that does not ask for it; bad values are named', async (t) => {
  const { monitorEnvDefaults } = await import('../../lib/settings.js')
  assert.deepEqual(monitorEnvDefaults({}, { CLUSTER_DASHBOARD: '0', CLUSTER_DASHBOARD_HOST: '::1', CLUSTER_LOG_LEVEL: 'debug' }), {
    dashboard: { port: 0, host: '::1' },
    logLevel: 'debug',
  })
  assert.deepEqual(monitorEnvDefaults({ dashboard: false }, { CLUSTER_DASHBOARD: '0' }), { dashboard: false })
  assert.throws(() => monitorEnvDefaults({}, { CLUSTER_DASHBOARD: 'yes' }), /CLUSTER_DASHBOARD must be a port number, got "yes"/)
  assert.throws(() => monitorEnvDefaults({}, { CLUSTER_LOG_LEVEL: 'chatty' }), /CLUSTER_LOG_LEVEL must be one of/)
  const port = await freePort()
  const job = runCli(t, [
    'dashboard',
    '--port',
    String(port),
    '--log-level',
    'silent',
    '--',
    process.execPath,
    new URL('../fixtures/dashboard-job.js', import.meta.url).pathname,
  ])
  assert.equal(await job.exited, 0, job.output())
  assert.match(job.output(), new RegExp(`dashboard: http://127\\.0\\.0\\.1:${port}/ \\(served by .*node once it starts a cluster\\)`))
  const report = JSON.parse(
    job
      .output()
      .split('\n')
      .find((l) => l.startsWith('{'))!,
  ) as { url: string; succeeded: number; status: number }
  assert.deepEqual(report, { url: `http://127.0.0.1:${port}/`, succeeded: 10, status: 200 })
})

test('importing the package loads no HTTP framework, metrics or logging library; a dashboard loads them', () => {
  const index = new URL('../../lib/index.js', import.meta.url).href
  const script = `
    import { createRequire } from 'node:module'
    const require = createRequire(${JSON.stringify(index)})
    const { Cluster } = await import(${JSON.stringify(index)})
    const libs = () => [...new Set(Object.keys(require.cache).map((k) => /node_modules\\/(prom-client|pino|cli-progress|@hono\\/node-server)\\//.exec(k)?.[1]).filter(Boolean))].sort()
    const before = libs()
    const c = await Cluster.start({ tasks: ${JSON.stringify(FIXTURE_TASKS.href)}, threads: 1, dashboard: 0, logLevel: 'fatal' })
    const after = libs()
    await c.close()
    console.log(JSON.stringify({ before, after }))`
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 })
  assert.equal(r.status, 0, r.stderr)
  // (The HTTP framework is an ES module, outside require.cache; it is imported beside prom-client.)
  assert.deepEqual(JSON.parse(r.stdout), { before: [], after: ['pino', 'prom-client'] })
})

test('fetchSnapshot reads a running cluster from its dashboard, with clear errors', async () => {
  const token = 'fetch-snapshot-token-123'
  await using cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, dashboard: { port: 0, token } })
  await cluster.call('add', 1, 2)
  const url = cluster.dashboardUrl!
  const s = await fetchSnapshot(url)
  assert.equal(s.tasks.succeeded, 1)
  assert.deepEqual(
    s.nodes.map((n) => n.id),
    cluster.nodes().map((n) => n.id),
  )
  const origin = new URL(url).origin
  assert.equal((await fetchSnapshot(origin, { token })).address, cluster.address)
  await assert.rejects(
    fetchSnapshot(origin),
    (e: unknown) => e instanceof TransportError && e.message === `the dashboard at ${origin} needs its token (--token or ?token=)`,
  )
  await assert.rejects(fetchSnapshot('not a url'), /not a dashboard URL: not a url/)
  const closed = `http://127.0.0.1:${await freePort()}/`
  await assert.rejects(
    fetchSnapshot(closed),
    (e: unknown) => e instanceof TransportError && /no cluster dashboard answers at http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/.test(e.message),
  )
  // Something else on the port: not a snapshot.
  const other = createServer((sock) => sock.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\nconnection: close\r\n\r\n{"a": 1 }'))
  other.listen(0, '127.0.0.1')
  await once(other, 'listening')
  try {
    const port = (other.address() as { port: number }).port
    await assert.rejects(
      fetchSnapshot(`http://127.0.0.1:${port}/`),
      (e: unknown) => e instanceof ClusterError && e.code === 'ERR_PROTOCOL' && /is not a cluster snapshot/.test(e.message),
    )
  } finally {
    other.close()
  }
})
