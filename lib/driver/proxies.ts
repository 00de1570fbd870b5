import type { ActorRef, TasksProxy } from './types.js'

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
