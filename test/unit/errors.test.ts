import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  rebuildError,
  toWireError,
  fromWire,
  RemoteTaskError,
  UnknownTaskError,
  SerializationError,
  WorkerCrashedError,
  ClusterError,
  ActorNameError,
  UnknownNodeError,
} from '../../lib/errors.js'

test('user errors come back as RemoteTaskError with the remote stack and class', () => {
  const wire = toWireError(new RangeError('too big'))
  const err = rebuildError('add', wire, false, 'node-1')
  assert.ok(err instanceof RemoteTaskError)
  assert.equal(err.code, 'ERR_TASK_FAILED')
  assert.equal(err.message, 'too big')
  assert.equal(err.remoteName, 'RangeError')
  assert.equal(err.task, 'add')
  assert.equal(err.node, 'node-1')
  assert.match(err.stack ?? '', /RangeError: too big/)
})

test('runtime errors come back as their own class; a user error with the same code does not', () => {
  const wire = toWireError(UnknownTaskError.of('nope', ['add']))
  assert.ok(rebuildError('nope', wire, true) instanceof UnknownTaskError)
  assert.ok(rebuildError('x', toWireError(new SerializationError('s')), true) instanceof SerializationError)
  assert.ok(rebuildError('x', toWireError(new WorkerCrashedError('w')), true) instanceof WorkerCrashedError)
  assert.ok(rebuildError('nope', wire, false) instanceof RemoteTaskError)
  assert.ok(rebuildError('x', { name: 'Error', message: 'm', code: 'ERR_WHATEVER' }, true) instanceof RemoteTaskError)
})

test('errors from the wire are sanitised', () => {
  assert.deepEqual(fromWire(null), { name: 'Error', message: 'null' })
  assert.deepEqual(fromWire({ name: 5, message: { evil: true }, stack: 7 }), {
    name: 'Error',
    message: 'remote error without a message',
    stack: undefined,
    code: undefined,
  })
  assert.equal(toWireError('a string').message, 'non-error thrown: a string')
})

test('a thrown value that is no Error keeps what it holds in the message', () => {
  assert.equal(toWireError({ code: 42, why: 'bad input' }).message, "non-error thrown: { code: 42, why: 'bad input' }")
  assert.equal(toWireError([1, 'two']).message, "non-error thrown: [ 1, 'two' ]")
  assert.equal(toWireError(null).message, 'non-error thrown: null')
  assert.equal(toWireError(undefined).message, 'non-error thrown: undefined')
  assert.equal(toWireError(7n).message, 'non-error thrown: 7n')
  assert.equal(toWireError(Object.create(null) as object).message, 'non-error thrown: [Object: null prototype] {}')
})

test('error names follow their class; codes are stable', () => {
  const e = new UnknownTaskError('m')
  assert.equal(e.name, 'UnknownTaskError')
  assert.ok(e instanceof ClusterError)
  assert.equal(e.code, 'ERR_UNKNOWN_TASK')
})

test('actor name and node errors carry their code and what they name', () => {
  const taken = new ActorNameError('ERR_ACTOR_NAME_TAKEN', 'totals', 'm')
  assert.equal(taken.name, 'ActorNameError')
  assert.ok(taken instanceof ClusterError)
  assert.equal(taken.code, 'ERR_ACTOR_NAME_TAKEN')
  assert.equal(taken.actorName, 'totals')
  const node = new UnknownNodeError('z', ['b', 'a'])
  assert.equal(node.code, 'ERR_UNKNOWN_NODE')
  assert.equal(node.nodeId, 'z')
  assert.equal(node.message, 'unknown node "z"; the cluster\'s nodes are "a", "b"')
  assert.equal(new UnknownNodeError('z', []).message, 'unknown node "z"; the cluster has no node')
})
