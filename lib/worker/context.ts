/**
 * The cluster as code in a pool thread or an actor host thread sees it
 * (`import { context } from 'actor-cluster/worker'`): calls, maps, spawns,
 * look-ups and shared values go to the driver through the thread's agent, and
 * come back as the driver's ordinary calls would. The thread running a batch
 * says which agent it serves ({@link bindAgent}); an actor host thread also
 * says which actor runs ({@link runAs}).
 */
import type { AsyncLocalStorage } from 'node:async_hooks'
import { threadId } from 'node:worker_threads'
import { ContextOp } from '../protocol/messages.js'
import { setActorRefResolver } from '../protocol/actor-ref.js'
import { SharedRef } from '../protocol/shared-ref.js'
import { InvalidArgumentError } from '../errors.js'
import { makeActorRef, makeTasksProxy } from '../driver/proxies.js'
import { checkInputs } from '../driver/map.js'
import { CONTEXT_MAP_KEYS } from '../driver/option-keys.js'
import { notAnOptionsObject, unknownKey } from '../util/known-keys.js'
import type { ActorRef, SpawnOptions, TaskOptions, TasksProxy } from '../driver/types.js'
import { Link } from './link.js'

/** What a thread knows of the cluster it serves. */
export interface ThreadInfo {
  /** The agent's link key (its channels' names). */
  link: string
  /** The node id the driver gave the agent. */
  nodeId: string | undefined
  /** The cluster's options that make sense in a thread. */
  options: ContextOptions
  /**
   * Requests a thread sends up at once, before its turn ends, so the agent
   * starts on them while it makes the rest (0: all at the end of the turn).
   */
  sendAhead: number
}

/** The cluster's options as a thread sees them. */
export interface ContextOptions {
  /** Threads of this node's pool. */
  readonly threads: number
  /** Largest message on the wire, in bytes. */
  readonly maxFrameBytes: number
  /** The transport design. */
  readonly transport: string
}

/** Options of a view: `context.with({ ... })`; as `cluster.with`, without `signal` (a thread's abort cannot reach the driver). */
export type ContextViewOptions = Omit<TaskOptions, 'signal'> & SpawnOptions & { maxRestarts?: number; restartWindowMs?: number }

/** Options of `context.map`. */
export interface ContextMapOptions extends Omit<TaskOptions, 'signal'> {
  /** Yield in input order (default true) or as results come. */
  ordered?: boolean
  /** Most inputs taken and not yet yielded. Default 1024. */
  concurrency?: number
}

/** The calls of `context` under options. */
export interface ContextView {
  call<R = unknown>(name: string, ...args: unknown[]): Promise<R>
  tasks<M extends object>(): TasksProxy<M>
  map<R = unknown>(name: string, inputs: Iterable<unknown> | AsyncIterable<unknown>, options?: ContextMapOptions): AsyncGenerator<R, void, undefined>
  spawn<T extends object>(className: string, ...args: unknown[]): Promise<ActorRef<T>>
}

/** `context`: the cluster from inside a task or an actor method. */
export interface WorkerContext extends ContextView {
  with(options: ContextViewOptions): ContextView
  /** The live actor registered under `name` (a round trip); rejects with ActorNameError (`ERR_ACTOR_NOT_FOUND`). */
  actor<T extends object>(name: string): Promise<ActorRef<T>>
  /** Puts a value on the cluster, as `cluster.put`; the handle's `release()` frees it. */
  put<T>(value: T): Promise<SharedRef<T>>
  /** Inside an actor's method: its own reference (across awaits too). Undefined in a task. */
  readonly self: ActorRef<object> | undefined
  /** The node this code runs on (undefined outside a cluster's thread). */
  readonly nodeId: string | undefined
  readonly options: ContextOptions | undefined
}

let info: ThreadInfo | undefined
const links = new Map<string, Link>()

/** The batch about to run serves this agent. */
export function bindAgent(next: ThreadInfo): void {
  info = next
}

/** The actor whose method runs (set by an actor host thread, which also makes the store). */
let actorStore: AsyncLocalStorage<ActorRef<object>> | undefined

/** An actor host thread: `context.self` reads the actor from this store. */
export function useActorStore(store: AsyncLocalStorage<ActorRef<object>>): void {
  actorStore = store
}

function link(): Link {
  const i = info
  if (!i) throw new InvalidArgumentError('context is only available inside a task or an actor method running on a cluster thread')
  let l = links.get(i.link)
  if (!l) links.set(i.link, (l = new Link(i.link, i.sendAhead)))
  return l
}

/** The link of the agent this thread serves, if it made one (a seceded task's late result goes there). */
export function currentLink(): Link {
  return link()
}

/**
 * Delivers a message to an actor of this very thread without a hop (an actor
 * host thread installs it): a promise of the answer for an ask, true for a
 * tell, undefined when the actor does not live here.
 */
export type LocalDelivery = (id: string, method: string, args: unknown[], ask: boolean) => Promise<unknown> | true | undefined

let local: LocalDelivery | undefined

/** An actor host thread: messages to its own actors stay in the thread. */
export function useLocalDelivery(deliver: LocalDelivery): void {
  local = deliver
}

/** A tell delivered inside the thread failed: the driver reports it as `actor:error`. */
export function toldFailed(id: string, method: string, error: unknown): void {
  link().send(ContextOp.ToldFailed, [id, method, error], `the failure of a tell to ${id}`)
}

/** The reference of actor `id` in this thread: asks and tells go through the agent, or stay in the thread when the actor lives here. */
export function threadActorRef<T extends object>(id: string, name: string | undefined): ActorRef<T> {
  return makeActorRef<T>({
    id,
    name,
    node: () => '',
    send: (method, args) => {
      const here = local?.(id, method, args, true)
      return here === undefined ? link().request(ContextOp.Ask, [id, method, args], `${id}.${method}`) : (here as Promise<unknown>)
    },
    tell: (method, args) => {
      if (local?.(id, method, args, false) === undefined) link().send(ContextOp.Tell, [id, method, args], `${id}.${method}`)
    },
    stop: (force) =>
      link()
        .request(ContextOp.Stop, force ? [id, true] : [id], `stop ${id}`)
        .then(() => {}),
  })
}

// References decode in a thread as the thread's own.
setActorRefResolver((id, name) => threadActorRef(id, name))

/** Plain options for the wire (a signal cannot travel). */
function wireOptions(options: ContextViewOptions | undefined): Record<string, unknown> | null {
  if (options === undefined) return null
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError(`context.with options must be an object, got ${String(options)}`)
  if ('signal' in options && (options as { signal?: unknown }).signal !== undefined)
    throw new InvalidArgumentError('options.signal cannot be used in a thread: an abort there cannot reach the driver')
  return { ...options }
}

function parentOf(): string | undefined {
  return actorStore?.getStore()?.id
}

let views = 0

function view(options: ContextViewOptions | undefined): ContextView {
  const wire = wireOptions(options)
  // A spread view's spawns are one group on the driver, as `cluster.with({ spread: true })`'s are.
  if (wire?.['spread'] === true) wire['group'] = `${threadId}.${++views}`
  // Async: a call outside a cluster thread rejects rather than throws.
  const call = async (name: string, args: unknown[]): Promise<unknown> => {
    if (typeof name !== 'string') throw new InvalidArgumentError(`task name must be a string, got ${typeof name}`)
    return link().request(ContextOp.Call, [name, args, wire], `task "${name}"`)
  }
  return {
    call: <R>(name: string, ...args: unknown[]) => call(name, args) as Promise<R>,
    tasks: <M extends object>() => makeTasksProxy<M>(call),
    map: <R>(name: string, inputs: Iterable<unknown> | AsyncIterable<unknown>, mapOptions: ContextMapOptions = {}) =>
      mapInThread<R>(
        // The map's task options (timeoutMs, retries, maxRetries) over the view's, for each of its calls.
        (task) => {
          if (Object.keys(task).length === 0) return (args) => call(name, args) as Promise<R>
          const under = view({ ...options, ...task })
          return (args) => under.call<R>(name, ...args)
        },
        inputs,
        mapOptions,
      ),
    spawn: async <T extends object>(className: string, ...args: unknown[]) => {
      const parent = parentOf()
      const spawnOptions = parent === undefined ? wire : { ...wire, parent }
      return (await link().request(ContextOp.Spawn, [className, args, spawnOptions], `spawn of "${String(className)}"`)) as ActorRef<T>
    },
  }
}

/**
 * `map` in a thread: each input is one `call`, at most `concurrency` at once,
 * yielded in input order or as they settle. Every call is an ordinary task of
 * the driver's ledger, so retries and node loss are handled as for any task.
 */
async function* mapInThread<R>(
  callUnder: (task: Omit<TaskOptions, 'signal'>) => (args: unknown[]) => Promise<R>,
  inputs: Iterable<unknown> | AsyncIterable<unknown>,
  options: ContextMapOptions,
): AsyncGenerator<R, void, undefined> {
  const refused = notAnOptionsObject('context.map options', options) ?? unknownKey('context.map options', options, CONTEXT_MAP_KEYS)
  if (refused) throw refused
  checkInputs(inputs)
  const { concurrency = 1024, ordered = true, ...task } = options
  if (!Number.isSafeInteger(concurrency) || concurrency < 1)
    throw new InvalidArgumentError(`options.concurrency must be a positive integer, got ${String(options.concurrency)}`)
  if (typeof ordered !== 'boolean') throw new InvalidArgumentError(`options.ordered must be a boolean, got ${JSON.stringify(ordered)}`)
  const call = callUnder(task)
  type Slot = { done: boolean; ok: boolean; value: unknown }
  const window: Slot[] = []
  let wake: (() => void) | undefined
  const start = (input: unknown): Slot => {
    const slot: Slot = { done: false, ok: true, value: undefined }
    call(Array.isArray(input) ? input : [input])
      .then(
        (v) => Object.assign(slot, { done: true, value: v }),
        (e: unknown) => Object.assign(slot, { done: true, ok: false, value: e }),
      )
      .finally(() => wake?.())
    return slot
  }
  const next = async (): Promise<Slot> => {
    for (;;) {
      const i = ordered ? (window[0]?.done ? 0 : -1) : window.findIndex((s) => s.done)
      if (i >= 0) return window.splice(i, 1)[0]!
      await new Promise<void>((resolve) => (wake = resolve))
    }
  }
  for await (const input of inputs as AsyncIterable<unknown>) {
    window.push(start(input))
    while (window.length >= concurrency) {
      const s = await next()
      if (!s.ok) throw s.value
      yield s.value as R
    }
  }
  while (window.length > 0) {
    const s = await next()
    if (!s.ok) throw s.value
    yield s.value as R
  }
}

/** Releases a handle the driver keeps for this thread. */
const threadShared = {
  release: (ref: SharedRef) =>
    link()
      .request(ContextOp.Release, [ref.hash], `release of shared value ${ref.hash}`)
      .then(() => {}),
}

const plain = view(undefined)

export const context: WorkerContext = {
  ...plain,
  with: (options) => view(options),
  actor: async <T extends object>(name: string) => {
    if (typeof name !== 'string') throw new InvalidArgumentError(`actor name must be a string, got ${typeof name}`)
    return (await link().request(ContextOp.Lookup, [name], `look-up of actor "${name}"`)) as ActorRef<T>
  },
  put: async <T>(value: T) => {
    const [hash, size] = (await link().request(ContextOp.Put, [value], 'put')) as [string, number]
    return new SharedRef<T>(hash, size, threadShared)
  },
  get self() {
    return actorStore?.getStore()
  },
  get nodeId() {
    return info?.nodeId
  },
  get options() {
    return info?.options
  },
}
