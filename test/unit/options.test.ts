import { test } from 'node:test'
import assert from 'node:assert/strict'
import { availableParallelism } from 'node:os'
import { resolveClusterOptions, resolveAgentOptions, isLoopbackEndpoint, tasksSpecifier, defineConfig } from '../../lib/options.js'
import { InvalidArgumentError } from '../../lib/errors.js'

test('cluster defaults', () => {
  const o = resolveClusterOptions({ tasks: './t.js' })
  assert.equal(o.listen, undefined, 'no listen unless given: the driver binds in-process only')
  assert.equal(o.localAgents, 1)
  assert.equal(o.threads, availableParallelism())
  assert.equal(o.batch, 'auto')
  assert.equal(o.localTransport, 'memory')
  assert.ok(o.tasks?.startsWith('file://') && o.tasks.endsWith('/t.js'))
  assert.ok(Object.isFrozen(o))
})

test('bad cluster options name the field', () => {
  const cases: [object, RegExp][] = [
    [{ tasks: 't.js', threads: 0 }, /options\.threads must be an integer from 1 to 4096, got 0/],
    // Starting ten thousand threads would exhaust the machine's memory before any error.
    [{ tasks: 't.js', threads: 10_000 }, /options\.threads must be an integer from 1 to 4096, got 10000/],
    [{ tasks: 't.js', threads: 1.5 }, /options\.threads/],
    [{ tasks: 't.js', batch: 'big' }, /options\.batch must be 'auto' or a positive integer, got "big"/],
    [{ tasks: 't.js', localAgents: -1 }, /options\.localAgents must be a non-negative integer/],
    [{ tasks: 't.js', listen: 'localhost:80' }, /options\.listen must be an endpoint/],
    [{ tasks: 't.js', heartbeatMs: 1000, nodeTimeoutMs: 500 }, /nodeTimeoutMs \(500\) must exceed options\.heartbeatMs \(1000\)/],
    [{ tasks: 't.js', localTransport: 'udp' }, /options\.localTransport/],
    [{ tasks: 't.js', insecure: 'yes' }, /options\.insecure must be a boolean/],
    [{ tasks: 't.js', maxFrameBytes: 10 }, /options\.maxFrameBytes/],
    [{ tasks: '' }, /options\.tasks must be a module path or URL/],
    [{}, /options\.tasks is required/],
  ]
  for (const [o, re] of cases)
    assert.throws(
      () => resolveClusterOptions(o),
      (e: unknown) => e instanceof InvalidArgumentError && re.test(e.message),
    )
  assert.throws(() => resolveClusterOptions(null as never), /options must be an object/)
})

test('options that are an array are refused as such, not read as empty options', () => {
  const anArray = (e: unknown) => e instanceof InvalidArgumentError && e.message === 'options must be an object, got an array'
  assert.throws(() => resolveClusterOptions([] as never), anArray)
  assert.throws(() => resolveAgentOptions([] as never), anArray)
})

test('a driver with no local agents needs no tasks module', () => {
  assert.equal(resolveClusterOptions({ localAgents: 0 }).tasks, undefined)
})

test('agent options', () => {
  const o = resolveAgentOptions({ connect: 'tcp://127.0.0.1:7100', tasks: new URL('file:///x/t.js'), threads: 3 })
  assert.equal(o.tasks, 'file:///x/t.js')
  assert.equal(o.threads, 3)
  assert.throws(() => resolveAgentOptions({ connect: 'nowhere', tasks: 't.js' }), /options\.connect must be an endpoint/)
  assert.throws(() => resolveAgentOptions({ connect: 'tcp://127.0.0.1:99999', tasks: 't.js' }), /options\.connect must have a port from 0 to 65535/)
  assert.throws(
    () => resolveAgentOptions({ connect: 'tcp://127.0.0.1:7100', tasks: 't.js', threads: 4097 }),
    /options\.threads must be an integer from 1 to 4096, got 4097/,
  )
  assert.throws(() => resolveAgentOptions({ connect: 'tcp://h:1', tasks: 't.js', id: '' }), /options\.id/)
  assert.throws(() => resolveAgentOptions({ connect: 'tcp://h:1', tasks: 't.js', maxPoolBatch: 0 }), /options\.maxPoolBatch/)
  assert.throws(
    () => resolveAgentOptions({ connect: 'tcp://h:1', tasks: 't.js', heartbeatMs: 10, driverTimeoutMs: 5 }),
    /^InvalidArgumentError: options\.driverTimeoutMs \(5\) must exceed options\.heartbeatMs \(10\)$/,
  )
  // Against the default heartbeat (1000 ms) too.
  assert.throws(() => resolveAgentOptions({ connect: 'tcp://h:1', tasks: 't.js', driverTimeoutMs: 1000 }), /options\.driverTimeoutMs \(1000\) must exceed/)
})

test('tasks specifiers: paths become file URLs, URLs stay', () => {
  assert.equal(tasksSpecifier('tasks', 'file:///a/b.js'), 'file:///a/b.js')
  assert.equal(tasksSpecifier('tasks', '/abs/t.js'), 'file:///abs/t.js')
  assert.equal(tasksSpecifier('tasks', 'rel/t.js'), new URL('rel/t.js', `file://${process.cwd()}/`).href)
})

test('loopback endpoints', () => {
  for (const e of ['tcp://127.0.0.1:1', 'tcp://127.3.2.1:*', 'tcp://localhost:5', 'tcp://[::1]:5', 'inproc://x', 'ipc:///tmp/s'])
    assert.ok(isLoopbackEndpoint(e), e)
  for (const e of ['tcp://0.0.0.0:1', 'tcp://10.0.0.1:1', 'tcp://*:1', 'tcp://example.org:1']) assert.ok(!isLoopbackEndpoint(e), e)
})

test('defineConfig returns its argument, typed', () => {
  const c = { tasks: './t.js', threads: 2 }
  assert.equal(defineConfig(c), c)
})

test('the example cluster.config.ts is a valid configuration', async () => {
  const config = (await import('../../cluster.config.js')).default
  const o = resolveClusterOptions(config)
  assert.equal(o.listen, 'tcp://127.0.0.1:7100')
  assert.equal(o.threads, 2)
})
