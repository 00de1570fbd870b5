import { ActorRefBase } from '../protocol/actor-ref.js'
import { checkKnownKeys, notAnOptionsObject } from '../util/known-keys.js'
import { booleanOption } from '../validate.js'
import type { ActorRef, StopOptions, TasksProxy } from './types.js'

type Send = (name: string, args: unknown[]) => Promise<unknown>

// `then` must stay undefined, or `await proxy` would treat the proxy as a promise.
const NOT_METHODS = new Set<string | symbol>(['then', 'catch', 'finally', 'toJSON', 'constructor', Symbol.toPrimitive, Symbol.toStringTag])

/** Method functions a proxy keeps, by name; past this it starts again (a program calls few names). */
const MAX_METHODS = 256

/**
 * The method functions of one proxy, made once per name: `proxy.add(1, 2)`
 * in a loop makes no closure per call, and `proxy.add === proxy.add`. As a
 * string (`${proxy}`, `String(proxy)`) it is `text`: else the conversion
 * would call `toString` and `valueOf` as remote methods, whose rejections
 * nobody would handle.
 */
function methods(make: (name: string) => (...args: unknown[]) => unknown, text: () => string): (prop: string | symbol) => unknown {
  // Made on first use: an actor reference never called costs no map.
  let made: Map<string, (...args: unknown[]) => unknown> | undefined
  return (prop) => {
    if (prop === Symbol.toPrimitive) return text
    if (typeof prop !== 'string' || NOT_METHODS.has(prop)) return undefined
    made ??= new Map()
    let m = made.get(prop)
    if (m === undefined) {
      if (made.size >= MAX_METHODS) made.clear()
      m = make(prop)
      made.set(prop, m)
    }
    return m
  }
}

export function makeTasksProxy<M extends object>(send: Send): TasksProxy<M> {
  const method = methods(
    (name) =>
      (...args: unknown[]) =>
        send(name, args),
    () => '[cluster tasks]',
  )
  return new Proxy(Object.create(null) as object, {
    get: (_target, prop) => method(prop),
  }) as TasksProxy<M>
}

export interface ActorRefParts {
  id: string
  name: string | undefined
  node: () => string
  send: Send
  tell: (name: string, args: unknown[]) => void
  /** `force`: at once, not after the actor's queued messages. */
  stop: (force: boolean) => Promise<void>
}

const STOP_KEYS: Readonly<Record<keyof StopOptions, true>> = { force: true }

/** Whether `ref.stop(options)` stops at once; options that are none are an InvalidArgumentError. */
function stopsAtOnce(options: unknown): boolean {
  if (options === undefined) return false
  const notObject = notAnOptionsObject('stop options', options)
  if (notObject) throw notObject
  checkKnownKeys('stop options', options as object, STOP_KEYS)
  return booleanOption('force', (options as StopOptions).force) ?? false
}

export function makeActorRef<T extends object>(p: ActorRefParts): ActorRef<T> {
  const tellMethod = methods(
    (name) =>
      (...args: unknown[]) =>
        p.tell(name, args),
    () => `[actor ${p.id} tell]`,
  )
  const tell = new Proxy(Object.create(null) as object, {
    get: (_target, prop) => tellMethod(prop),
  })
  const sendMethod = methods(
    (name) =>
      (...args: unknown[]) =>
        p.send(name, args),
    () => `[actor ${p.id}]`,
  )
  // Async: options that are none reject rather than throw.
  const stop = async (options?: StopOptions): Promise<void> => p.stop(stopsAtOnce(options))
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
          return stop
        case 'tell':
          return tell
      }
      return sendMethod(prop)
    },
  }) as ActorRef<T>
}
