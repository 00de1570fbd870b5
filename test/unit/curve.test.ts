import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseKeyList, z85Encode, newKeyPair, resolveAgentCurve, resolveDriverCurve } from '../../lib/transport/curve.js'
import { InvalidArgumentError } from '../../lib/errors.js'

test('key lists: comments, trailing notes, and keys that contain # (a Z85 digit)', () => {
  const withHash = 'abcdefghi#klmnopqrst#uvwxyzABCD#EFGHIJKL'
  assert.equal(withHash.length, 40)
  const a = newKeyPair().publicKey
  const text = `# accepted agents\n\n${withHash}\n  ${a}   worker-7 in rack 2\n`
  assert.deepEqual(parseKeyList(text, 'f'), [withHash, a])
  assert.throws(
    () => parseKeyList('tooshort\n', 'keys.txt'),
    (e: unknown) => e instanceof InvalidArgumentError && /keys\.txt line 1/.test(e.message),
  )
})

test('z85 encodes as the reference vector', () => {
  // ZeroMQ RFC 32 test vector: 8 bytes → "HelloWorld".
  assert.equal(z85Encode(new Uint8Array([0x86, 0x4f, 0xd2, 0x6f, 0xb5, 0x59, 0xf7, 0x5b])), 'HelloWorld')
  assert.throws(() => z85Encode(new Uint8Array(3)), /multiple of 4/)
})

test('explicit keys need no files', () => {
  const server = newKeyPair()
  const agent = newKeyPair()
  assert.deepEqual(resolveDriverCurve({ serverPublicKey: server.publicKey, serverSecretKey: server.secretKey, authorizedAgents: [agent.publicKey] }), {
    server,
    authorizedAgents: [agent.publicKey],
  })
  assert.deepEqual(resolveAgentCurve({ serverPublicKey: server.publicKey, agentKey: agent }), { serverPublicKey: server.publicKey, agentKey: agent })
  assert.throws(() => resolveAgentCurve({ serverPublicKey: server.publicKey }), /curve\.agentKey/)
  assert.throws(
    () => resolveDriverCurve({ serverPublicKey: server.publicKey, serverSecretKey: server.secretKey, authorizedAgents: ['x'] }),
    /authorizedAgents\[0\]/,
  )
})
