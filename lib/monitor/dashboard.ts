import { createHash, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import type { Server } from 'node:http'
import { gzipSync } from 'node:zlib'
import { createAdaptorServer } from '@hono/node-server'
import { Hono, type Context, type HonoRequest } from 'hono'
import { streamSSE, type SSEStreamingApi } from 'hono/streaming'
import { TransportError } from '../errors.js'
import type { ClusterMetrics } from './metrics.js'
import type { ClusterSnapshot, DashboardStats } from './monitor.js'
import { isLoopbackHost, type ResolvedDashboardOptions } from './options.js'

/** What the dashboard serves: snapshots, and the metrics text. */
export interface DashboardSource {
  snapshot(): ClusterSnapshot
  readonly metrics: ClusterMetrics
}

interface Asset {
  readonly type: string
  readonly body: Buffer
  readonly gzip: Buffer
}

// Beside the compiled file: the build copies lib/monitor/ui to dist/lib/monitor/ui (scripts/copy-ui.mjs).
const UI = new URL('./ui/', import.meta.url)
const require = createRequire(import.meta.url)

function loadAssets(): Map<string, Asset> {
  const files: [string, string, string][] = [
    ['/', fileURLToPath(new URL('index.html', UI)), 'text/html; charset=utf-8'],
    ['/assets/app.js', fileURLToPath(new URL('app.js', UI)), 'text/javascript; charset=utf-8'],
    ['/assets/app.css', fileURLToPath(new URL('app.css', UI)), 'text/css; charset=utf-8'],
    ['/assets/uPlot.min.js', require.resolve('uplot/dist/uPlot.iife.min.js'), 'text/javascript; charset=utf-8'],
    ['/assets/uPlot.min.css', require.resolve('uplot/dist/uPlot.min.css'), 'text/css; charset=utf-8'],
  ]
  const assets = new Map<string, Asset>()
  for (const [route, path, type] of files) {
    const body = readFileSync(path)
    assets.set(route, { type, body, gzip: gzipSync(body, { level: 9 }) })
  }
  return assets
}

let cachedAssets: Map<string, Asset> | undefined

/**
 * One page's live stream. It holds at most one update not yet written: a
 * newer update replaces it (the page only needs the latest), so a page that
 * reads slowly, or not at all, costs a bounded buffer and never slows the
 * cluster.
 */
export class UpdateChannel {
  private latest: string | undefined
  private writing = false
  private done = false
  sent = 0
  dropped = 0
  readonly closed: Promise<void>
  private resolveClosed!: () => void

  constructor(private readonly write: (data: string) => Promise<unknown>) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve))
  }

  /** Queues `data` to be written, replacing an update still waiting. */
  offer(data: string): void {
    if (this.done) return
    if (this.latest !== undefined) this.dropped++
    this.latest = data
    if (!this.writing) void this.drain()
  }

  private async drain(): Promise<void> {
    this.writing = true
    try {
      while (this.latest !== undefined && !this.done) {
        const data = this.latest
        this.latest = undefined
        await this.write(data)
        this.sent++
      }
    } catch {
      this.close()
    } finally {
      this.writing = false
    }
  }

  close(): void {
    if (this.done) return
    this.done = true
    this.latest = undefined
    this.resolveClosed()
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest()
}

/**
 * The web dashboard of one cluster: the page and its assets (served from
 * this package, so it works offline), `/api/stats` (the snapshot as JSON),
 * `/api/events` (the snapshot pushed by server-sent events every
 * `updateMs`), and `/metrics` (Prometheus text format).
 */
export class Dashboard {
  private readonly channels = new Set<UpdateChannel>()
  private readonly counters = { updatesSent: 0, updatesDropped: 0, rejected: 0 }
  private timer: NodeJS.Timeout | undefined
  private closing: Promise<void> | undefined
  private boundPort = 0

  private constructor(
    private readonly source: DashboardSource,
    readonly options: ResolvedDashboardOptions,
    private readonly server: Server,
  ) {}

  /** Starts serving; rejects with `ERR_ADDRESS_IN_USE` when the port is taken. */
  static async start(source: DashboardSource, options: ResolvedDashboardOptions): Promise<Dashboard> {
    cachedAssets ??= loadAssets()
    const assets = cachedAssets
    const app = new Hono()
    // The routes are added below, before the server listens; app.fetch reads them per request.
    const server = createAdaptorServer({ fetch: app.fetch }) as Server
    const dashboard = new Dashboard(source, options, server)
    app.use('*', async (c, next) => {
      const refusal = dashboard.refuse(c.req)
      if (!refusal) return next()
      dashboard.counters.rejected++
      return c.text(refusal.message, refusal.status)
    })
    app.use('*', async (c, next) => {
      await next()
      c.header('X-Content-Type-Options', 'nosniff')
      c.header('Referrer-Policy', 'no-referrer')
    })
    for (const [route, asset] of assets) {
      app.get(route, (c) => {
        c.header('Content-Type', asset.type)
        c.header('Cache-Control', 'no-cache')
        c.header('Vary', 'Accept-Encoding')
        if (route === '/') c.header('Content-Security-Policy', "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'")
        if (/\bgzip\b/.test(c.req.header('Accept-Encoding') ?? '')) {
          c.header('Content-Encoding', 'gzip')
          return c.body(new Uint8Array(asset.gzip))
        }
        return c.body(new Uint8Array(asset.body))
      })
    }
    app.get('/api/stats', (c) => c.json(source.snapshot()))
    app.get('/metrics', async (c) => {
      const text = await source.metrics.text()
      return c.body(text, 200, { 'Content-Type': source.metrics.contentType })
    })
    app.get('/api/events', (c) => dashboard.events(c))
    app.get('/healthz', (c) => c.text('ok'))
    app.notFound((c) => c.text(`not found: ${c.req.path}`, 404))

    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        server.off('listening', onListening)
        const where = `${options.host}:${options.port}`
        reject(
          err.code === 'EADDRINUSE'
            ? new TransportError(`the dashboard cannot listen on ${where}: address already in use (choose another port, or 0 for a free one)`, {
                cause: err,
                code: 'ERR_ADDRESS_IN_USE',
              })
            : new TransportError(`the dashboard cannot listen on ${where}: ${err.message}`, { cause: err }),
        )
      }
      const onListening = () => {
        server.off('error', onError)
        resolve()
      }
      server.once('error', onError)
      server.once('listening', onListening)
      server.listen(options.port, options.host)
    })
    const addr = server.address()
    dashboard.boundPort = typeof addr === 'object' && addr ? addr.port : options.port
    // The socket of a page that vanished without a FIN must not be kept forever.
    server.keepAliveTimeout = 5000
    dashboard.timer = setInterval(() => dashboard.broadcast(), options.updateMs)
    dashboard.timer.unref()
    return dashboard
  }

  /** Where the page is, with the token when there is one. */
  get url(): string {
    const host = this.options.host.includes(':') ? `[${this.options.host}]` : this.options.host
    const base = `http://${host}:${this.boundPort}/`
    return this.options.token ? `${base}?token=${encodeURIComponent(this.options.token)}` : base
  }

  get port(): number {
    return this.boundPort
  }

  stats(): DashboardStats {
    let sent = this.counters.updatesSent
    let dropped = this.counters.updatesDropped
    for (const ch of this.channels) {
      sent += ch.sent
      dropped += ch.dropped
    }
    return { clients: this.channels.size, updatesSent: sent, updatesDropped: dropped, rejected: this.counters.rejected }
  }

  /** Why a request is refused, or undefined to serve it. */
  private refuse(req: Pick<HonoRequest, 'path' | 'header' | 'query'>): { status: 401 | 403; message: string } | undefined {
    const token = this.options.token
    // The page and its assets hold no cluster data: they load without the token, and the page passes it on to /api.
    const guarded = req.path.startsWith('/api/') || req.path === '/metrics'
    if (token !== undefined && !guarded) return undefined
    if (token !== undefined) {
      const auth = req.header('Authorization')
      const given = auth?.startsWith('Bearer ') ? auth.slice(7) : req.query('token')
      if (given === undefined || !timingSafeEqual(digest(given), digest(token))) {
        return { status: 401, message: 'this dashboard needs its token: Authorization: Bearer <token>, or ?token=<token>' }
      }
      return undefined
    }
    // Without a token the dashboard trusts loopback: a page on another site must not reach it through DNS rebinding.
    const host = req.header('Host') ?? ''
    const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.split(':')[0]!
    if (!isLoopbackHost(name)) return { status: 403, message: `refusing a request for host ${JSON.stringify(host)}: this dashboard serves loopback names only` }
    return undefined
  }

  private events(c: Context): Response | Promise<Response> {
    if (this.closing) return c.text('the dashboard is closing', 503)
    if (this.channels.size >= this.options.maxClients) {
      this.counters.rejected++
      return c.text(`too many dashboard clients (maxClients ${this.options.maxClients})`, 503)
    }
    return streamSSE(c, async (stream: SSEStreamingApi) => {
      const ch = new UpdateChannel((data) => stream.writeSSE({ event: 'snapshot', data }))
      this.channels.add(ch)
      stream.onAbort(() => ch.close())
      ch.offer(JSON.stringify(this.source.snapshot()))
      await ch.closed
      this.channels.delete(ch)
      this.counters.updatesSent += ch.sent
      this.counters.updatesDropped += ch.dropped
    })
  }

  /** One snapshot, serialised once, offered to every page. */
  private broadcast(): void {
    if (this.channels.size === 0) return
    const data = JSON.stringify(this.source.snapshot())
    for (const ch of this.channels) ch.offer(data)
  }

  /** Stops serving and ends every open stream. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.timer)
      for (const ch of this.channels) ch.close()
      await new Promise<void>((resolve) => {
        this.server.close(() => resolve())
        this.server.closeAllConnections()
      })
    })()
    return this.closing
  }
}
