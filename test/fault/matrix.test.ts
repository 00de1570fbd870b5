/**
 * The fault matrix: the same faults over every design (zmq, redis, amqp,
 * amqp+redis), with agents in processes of their own. Every cell checks that
 * each future settles exactly once, with the right value or the documented
 * error. Brokered designs skip, saying why, when a broker is unreachable
 * (unless REQUIRE_BROKERS=1). What a design cannot hold is a documented
 * exception in docs/guarantees.md, not a skip here.
 */
import { describe, test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { ActorLostError, Cluster, NodeLostError, TaskTimeoutError, type ClusterOptions, type NodeInfo } from '../../lib/index.js'
import type { TransportKind } from '../../lib/transport/options.js'
import type * as Tasks from '../fixtures/tasks.js'
import { FAST, fastAgentArgs, FIXTURE_TASKS, runCli, waitFor, within, type Proc } from '../helpers.js'
import { AMQP_URL, REDIS_URL, skipReason } from '../brokers.js'

const DESIGNS: TransportKind[] = ['zmq', 'redis', 'amqp', 'amqp+redis']

/** One cell's cluster and its agent processes, all stopped when the test ends. */
class Cell {
  readonly agents: Proc[] = []

  private constructor(
    private readonly t: TestContext,
    readonly design: TransportKind,
    readonly cluster: Cluster,
  ) {}

  static async start(t: TestContext, design: TransportKind, options: ClusterOptions = {}): Promise<Cell> {
    const cluster = await Cluster.start({
      tasks: FIXTURE_TASKS,
      localAgents: 0,
      transport: design,
      redisUrl: REDIS_URL,
      amqpUrl: AMQP_URL,
      ...(design === 'zmq' ? { listen: 'tcp://127.0.0.1:0' } : {}),
      ...FAST,
      ...options,
    })
    t.after(() => cluster.close())
    return new Cell(t, design, cluster)
  }

  /** Starts `n` agents of one thread each and waits until all joined. */
  async agentsJoin(n: number): Promise<Proc[]> {
    const brokered = ['--transport', this.design, '--cluster-id', this.cluster.id, '--redis', REDIS_URL, '--amqp', AMQP_URL]
    const args = fastAgentArgs(this.cluster.address)
    // Brokered agents find the cluster by its id on the brokers, not by an address.
    const procs = Array.from({ length: n }, () => runCli(this.t, this.design === 'zmq' ? args : [args[0]!, ...brokered, ...args.slice(3)]))
    this.agents.push(...procs)
    const want = this.agents.length
    await waitFor(() => this.cluster.nodes().length === want, 30_000, `${want} agents to join over ${this.design}`)
    return procs
  }

  node(p: Proc): NodeInfo | undefined {
    return this.cluster.nodes().find((n) => n.pid === p.child.pid)
  }

  /** Resolves with the reason when the node of `p` is declared lost. */
  lossOf(p: Proc): Promise<string> {
    return new Promise((resolve) => {
      const on = (node: NodeInfo, reason: string) => {
        if (node.pid !== p.child.pid) return
        this.cluster.off('node:lost', on)
        resolve(reason)
      }
      this.cluster.on('node:lost', on)
    })
  }

  /** Nothing left pending: no task queued on the driver or held anywhere. */
  assertDrained(): void {
    const s = this.cluster.stats()
    assert.equal(s.queued, 0, 'nothing queued on the driver')
    assert.equal(s.inFlight, 0, 'nothing in flight')
  }
}

/** Calls `name(...args(i))` n times; counts how often each future settles, and how. */
function job<T>(cluster: Cluster, n: number, name: string, args: (i: number) => unknown[]) {
  const settled = new Uint8Array(n)
  const values: T[] = new Array<T>(n)
  let done = 0
  const all = Promise.allSettled(
    Array.from({ length: n }, (_, i) =>
      cluster.call<T>(name, ...args(i)).then(
        (v) => {
          settled[i]!++
          values[i] = v
          done++
        },
        (err: unknown) => {
          settled[i]!++
          done++
          throw err
        },
      ),
    ),
  )
  return {
    get done() {
      return done
    },
    /** Waits for every future; each must have settled once, and fulfilled. */
    async values(ms: number): Promise<T[]> {
      const outcomes = await within(all, ms, () => `every result of ${name} (${done} of ${n} so far; ${JSON.stringify(cluster.stats())})`)
      const rejected = outcomes.filter((o) => o.status === 'rejected')
      assert.deepEqual(rejected, [], 'no future rejected')
      assert.ok(
        settled.every((x) => x === 1),
        'each future settled exactly once',
      )
      return values
    },
  }
}

for (const design of DESIGNS) {
  describe(`fault matrix over ${design}`, { skip: skipReason(design) }, () => {
    test('SIGKILL of an agent mid-job: every result once, correct; the node is lost; nothing left pending', async (t) => {
      const cell = await Cell.start(t, design)
      const [victim, survivor] = await cell.agentsJoin(2)
      const lost = cell.lossOf(victim!)
      const n = 400
      const run = job<[number, number]>(cell.cluster, n, 'sleepThenWhoamiWith', (i) => [5, i])
      await waitFor(() => (cell.node(victim!)?.tasksDone ?? 0) >= 10 && run.done < n / 2, 30_000, 'the victim to have done some work, early in the job')
      victim!.child.kill('SIGKILL')
      assert.match(await within(lost, 15_000, () => 'the killed agent to be declared lost'), /no heartbeat/)
      const values = await run.values(60_000)
      assert.deepEqual(
        values.map(([i]) => i),
        Array.from({ length: n }, (_, i) => i),
      )
      assert.ok(values.some(([, pid]) => pid === survivor!.child.pid))
      const s = cell.cluster.stats()
      assert.equal(s.tasksSucceeded, n)
      assert.equal(s.tasksFailed, 0)
      assert.equal(s.nodesLost, 1)
      cell.assertDrained()
    })

    test('SIGSTOP of an agent running a task, past the node timeout, then SIGCONT: the task settles once, the agent rejoins', async (t) => {
      const cell = await Cell.start(t, design)
      const [a, b] = await cell.agentsJoin(2)
      const slow = cell.cluster.call<number>('sleepThenWhoami', 1200)
      await waitFor(() => cell.cluster.nodes().some((x) => x.busyThreads === 1), 15_000, 'an agent to be running the slow task')
      const frozen = cell.node(a!)?.busyThreads === 1 ? a! : b!
      const other = frozen === a ? b! : a!
      const lost = cell.lossOf(frozen)
      frozen.child.kill('SIGSTOP')
      assert.match(await within(lost, 15_000, () => 'the frozen agent to be declared lost'), /no heartbeat/)
      // Resumed at once: within the brokers' own heartbeat (RabbitMQ gives up on a connection silent for 5 s).
      frozen.child.kill('SIGCONT')
      // The other agent serves; what the frozen one took meanwhile is sent again.
      const quick = job<number>(cell.cluster, 50, 'add', (i) => [i, 1])
      assert.deepEqual(
        await quick.values(30_000),
        Array.from({ length: 50 }, (_, i) => i + 1),
      )
      const pid = await within(slow, 30_000, () => `the slow task to settle (${JSON.stringify(cell.cluster.stats())})`)
      assert.ok(pid === frozen.child.pid || pid === other.child.pid, `ran on an agent of the cluster (${pid})`)
      await waitFor(() => cell.node(frozen) !== undefined, 15_000, `the resumed agent to rejoin (it said: ${frozen.output()})`)
      assert.equal(cell.cluster.stats().tasksSucceeded, 51)
      assert.equal(cell.cluster.stats().tasksFailed, 0)
      cell.assertDrained()
    })

    test("the driver's event loop blocked for twice nodeTimeoutMs: no node lost, nothing retried, every result once", async (t) => {
      const cell = await Cell.start(t, design)
      await cell.agentsJoin(2)
      const lost: string[] = []
      cell.cluster.on('node:lost', (n, reason) => lost.push(`${n.id}: ${reason}`))
      // One task longer than the agents' patience with a silent driver, and a stream of short ones.
      const long = cell.cluster.call<number>('sleep', 2 * FAST.nodeTimeoutMs, 7)
      const n = 300
      const run = job<number>(cell.cluster, n, 'spin', (i) => [2000, i])
      await waitFor(() => run.done >= 30, 30_000, 'the first results')
      const until = performance.now() + 2 * FAST.nodeTimeoutMs
      while (performance.now() < until) {
        // the driver is busy
      }
      assert.deepEqual(
        await run.values(60_000),
        Array.from({ length: n }, (_, i) => i),
      )
      assert.equal(await within(long, 30_000, () => 'the long task'), 7)
      const s = cell.cluster.stats()
      assert.deepEqual(lost, [], 'no node lost')
      assert.equal(s.nodesLost, 0)
      assert.equal(s.tasksRetried, 0)
      assert.equal(s.requeued, 0)
      assert.equal(s.lateResultsDropped, 0)
      assert.equal(s.tasksSucceeded, n + 1)
      assert.equal(cell.cluster.nodes().length, 2)
      cell.assertDrained()
    })

    test('a task that kills its process: after maxRetries losses it rejects with NodeLostError, once; the others run', async (t) => {
      const cell = await Cell.start(t, design, { maxRetries: 1 })
      const agents = await cell.agentsJoin(3)
      const lost: string[] = []
      cell.cluster.on('node:lost', (node, reason) => lost.push(`${node.pid}: ${reason}`))
      const retried: { name: string; attempt: number; cause: string }[] = []
      cell.cluster.on('task:retried', (info) => retried.push({ name: info.name, attempt: info.attempt, cause: info.cause.name }))
      let settledTimes = 0
      const killer = cell.cluster.call('killProcess').then(
        () => assert.fail('a task that kills its node cannot succeed'),
        (e: unknown) => {
          settledTimes++
          return e
        },
      )
      const err = await within(killer, 30_000, () => `the killing task to reject (lost: ${lost.join('; ')})`)
      assert.ok(err instanceof NodeLostError, String(err))
      assert.equal(err.code, 'ERR_NODE_LOST')
      assert.match(err.message, /^task "killProcess" was on node \S+ when it was lost \(no heartbeat for \d+ ms\), after 1 earlier infrastructure failures$/)
      // It ran twice (maxRetries 1): two nodes died, the retry was charged once, and the third node is whole.
      assert.equal(lost.length, 2, lost.join('; '))
      assert.deepEqual(retried, [{ name: 'killProcess', attempt: 1, cause: 'NodeLostError' }])
      assert.deepEqual(
        await job<number>(cell.cluster, 50, 'add', (i) => [i, 1]).values(30_000),
        Array.from({ length: 50 }, (_, i) => i + 1),
      )
      // It never runs again: the third agent lives on.
      assert.equal(agents.filter((a) => a.child.exitCode === null && a.child.signalCode === null).length, 1)
      assert.equal(cell.cluster.nodes().length, 1)
      assert.equal(settledTimes, 1)
      const s = cell.cluster.stats()
      assert.equal(s.tasksFailed, 1)
      assert.equal(s.tasksSucceeded, 50)
      cell.assertDrained()
    })

    test('a timed task queued behind a slow one: its limit counts from its start, so it succeeds; a looping one is still stopped', async (t) => {
      const cell = await Cell.start(t, design)
      const [agent] = await cell.agentsJoin(1)
      const long = cell.cluster.call<number>('sleep', 1500, 1)
      await waitFor(() => cell.node(agent!)?.busyThreads === 1, 15_000, 'the agent to be running the 1.5 s task')
      const started = performance.now()
      assert.equal(await cell.cluster.with({ timeoutMs: 400 }).call<number>('sleep', 10, 2), 2)
      assert.ok(performance.now() - started > 700, 'the timed task did wait behind the long one')
      assert.equal(await long, 1)
      await assert.rejects(cell.cluster.with({ timeoutMs: 300 }).call('loopForever'), (e: unknown) => e instanceof TaskTimeoutError && e.code === 'ERR_TIMEOUT')
      assert.equal(await cell.cluster.call<number>('add', 2, 3), 5)
      const s = cell.cluster.stats()
      assert.equal(s.tasksSucceeded, 3)
      assert.equal(s.tasksFailed, 1)
      cell.assertDrained()
    })

    test('actor restart during a node loss: a message in flight rejects with ActorLostError, later ones reach one fresh instance in order', async (t) => {
      const cell = await Cell.start(t, design)
      const [a, b] = await cell.agentsJoin(2)
      const restarted: string[] = []
      cell.cluster.on('actor:restarted', (info) => restarted.push(info.node))
      const ref = await cell.cluster.with({ restart: 'always' }).spawn<Tasks.Counter>('Counter', 100)
      assert.equal(await ref.inc(1), 101)
      const host = cell.cluster.nodes().find((x) => x.id === ref.node)
      const victim = host?.pid === a!.child.pid ? a! : b!
      const survivor = victim === a ? b! : a!
      const lost = cell.lossOf(victim)
      victim.child.kill('SIGKILL')
      await once(victim.child, 'exit')
      // Sent to a node already dead, before the driver knows: never answered.
      const inFlight = ref.inc(1000)
      await within(lost, 15_000, () => 'the actor host to be declared lost')
      // Sent while the actor restarts: they wait, then reach the new instance in the order sent.
      const later = [ref.inc(1), ref.inc(2), ref.inc(3)]
      await assert.rejects(inFlight, (e: unknown) => e instanceof ActorLostError && e.code === 'ERR_ACTOR_LOST')
      assert.deepEqual(await within(Promise.all(later), 15_000, () => 'the calls sent during the restart'), [101, 103, 106])
      const survivorId = cell.node(survivor)?.id
      assert.deepEqual(restarted, [survivorId], 'restarted once, on the surviving node')
      assert.deepEqual(
        cell.cluster.liveActors().map((x) => x.node),
        [survivorId],
      )
      assert.equal(cell.node(survivor)?.actors, 1)
      await ref.stop()
    })
  })
}
