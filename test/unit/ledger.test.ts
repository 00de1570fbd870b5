/**
 * The ledger without sockets: settlement exactly once, the two retry budgets,
 * and what happens to the tasks of a node that left or was lost.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Ledger, retryKindOf, type LedgerHooks, type ResultSink, type TaskEntry, type TaskHolder } from '../../lib/driver/ledger.js'
import { SharedQueue } from '../../lib/driver/scheduler.js'
import type { ResolvedTaskOptions } from '../../lib/driver/task-options.js'
import { ClusterError, NodeLostError, TaskCancelledError, WorkerCrashedError } from '../../lib/errors.js'
import { ActorOp } from '../../lib/protocol/messages.js'

/** Records what the ledger tells the rest of the driver. */
function recorder() {
  const calls = {
    succeeded: [] as { id: number; now: number }[],
    failed: [] as { id: number; err: Error; node: string | undefined }[],
    retried: [] as { id: number; cause: Error }[],
  }
  const hooks: LedgerHooks = {
    succeeded: (id, _name, now) => calls.succeeded.push({ id, now }),
    failed: (id, _name, err, node) => calls.failed.push({ id, err, node }),
    retried: (id, _name, _args, cause) => calls.retried.push({ id, cause }),
  }
  return { calls, hooks }
}

/** What became of one entry's outcome. */
interface Outcome {
  resolved: unknown[]
  rejected: Error[]
}

function opts(o: Partial<ResolvedTaskOptions> = {}): ResolvedTaskOptions {
  return { timeoutMs: undefined, retries: 0, maxRetries: 3, signal: undefined, ...o }
}

/** A holder with an id that counts the tasks leaving it. */
function holder(nodeId: string | undefined): TaskHolder & { left: number } {
  return {
    nodeId,
    left: 0,
    taskLeft() {
      this.left++
    },
  }
}

function setup(defaultMaxRetries = 3) {
  const { calls, hooks } = recorder()
  const ledger = new Ledger(hooks, defaultMaxRetries)
  // Outcomes by id (slots are reused once an entry settles; ids are not), through one sink as a map's.
  const outcomes = new Map<number, Outcome>()
  const sink: ResultSink = {
    settled(id, ok, value) {
      const o = outcomes.get(id)!
      if (ok) o.resolved.push(value)
      else o.rejected.push(value as Error)
    },
  }
  const add = (name: string, more: { options?: ResolvedTaskOptions; holder?: TaskHolder; actor?: { id: string }; args?: unknown[] } = {}): TaskEntry => {
    const id = ledger.nextId
    outcomes.set(id, { resolved: [], rejected: [] })
    return ledger.add(id, name, more.args ?? [], sink, id, more.actor, ActorOp.Call, more.options, more.holder)
  }
  const outcome = (e: TaskEntry): Outcome => outcomes.get(ledger.id(e))!
  return { ledger, calls, add, outcome }
}

test('add: ids follow nextId, tasks are counted as submitted, actor messages are not', () => {
  const { ledger, add } = setup()
  const first = ledger.nextId
  const a = add('a')
  const b = add('b')
  const m = add('call', { actor: { id: 'actor-1' } })
  assert.equal(ledger.id(a), first)
  assert.equal(ledger.id(b), first + 1)
  assert.equal(ledger.id(m), first + 2)
  assert.equal(ledger.nextId, first + 3)
  assert.equal(ledger.size, 3)
  assert.equal(ledger.counters.tasksSubmitted, 2)
  assert.equal(ledger.get(ledger.id(b)), b)
  assert.deepEqual(
    { settled: ledger.settled(a), userRetries: ledger.retries(a).user, infraRetries: ledger.retries(a).infra, holder: ledger.holder(a) },
    {
      settled: false,
      userRetries: 0,
      infraRetries: 0,
      holder: undefined,
    },
  )
})

test('a result settles once: the second is dropped and counted, the promise keeps the first value', () => {
  const { ledger, calls, add, outcome } = setup()
  const q = new SharedQueue()
  q.inFlight = 1
  const e = add('square', { holder: q })
  const got = ledger.answered(ledger.id(e))
  assert.equal(got, e)
  assert.equal(ledger.counters.lateResultsDropped, 0)
  ledger.succeed(got, 49, 1234)
  assert.equal(ledger.settled(e), true)
  assert.equal(ledger.holder(e), undefined)
  assert.equal(q.inFlight, 0, 'the shared queue is told the task left')
  assert.equal(ledger.size, 0)

  // The duplicate of a redelivered frame.
  assert.equal(ledger.answered(ledger.id(e)), undefined)
  assert.equal(ledger.counters.lateResultsDropped, 1)
  // Even when handed the entry again, nothing settles twice.
  ledger.succeed(e, 50, 2000)
  ledger.fail(e, new Error('late failure'))
  ledger.withdraw(e, new Error('late withdrawal'))
  assert.equal(q.inFlight, 0, 'released once only')

  assert.deepEqual(outcome(e), { resolved: [49], rejected: [] })
  assert.deepEqual(calls.succeeded, [{ id: ledger.id(e), now: 1234 }])
  assert.deepEqual(calls.failed, [])
  assert.equal(ledger.counters.tasksSucceeded, 1)
  assert.equal(ledger.counters.tasksFailed, 0)
  assert.equal(ledger.counters.tasksCancelled, 0)
})

test('answered() for an id never issued is a late result too', () => {
  const { ledger } = setup()
  assert.equal(ledger.answered(-1), undefined)
  assert.equal(ledger.answered('not a number'), undefined)
  assert.equal(ledger.counters.lateResultsDropped, 2)
})

test('fail: counted, reported with the holder node, rejected once', () => {
  const { ledger, calls, add, outcome } = setup()
  const node = holder('agent-7')
  const e = add('boom', { holder: node })
  const err = new Error('it threw')
  ledger.fail(e, err)
  ledger.fail(e, new Error('again'))
  assert.equal(node.left, 1)
  assert.deepEqual(outcome(e), { resolved: [], rejected: [err] })
  assert.equal(calls.failed.length, 1)
  assert.equal(calls.failed[0]!.err, err)
  assert.equal(calls.failed[0]!.node, 'agent-7')
  assert.equal(ledger.counters.tasksFailed, 1)
})

test('fail with an explicit node names that node', () => {
  const { ledger, calls, add } = setup()
  const e = add('boom', { holder: holder('agent-1') })
  ledger.fail(e, new Error('x'), 'agent-2')
  assert.equal(calls.failed[0]!.node, 'agent-2')
})

test('withdraw: counted as cancelled, not as failed, and a later result for it is dropped', () => {
  const { ledger, calls, add, outcome } = setup()
  const q = new SharedQueue()
  q.inFlight = 1
  const e = add('slow', { holder: q })
  const err = new TaskCancelledError('the task was cancelled')
  ledger.withdraw(e, err)
  ledger.withdraw(e, new TaskCancelledError('twice'))
  assert.equal(ledger.counters.tasksCancelled, 1)
  assert.equal(ledger.counters.tasksFailed, 0)
  assert.deepEqual(calls.failed, [], 'a withdrawal is not a failure record')
  assert.deepEqual(outcome(e), { resolved: [], rejected: [err] })
  assert.equal(q.inFlight, 0)
  assert.equal(ledger.answered(ledger.id(e)), undefined)
  assert.equal(ledger.counters.lateResultsDropped, 1)
})

test('withdrawAll touches only the entries of that options object', () => {
  const { ledger, add, outcome } = setup()
  const mapA = opts()
  const mapB = opts() // equal fields, another map
  const a1 = add('t', { options: mapA })
  const b1 = add('t', { options: mapB })
  const plain = add('t')
  const a2 = add('t', { options: mapA })
  const done = add('t', { options: mapA })
  ledger.succeed(done, 'done', 0)
  let made = 0
  ledger.withdrawAll(mapA, () => {
    made++
    return new TaskCancelledError(`cancelled #${made}`)
  })
  assert.equal(made, 2, 'one error per withdrawn entry, none for the settled one')
  assert.equal(ledger.counters.tasksCancelled, 2)
  assert.equal(outcome(a1).rejected[0]!.message, 'cancelled #1')
  assert.equal(outcome(a2).rejected[0]!.message, 'cancelled #2')
  for (const e of [b1, plain]) {
    assert.equal(ledger.settled(e), false)
    assert.deepEqual(outcome(e), { resolved: [], rejected: [] })
  }
  assert.deepEqual(outcome(done), { resolved: ['done'], rejected: [] })
  assert.equal(ledger.size, 2)
})

test('withdrawSubmittedBy withdraws the unsettled tasks asked for by that submitter, under any of its options, in order, and counts them', () => {
  const { ledger, add, outcome } = setup()
  const nodeA = {}
  const nodeB = {}
  const a1 = add('child', { options: opts({ submitter: nodeA }) })
  const b1 = add('child', { options: opts({ submitter: nodeB }) })
  const plain = add('child')
  const a2 = add('grandchild', { options: opts({ submitter: nodeA, retries: 2 }) })
  const done = add('child', { options: opts({ submitter: nodeA }) })
  ledger.succeed(done, 'done', 0)
  const names: string[] = []
  const n = ledger.withdrawSubmittedBy(nodeA, (name) => {
    names.push(name)
    return new TaskCancelledError(`cancelled ${name}`)
  })
  assert.equal(n, 2)
  assert.deepEqual(names, ['child', 'grandchild'], 'in the order added, none for the settled one')
  assert.equal(ledger.counters.tasksCancelled, 2)
  assert.equal(outcome(a1).rejected[0]!.message, 'cancelled child')
  assert.equal(outcome(a2).rejected[0]!.message, 'cancelled grandchild')
  for (const e of [b1, plain]) assert.equal(ledger.settled(e), false)
  assert.deepEqual(outcome(done), { resolved: ['done'], rejected: [] })
  assert.equal(
    ledger.withdrawSubmittedBy(nodeA, () => new Error('again')),
    0,
    'a second time finds nothing',
  )
})

test('retry, user budget: retries: 2 gives exactly two retries, then false', () => {
  const { ledger, calls, add } = setup()
  const e = add('flaky', { options: opts({ retries: 2, maxRetries: 5 }) })
  const cause = new Error('threw')
  assert.equal(ledger.retry(e, 'user', cause), true)
  assert.equal(ledger.retry(e, 'user', cause), true)
  assert.equal(ledger.retry(e, 'user', cause), false)
  assert.equal(ledger.retry(e, 'user', cause), false)
  assert.equal(ledger.retries(e).user, 2)
  assert.equal(ledger.retries(e).infra, 0, 'the other budget is untouched')
  assert.equal(ledger.counters.tasksRetried, 2)
  assert.deepEqual(
    calls.retried.map((r) => r.cause),
    [cause, cause],
  )
  assert.equal(ledger.settled(e), false, 'retry does not settle; the caller fails it when retry says no')
  // The infrastructure budget is still whole.
  assert.equal(ledger.retry(e, 'infra', cause), true)
  assert.equal(ledger.retries(e).infra, 1)
})

test('retry, user budget: no options means no user retries', () => {
  const { ledger, add } = setup(10)
  const e = add('once')
  assert.equal(ledger.retry(e, 'user', new Error('threw')), false)
  assert.equal(ledger.retries(e).user, 0)
  assert.equal(ledger.counters.tasksRetried, 0)
})

test('retry, infra budget: the default comes from the constructor', () => {
  const { ledger, add } = setup(3)
  const e = add('crashy')
  const cause = new WorkerCrashedError('worker exited')
  const answers = [1, 2, 3, 4, 5].map(() => ledger.retry(e, 'infra', cause))
  assert.deepEqual(answers, [true, true, true, false, false])
  assert.equal(ledger.retries(e).infra, 3)
  assert.equal(ledger.counters.tasksRetried, 3)

  const none = setup(0)
  const f = none.add('crashy')
  assert.equal(none.ledger.retry(f, 'infra', cause), false)
  assert.equal(none.ledger.retries(f).infra, 0)
})

test('retry, infra budget: per-options maxRetries: 0 overrides the constructor default', () => {
  const { ledger, calls, add } = setup(3)
  const e = add('crashy', { options: opts({ maxRetries: 0, retries: 4 }) })
  assert.equal(ledger.retry(e, 'infra', new WorkerCrashedError('x')), false)
  assert.equal(ledger.retries(e).infra, 0)
  assert.deepEqual(calls.retried, [])
  const f = add('crashy', { options: opts({ maxRetries: 1 }) })
  assert.equal(ledger.retry(f, 'infra', new WorkerCrashedError('x')), true)
  assert.equal(ledger.retry(f, 'infra', new WorkerCrashedError('x')), false)
})

test('retry releases the holder: the shared queue counts one fewer in flight', () => {
  const { ledger, add } = setup()
  const q = new SharedQueue()
  q.inFlight = 2
  const e = add('t', { holder: q, options: opts({ retries: 1 }) })
  add('u', { holder: q })
  assert.equal(ledger.retry(e, 'user', new Error('threw')), true)
  assert.equal(q.inFlight, 1)
  assert.equal(ledger.holder(e), undefined)
  assert.deepEqual(
    ledger.entriesHeldBy(q).map((x) => ledger.name(x)),
    ['u'],
  )
  // A refused retry leaves the holder alone (the caller fails the entry, which releases it).
  ledger.hold(e, q)
  q.inFlight++
  assert.equal(ledger.retry(e, 'user', new Error('threw')), false)
  assert.equal(q.inFlight, 2)
  assert.equal(ledger.holder(e), q)
})

test('retry of a settled entry or an actor message is refused and changes nothing', () => {
  const { ledger, calls, add } = setup()
  const e = add('t', { options: opts({ retries: 5, maxRetries: 5 }) })
  ledger.succeed(e, 1, 0)
  assert.equal(ledger.retry(e, 'user', new Error('x')), false)
  assert.equal(ledger.retry(e, 'infra', new Error('x')), false)
  const m = add('method', { actor: { id: 'actor-1' }, options: opts({ retries: 5, maxRetries: 5 }) })
  assert.equal(ledger.retry(m, 'user', new Error('x')), false)
  assert.equal(ledger.retry(m, 'infra', new Error('x')), false)
  assert.deepEqual([ledger.retries(e).user, ledger.retries(e).infra, ledger.retries(m).user, ledger.retries(m).infra], [0, 0, 0, 0])
  assert.equal(ledger.counters.tasksRetried, 0)
  assert.deepEqual(calls.retried, [])
})

test("reclaim 'left': the node's tasks come back in order, uncharged, counted as requeued", () => {
  const { ledger, calls, add, outcome } = setup(0)
  const node = holder('agent-1')
  const other = holder('agent-2')
  const a = add('a', { holder: node })
  const b = add('b', { holder: other })
  const c = add('c', { holder: node, options: opts({ maxRetries: 0 }) })
  const d = add('d', { holder: node })
  let described = 0
  const back = ledger.reclaim(node, 'left', () => {
    described++
    return { node: 'agent-1', reason: 'left' }
  })
  assert.deepEqual(back, [a, c, d])
  for (const e of back) {
    assert.equal(ledger.holder(e), undefined)
    assert.equal(ledger.retries(e).infra, 0)
    assert.equal(ledger.settled(e), false)
    assert.deepEqual(outcome(e), { resolved: [], rejected: [] })
  }
  assert.equal(node.left, 3)
  assert.equal(ledger.holder(b), other)
  assert.equal(ledger.counters.requeued, 3)
  assert.equal(ledger.counters.tasksRetried, 0)
  assert.equal(ledger.counters.tasksFailed, 0)
  assert.deepEqual(calls.retried, [])
  assert.deepEqual(calls.failed, [])
  assert.equal(described, 0)
  assert.deepEqual(
    ledger.reclaim(node, 'left', () => ({ node: 'agent-1', reason: 'left' })),
    [],
  )
})

test("reclaim 'lost': each task spends an infra retry, then fails with NodeLostError naming node and reason", () => {
  const { ledger, calls, add, outcome } = setup(3)
  const node = holder('agent-9')
  const e = add('sq', { holder: node, options: opts({ maxRetries: 1, retries: 7 }) })
  const describe = () => ({ node: 'agent-9', reason: 'no heartbeat for 6000 ms' })

  const first = ledger.reclaim(node, 'lost', describe)
  assert.deepEqual(first, [e])
  assert.equal(ledger.retries(e).infra, 1)
  assert.equal(ledger.retries(e).user, 0)
  assert.equal(ledger.holder(e), undefined)
  assert.equal(ledger.counters.requeued, 1)
  assert.equal(ledger.counters.tasksRetried, 1)
  assert.equal(calls.retried.length, 1)
  const cause = calls.retried[0]!.cause
  assert.ok(cause instanceof NodeLostError)
  assert.equal(cause.code, 'ERR_NODE_LOST')
  assert.equal(cause.message, 'node agent-9 was lost (no heartbeat for 6000 ms)')

  // Sent again, to a node that is lost too: the budget is spent.
  ledger.hold(e, node)
  const second = ledger.reclaim(node, 'lost', describe)
  assert.deepEqual(second, [])
  assert.equal(ledger.settled(e), true)
  assert.equal(ledger.retries(e).infra, 1)
  assert.equal(ledger.counters.requeued, 1)
  assert.equal(ledger.counters.tasksRetried, 1)
  assert.equal(ledger.counters.tasksFailed, 1)
  const { rejected } = outcome(e)
  assert.equal(rejected.length, 1)
  const err = rejected[0]!
  assert.ok(err instanceof NodeLostError)
  assert.ok(err instanceof ClusterError)
  assert.equal(err.code, 'ERR_NODE_LOST')
  assert.equal(err.name, 'NodeLostError')
  assert.equal(err.message, 'task "sq" was on node agent-9 when it was lost (no heartbeat for 6000 ms), after 1 earlier infrastructure failures')
  assert.deepEqual(
    calls.failed.map((f) => ({ id: f.id, node: f.node, err: f.err })),
    [{ id: ledger.id(e), node: 'agent-9', err }],
  )
})

test("reclaim 'lost' with the default budget: maxRetries losses are survived, the next one fails", () => {
  const { ledger, add, outcome } = setup(2)
  const node = holder('n')
  const e = add('t', { holder: node })
  const describe = () => ({ node: 'n', reason: 'gone' })
  const sizes: number[] = []
  for (let i = 0; i < 3; i++) {
    ledger.hold(e, node)
    sizes.push(ledger.reclaim(node, 'lost', describe).length)
  }
  assert.deepEqual(sizes, [1, 1, 0])
  assert.equal(ledger.retries(e).infra, 2)
  assert.equal(ledger.counters.requeued, 2)
  assert.match(outcome(e).rejected[0]!.message, /after 2 earlier infrastructure failures$/)
})

test("reclaim 'lost' mixes survivors and failures, keeping the survivors' order", () => {
  const { ledger, add, outcome } = setup(1)
  const node = holder('n')
  const a = add('a', { holder: node })
  const b = add('b', { holder: node, options: opts({ maxRetries: 0 }) })
  const c = add('c', { holder: node })
  const back = ledger.reclaim(node, 'lost', () => ({ node: 'n', reason: 'gone' }))
  assert.deepEqual(back, [a, c])
  assert.equal(ledger.settled(b), true)
  assert.equal(outcome(b).rejected[0]!.constructor, NodeLostError)
  assert.equal(ledger.counters.requeued, 2)
  assert.equal(ledger.counters.tasksFailed, 1)
  assert.equal(node.left, 3)
})

test('reclaim leaves actor messages where they are, left or lost', () => {
  const { ledger, add, outcome } = setup(0)
  const node = holder('n')
  const m = add('method', { holder: node, actor: { id: 'actor-1' } })
  for (const how of ['left', 'lost'] as const) {
    assert.deepEqual(
      ledger.reclaim(node, how, () => ({ node: 'n', reason: 'gone' })),
      [],
    )
  }
  assert.equal(ledger.holder(m), node)
  assert.equal(ledger.settled(m), false)
  assert.deepEqual(outcome(m), { resolved: [], rejected: [] })
  assert.equal(ledger.counters.requeued, 0)
  assert.equal(ledger.counters.tasksFailed, 0)
})

test('actor messages settle without task counters or hooks', () => {
  const { ledger, calls, add, outcome } = setup()
  const m = add('method', { actor: { id: 'actor-1' } })
  const n = add('method', { actor: { id: 'actor-1' } })
  ledger.succeed(m, 'ok', 5)
  ledger.fail(n, new Error('no'))
  assert.deepEqual(outcome(m).resolved, ['ok'])
  assert.equal(outcome(n).rejected[0]!.message, 'no')
  assert.deepEqual([ledger.counters.tasksSucceeded, ledger.counters.tasksFailed], [0, 0])
  assert.deepEqual(calls.succeeded, [])
  assert.deepEqual(calls.failed, [])
})

test('retryKindOf: which budget a failed attempt spends', () => {
  const table: [boolean, string | undefined, 'user' | 'infra' | undefined][] = [
    [true, undefined, 'user'],
    [true, 'ERR_TASK_FAILED', 'user'],
    [true, 'ERR_WORKER_CRASHED', 'user'],
    [false, 'ERR_TIMEOUT', 'user'],
    [false, 'ERR_WORKER_CRASHED', 'infra'],
    [false, 'ERR_OUT_OF_MEMORY', 'infra'],
    [false, 'ERR_UNKNOWN_TASK', undefined],
    [false, 'ERR_SERIALIZATION', undefined],
    [false, 'ERR_NODE_LOST', undefined],
    [false, undefined, undefined],
  ]
  for (const [threw, code, kind] of table) assert.equal(retryKindOf(threw, code), kind, `retryKindOf(${threw}, ${code})`)
})

test("failAll rejects every entry with the error, recording each holder's node", () => {
  const { ledger, calls, add, outcome } = setup()
  const a = add('a', { holder: holder('agent-1') })
  const b = add('b', { holder: holder('agent-2') })
  const c = add('c')
  const m = add('method', { actor: { id: 'actor-1' }, holder: holder('agent-1') })
  const err = new Error('closed')
  ledger.failAll(err)
  assert.equal(ledger.size, 0)
  for (const e of [a, b, c, m]) assert.deepEqual(outcome(e), { resolved: [], rejected: [err] })
  assert.deepEqual(
    calls.failed.map((f) => [f.id, f.node]),
    [
      [ledger.id(a), 'agent-1'],
      [ledger.id(b), 'agent-2'],
      [ledger.id(c), undefined],
    ],
  )
  assert.equal(ledger.counters.tasksFailed, 3)
})

test('answered(id, from): only the holder may answer; another node or none counts as late', () => {
  const { ledger, add } = setup()
  const a = holder('a')
  const b = holder('b')
  const e = add('x', { holder: a })
  assert.equal(ledger.answered(ledger.id(e), a), e)
  assert.equal(ledger.counters.lateResultsDropped, 0)
  assert.equal(ledger.answered(ledger.id(e), b), undefined)
  assert.equal(ledger.counters.lateResultsDropped, 1)
  // Without `from` any answer is taken (the shared queue's results).
  assert.equal(ledger.answered(ledger.id(e)), e)
  assert.equal(ledger.counters.lateResultsDropped, 1)
  const queued = add('y')
  assert.equal(ledger.answered(ledger.id(queued), a), undefined)
  assert.equal(ledger.counters.lateResultsDropped, 2)
})

test('dropLate adds the results of a former member to the late count', () => {
  const { ledger } = setup()
  ledger.dropLate(3)
  ledger.dropLate(2)
  assert.equal(ledger.counters.lateResultsDropped, 5)
})

test('move: an entry taken from the shared queue leaves it (one fewer in flight there) and is held by the node', () => {
  const { ledger, add } = setup()
  const q = new SharedQueue()
  q.inFlight = 1
  const node = holder('agent-1')
  const e = add('t', { holder: q })
  ledger.move(e, node)
  assert.equal(q.inFlight, 0)
  assert.equal(ledger.holder(e), node)
  assert.deepEqual(ledger.entriesHeldBy(node), [e])
  assert.equal(ledger.answered(ledger.id(e), node), e, 'the node that took it may answer it')
})

test("takeBack: given entries, still on the shared queue, are charged like a lost node's or returned like a left one's; settled ones are skipped", () => {
  const { ledger, calls, add, outcome } = setup(3)
  const q = new SharedQueue()
  q.inFlight = 3
  const a = add('a', { holder: q })
  const b = add('b', { holder: q, options: opts({ maxRetries: 0 }) })
  const done = add('done', { holder: q })
  ledger.succeed(done, 1, 0)
  const describe = () => ({ node: 'agent-7', reason: 'it took them after it was taken out' })
  const back = ledger.takeBack([a, b, done], 'lost', describe)
  assert.deepEqual(back, [a])
  assert.equal(ledger.retries(a).infra, 1)
  assert.equal(ledger.holder(a), undefined)
  assert.equal(outcome(b).rejected.length, 1)
  const err = outcome(b).rejected[0]!
  assert.ok(err instanceof NodeLostError)
  assert.equal(err.message, 'task "b" was on node agent-7 when it was lost (it took them after it was taken out), after 0 earlier infrastructure failures')
  assert.deepEqual(
    calls.failed.map((f) => f.node),
    ['agent-7'],
  )
  assert.equal(q.inFlight, 0, 'each left the queue once')
  assert.equal(ledger.counters.requeued, 1)
  // Given back unrun: nothing charged.
  const c = add('c', { holder: q })
  q.inFlight++
  assert.deepEqual(ledger.takeBack([c], 'left', describe), [c])
  assert.equal(ledger.retries(c).infra, 0)
  assert.equal(q.inFlight, 0)
  assert.equal(ledger.counters.requeued, 2)
})

// --- the slot table ------------------------------------------------------------------

test('slots: a settled entry gives its slot back; the next entry reuses it under a new id, and the old id is late', () => {
  const { ledger, add, outcome } = setup()
  const a = add('a')
  const idA = ledger.id(a)
  ledger.succeed(a, 1, 0)
  const b = add('b')
  assert.equal(b, a, 'the slot is reused')
  assert.notEqual(ledger.id(b), idA)
  assert.equal(ledger.get(idA), undefined)
  assert.equal(ledger.get(ledger.id(b)), b)
  // A result for the old id (a duplicate) does not reach the new entry.
  assert.equal(ledger.answered(idA), undefined)
  assert.equal(ledger.counters.lateResultsDropped, 1)
  assert.equal(ledger.settled(b), false)
  assert.equal(ledger.name(b), 'b')
  ledger.succeed(b, 2, 0)
  assert.deepEqual(outcome(b), { resolved: [2], rejected: [] })
  assert.equal(ledger.size, 0)
})

test('slots: ids map to their slots past every growth of the table, and each settles once', () => {
  const { ledger, add, outcome } = setup()
  const n = 5000
  const entries = Array.from({ length: n }, (_, i) => add(`t${i}`, { args: [i] }))
  assert.equal(new Set(entries).size, n, 'one slot each')
  assert.equal(ledger.size, n)
  for (let i = 0; i < n; i++) {
    assert.equal(ledger.get(ledger.id(entries[i]!)), entries[i])
    assert.deepEqual(ledger.args(entries[i]!), [i])
  }
  // Settled in a scrambled order (a fixed permutation), each through its id, each once: deletions shift displaced ids back.
  const order = [...entries.keys()].sort((x, y) => ((x * 7919) % n) - ((y * 7919) % n))
  for (const i of order) {
    const e = ledger.answered(ledger.id(entries[i]!))
    assert.equal(e, entries[i])
    ledger.succeed(e!, i, 0)
  }
  for (const i of [0, 1, 2, n - 1]) assert.equal(ledger.answered(ledger.id(entries[i]!)), undefined)
  assert.equal(ledger.counters.lateResultsDropped, 4)
  assert.equal(ledger.size, 0)
  assert.equal(ledger.counters.tasksSucceeded, n)
  for (let i = 0; i < n; i++) assert.deepEqual(outcome(entries[i]!).resolved, [i])
})

test('slots: an entry settled while queued keeps its slot until the queue lets it go', () => {
  const { ledger, add } = setup()
  const a = add('a')
  ledger.queued(a)
  ledger.withdraw(a, new TaskCancelledError('x'))
  assert.equal(ledger.withdrawnInQueue, 1)
  const b = add('b')
  assert.notEqual(b, a, 'a queued slot is not reused while the queue holds it')
  assert.equal(ledger.dequeued(a), false, 'settled: not to be sent')
  assert.equal(ledger.withdrawnInQueue, 0)
  assert.equal(add('c'), a, 'freed once taken off the queue')
  ledger.queued(b)
  assert.equal(ledger.dequeued(b), true, 'unsettled: to be sent')
})

test('slots: a call settles through its resolve function; a failure rejects its promise with the error', async () => {
  const { hooks } = recorder()
  const ledger = new Ledger(hooks, 3)
  const settleWith = (id: number) => new Promise((resolve) => ledger.add(id, 't', [], resolve, 0, undefined, ActorOp.Call, undefined, undefined))
  const ok = settleWith(ledger.nextId)
  const bad = settleWith(ledger.nextId)
  const err = new Error('no')
  ledger.succeed(ledger.get(ledger.nextId - 2)!, 42, 0)
  ledger.fail(ledger.get(ledger.nextId - 1)!, err)
  assert.equal(await ok, 42)
  await assert.rejects(bad, (e) => e === err)
})

test('the id table: ids that share a home cell, added and settled in any order, are each found until settled, across growth', () => {
  const ledger = new Ledger(recorder().hooks, 3)
  // A fixed pseudo-random sequence (a linear congruential generator): the same run every time.
  let seed = 12345
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    return seed / 2 ** 31
  }
  // Gaps that put the next id on the home cell of an earlier one (multiples of the table sizes), next to it, or anywhere.
  const gaps = [1, 2048, 4096, 65536, 65537, 2047, 3]
  const live = new Map<number, TaskEntry>()
  const gone: number[] = []
  let peak = 0
  const check = (id: number) => {
    const e = live.get(id)
    if (e === undefined) assert.equal(ledger.get(id), undefined, `settled id ${id} is not found`)
    else {
      assert.equal(ledger.get(id), e, `live id ${id} is found`)
      assert.equal(ledger.id(e), id)
    }
  }
  let id = ledger.nextId
  for (let step = 0; step < 6000; step++) {
    if (live.size === 0 || rand() < (step < 3000 ? 0.7 : 0.3)) {
      id += gaps[Math.floor(rand() * gaps.length)]!
      const e = ledger.add(id, 't', [], () => {}, 0, undefined, ActorOp.Call, undefined, undefined)
      live.set(id, e)
      check(id)
    } else {
      const ids = [...live.keys()]
      const victim = ids[Math.floor(rand() * ids.length)]!
      ledger.succeed(live.get(victim)!, step, 0)
      live.delete(victim)
      gone.push(victim)
      check(victim)
    }
    peak = Math.max(peak, live.size)
    assert.equal(ledger.size, live.size)
    if (step % 250 === 0) {
      for (const k of live.keys()) check(k)
      for (const k of gone.slice(-200)) check(k)
      // Ids never added, on the home cells of live ones.
      for (const k of [...live.keys()].slice(0, 50)) assert.equal(ledger.get(k + 2048 * 7 + 1), live.get(k + 2048 * 7 + 1))
    }
  }
  for (const k of live.keys()) check(k)
  for (const k of gone) check(k)
  assert.ok(peak > 1024, `the table grew (peak ${peak} live entries)`)
})

test('arguments: up to three kept inline and given back as a new list, more kept whole; a reused slot gives its own', () => {
  const ledger = new Ledger(recorder().hooks, 3)
  const add = (args: unknown[]) => ledger.add(ledger.nextId, 't', args, () => {}, 0, undefined, ActorOp.Call, undefined, undefined)
  for (const args of [[], ['a'], ['a', { b: 2 }], ['a', 'b', [3]], [1, 2, 3, 4], [1, 2, 3, 4, 5]]) {
    const e = add(args)
    assert.deepEqual(ledger.args(e), args)
    if (args.length > 3) assert.equal(ledger.args(e), args, 'more than three: the list itself')
    else assert.notEqual(ledger.args(e), args, 'up to three: a new list')
    ledger.succeed(e, undefined, 0)
    // The settled entry keeps no reference to its arguments (they can be collected).
    const kept = ledger.args(e) as unknown[] | undefined
    assert.deepEqual(
      (kept ?? []).filter((a) => a !== undefined),
      [],
    )
    // Its slot, reused at once by an entry with one argument, gives that one only.
    const next = add(['x'])
    assert.equal(next, e)
    assert.deepEqual(ledger.args(next), ['x'])
    ledger.succeed(next, undefined, 0)
  }
})

test('numberArgc: up to three arguments that are all numbers are read one by one; anything else is -1', () => {
  const ledger = new Ledger(recorder().hooks, 3)
  const add = (args: unknown[]) => ledger.add(ledger.nextId, 't', args, () => {}, 0, undefined, ActorOp.Call, undefined, undefined)
  const cases: [unknown[], number][] = [
    [[], 0],
    [[7], 1],
    [[1, -2.5], 2],
    [[NaN, Infinity, -0], 3],
    [['a'], -1],
    [[1, 'b'], -1],
    [[1, 2, { c: 3 }], -1],
    [[1n], -1],
    [[1, 2, 3, 4], -1],
  ]
  for (const [args, argc] of cases) {
    const e = add(args)
    assert.equal(ledger.numberArgc(e), argc, `numberArgc of ${String(args)}`)
    for (let i = 0; i < argc; i++) assert.ok(Object.is(ledger.numberArg(e, i as 0 | 1 | 2), args[i]), `argument ${i} of ${String(args)}`)
    ledger.succeed(e, undefined, 0)
  }
  // A reused slot answers for its own arguments: three numbers, then one string, then one number.
  const three = add([1, 2, 3])
  ledger.succeed(three, undefined, 0)
  const text = add(['x'])
  assert.equal(text, three)
  assert.equal(ledger.numberArgc(text), -1)
  ledger.succeed(text, undefined, 0)
  const one = add([5])
  assert.equal(ledger.numberArgc(one), 1)
  assert.equal(ledger.numberArg(one, 0), 5)
})

test('entriesHeldBy, failAll and unsettled: every unsettled entry, in the order added even when slots are reused', () => {
  const { calls, hooks } = recorder()
  const ledger = new Ledger(hooks, 3)
  const add = () => ledger.add(ledger.nextId, 't', [], () => {}, 0, undefined, ActorOp.Call, undefined, undefined)
  const a = add()
  const b = add()
  const c = add()
  ledger.succeed(a, undefined, 0)
  const d = add() // a's slot, first in slot order, last in id order
  assert.equal(d, a)
  const h = holder('n')
  for (const e of [b, c, d]) ledger.hold(e, h)
  assert.deepEqual(ledger.entriesHeldBy(h), [b, c, d])
  assert.deepEqual([...ledger.unsettled()].sort(), [b, c, d].sort())
  ledger.fail(c, new Error('one'))
  assert.deepEqual([...ledger.unsettled()].sort(), [b, d].sort())
  assert.deepEqual(ledger.entriesHeldBy(h), [b, d])
  const ids = [ledger.id(b), ledger.id(d)]
  const failedBefore = calls.failed.length
  ledger.failAll(new Error('all'))
  assert.deepEqual(
    calls.failed.slice(failedBefore).map((f) => f.id),
    ids,
  )
  assert.deepEqual([...ledger.unsettled()], [])
  assert.equal(ledger.size, 0)
})

test('settling twice settles once: the outcome, the counters and the size are unchanged by the second', () => {
  const { calls, hooks } = recorder()
  const ledger = new Ledger(hooks, 3)
  const outcomes: unknown[] = []
  const e = ledger.add(ledger.nextId, 't', [], (v) => outcomes.push(v), 0, undefined, ActorOp.Call, undefined, undefined)
  const other = ledger.add(ledger.nextId, 't', [], () => {}, 0, undefined, ActorOp.Call, undefined, undefined)
  ledger.succeed(e, 1, 0)
  ledger.succeed(e, 2, 0)
  ledger.fail(e, new Error('late'))
  assert.equal(outcomes.length, 1)
  assert.equal(ledger.size, 1)
  assert.equal(calls.succeeded.length, 1)
  assert.equal(calls.failed.length, 0)
  assert.equal(ledger.counters.tasksSucceeded, 1)
  assert.equal(ledger.get(ledger.id(other)), other)
})

test('a queue dropped whole frees the slots of the entries that settled in it', () => {
  const ledger = new Ledger(recorder().hooks, 3)
  const add = () => ledger.add(ledger.nextId, 't', [], () => {}, 0, undefined, ActorOp.Call, undefined, undefined)
  const q = [add(), add(), add()]
  for (const e of q) ledger.queued(e)
  ledger.withdraw(q[0]!, new TaskCancelledError('x'))
  ledger.withdraw(q[2]!, new TaskCancelledError('x'))
  assert.equal(ledger.withdrawnInQueue, 2)
  ledger.queueCleared(q)
  assert.equal(ledger.withdrawnInQueue, 0)
  // The freed slots are handed out again (the one freed last first).
  assert.equal(add(), q[2])
  assert.equal(add(), q[0])
})

test('the retried hook gets the attempt: user and infrastructure retries together', () => {
  const attempts: number[] = []
  const hooks: LedgerHooks = { succeeded() {}, failed() {}, retried: (_id, _name, _args, _cause, attempt) => attempts.push(attempt) }
  const ledger = new Ledger(hooks, 3)
  const e = ledger.add(ledger.nextId, 't', [], () => {}, 0, undefined, ActorOp.Call, opts({ retries: 2, maxRetries: 2 }), undefined)
  assert.equal(ledger.retry(e, 'infra', new Error('lost')), true)
  assert.equal(ledger.retry(e, 'user', new Error('threw')), true)
  assert.equal(ledger.retry(e, 'user', new Error('threw')), true)
  assert.equal(ledger.retry(e, 'infra', new Error('lost')), true)
  assert.equal(ledger.retry(e, 'user', new Error('threw')), false)
  assert.deepEqual(attempts, [1, 2, 3, 4])
})

test('an entry gives back its op and its actor; a result whose id is not a number is late, whatever its type', () => {
  const ledger = new Ledger(recorder().hooks, 3)
  const target = { id: 'actor-1' }
  const m = ledger.add(ledger.nextId, 'Counter', [0], () => {}, 0, target, ActorOp.Spawn, undefined, undefined)
  const t = ledger.add(ledger.nextId, 't', [], () => {}, 0, undefined, ActorOp.Call, undefined, undefined)
  assert.equal(ledger.op(m), ActorOp.Spawn)
  assert.equal(ledger.actor(m), target)
  assert.equal(ledger.op(t), ActorOp.Call)
  assert.equal(ledger.actor(t), undefined)
  const id = ledger.id(t)
  for (const bad of [String(id), BigInt(id), null, [id]]) assert.equal(ledger.answered(bad), undefined)
  assert.equal(ledger.counters.lateResultsDropped, 4)
  assert.equal(ledger.answered(id), t)
})
