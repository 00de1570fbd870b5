/** The agent's public types: its events, counters and activity. */
import type { AgentState } from './session.js'
import type { SharedCacheStats } from './shared-cache.js'

export interface AgentEvents {
  'driver:joined': [nodeId: string]
  'driver:lost': [reason: string]
  rejected: [reason: string]
  /** The driver refused the security handshake (CURVE keys); the agent keeps retrying. */
  'auth:failed': [message: string]
  /** The transport failed for good (a broker connection was lost); the agent closes. */
  'transport:error': [err: Error]
}

export interface AgentStats extends SharedCacheStats {
  tasksDone: number
  badFrames: number
  batches: number
  window: number
  /** Pool batches whose worker thread died (crash, out of memory, timeout). */
  threadsLost: number
  /** Times the pool's threads were replaced by maxTasksPerThread or recycleHeapMb. */
  recycles: number
}

/** What an agent is doing now (`agent.activity()`). */
export interface AgentActivity {
  state: AgentState
  /** Batches running on the pool, at most one per thread. */
  busy: number
  /** Tasks received and not yet started. */
  queued: number
  /** Milliseconds since the driver was last heard; undefined before any driver. */
  driverAgeMs: number | undefined
}
