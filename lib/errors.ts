/**
 * Every error the runtime raises is a {@link ClusterError} with a stable `code`.
 * Errors that cross the wire are rebuilt into the matching class on the other
 * side, carrying the remote stack. `docs/errors.md` lists every code.
 */
import { inspect } from 'node:util'

export type ClusterErrorCode =
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_TASK_FAILED'
  | 'ERR_UNKNOWN_TASK'
  | 'ERR_UNKNOWN_ACTOR'
  | 'ERR_UNKNOWN_METHOD'
  | 'ERR_SERIALIZATION'
  | 'ERR_TASKS_MODULE'
  | 'ERR_CLUSTER_CLOSED'
  | 'ERR_PROTOCOL'
  | 'ERR_PROTOCOL_VERSION'
  | 'ERR_TRANSPORT'
  | 'ERR_ADDRESS_IN_USE'
  | 'ERR_INSECURE_BIND'
  | 'ERR_BROKER_UNREACHABLE'
  | 'ERR_BROKER_LOST'
  | 'ERR_DEPENDENCY_MISSING'
  | 'ERR_ACTOR_STOPPED'
  | 'ERR_ACTOR_LOST'
  | 'ERR_NODE_LOST'
  | 'ERR_WORKER_CRASHED'
  | 'ERR_OUT_OF_MEMORY'
  | 'ERR_TIMEOUT'
  | 'ERR_CANCELLED'
  | 'ERR_COMBINER'
  | 'ERR_AUTH'
  | 'ERR_CONFIG'
  | 'ERR_HOSTS_FILE'
  | 'ERR_SSH'
  | 'ERR_HOST_SETUP'
  | 'ERR_AGENT_START'
  | 'ERR_SHARED_IN_USE'
  | 'ERR_SHARED_TOO_LARGE'
  | 'ERR_SHARED_RELEASED'
  | 'ERR_ACTOR_NAME_TAKEN'
  | 'ERR_ACTOR_NOT_FOUND'
  | 'ERR_UNKNOWN_NODE'

export class ClusterError extends Error {
  readonly code: ClusterErrorCode
  constructor(code: ClusterErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
  }
  override get name(): string {
    return this.constructor.name
  }
}

/** A caller passed an option or argument the runtime cannot use. */
export class InvalidArgumentError extends ClusterError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_INVALID_ARGUMENT', message, options)
  }
}

/**
 * The task (or actor method) threw on its node. `message` is the remote
 * message, `stack` the remote stack, `remoteName` the remote error's class.
 */
export class RemoteTaskError extends ClusterError {
  readonly remoteName: string
  readonly task: string
  readonly node: string | undefined
  constructor(task: string, remote: WireError, node?: string) {
    super('ERR_TASK_FAILED', remote.message)
    this.remoteName = remote.name
    this.task = task
    this.node = node
    if (remote.stack) this.stack = remote.stack
    if (remote.data !== undefined) Object.assign(this, { data: remote.data })
  }
}

export class UnknownTaskError extends ClusterError {
  constructor(message: string) {
    super('ERR_UNKNOWN_TASK', message)
  }
  /** `what`: the role the name was given (`combiner` for a reduce). */
  static of(name: string, known: readonly string[], what: 'task' | 'combiner' = 'task'): UnknownTaskError {
    return new UnknownTaskError(`unknown ${what} "${name}"; the tasks module exports the functions ${listNames(known)}`)
  }
}

export class UnknownActorError extends ClusterError {
  constructor(message: string) {
    super('ERR_UNKNOWN_ACTOR', message)
  }
  static of(name: string, known: readonly string[]): UnknownActorError {
    return new UnknownActorError(`unknown actor class "${name}"; the tasks module exports the classes ${listNames(known)}`)
  }
}

/**
 * An actor name that cannot be used: `ERR_ACTOR_NAME_TAKEN` (a live actor
 * already holds it) or `ERR_ACTOR_NOT_FOUND` (`cluster.actor(name)` of a name
 * no live actor holds). `actorName` is the name.
 */
export class ActorNameError extends ClusterError {
  constructor(
    code: 'ERR_ACTOR_NAME_TAKEN' | 'ERR_ACTOR_NOT_FOUND',
    readonly actorName: string,
    message: string,
  ) {
    super(code, message)
  }
}

/** `spawn` pinned to a node id that is not a member; the message names it and the members. */
export class UnknownNodeError extends ClusterError {
  constructor(
    readonly nodeId: string,
    known: readonly string[],
  ) {
    super(
      'ERR_UNKNOWN_NODE',
      `unknown node "${nodeId}"; ${known.length === 0 ? 'the cluster has no node' : `the cluster's nodes are ${listNames([...known].sort())}`}`,
    )
  }
}

export class UnknownMethodError extends ClusterError {
  constructor(message: string) {
    super('ERR_UNKNOWN_METHOD', message)
  }
  static of(actor: string, method: string): UnknownMethodError {
    return new UnknownMethodError(`actor class "${actor}" has no method "${method}"`)
  }
}

/** An argument or a result msgpack cannot carry as sent (functions, symbols, class instances...). */
export class SerializationError extends ClusterError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_SERIALIZATION', message, options)
  }
}

/**
 * A shared value (`cluster.put`) that cannot be put or released now:
 * `ERR_SHARED_IN_USE` (released while tasks carrying it are unsettled),
 * `ERR_SHARED_TOO_LARGE` (larger than a node's cache or a frame: `put`
 * refuses it, or the tasks that need it on such a node fail),
 * `ERR_SHARED_RELEASED` (a node fetched a value released meanwhile: the tasks
 * that need it there fail).
 */
export class SharedValueError extends ClusterError {
  constructor(code: 'ERR_SHARED_IN_USE' | 'ERR_SHARED_TOO_LARGE' | 'ERR_SHARED_RELEASED', message: string, options?: { cause?: unknown }) {
    super(code, message, options)
  }
}

/** The tasks module could not be loaded (on the driver or on an agent). */
export class TasksModuleError extends ClusterError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_TASKS_MODULE', message, options)
  }
}

export class ClusterClosedError extends ClusterError {
  constructor(message = 'the cluster was closed before the task settled') {
    super('ERR_CLUSTER_CLOSED', message)
  }
}

/** A malformed or unexpected frame. Counted and dropped by receivers. */
export class ProtocolError extends ClusterError {
  constructor(message: string, code: 'ERR_PROTOCOL' | 'ERR_PROTOCOL_VERSION' = 'ERR_PROTOCOL') {
    super(code, message)
  }
}

export class TransportError extends ClusterError {
  constructor(
    message: string,
    options?: {
      cause?: unknown
      code?: 'ERR_TRANSPORT' | 'ERR_ADDRESS_IN_USE' | 'ERR_INSECURE_BIND' | 'ERR_BROKER_UNREACHABLE' | 'ERR_BROKER_LOST' | 'ERR_DEPENDENCY_MISSING'
    },
  ) {
    super(options?.code ?? 'ERR_TRANSPORT', message, options)
  }
}

export class ActorStoppedError extends ClusterError {
  constructor(message: string) {
    super('ERR_ACTOR_STOPPED', message)
  }
}

export class ActorLostError extends ClusterError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_ACTOR_LOST', message, options)
  }
}

export class NodeLostError extends ClusterError {
  constructor(message: string) {
    super('ERR_NODE_LOST', message)
  }
}

export class WorkerCrashedError extends ClusterError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_WORKER_CRASHED', message, options)
  }
}

/** The task ran longer than its `timeoutMs`; its thread was stopped and replaced. */
export class TaskTimeoutError extends ClusterError {
  constructor(message: string) {
    super('ERR_TIMEOUT', message)
  }
}

/** The worker thread running the task ran out of memory (its heap limit); the thread was replaced. */
export class OutOfMemoryError extends ClusterError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_OUT_OF_MEMORY', message, options)
  }
}

/** The call or map was cancelled through its AbortSignal (or the map's consumer stopped early). */
export class TaskCancelledError extends ClusterError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CANCELLED', message, options)
  }
}

/**
 * The combiner of a reduce threw (on an agent, folding a chunk's results, or
 * on the driver, folding the partial aggregates); the message names the
 * combiner and the task, `cause` (on the side that threw) or `stack` (from
 * an agent) is the combiner's own.
 */
export class CombinerError extends ClusterError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_COMBINER', message, options)
  }
}

/** Authentication is missing or wrong (CURVE keys). */
export class AuthError extends ClusterError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_AUTH', message, options)
  }
}

/** `cluster.config.*` could not be found, loaded, or holds a bad value; the message names the file and field. */
export class ConfigError extends ClusterError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CONFIG', message, options)
  }
}

/** One problem of a hosts file: its line and what is wrong with it. */
export interface HostsFileProblem {
  line: number
  reason: string
}

/** A hosts file with malformed lines; `problems` lists every bad line, the message names file and line of each. */
export class HostsFileError extends ClusterError {
  readonly file: string
  readonly problems: readonly HostsFileProblem[]
  constructor(file: string, problems: readonly HostsFileProblem[], message?: string) {
    super('ERR_HOSTS_FILE', message ?? problems.map((p) => `${file}:${p.line}: ${p.reason}`).join('\n'))
    this.file = file
    this.problems = problems
  }
}

/** Why an SSH step failed: the host did not answer, refused the key, had an unknown host key, took too long... */
export type SshFailure = 'unreachable' | 'auth' | 'host-key' | 'timeout' | 'no-ssh' | 'failed'

/** An SSH (or rsync over SSH) step to one host failed; `host` names it, `reason` says how. */
export class SshError extends ClusterError {
  readonly host: string
  readonly reason: SshFailure
  constructor(host: string, reason: SshFailure, message: string, options?: { cause?: unknown }) {
    super('ERR_SSH', message, options)
    this.host = host
    this.reason = reason
  }
}

/** What a host lacks to run an agent. */
export type HostSetupProblem = 'no-node' | 'old-node' | 'no-actor-cluster' | 'version' | 'no-rsync' | 'sync' | 'no-tasks' | 'dir' | 'bad-reply'

/** A host was reached but cannot run an agent: no Node.js, no actor-cluster or another version, no rsync... */
export class HostSetupError extends ClusterError {
  readonly host: string
  readonly reason: HostSetupProblem
  constructor(host: string, reason: HostSetupProblem, message: string) {
    super('ERR_HOST_SETUP', message)
    this.host = host
    this.reason = reason
  }
}

/** An agent started on a host but exited, or did not register with the head in time; `log` is the end of its output. */
export class AgentStartError extends ClusterError {
  readonly host: string
  readonly reason: 'exited' | 'not-registered'
  readonly log: string
  constructor(host: string, reason: 'exited' | 'not-registered', message: string, log: string) {
    super('ERR_AGENT_START', message)
    this.host = host
    this.reason = reason
    this.log = log
  }
}

/** How an error travels inside a result frame. */
export interface WireError {
  name: string
  message: string
  stack?: string | undefined
  code?: string | undefined
  data?: unknown
}

export function toWireError(err: unknown): WireError {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    return {
      name: err.name,
      message: err.message,
      stack: err.stack,
      code: typeof code === 'string' ? code : undefined,
    }
  }
  return { name: 'Error', message: `non-error thrown: ${thrownText(err)}` }
}

/** A thrown value that is no Error, as text that keeps what it holds (`{ code: 42 }`, not `[object Object]`). */
function thrownText(v: unknown): string {
  if (typeof v === 'string') return v
  try {
    return inspect(v, { depth: 2, breakLength: Infinity })
  } catch {
    return safeString(v)
  }
}

/** Validates an error record received from the network; never throws. */
export function fromWire(value: unknown): WireError {
  if (value === null || typeof value !== 'object') return { name: 'Error', message: safeString(value) }
  const v = value as Record<string, unknown>
  return {
    name: typeof v['name'] === 'string' ? v['name'] : 'Error',
    message: typeof v['message'] === 'string' ? v['message'] : 'remote error without a message',
    stack: typeof v['stack'] === 'string' ? v['stack'] : undefined,
    code: typeof v['code'] === 'string' ? v['code'] : undefined,
  }
}

type ErrorClass = new (message: string) => ClusterError
const RUNTIME_CLASSES: Partial<Record<string, ErrorClass>> = {
  ERR_UNKNOWN_TASK: UnknownTaskError,
  ERR_UNKNOWN_ACTOR: UnknownActorError,
  ERR_UNKNOWN_METHOD: UnknownMethodError,
  ERR_SERIALIZATION: SerializationError,
  ERR_TASKS_MODULE: TasksModuleError,
  ERR_ACTOR_STOPPED: ActorStoppedError,
  ERR_ACTOR_LOST: ActorLostError,
  ERR_WORKER_CRASHED: WorkerCrashedError,
  ERR_OUT_OF_MEMORY: OutOfMemoryError,
  ERR_TIMEOUT: TaskTimeoutError,
  ERR_NODE_LOST: NodeLostError,
  ERR_COMBINER: CombinerError,
  ERR_INVALID_ARGUMENT: InvalidArgumentError,
  ERR_CANCELLED: TaskCancelledError,
  ERR_CLUSTER_CLOSED: ClusterClosedError,
}

/**
 * Rebuilds an error received in a result. `runtime` says the agent's runtime
 * raised it (unknown task, unserialisable result...): it comes back as its own
 * class. Anything the user's code threw comes back as a {@link RemoteTaskError}.
 */
export function rebuildError(task: string, wire: WireError, runtime: boolean, node?: string): ClusterError {
  const code = runtime ? wire.code : undefined
  const Cls = code !== undefined ? RUNTIME_CLASSES[code] : undefined
  let err: ClusterError
  if (Cls) err = new Cls(wire.message)
  else if (code === 'ERR_SHARED_TOO_LARGE' || code === 'ERR_SHARED_RELEASED' || code === 'ERR_SHARED_IN_USE') err = new SharedValueError(code, wire.message)
  else return new RemoteTaskError(task, wire, node)
  if (wire.stack) err.stack = wire.stack
  return err
}

function listNames(names: readonly string[]): string {
  return names.length === 0 ? 'nothing' : names.map((n) => `"${n}"`).join(', ')
}

/** An unknown thrown value or rejection reason as text; never throws (an object without a usable toString gets its tag). */
export function safeString(v: unknown): string {
  try {
    return String(v)
  } catch {
    return Object.prototype.toString.call(v)
  }
}
