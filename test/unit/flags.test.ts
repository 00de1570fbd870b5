import { test } from 'node:test'
import assert from 'node:assert/strict'
import { InvalidArgumentError, TransportError } from '../../lib/errors.js'
import { inFlagTerms } from '../../lib/cli/flags.js'

const FLAGS = {
  threads: 'threads',
  heartbeatMs: 'heartbeat-ms',
  nodeTimeoutMs: 'node-timeout-ms',
  'dashboard.port': { flag: 'port', variable: 'CLUSTER_DASHBOARD' },
}

const message = (err: unknown) => (err as Error).message

test('inFlagTerms names the flag typed, or the variable read in its place, and keeps a config value under its option', () => {
  const err = new InvalidArgumentError('options.threads must be an integer from 1 to 4096, got 0')
  assert.equal(message(inFlagTerms(err, FLAGS, ['agent', '--threads', '0'], {})), '--threads must be an integer from 1 to 4096, got 0')
  assert.equal(message(inFlagTerms(err, FLAGS, ['agent', '--threads=0'], {})), '--threads must be an integer from 1 to 4096, got 0')
  assert.equal(message(inFlagTerms(err, FLAGS, ['agent'], { CLUSTER_THREADS: '0' })), 'CLUSTER_THREADS must be an integer from 1 to 4096, got 0')
  // Neither typed nor in the environment: the config file's, named as an option.
  assert.equal(inFlagTerms(err, FLAGS, ['agent'], {}), err)
  const renamed = inFlagTerms(err, FLAGS, ['agent', '--threads', '0'], {})
  assert.ok(renamed instanceof InvalidArgumentError)
  assert.equal(renamed.cause, err)
})

test('inFlagTerms renames every option of a message, nested ones by their own variable, and leaves other errors alone', () => {
  const both = new InvalidArgumentError('options.nodeTimeoutMs (20) must exceed options.heartbeatMs (50)')
  assert.equal(
    message(inFlagTerms(both, FLAGS, ['--heartbeat-ms', '50'], { CLUSTER_NODE_TIMEOUT_MS: '20' })),
    'CLUSTER_NODE_TIMEOUT_MS (20) must exceed --heartbeat-ms (50)',
  )
  const port = new InvalidArgumentError('options.dashboard.port must be an integer from 0 to 65535, got 70000')
  assert.equal(message(inFlagTerms(port, FLAGS, [], { CLUSTER_DASHBOARD: '70000' })), 'CLUSTER_DASHBOARD must be an integer from 0 to 65535, got 70000')
  assert.equal(message(inFlagTerms(port, FLAGS, [], { CLUSTER_PORT: '70000' })), port.message)
  const other = new TransportError('options.threads is not an options error')
  assert.equal(inFlagTerms(other, FLAGS, ['--threads', '0'], {}), other)
})
