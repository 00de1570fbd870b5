import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Deque } from '../../lib/util/deque.js'

test('deque is FIFO with unshift at the front, across compaction', () => {
  const d = new Deque<number>()
  for (let i = 0; i < 5000; i++) d.push(i)
  for (let i = 0; i < 3000; i++) assert.equal(d.shift(), i)
  d.unshift(-1)
  assert.equal(d.length, 2001)
  assert.equal(d.peek(), -1)
  assert.equal(d.shift(), -1)
  assert.deepEqual([...d].slice(0, 2), [3000, 3001])
  assert.equal(d.clear().length, 2000)
  assert.equal(d.shift(), undefined)
  d.unshift(7)
  assert.equal(d.shift(), 7)
})
