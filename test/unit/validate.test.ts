/**
 * The shared option checks: what each accepts at its bounds, and the exact
 * wording of each message, since every resolver's errors are built from them.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  booleanOption,
  describe,
  describeKind,
  endpointOption,
  endpointProblem,
  integerOption,
  integerProblem,
  isLoopbackEndpoint,
  isLoopbackHost,
  maskUrl,
  numberProblem,
  oneOfOption,
  stringProblem,
  urlOption,
} from '../../lib/validate.js'
import { rejects } from './fixtures.js'

test('describe quotes strings, tags objects and prints the rest', () => {
  assert.equal(describe('a b'), '"a b"')
  assert.equal(describe(''), '""')
  assert.equal(describe({}), '[object Object]')
  assert.equal(describe([1]), '[object Array]')
  assert.equal(describe(null), 'null')
  assert.equal(describe(undefined), 'undefined')
  assert.equal(describe(1.5), '1.5')
  assert.equal(describe(true), 'true')
})

test('describeKind names a value by its kind, strings quoted', () => {
  assert.equal(describeKind('x'), '"x"')
  assert.equal(describeKind([]), 'an array')
  assert.equal(describeKind(null), 'null')
  assert.equal(describeKind({}), 'object')
  assert.equal(describeKind(3), 'number')
  assert.equal(describeKind(undefined), 'undefined')
})

test('integerProblem: integers within [min, max] pass; the message says the range', () => {
  assert.equal(integerProblem(1), undefined)
  assert.equal(integerProblem(0), 'must be a positive integer')
  assert.equal(integerProblem(0, 0), undefined)
  assert.equal(integerProblem(-1, 0), 'must be a non-negative integer')
  assert.equal(integerProblem(2, 3), 'must be an integer ≥ 3')
  assert.equal(integerProblem(3, 3), undefined)
  assert.equal(integerProblem(5, 1, 5), undefined)
  assert.equal(integerProblem(1, 1, 5), undefined)
  assert.equal(integerProblem(6, 1, 5), 'must be an integer from 1 to 5')
  assert.equal(integerProblem(0, 1, 5), 'must be an integer from 1 to 5')
  assert.equal(integerProblem(1.5), 'must be a positive integer')
  assert.equal(integerProblem(2 ** 53), 'must be a positive integer')
  assert.equal(integerProblem('1'), 'must be a positive integer')
  assert.equal(integerProblem(Number.NaN, 0), 'must be a non-negative integer')
})

test('integerOption: undefined passes through; field names keep env and flag spellings', () => {
  assert.equal(integerOption('threads', undefined), undefined)
  assert.equal(integerOption('threads', 4), 4)
  assert.equal(integerOption('port', 65535, 1, 65535), 65535)
  rejects(() => integerOption('threads', 0), 'options.threads must be a positive integer, got 0')
  rejects(() => integerOption('CLUSTER_THREADS', -1), 'CLUSTER_THREADS must be a positive integer, got -1')
  rejects(() => integerOption('--threads', 'x'), '--threads must be a positive integer, got "x"')
  rejects(() => integerOption('options.agent.threads', 0), 'options.agent.threads must be a positive integer, got 0')
  rejects(() => integerOption('agent.threads', null), 'options.agent.threads must be a positive integer, got null')
  rejects(() => integerOption('port', 65536, 1, 65535), 'options.port must be an integer from 1 to 65535, got 65536')
  // Lower case with underscores is an option path, not an environment variable.
  rejects(() => integerOption('cluster_threads', 0), 'options.cluster_threads must be a positive integer, got 0')
  rejects(() => integerOption('X1_', 0), 'X1_ must be a positive integer, got 0')
  rejects(() => integerOption('1X', 0), 'options.1X must be a positive integer, got 0')
  rejects(() => integerOption('A b', 0), 'options.A b must be a positive integer, got 0')
})

test('numberProblem: any finite number at least min', () => {
  assert.equal(numberProblem(1), undefined)
  assert.equal(numberProblem(1.5), undefined)
  assert.equal(numberProblem(0.5), 'must be a number ≥ 1')
  assert.equal(numberProblem(0, 0), undefined)
  assert.equal(numberProblem(-0.1, 0), 'must be a number ≥ 0')
  assert.equal(numberProblem(Infinity), 'must be a number ≥ 1')
  assert.equal(numberProblem(Number.NaN), 'must be a number ≥ 1')
  assert.equal(numberProblem('2'), 'must be a number ≥ 1')
})

test('stringProblem: a non-empty string', () => {
  assert.equal(stringProblem('a'), undefined)
  assert.equal(stringProblem(''), 'must be a non-empty string')
  assert.equal(stringProblem(1), 'must be a non-empty string')
  assert.equal(stringProblem(undefined), 'must be a non-empty string')
})

test('booleanOption: booleans and undefined pass, anything else is named', () => {
  assert.equal(booleanOption('ordered', undefined), undefined)
  assert.equal(booleanOption('ordered', true), true)
  assert.equal(booleanOption('ordered', false), false)
  rejects(() => booleanOption('ordered', 'true'), 'options.ordered must be a boolean, got "true"')
  rejects(() => booleanOption('ordered', 0), 'options.ordered must be a boolean, got 0')
})

test('oneOfOption: one of the choices; the message lists them, quoted', () => {
  assert.equal(oneOfOption('design', undefined, ['a', 'b']), undefined)
  assert.equal(oneOfOption('design', 'b', ['a', 'b']), 'b')
  rejects(() => oneOfOption('design', 'c', ['a', 'b']), `options.design must be 'a' or 'b', got "c"`)
  rejects(() => oneOfOption('design', 1, ['a', 'b', 'c']), `options.design must be one of 'a', 'b', 'c', got 1`)
  rejects(() => oneOfOption('design', { a: 1 }, ['a']), `options.design must be one of 'a', got {"a":1}`)
  // A value JSON cannot show is described instead.
  rejects(() => oneOfOption('design', () => 1, ['a', 'b']), `options.design must be 'a' or 'b', got () => 1`)
  rejects(() => oneOfOption('design', 'toString', ['a', 'b']), `options.design must be 'a' or 'b', got "toString"`)
})

test('endpointProblem and endpointOption: tcp with a port or *, ipc and inproc', () => {
  for (const ok of ['tcp://127.0.0.1:7100', 'tcp://host:*', 'tcp://[::1]:7100', 'TCP://H:1', 'ipc:///tmp/s', 'inproc://x', 'INPROC://y']) {
    assert.equal(endpointProblem(ok), undefined, ok)
    assert.equal(endpointOption('endpoint', ok), ok)
  }
  const message = 'must be an endpoint like tcp://127.0.0.1:7100'
  for (const no of [
    'tcp://host',
    'tcp://host:',
    'tcp://host:7100/',
    'tcp://a b:1',
    'x tcp://h:1',
    'udp://h:1',
    'ipc://',
    'ipc://a b',
    'inproc:// x',
    'tcp://[zz::1]:1',
    7100,
  ]) {
    assert.equal(endpointProblem(no), message, String(no))
  }
  rejects(() => endpointOption('CLUSTER_ENDPOINT', 'tcp://h'), `CLUSTER_ENDPOINT ${message}, got "tcp://h"`)
  // A port past 65535 is refused (a socket would wait on it for ever); 65535, 0 and digits in a path are not.
  // Only a tcp endpoint's own port field is read: not digits in an ipc path, not an address's own colons.
  for (const ok of ['tcp://h:65535', 'tcp://h:0', 'ipc:///tmp/a:99999', 'ipc:///tmp/tcp:a:99999', 'tcp://[::70000]:*'])
    assert.equal(endpointProblem(ok), undefined, ok)
  // Something that is not a string is refused, whatever it prints as.
  assert.equal(endpointProblem({ toString: () => 'tcp://h:1' }), message)
  assert.equal(endpointProblem('tcp://127.0.0.1:99999'), 'must have a port from 0 to 65535')
  assert.equal(endpointProblem('TCP://[::1]:65536'), 'must have a port from 0 to 65535')
  rejects(() => endpointOption('connect', 'tcp://127.0.0.1:99999'), 'options.connect must have a port from 0 to 65535, got "tcp://127.0.0.1:99999"')
})

test('isLoopbackHost and isLoopbackEndpoint', () => {
  for (const h of ['localhost', 'LOCALHOST', '::1', '[::1]', '127.0.0.1', '127.1.2.3']) assert.equal(isLoopbackHost(h), true, h)
  for (const h of ['example.org', '10.0.0.1', '127.0.0', '127.0.0.1.5', 'x127.0.0.1', '::2', 'localhost.example']) {
    assert.equal(isLoopbackHost(h), false, h)
  }
  assert.equal(isLoopbackEndpoint('ipc:///tmp/x'), true)
  assert.equal(isLoopbackEndpoint('inproc://x'), true)
  assert.equal(isLoopbackEndpoint('tcp://127.0.0.1:7100'), true)
  assert.equal(isLoopbackEndpoint('tcp://[::1]:7100'), true)
  assert.equal(isLoopbackEndpoint('tcp://localhost:*'), true)
  assert.equal(isLoopbackEndpoint('tcp://10.1.2.3:7100'), false)
  assert.equal(isLoopbackEndpoint('tcp://[fe80::1]:7100'), false)
  assert.equal(isLoopbackEndpoint('x ipc://y'), false)
  assert.equal(isLoopbackEndpoint('tcp://localhost'), false)
})

test('maskUrl hides the password and is safe on anything', () => {
  assert.equal(maskUrl('redis://user:secret@host:6379/0'), 'redis://user:***@host:6379/0')
  assert.equal(maskUrl('amqp://host'), 'amqp://host')
  assert.equal(maskUrl('http://host/'), 'http://host')
  assert.equal(maskUrl('redis://user@host'), 'redis://user@host')
  assert.equal(maskUrl('redis://user:pa ss@[bad'), 'redis:… (unparsable)')
  assert.equal(maskUrl('no scheme here'), '(unparsable URL)')
})

test('urlOption: one of the schemes and a host; messages mask the password', () => {
  assert.equal(urlOption('redis', 'redis://h:6379', ['redis:', 'rediss:']), 'redis://h:6379')
  assert.equal(urlOption('redis', 'rediss://h', ['redis:', 'rediss:']), 'rediss://h')
  rejects(() => urlOption('redis', 5, ['redis:']), 'options.redis must be a redis: URL, got 5')
  rejects(() => urlOption('redis', '', ['redis:']), 'options.redis must be a redis: URL, got ""')
  rejects(() => urlOption('redis', undefined, ['redis:', 'rediss:']), 'options.redis must be a redis: or rediss: URL, got undefined')
  rejects(() => urlOption('CLUSTER_REDIS', 'redis://u:pw@[x', ['redis:']), 'CLUSTER_REDIS must be a redis: URL, got "redis:… (unparsable)"')
  rejects(() => urlOption('redis', 'amqp://u:pw@h', ['redis:']), 'options.redis must be a redis: URL with a host, got "amqp://u:***@h"')
  rejects(() => urlOption('redis', 'redis:///x', ['redis:']), 'options.redis must be a redis: URL with a host, got "redis:///x"')
})

test('loopback checks read whole numbers and anchored schemes', () => {
  assert.equal(isLoopbackHost('127.10.20.30'), true)
  assert.equal(endpointProblem('x ipc://y'), 'must be an endpoint like tcp://127.0.0.1:7100')
  assert.equal(endpointProblem('x inproc://y'), 'must be an endpoint like tcp://127.0.0.1:7100')
})
