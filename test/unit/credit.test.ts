import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Credit, MAX_PER_THREAD, START_PER_THREAD, prefetchFor, shouldAnnounce, windowFor } from '../../lib/agent/credit.js'

test('the window is about targetQueueMs of work per thread, within its bounds', () => {
  // 20 ms per thread at 0.1 ms a task: 200 tasks per thread.
  assert.equal(windowFor(0.1, 4, 20), 800)
  // Slow tasks: never below the starting depth.
  assert.equal(windowFor(50, 4, 20), START_PER_THREAD * 4)
  // Tiny (or unmeasurably fast) tasks: never above the cap.
  assert.equal(windowFor(0.0001, 2, 20), MAX_PER_THREAD * 2)
  assert.equal(windowFor(0, 2, 20), MAX_PER_THREAD * 2)
})

test('a new window is announced after a change of more than a quarter, or when none was sent', () => {
  assert.equal(shouldAnnounce(10, -1), true)
  assert.equal(shouldAnnounce(10, 0), true)
  assert.equal(shouldAnnounce(125, 100), false)
  assert.equal(shouldAnnounce(126, 100), true)
  assert.equal(shouldAnnounce(75, 100), false)
  assert.equal(shouldAnnounce(74, 100), true)
})

test('the prefetch is the window in frames, plus one frame per thread; zero stops taking', () => {
  assert.equal(prefetchFor(0, 10, 4), 0)
  assert.equal(prefetchFor(100, 10, 4), 14)
  assert.equal(prefetchFor(101, 10, 4), 15)
  assert.equal(prefetchFor(8, 1, 2), 10)
})

test('Credit grows the window for fast tasks and shrinks it for slow ones, smoothing the measure', () => {
  const c = new Credit(2, 20)
  assert.equal(c.window, 2 * START_PER_THREAD)
  assert.equal(c.announce(false).window, 4)
  // 1,000 tasks in 10 ms: 0.01 ms each, 2,000 tasks per thread.
  assert.equal(c.measured(10, 1000), true)
  assert.equal(c.window, 4000)
  c.announce(false)
  // The same again: no change, nothing to announce.
  assert.equal(c.measured(10, 1000), false)
  // A batch of slow tasks moves the average by 30% of the way only.
  assert.equal(c.measured(100, 2), true)
  // 0.7 × 0.01 + 0.3 × 50 = 15.007 ms a task: the floor.
  assert.equal(c.window, 2 * START_PER_THREAD)
  // An empty batch measures nothing.
  assert.equal(c.measured(5, 0), false)
  assert.equal(c.window, 2 * START_PER_THREAD)
})

test('Credit announces 0 while leaving, and announces again whatever the window after a reset', () => {
  const c = new Credit(1, 20)
  c.measured(1, 100) // 0.01 ms a task: 2,000
  assert.deepEqual(c.announce(false), { window: 2000, prefetch: 2001 })
  assert.equal(c.measured(1, 100), false)
  assert.deepEqual(c.announce(true), { window: 0, prefetch: 0 })
  // After announcing 0, any window is news.
  assert.equal(c.measured(1, 100), true)
  c.announce(false)
  c.reset()
  assert.equal(c.measured(1, 100), true)
})

test('Credit turns the window into frames by the tasks per frame taken lately', () => {
  const c = new Credit(2, 20)
  c.measured(1, 100) // 2 × 2,000 = 4,000 tasks
  for (let i = 0; i < 60; i++) c.frameTaken(100)
  const { window, prefetch } = c.announce(false)
  assert.equal(window, 4000)
  // A little under 100 tasks a frame (the average approaches it): 41 frames, plus one per thread.
  assert.equal(prefetch, 43)
  for (let i = 0; i < 60; i++) c.frameTaken(1000)
  // About 1,000 a frame now: 5 frames, plus one per thread.
  assert.equal(c.announce(false).prefetch, 7)
})

test('windowFor rounds to the nearest task and clamps at exactly the bounds', () => {
  // 20 / 0.3 = 66.67 tasks per thread: 67.
  assert.equal(windowFor(0.3, 1, 20), 67)
  // 20 / 0.35 = 57.14: 57.
  assert.equal(windowFor(0.35, 1, 20), 57)
  // 20 ms at 10 ms a task is exactly the starting depth; at 20/4096 ms exactly the cap.
  assert.equal(windowFor(10, 3, 20), 6)
  assert.equal(windowFor(20 / 4096, 1, 20), 4096)
  assert.equal(windowFor(20 / 4095, 1, 20), 4095)
  assert.equal(windowFor(20 / 3, 1, 20), 3)
})

test('an empty or negative batch measures nothing; a first batch is taken as is', () => {
  const c = new Credit(1, 20)
  assert.equal(c.measured(10, -1), false)
  assert.equal(c.window, START_PER_THREAD)
  // First measure: 0.1 ms a task, unsmoothed: 200.
  assert.equal(c.measured(10, 100), true)
  assert.equal(c.window, 200)
  c.announce(false)
  // Then 0.7 × 0.1 + 0.3 × 0.2 = 0.13 ms a task: 20 / 0.13 = 153.8, 154 (−23%, not announced).
  assert.equal(c.measured(20, 100), false)
  assert.equal(c.window, 154)
})

test('frames of no tasks count as one task a frame', () => {
  const c = new Credit(1, 20)
  c.measured(1, 100) // 2,000
  for (let i = 0; i < 10; i++) c.frameTaken(0)
  assert.deepEqual(c.announce(false), { window: 2000, prefetch: 2001 })
  // One frame of 6: 0.8 + 1.2 = 2 tasks a frame.
  c.frameTaken(6)
  assert.equal(c.announce(false).prefetch, 1001)
})
