import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { TransportBase } from '../../lib/transport/base.js'
import type { CloseStep } from '../../lib/util/close.js'
import type { Parts } from '../../lib/transport/transport.js'

/** A transport over nothing: what it sends is kept, its close is whatever the test says. */
class Probe extends TransportBase {
  readonly sent: Parts[] = []
  forced = 0

  constructor(
    private readonly steps: CloseStep[],
    closeTimeoutMs = 1000,
  ) {
    super({ closeTimeoutMs })
  }

  send(parts: Parts): void {
    if (this.countOut(parts)) this.sent.push(parts)
  }

  fail(): void {
    this.countSendError()
  }

  arrive(parts: Parts): boolean {
    return this.countIn(parts.reduce((n, p) => n + p.byteLength, 0))
  }

  protected gracefulSteps(): CloseStep[] {
    return this.steps
  }

  protected override forcedSteps(): CloseStep[] {
    return [{ name: 'force', run: () => void this.forced++ }]
  }
}

test('the base counts frames and bytes both ways, and send errors', () => {
  const p = new Probe([])
  p.send([Buffer.alloc(3), Buffer.alloc(4)])
  p.send([])
  assert.equal(p.arrive([Buffer.alloc(10)]), true)
  p.fail()
  assert.deepEqual(p.stats, { framesOut: 2, bytesOut: 7, framesIn: 1, bytesIn: 10, sendErrors: 1 })
})

test('close: the same promise every time, sends and receptions after it dropped and not counted', async () => {
  let runs = 0
  const p = new Probe([{ name: 'socket', run: () => void runs++ }])
  assert.equal(p.closed, false)
  const a = p.close()
  assert.equal(p.closed, true, 'closed from the call on, not from the end of the steps')
  assert.equal(p.close(), a)
  assert.equal(p[Symbol.asyncDispose](), a)
  p.send([Buffer.alloc(5)])
  assert.equal(p.arrive([Buffer.alloc(5)]), false)
  await a
  assert.equal(runs, 1)
  assert.deepEqual(p.stats, { framesOut: 0, bytesOut: 0, framesIn: 0, bytesIn: 0, sendErrors: 0 })
  assert.deepEqual(p.closeProblems, [])
  assert.equal(p.forced, 0, 'no forced step after a clean close')
})

test('close is bounded and step-isolated: a hanging or throwing step is reported, later steps still run, then the forced ones', async () => {
  const ran: string[] = []
  const p = new Probe(
    [
      { name: 'drain', run: () => new Promise<void>(() => ran.push('drain')) },
      {
        name: 'queues',
        run: () => {
          ran.push('queues')
          throw new Error('broker said no')
        },
      },
      { name: 'connections', run: () => void ran.push('connections') },
    ],
    100,
  )
  const t0 = Date.now()
  // closeSteps' timers do not hold the process open; a real transport's sockets do.
  const alive = setInterval(() => {}, 1000)
  await p.close().finally(() => clearInterval(alive))
  assert.ok(Date.now() - t0 < 1000, `close took ${Date.now() - t0} ms`)
  assert.deepEqual(ran, ['drain', 'queues', 'connections'])
  assert.deepEqual(
    p.closeProblems.map((x) => x.step),
    ['drain', 'queues'],
  )
  assert.match(p.closeProblems[0]!.error.message, /drain did not finish within 100 ms/)
  assert.equal(p.forced, 1)
})

test('the transport modules import one another as a tree (no cycle, type imports included)', () => {
  const dir = new URL('../../../lib/transport/', import.meta.url)
  const edges = new Map<string, string[]>()
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.ts'))) {
    const src = readFileSync(new URL(f, dir), 'utf8')
    const deps = [...src.matchAll(/(?:from\s+|import\()'\.\/([\w-]+)\.js'/g)].map((m) => `${m[1]}.ts`)
    edges.set(f, [...new Set(deps)])
  }
  assert.ok(edges.size >= 8, 'read the sources of lib/transport')
  const state = new Map<string, 'open' | 'done'>()
  const visit = (f: string, path: string[]): void => {
    if (state.get(f) === 'done') return
    assert.notEqual(state.get(f), 'open', `import cycle: ${[...path, f].join(' → ')}`)
    state.set(f, 'open')
    for (const d of edges.get(f) ?? []) visit(d, [...path, f])
    state.set(f, 'done')
  }
  for (const f of edges.keys()) visit(f, [])
})
