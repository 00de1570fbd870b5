/**
 * The typed proxies of `cluster.tasks()` and actor references: each property
 * is a method sending its name and arguments, made once per name.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { makeActorRef, makeTasksProxy } from '../../lib/driver/proxies.js'

interface Calc {
  add(a?: unknown, b?: unknown): unknown
  mul(): unknown
}
interface Counter {
  inc(...by: number[]): number
}

test('tasks proxy: a method sends its name and arguments, and is the same function each time it is read', async () => {
  const sent: [string, unknown[]][] = []
  const t = makeTasksProxy<Calc>((name, args) => {
    sent.push([name, args])
    return Promise.resolve(name)
  })
  const add = t.add
  assert.equal(t.add, add)
  assert.notEqual(t.mul, add)
  assert.equal(await add(1, 2), 'add')
  assert.equal(await t.mul(), 'mul')
  assert.equal(await t.add(undefined), 'add')
  assert.deepEqual(sent, [
    ['add', [1, 2]],
    ['mul', []],
    ['add', [undefined]],
  ])
  // Not methods: a proxy is not a promise (await would call then), and symbols are nothing.
  for (const p of ['then', 'catch', 'finally', 'toJSON', 'constructor']) assert.equal((t as Record<string, unknown>)[p], undefined, p)
  assert.equal(await Promise.resolve(t), t)
})

test('a proxy read as a string is a label, not calls of toString and valueOf sent to the cluster', () => {
  const sent: string[] = []
  const send = (name: string) => {
    sent.push(name)
    return Promise.resolve()
  }
  const t = makeTasksProxy<Calc>(send)
  const ref = makeActorRef<Counter>({ id: 'a1', name: undefined, node: () => 'n1', send, tell: (name) => void sent.push(name), stop: () => Promise.resolve() })
  // As JavaScript converts any value to a string; the types do not say a proxy has a label.
  const asText = (v: unknown) => `${v as string}`
  assert.equal(asText(t), '[cluster tasks]')
  assert.equal(`${asText(ref)} ${asText(ref.tell)}`, '[actor a1] [actor a1 tell]')
  assert.equal(String(t as unknown as string), '[cluster tasks]')
  assert.deepEqual(sent, [])
  // Asked for by name, they are still methods of the actor (or tasks) like any other.
  void (ref as unknown as { toString(): Promise<unknown> }).toString()
  assert.deepEqual(sent, ['toString'])
})

test('tasks proxy: past the names it keeps, every name still sends itself', async () => {
  const sent: string[] = []
  const t = makeTasksProxy<Record<string, () => void>>((name) => {
    sent.push(name)
    return Promise.resolve()
  })
  const names = Array.from({ length: 600 }, (_, i) => `f${i}`)
  for (const n of names) await t[n]!()
  for (const n of names) await t[n]!()
  assert.deepEqual(sent, [...names, ...names])
  // Kept again once read after the cache started over.
  assert.equal(t['f599'], t['f599'])
})

test('actor reference: calls and tells send their name and arguments, each method made once; id, name, node and stop as given', async () => {
  const calls: [string, unknown[]][] = []
  const tells: [string, unknown[]][] = []
  const stops: boolean[] = []
  const stop = (force: boolean) => {
    stops.push(force)
    return Promise.resolve()
  }
  const ref = makeActorRef<Counter>({
    id: 'a1',
    name: 'counter',
    node: () => 'n1',
    send: (name, args) => {
      calls.push([name, args])
      return Promise.resolve(args.length)
    },
    tell: (name, args) => void tells.push([name, args]),
    stop,
  })
  assert.equal(ref.inc, ref.inc)
  assert.equal(ref.tell.inc, ref.tell.inc)
  assert.notEqual(ref.tell.inc, ref.inc)
  assert.equal(await ref.inc(5, 6), 2)
  ref.tell.inc(7)
  assert.deepEqual(calls, [['inc', [5, 6]]])
  assert.deepEqual(tells, [['inc', [7]]])
  assert.equal(ref.id, 'a1')
  assert.equal(ref.name, 'counter')
  assert.equal(ref.node, 'n1')
  // stop passes whether to stop at once, and refuses options that are none before anything is sent.
  await ref.stop()
  await ref.stop({ force: true })
  await ref.stop({ force: false })
  assert.deepEqual(stops, [false, true, false])
  await assert.rejects(ref.stop({ force: 1 } as never), /options\.force must be a boolean, got 1/)
  await assert.rejects(ref.stop(null as never), /stop options must be an object, got null/)
  assert.deepEqual(stops, [false, true, false])
  assert.equal((ref as unknown as Record<string, unknown>)['then'], undefined)
  assert.equal((ref.tell as unknown as Record<string, unknown>)['then'], undefined)
})
