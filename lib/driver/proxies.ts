/* eslint-disable @typescript-eslint/no-explicit-any */

type AnyFn = (...args: any[]) => any
type Promisified<F> = F extends (...args: infer A) => infer R ? (...args: A) => Promise<Awaited<R>> : never

/** The task functions of a tasks module, each returning a promise of its result. */
export type TasksProxy<M> = {
  readonly [K in keyof M as M[K] extends abstract new (...a: any[]) => any ? never : M[K] extends AnyFn ? K : never]: Promisified<M[K]>
}

/**
 * A reference to a running actor: each method of `T` as a message returning a
 * promise, plus `stop()`. (`stop` and `id` are the reference's own; an actor's
 * methods of those names are not reachable through it.)
 */
export type ActorRef<T> = {
  readonly [K in keyof T as K extends 'stop' | 'id' | 'node' ? never : T[K] extends AnyFn ? K : never]: Promisified<T[K]>
} & {
  /** The actor's cluster-wide id. */
  readonly id: string
  /** The node the actor lives on. */
  readonly node: string
  /** Lets queued messages finish, then removes the actor. Later calls reject with ActorStoppedError. */
  stop(): Promise<void>
}

type Send = (name: string, args: unknown[]) => Promise<unknown>

// `then` must stay undefined, or `await proxy` would treat the proxy as a promise.
const NOT_METHODS = new Set<string | symbol>(['then', 'catch', 'finally', 'toJSON', 'constructor', Symbol.toPrimitive, Symbol.toStringTag])

export function makeTasksProxy<M extends object>(send: Send): TasksProxy<M> {
  return new Proxy(Object.create(null) as object, {
    get(_target, prop) {
      if (typeof prop !== 'string' || NOT_METHODS.has(prop)) return undefined
      return (...args: unknown[]) => send(prop, args)
    },
  }) as TasksProxy<M>
}

export function makeActorRef<T extends object>(id: string, node: () => string, send: Send, stop: () => Promise<void>): ActorRef<T> {
  return new Proxy(Object.create(null) as object, {
    get(_target, prop) {
      if (prop === 'id') return id
      if (prop === 'node') return node()
      if (prop === 'stop') return stop
      if (typeof prop !== 'string' || NOT_METHODS.has(prop)) return undefined
      return (...args: unknown[]) => send(prop, args)
    },
  }) as ActorRef<T>
}
