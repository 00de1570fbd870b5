/**
 * `actor-cluster/worker`: the cluster from inside a task or an actor method.
 *
 * ```ts
 * import { context } from 'actor-cluster/worker'
 * export async function fib(n: number): Promise<number> {
 *   if (n < 2) return n
 *   const [a, b] = await Promise.all([context.call<number>('fib', n - 1), context.call<number>('fib', n - 2)])
 *   return a + b
 * }
 * ```
 */
export { context } from './context.js'
export type { WorkerContext, ContextView, ContextViewOptions, ContextMapOptions, ContextOptions } from './context.js'
export type { ActorRef, TasksProxy } from '../driver/types.js'
export { SharedRef } from '../protocol/shared-ref.js'
