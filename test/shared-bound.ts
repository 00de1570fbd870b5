/**
 * What the shared-input bound tests share, on every design: an agent whose
 * cache (20,000 bytes) holds one of two values (16,000 and 15,992 bytes) at a
 * time; a slow task keeps the first in use while a task needs the second.
 */
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { SharedValueError, type Agent, type Cluster } from '../lib/index.js'
import { waitFor, within } from './helpers.js'

type Info = { sum: number }

function ramp(n: number): Float64Array {
  const a = new Float64Array(n)
  for (let i = 0; i < n; i++) a[i] = i
  return a
}

/**
 * The task that needs the second value while the first is in use fails with
 * ERR_SHARED_TOO_LARGE naming the agent and matching `message`; the slow task
 * runs; once it settled the second value goes; the agent never held more
 * than its bound. `running` says when the slow task runs on the agent.
 */
export async function secondValueWhileFirstInUse(t: TestContext, cluster: Cluster, agent: Agent, running: () => boolean, message: RegExp): Promise<void> {
  let most = 0
  const watch = setInterval(() => (most = Math.max(most, agent.stats.sharedBytes)), 1)
  t.after(() => clearInterval(watch))
  const a = await cluster.put(ramp(2000))
  const b = await cluster.put(ramp(1999))
  const slow = cluster.call<Info>('sharedInfo', a, 0, 1_500)
  await waitFor(() => agent.stats.sharedValues === 1 && running(), 10_000, 'the slow task to run')
  await assert.rejects(
    within(cluster.call<Info>('sharedInfo', b, 1), 10_000, 'the task to fail'),
    (e: unknown) => e instanceof SharedValueError && e.code === 'ERR_SHARED_TOO_LARGE' && e.message.includes(agent.id) && message.test(e.message),
  )
  assert.equal((await slow).sum, (2000 * 1999) / 2)
  // Nothing in use now: the first value is dropped, and the second goes.
  assert.equal((await within(cluster.call<Info>('sharedInfo', b, 2), 15_000, 'the task')).sum, (1999 * 1998) / 2)
  clearInterval(watch)
  assert.ok(most <= 20_000, `the node held ${most} bytes`)
}
