/**
 * Frames exchanged between a driver and its agents. Every message is a list of
 * parts: a header (msgpack array `[version, type, ...fields]`) and, for task
 * and result frames, one body part that the agent's main thread forwards to
 * the pool without decoding. See docs/architecture.md for the full format.
 */

/** Bumped on any incompatible change of the frame format. */
export const PROTOCOL_VERSION = 2

export const MsgType = {
  /** agent → driver: `{ agentId, threads, pid, host, version, tasks, actors, window }` */
  Hello: 1,
  /** driver → agent: `{ nodeId, heartbeatMs, session }` — session: random per driver instance */
  Welcome: 2,
  /** driver → agent: `reason` — the agent may not join (version, auth...) */
  Reject: 3,
  /**
   * driver → agent: `count, timeoutMs?, frameId?, shared?`; body = flat `[id, name, args, ...]` (a frame with a
   * timeout holds one task). Brokered designs number each frame (`frameId`, with `timeoutMs` null when there is
   * none), and list the hashes of the shared values its tasks carry (`shared`), which the agent fetches if it lacks them.
   */
  Tasks: 4,
  /** agent → driver: `count, registration?` (the Hello registration the tasks came under); body = flat `[id, status, value, ...]` */
  Results: 5,
  /** agent → driver: `window` — how many tasks it wants in flight */
  Credit: 6,
  /** either way: liveness; agent → driver carries `{ busy, done }` */
  Heartbeat: 7,
  /** driver → agent: `count`; body = flat `[id, op, actorId, name, args, ...]` */
  Actor: 8,
  /** agent → driver: the agent leaves; `returned` task ids it will not run */
  Leave: 9,
  /** driver → agent: the driver is closing; forget it, wait for the next one */
  DriverBye: 10,
  /** agent → driver: `count`; body = flat `[id, status, value, ...]` answering Actor frames */
  ActorResults: 11,
  /**
   * agent → driver, brokered designs: `frameId, dropped` — the agent took this frame from the shared queue. With
   * `dropped` false it runs it (and only once the broker holds this message): the driver now holds the agent
   * answerable for its tasks. With `dropped` true it was a redelivery, acknowledged unrun: the driver sends again
   * whatever of it no one else took.
   */
  Taken: 12,
  /**
   * driver → agent: `hash, kind, size`; body = the value's bytes (a typed array's own bytes for a typed-array kind,
   * msgpack otherwise). Sent ahead of the first frame that needs the value on that node (shared inputs).
   */
  Put: 20,
  /** driver → agent: `hashes` — shared values the node may forget (released, or evicted to make room). */
  Drop: 21,
  /**
   * agent → driver, brokered designs: `hashes` — shared values a frame taken from the shared queue needs and the
   * node does not hold. Answered, per hash, by a Put, or by an Unavailable.
   */
  Fetch: 22,
  /**
   * driver → agent: `hash, code, message` — a fetched value this node cannot have (released meanwhile, or larger than
   * the node can hold): the tasks of the frames waiting for it fail with that error.
   */
  Unavailable: 23,
  /**
   * agent → driver: `count`; body = flat `[reqId, op, args, ...]` — what code in a thread asks of the cluster
   * (`context.call`, `spawn`, `put`, an ask or tell through a reference...). `reqId` is the thread's (its thread id ×
   * 2³² plus a counter), so a reply finds its thread without the agent reading it.
   */
  Submit: 30,
  /** driver → agent: `count, thread`; body = flat `[reqId, status, value, ...]` — answers to one thread's requests. */
  Reply: 31,
  /**
   * agent → driver: `actorIds` — actors of this node whose host thread died while messages its threads sent them
   * inside the node were on their way (the agent answered those): the driver treats each as lost with its host thread
   * (restarted, or lost for good), as when a message it sent finds the actor gone.
   */
  ActorsLost: 32,
} as const
export type MsgType = (typeof MsgType)[keyof typeof MsgType]

/** Result status in a Results body. */
export const Status = {
  Ok: 0,
  /** the user's code threw: value is a WireError */
  Threw: 1,
  /** the runtime refused or failed the task: value is a WireError with a code */
  Failed: 2,
} as const
export type Status = (typeof Status)[keyof typeof Status]

/** Actor operations in an Actor body. */
export const ActorOp = {
  Spawn: 0,
  Call: 1,
  Stop: 2,
  /**
   * Spawn of a restarted actor: as Spawn, and the node's threads then send it
   * their messages through the driver, behind those it held during the
   * restart, until the actor is placed again.
   */
  Respawn: 3,
  /**
   * Stop now (`ref.stop({ force: true })`): not queued behind the actor's
   * messages; the one it is running and those queued are answered with
   * ActorStoppedError, and whatever the running one returns later is dropped.
   */
  Kill: 4,
} as const
export type ActorOp = (typeof ActorOp)[keyof typeof ActorOp]

/** What a thread asks of the cluster, in a Submit body; each op's `args` is a list of its own. */
export const ContextOp = {
  /** `[name, args, options | null]` → the task's value */
  Call: 0,
  /** `[className, args, options | null]` → an ActorRef */
  Spawn: 1,
  /** `[name]` → the ActorRef registered under the name */
  Lookup: 2,
  /** `[value]` → `[hash, size]` of a shared value the driver holds for the thread */
  Put: 3,
  /** `[hash]` → null; releases one handle a Put gave */
  Release: 4,
  /** `[actorId, method, args]` → the method's value */
  Ask: 5,
  /** `[actorId, method, args]` → no reply; a failure is an `actor:error` event on the driver */
  Tell: 6,
  /** `[actorId]` → null once the actor stopped */
  Stop: 7,
  /** `[actorId, method, error]` → no reply; a tell delivered inside the node failed: an `actor:error` event on the driver */
  ToldFailed: 8,
} as const
export type ContextOp = (typeof ContextOp)[keyof typeof ContextOp]

/** A request id's thread: the high part of the id (the thread id × 2³²). */
export const REQUEST_THREAD_FACTOR = 2 ** 32

export interface HelloInfo {
  agentId: string
  threads: number
  pid: number
  host: string
  version: string
  tasks: string[]
  actors: string[]
  window: number
  /**
   * Changes each time the agent starts looking for a driver. A Hello repeated
   * with the same registration (sent again before the Welcome arrived) is a
   * duplicate, not a re-registration. Optional: older agents send none.
   */
  registration?: string
  /** With CURVE: the agent's public key (Z85), and `proof` that it holds the secret half (see `helloProof`). */
  key?: string
  proof?: string
  /** Bytes of shared values the agent keeps (`sharedCacheBytes`); optional: older agents say nothing. */
  sharedCacheBytes?: number
  /** Most bytes the agent accepts in one message (`maxFrameBytes`): a larger shared value cannot reach it. Optional. */
  maxFrameBytes?: number
}

export interface WelcomeInfo {
  nodeId: string
  /** Random per driver instance: results of one driver's tasks are never sent to the next. */
  session: string
  heartbeatMs: number
}

export interface AgentLoad {
  busy: number
  done: number
  queued: number
}

/**
 * How a shared value's bytes are laid out: a typed array by its element type
 * (its own bytes, viewed in place on the node), or any other value as msgpack.
 */
export const SHARED_KINDS = [
  'msgpack',
  'Float64Array',
  'Float32Array',
  'Int8Array',
  'Int16Array',
  'Int32Array',
  'Uint8Array',
  'Uint8ClampedArray',
  'Uint16Array',
  'Uint32Array',
  'BigInt64Array',
  'BigUint64Array',
] as const
export type SharedKind = (typeof SHARED_KINDS)[number]

/** Why a node cannot have a shared value it fetched (an Unavailable message): the code its tasks fail with. */
export const SHARED_UNAVAILABLE_CODES = ['ERR_SHARED_RELEASED', 'ERR_SHARED_TOO_LARGE'] as const
export type SharedUnavailableCode = (typeof SHARED_UNAVAILABLE_CODES)[number]
