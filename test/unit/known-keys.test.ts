import { test } from 'node:test'
import assert from 'node:assert/strict'
import { checkKnownKeys, unknownKey } from '../../lib/util/known-keys.js'
import { InvalidArgumentError } from '../../lib/errors.js'

const KNOWN = { threads: true, timeoutMs: true, concurrency: true, restart: true, maxRestarts: true } as const

test('known keys pass; an unknown one is named with the nearest known one and the list', () => {
  assert.equal(unknownKey('options', { threads: 1, timeoutMs: 2 }, KNOWN), undefined)
  assert.equal(unknownKey('options', {}, KNOWN), undefined)
  const cases: [key: string, near: string | undefined][] = [
    ['thread', 'threads'], // a prefix
    ['timeout', 'timeoutMs'], // a prefix, the unit left out
    ['concurency', 'concurrency'], // one letter missing
    ['Threads', 'threads'], // case
    ['maxRestart', 'maxRestarts'],
    ['colour', undefined], // nothing near
  ]
  for (const [key, near] of cases) {
    const err = unknownKey('map options', { threads: 1, [key]: 1 }, KNOWN)
    assert.ok(err instanceof InvalidArgumentError, key)
    const hint = near === undefined ? '' : ` (did you mean "${near}"?)`
    assert.equal(err.message, `map options: unknown option "${key}"${hint}; known: threads, timeoutMs, concurrency, restart, maxRestarts`)
  }
  assert.throws(() => checkKnownKeys('options', { nope: 1 }, KNOWN), /^InvalidArgumentError: options: unknown option "nope"/)
  assert.doesNotThrow(() => checkKnownKeys('options', { restart: 'always' }, KNOWN))
})
