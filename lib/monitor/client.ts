import { ProtocolError, TransportError } from '../errors.js'
import type { ClusterSnapshot } from './monitor.js'

/** Options of {@link fetchSnapshot}. */
export interface FetchSnapshotOptions {
  /** The dashboard's token, when it has one. */
  token?: string
  /** Give up after this long, in ms. Default 5000. */
  timeoutMs?: number
}

/**
 * Reads the snapshot of a running cluster from its dashboard's `/api/stats`
 * (what `cluster status` shows). `url` is the dashboard's address, e.g.
 * `http://127.0.0.1:8265/` (a `?token=` in it is used too).
 */
export async function fetchSnapshot(url: string | URL, options: FetchSnapshotOptions = {}): Promise<ClusterSnapshot> {
  let base: URL
  try {
    base = new URL(url)
  } catch (err) {
    throw new TransportError(`not a dashboard URL: ${String(url)}`, { cause: err })
  }
  const token = options.token ?? base.searchParams.get('token') ?? undefined
  const target = new URL('api/stats', base.href.replace(/\?.*$/, '').replace(/\/?$/, '/'))
  let res: Response
  try {
    res = await fetch(target, {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(options.timeoutMs ?? 5000),
    })
  } catch (err) {
    const why = (err as Error).name === 'TimeoutError' ? 'no answer in time' : ((err as { cause?: Error }).cause?.message ?? (err as Error).message)
    throw new TransportError(`no cluster dashboard answers at ${base.origin}: ${why}`, { cause: err })
  }
  if (res.status === 401) throw new TransportError(`the dashboard at ${base.origin} needs its token (--token or ?token=)`)
  if (!res.ok) throw new TransportError(`the dashboard at ${base.origin} answered HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`)
  let body: unknown
  try {
    body = await res.json()
  } catch (err) {
    throw new ProtocolError(`the dashboard at ${base.origin} sent a body that is not JSON: ${(err as Error).message}`)
  }
  const s = body as Partial<ClusterSnapshot> | null
  if (s === null || typeof s !== 'object' || typeof s.tasks !== 'object' || !Array.isArray(s.nodes) || typeof s.version !== 'string') {
    throw new ProtocolError(`the answer of ${target.href} is not a cluster snapshot`)
  }
  return s as ClusterSnapshot
}
