import { ActorRefBase } from '../protocol/actor-ref.js'
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

export interface ActorRefParts {
  id: string
  name: string | undefined
  node: () => string
  send: Send
  tell: (name: string, args: unknown[]) => void
  stop: () => Promise<void>
}

export function makeActorRef<T extends object>(p: ActorRefParts): ActorRef<T> {
  const tell = new Proxy(Object.create(null) as object, {
    get(_target, prop) {
      if (typeof prop !== 'string' || NOT_METHODS.has(prop)) return undefined
      return (...args: unknown[]) => p.tell(prop, args)
    },
  })
  // Over an ActorRefBase: the encoder knows a reference by its prototype chain, and sends it as its id.
  return new Proxy(Object.create(ActorRefBase.prototype) as object, {
    get(_target, prop) {
      switch (prop) {
        case 'id':
          return p.id
        case 'name':
          return p.name
        case 'node':
          return p.node()
        case 'stop':
          return p.stop
        case 'tell':
          return tell
      }
      if (typeof prop !== 'string' || NOT_METHODS.has(prop)) return undefined
      return (...args: unknown[]) => p.send(prop, args)
    },
  }) as ActorRef<T>
}
