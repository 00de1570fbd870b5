import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli } from '../helpers.js'
import { AMQP_URL, REDIS_URL, skipReason } from '../brokers.js'

const brokers = ['--redis', REDIS_URL, '--amqp', AMQP_URL]

test('bench seed runs over a brokered design', { skip: skipReason('redis') }, async (t) => {
  const p = runCli(t, ['bench', 'seed', '--transport', 'redis', '--tasks', '3000', '--runs', '1', '--json', ...brokers])
  assert.equal(await p.exited, 0, p.output())
  const r = JSON.parse(p.output()) as { design: string; ok: boolean; tasks: number }
  assert.deepEqual([r.design, r.ok, r.tasks], ['redis', true, 3000])
})

test(
  'bench seed --transport all: every design and the three naive baselines, a table, JSON and an SVG chart',
  { skip: skipReason('amqp+redis') },
  async (t) => {
    const out = await mkdtemp(join(tmpdir(), 'ac-bench-'))
    t.after(() => rm(out, { recursive: true, force: true }))
    const p = runCli(t, ['bench', 'seed', '--transport', 'all', '--tasks', '2000', '--naive-tasks', '300', '--runs', '1', '--out', out, ...brokers])
    assert.equal(await p.exited, 0, p.output())
    const text = p.output()
    assert.match(text, /\| design \| tasks \| submit s \| round trip s \| tasks\/s \| ×naive \| check \|/)
    for (const d of ['zmq', 'redis', 'amqp', 'amqp\\+redis'])
      assert.match(text, new RegExp(`\\| \\*\\*${d}\\*\\* \\| 2,000 \\| [\\d.]+ \\| [\\d.]+ \\| [\\d,]+ \\| \\d+× \\| ok \\|`))
    for (const d of ['naive-redis', 'naive-amqp']) assert.match(text, new RegExp(`\\| ${d} \\| 300 \\| .* \\| 1× \\| ok \\|`))
    assert.match(text, /\| naive-zmq \| 2,000 \| .* \| 1× \| ok \|/, 'the ZeroMQ baseline runs as many tasks as ours')
    assert.match(text, /\| Celery \+ RabbitMQ \(2016\) \| 100,000 \| 222\.0 \| 254\.0 \| 394 \|/)
    assert.match(text, /zmq over the best brokered design: [\d.]+×/)
    const json = JSON.parse(await readFile(join(out, 'seed.json'), 'utf8')) as { ok: boolean; rows: { design: string; ok?: boolean }[] }
    assert.equal(json.ok, true)
    assert.equal(json.rows.length, 11)
    const svg = await readFile(join(out, 'seed.svg'), 'utf8')
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
    assert.equal((svg.match(/<rect x="190"/g) ?? []).length, 11, 'one bar per row')
    assert.match(await readFile(join(out, 'seed.md'), 'utf8'), /Machine: .*\d+ cores/)
  },
)

test('a brokered bench with an unreachable broker fails with the reason', async (t) => {
  const p = runCli(t, ['bench', 'seed', '--transport', 'amqp', '--amqp', 'amqp://guest:pw@127.0.0.1:9', '--tasks', '10', '--runs', '1'])
  assert.equal(await p.exited, 1)
  assert.match(p.output(), /cannot connect to RabbitMQ at amqp:\/\/guest:\*\*\*@127\.0\.0\.1:9: .*\[ERR_BROKER_UNREACHABLE\]/)
})

test(
  'bench chaos --transport all: agents killed and replaced on every design, nothing lost or delivered twice',
  { skip: skipReason('amqp+redis') },
  async (t) => {
    const args = ['--tasks', '4000', '--agents', '3', '--kill-every-ms', '400', '--task-us', '500', '--heartbeat-ms', '200', '--node-timeout-ms', '800']
    const p = runCli(t, ['bench', 'chaos', '--transport', 'all', ...args, '--json', ...brokers])
    assert.equal(await p.exited, 0, p.output())
    const rows = JSON.parse(
      p
        .output()
        .split('\n')
        .find((l) => l.startsWith('['))!,
    ) as { design: string; lost: number; duplicates: number; kills: unknown[]; ok: boolean }[]
    assert.deepEqual(
      rows.map((r) => [r.design, r.lost, r.duplicates, r.ok]),
      [
        ['zmq', 0, 0, true],
        ['redis', 0, 0, true],
        ['amqp', 0, 0, true],
        ['amqp+redis', 0, 0, true],
      ],
    )
    assert.ok(rows.every((r) => r.kills.length >= 1))
  },
)
