/**
 * The per-call options: defaults, and the message for each bad field.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MAP_DEFAULTS, resolveMapOptions, resolveSpawnOptions, resolveTaskOptions, SPAWN_DEFAULTS } from '../../lib/driver/task-options.js'
import type { MapOptions, SpawnOptions, TaskOptions } from '../../lib/driver/types.js'
import { rejects } from './fixtures.js'

const bad = <T>(o: Record<string, unknown>) => o as T

test('resolveTaskOptions: defaults, the cluster maxRetries, a frozen object', () => {
  const r = resolveTaskOptions({}, 3)
  assert.deepEqual(r, { timeoutMs: undefined, retries: 0, maxRetries: 3, signal: undefined })
  assert.ok(Object.isFrozen(r))
  assert.equal(resolveTaskOptions({}, 7).maxRetries, 7)
  const ac = new AbortController()
  assert.deepEqual(resolveTaskOptions({ timeoutMs: 1, retries: 2, maxRetries: 0, signal: ac.signal }, 3), {
    timeoutMs: 1,
    retries: 2,
    maxRetries: 0,
    signal: ac.signal,
  })
  assert.notEqual(resolveTaskOptions({}, 3), resolveTaskOptions({}, 3), 'one object per view')
  const node = {}
  const asked = resolveTaskOptions({ retries: 1 }, 3, node)
  assert.deepEqual(asked, { timeoutMs: undefined, retries: 1, maxRetries: 3, signal: undefined, submitter: node })
  assert.equal(asked.submitter, node, 'the very node')
  assert.ok(Object.isFrozen(asked))
  assert.ok(!('submitter' in r), "no submitter key for the driver's own calls")
})

test('resolveTaskOptions: each bad field is named', () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ timeoutMs: 0 }, 'options.timeoutMs must be a positive integer, got 0'],
    [{ timeoutMs: 1.5 }, 'options.timeoutMs must be a positive integer, got 1.5'],
    [{ timeoutMs: '100' }, 'options.timeoutMs must be a positive integer, got "100"'],
    [{ timeoutMs: Number.NaN }, 'options.timeoutMs must be a positive integer, got NaN'],
    [{ retries: -1 }, 'options.retries must be a non-negative integer, got -1'],
    [{ retries: 0.5 }, 'options.retries must be a non-negative integer, got 0.5'],
    [{ retries: null }, 'options.retries must be a non-negative integer, got null'],
    [{ maxRetries: -2 }, 'options.maxRetries must be a non-negative integer, got -2'],
    [{ maxRetries: 'x' }, 'options.maxRetries must be a non-negative integer, got "x"'],
    [{ maxRetries: Infinity }, 'options.maxRetries must be a non-negative integer, got Infinity'],
    [{ signal: {} }, 'options.signal must be an AbortSignal'],
    [{ signal: 'abort' }, 'options.signal must be an AbortSignal'],
  ]
  for (const [o, message] of cases) rejects(() => resolveTaskOptions(bad<TaskOptions>(o), 3), message)
})

test('resolveSpawnOptions: restart never (default) or always, its budget; name, node, spread', () => {
  const none = { maxRestarts: 10, restartWindowMs: 60_000, restartBackoffMs: 100, restartBackoffMaxMs: 5_000, name: undefined, node: undefined, spread: false }
  assert.deepEqual(resolveSpawnOptions({}), { restart: false, ...none })
  assert.deepEqual(resolveSpawnOptions({}), SPAWN_DEFAULTS)
  assert.deepEqual(resolveSpawnOptions({ restart: 'never' }), { restart: false, ...none })
  assert.deepEqual(resolveSpawnOptions({ restart: 'always' }), { restart: true, ...none })
  assert.deepEqual(resolveSpawnOptions({ restart: 'always', maxRestarts: 0, restartWindowMs: 1 }), {
    ...none,
    restart: true,
    maxRestarts: 0,
    restartWindowMs: 1,
  })
  assert.deepEqual(resolveSpawnOptions({ name: 'n', node: 'a' }), { ...none, restart: false, name: 'n', node: 'a' })
  assert.deepEqual(resolveSpawnOptions({ spread: true }), { ...none, restart: false, spread: true })
  rejects(() => resolveSpawnOptions(bad<SpawnOptions>({ restart: 'sometimes' })), "options.restart must be 'never' or 'always', got sometimes")
  rejects(() => resolveSpawnOptions(bad<SpawnOptions>({ restart: true })), "options.restart must be 'never' or 'always', got true")
  rejects(() => resolveSpawnOptions(bad<SpawnOptions>({ name: 7 })), 'options.name must be a non-empty string, got 7')
  rejects(() => resolveSpawnOptions({ node: '' }), 'options.node must be a non-empty string, got ""')
  rejects(() => resolveSpawnOptions(bad<SpawnOptions>({ spread: 'yes' })), 'options.spread must be a boolean, got "yes"')
  rejects(() => resolveSpawnOptions({ spread: true, node: 'a' }), 'options.spread and options.node cannot be combined: a pinned actor is not spread')
  rejects(() => resolveSpawnOptions({ restart: 'always', maxRestarts: -1 }), 'options.maxRestarts must be a non-negative integer, got -1')
  rejects(() => resolveSpawnOptions({ restart: 'always', maxRestarts: 1.5 }), 'options.maxRestarts must be a non-negative integer, got 1.5')
  rejects(() => resolveSpawnOptions({ restart: 'always', restartWindowMs: 0 }), 'options.restartWindowMs must be an integer from 1 to 2147483647, got 0')
  rejects(
    () => resolveSpawnOptions({ restart: 'always', restartWindowMs: 2 ** 31 }),
    'options.restartWindowMs must be an integer from 1 to 2147483647, got 2147483648',
  )
  rejects(() => resolveSpawnOptions({ maxRestarts: 3 }), "options.maxRestarts is a restart budget: it needs restart: 'always'")
  rejects(() => resolveSpawnOptions({ restart: 'never', restartWindowMs: 1000 }), "options.restartWindowMs is a restart budget: it needs restart: 'always'")
})

test('resolveSpawnOptions: the restart back-off, its defaults moved by one given alone, each bad value named', () => {
  const backoff = (o: SpawnOptions) => {
    const r = resolveSpawnOptions({ restart: 'always', ...o })
    return [r.restartBackoffMs, r.restartBackoffMaxMs]
  }
  assert.deepEqual(backoff({}), [100, 5_000])
  assert.deepEqual(backoff({ restartBackoffMs: 0 }), [0, 5_000], '0: no wait')
  assert.deepEqual(backoff({ restartBackoffMs: 250, restartBackoffMaxMs: 250 }), [250, 250])
  assert.deepEqual(backoff({ restartBackoffMs: 8_000 }), [8_000, 8_000], 'a first wait above the default cap raises it')
  assert.deepEqual(backoff({ restartBackoffMs: 5_000 }), [5_000, 5_000])
  assert.deepEqual(backoff({ restartBackoffMaxMs: 40 }), [40, 40], 'a cap below the default first wait lowers it')
  assert.deepEqual(backoff({ restartBackoffMaxMs: 100 }), [100, 100])
  assert.deepEqual(backoff({ restartBackoffMaxMs: 0 }), [0, 0])
  rejects(() => backoff({ restartBackoffMs: -1 }), 'options.restartBackoffMs must be an integer from 0 to 2147483647, got -1')
  rejects(() => backoff({ restartBackoffMs: 0.5 }), 'options.restartBackoffMs must be an integer from 0 to 2147483647, got 0.5')
  rejects(() => backoff(bad<SpawnOptions>({ restartBackoffMs: '100' })), 'options.restartBackoffMs must be an integer from 0 to 2147483647, got "100"')
  rejects(() => backoff({ restartBackoffMaxMs: 2 ** 31 }), 'options.restartBackoffMaxMs must be an integer from 0 to 2147483647, got 2147483648')
  rejects(
    () => backoff({ restartBackoffMs: 1_000, restartBackoffMaxMs: 999 }),
    'options.restartBackoffMaxMs must be at least options.restartBackoffMs (1000), the first wait it caps, got 999',
  )
  rejects(() => resolveSpawnOptions({ restartBackoffMs: 10 }), "options.restartBackoffMs is a wait between restarts: it needs restart: 'always'")
  rejects(
    () => resolveSpawnOptions({ restart: 'never', restartBackoffMaxMs: 10 }),
    "options.restartBackoffMaxMs is a wait between restarts: it needs restart: 'always'",
  )
})

test('resolveMapOptions: defaults; the signal belongs to the map, not its tasks', () => {
  const r = resolveMapOptions({}, 3)
  assert.deepEqual(r, {
    ordered: true,
    concurrency: 16_384,
    signal: undefined,
    task: { timeoutMs: undefined, retries: 0, maxRetries: 3, signal: undefined },
    progress: false,
    total: undefined,
  })
  assert.equal(r.ordered, MAP_DEFAULTS.ordered)
  assert.equal(r.concurrency, MAP_DEFAULTS.concurrency)
  assert.ok(Object.isFrozen(r))
  assert.ok(Object.isFrozen(r.task))

  const ac = new AbortController()
  const progress = () => {}
  const s = resolveMapOptions({ ordered: false, concurrency: 4, signal: ac.signal, timeoutMs: 50, retries: 1, maxRetries: 0, progress, total: 10 }, 3)
  assert.equal(s.ordered, false)
  assert.equal(s.concurrency, 4)
  assert.equal(s.signal, ac.signal)
  assert.equal(s.progress, progress)
  assert.equal(s.total, 10)
  assert.deepEqual(s.task, { timeoutMs: 50, retries: 1, maxRetries: 0, signal: undefined })
  assert.equal(resolveMapOptions({ progress: true }, 3).progress, true)
})

test('resolveMapOptions: every map gets its own task options object (the ledger tells maps apart by it)', () => {
  const o: MapOptions = { retries: 1 }
  const a = resolveMapOptions(o, 3)
  const b = resolveMapOptions(o, 3)
  assert.notEqual(a.task, b.task)
  assert.deepEqual(a.task, b.task)
})

test('resolveMapOptions: each bad field is named', () => {
  const cases: [unknown, string][] = [
    [null, 'map options must be an object, got null'],
    [5, 'map options must be an object, got 5'],
    ['fast', 'map options must be an object, got fast'],
    [{ concurrency: 0 }, 'options.concurrency must be a positive integer, got 0'],
    [{ concurrency: 2.5 }, 'options.concurrency must be a positive integer, got 2.5'],
    [{ concurrency: '8' }, 'options.concurrency must be a positive integer, got "8"'],
    [{ ordered: 'yes' }, 'options.ordered must be a boolean, got "yes"'],
    [{ ordered: 1 }, 'options.ordered must be a boolean, got 1'],
    [{ progress: 1 }, 'options.progress must be a boolean or a function, got 1'],
    [{ progress: 'bar' }, 'options.progress must be a boolean or a function, got bar'],
    [{ timeoutMs: -1 }, 'options.timeoutMs must be a positive integer, got -1'],
    [{ retries: -1 }, 'options.retries must be a non-negative integer, got -1'],
    [{ maxRetries: 1.5 }, 'options.maxRetries must be a non-negative integer, got 1.5'],
    [{ signal: {} }, 'options.signal must be an AbortSignal'],
    // With no progress bar too: a total that is no count is a mistake either way.
    [{ total: -1 }, 'options.total must be a non-negative integer, got -1'],
    [{ total: 1.5, progress: false }, 'options.total must be a non-negative integer, got 1.5'],
    [{ total: 'x' }, 'options.total must be a non-negative integer, got "x"'],
  ]
  for (const [o, message] of cases) rejects(() => resolveMapOptions(o as MapOptions, 3), message)
  assert.equal(resolveMapOptions({ total: 0 }, 3).total, 0)
})

test('resolveTaskOptions: a timeout up to Node’s longest timer, not one millisecond more', () => {
  assert.equal(resolveTaskOptions({ timeoutMs: 2 ** 31 - 1 }, 0).timeoutMs, 2 ** 31 - 1)
  rejects(
    () => resolveTaskOptions({ timeoutMs: 2 ** 31 }, 0),
    `options.timeoutMs must be at most ${2 ** 31 - 1} (Node's longest timer, about 24.8 days), got ${2 ** 31}`,
  )
  rejects(
    () => resolveMapOptions({ timeoutMs: 2 ** 31 }, 0),
    `options.timeoutMs must be at most ${2 ** 31 - 1} (Node's longest timer, about 24.8 days), got ${2 ** 31}`,
  )
})

test('resolveMapOptions: an explicit false progress stays false; a map signal never reaches the task options', () => {
  assert.equal(resolveMapOptions({ progress: false }, 3).progress, false)
  const ac = new AbortController()
  const r = resolveMapOptions({ signal: ac.signal }, 3)
  assert.equal(r.signal, ac.signal)
  assert.equal(r.task.signal, undefined)
})
