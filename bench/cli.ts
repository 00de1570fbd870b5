import type { Argv, CommandModule } from 'yargs'
import { availableParallelism } from 'node:os'
import { runSeed, type SeedResult } from './seed.js'
import { runNaive } from './naive.js'
import { runLatency } from './latency.js'
import { runBalance } from './balance.js'
import { runMapMemory } from './map-memory.js'
import { chaosAllMarkdown, runChaos, runChaosAll } from './chaos.js'
import { runScale } from './scale.js'
import { runSeedAll, seedAllMarkdown, writeSeedAll } from './seed-all.js'
import { InvalidArgumentError } from '../lib/errors.js'
import { CLUSTER_DEFAULTS, LOCAL_TRANSPORTS } from '../lib/options.js'
import { ENV_VARIABLE_NAMES } from '../lib/settings.js'
import { TRANSPORT_DEFAULTS, TRANSPORT_KINDS } from '../lib/transport/options.js'
import { runMonitorCost } from './monitor-cost.js'
import { runPut } from './put.js'
import { runShapes, shapesMarkdown } from './shapes.js'
import { reduceBenchLines, runReduceBench } from './reduce.js'
import { commandLogger } from '../lib/cli/log.js'
import { inFlagTerms, type FlagOf } from '../lib/cli/flags.js'
import { actorsMarkdown, runActorsBench } from './actors.js'

function parseBatch(v: string | undefined): 'auto' | number {
  if (v === 'auto' || v === undefined) return 'auto'
  const n = Number(v)
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`--batch must be 'auto' or a positive integer, got ${v}`)
  return n
}

const print = (json: boolean, value: object, lines: string[]) => {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${lines.join('\n')}\n`)
}

function seedLines(r: SeedResult): string[] {
  return [
    `seed benchmark — design ${r.design}, ${r.tasks} tasks (1, k), ${r.agents} agent(s) × ${r.threads} threads, batch ${r.batch}, via ${r.via}`,
    ...r.runs.map(
      (x, i) =>
        `  run ${i + 1}: submit ${x.submitSeconds.toFixed(3)} s, round trip ${x.roundTripSeconds.toFixed(3)} s, ${x.tasksPerSecond.toLocaleString('en-US')} tasks/s, check ${x.ok ? 'ok' : 'FAILED'}`,
    ),
    `median: submit ${r.submitSeconds.toFixed(3)} s, round trip ${r.roundTripSeconds.toFixed(3)} s, ${r.tasksPerSecond.toLocaleString('en-US')} tasks/s, check ${r.ok ? 'ok (count and sum)' : 'FAILED'}`,
  ]
}

/**
 * The variables of the settings pipeline (`CLUSTER_HEARTBEAT_MS`, those
 * `cluster dashboard --` sets, …) are declared, hidden, so that the strict
 * parser does not reject them as unknown flags of a benchmark. Typed on the
 * command line of `command`, such a flag is refused: the benchmark has no use
 * for it, and would ignore it without a word.
 */
function tolerateSettingsVariables(y: Argv, command?: string): Argv {
  // A hidden key stays hidden in the help of every subcommand, even one that declares it as its own flag (--tasks, --threads, --batch…):
  // each subcommand hides only the keys it does not declare, and the parent's are not global.
  // yargs' getOptions() (the options declared so far) is public at run time; @types/yargs leaves it out.
  const declared = new Set(Object.keys((y as unknown as { getOptions(): { key: Record<string, unknown> } }).getOptions().key).map(camel))
  const tolerated = new Set<string>()
  for (const name of ENV_VARIABLE_NAMES) {
    const key = camel(name.slice('CLUSTER_'.length).toLowerCase().replaceAll('_', '-'))
    if (declared.has(key)) continue
    tolerated.add(key)
    y = y.option(key, { hidden: true, global: false })
  }
  return command === undefined ? y : y.check(() => refuseTypedVariables(tolerated, command))
}

/**
 * Throws for the first word of the command line (before `--`) that is a flag
 * only tolerated for its variable: `unknown flag --heartbeat-ms for cluster bench seed`.
 */
function refuseTypedVariables(tolerated: ReadonlySet<string>, command: string, words: readonly string[] = process.argv.slice(2)): true {
  for (const w of words) {
    if (w === '--') break
    const flag = /^--([^=]+)/.exec(w)?.[1]
    if (flag === undefined) continue
    if (tolerated.has(camel(flag)) || (flag.startsWith('no-') && tolerated.has(camel(flag.slice(3))))) {
      throw new InvalidArgumentError(`unknown flag --${flag} for cluster bench ${command}`)
    }
  }
  return true
}

const camel = (flag: string): string => flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase())

/** The cluster option each flag of the benchmarks sets, for errors that name the option (`options.redisUrl` is `--redis` here). */
const BENCH_FLAGS: Readonly<Record<string, FlagOf>> = {
  redisUrl: 'redis',
  amqpUrl: 'amqp',
  threads: 'threads',
  batch: 'batch',
  localTransport: 'local-transport',
  heartbeatMs: 'heartbeat-ms',
  nodeTimeoutMs: 'node-timeout-ms',
  dashboard: 'dashboard',
  'dashboard.port': 'dashboard',
}

/**
 * A benchmark subcommand whose builder also tolerates the settings variables
 * it does not declare as flags, and whose errors name the flags.
 */
function benchmark<U>(command: CommandModule<object, U>): CommandModule<object, U> {
  const builder = command.builder as (y: Argv) => Argv<U>
  const handler = command.handler
  return {
    ...command,
    builder: (y) => tolerateSettingsVariables(builder(y), String(command.command)) as Argv<U>,
    handler: async (a) => {
      try {
        await handler(a)
      } catch (err) {
        throw inFlagTerms(err, BENCH_FLAGS)
      }
    },
  }
}

/**
 * The smallest value of each number flag of the benchmarks (all are integers):
 * checked before any benchmark starts, so that `--runs 0` or `--tasks 1.5`
 * is an error naming the flag rather than a surprise deep in a run.
 */
const INTEGER_FLAGS: Readonly<Record<string, number>> = {
  runs: 1,
  tasks: 1,
  'naive-tasks': 1,
  'copy-tasks': 1,
  agents: 1,
  threads: 1,
  procs: 1,
  calls: 1,
  'sync-calls': 1,
  'mb-tasks': 1,
  inputs: 1,
  bytes: 8,
  spawn: 0,
  messages: 0,
  balls: 1,
  'ring-size': 0,
  'ring-hops': 1,
  'timeout-ms': 1,
  samples: 1,
  'per-task': 1,
  chunk: 1,
  'kill-every-ms': 1,
  'task-us': 0,
  'heartbeat-ms': 1,
  'node-timeout-ms': 1,
  dashboard: 0,
}

function checkIntegerFlags(argv: Record<string, unknown>): true {
  for (const [flag, min] of Object.entries(INTEGER_FLAGS)) {
    const v = argv[flag]
    if (v === undefined || (typeof v === 'number' && Number.isSafeInteger(v) && v >= min)) continue
    const want = min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer ≥ ${min}`
    // A word is refused before this, saying what was typed (lib/cli/flags.ts).
    throw new InvalidArgumentError(`--${flag} must be ${want}, got ${JSON.stringify(v)}`)
  }
  return true
}

/** The subjects of `cluster bench`, as the errors list them. */
const BENCHMARKS = ['seed', 'latency', 'balance', 'map', 'put', 'reduce', 'shapes', 'actors', 'chaos', 'scale', 'monitor'] as const

const common = (y: Argv) =>
  y
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' })
    .option('runs', { type: 'number', default: 3, describe: 'measured runs (the median is reported)' })

/**
 * `cluster bench <subject>`: a command of the `cluster` binary, kept with the
 * benchmarks so that the library does not depend on them. Its flags also read
 * `CLUSTER_<FLAG>` variables (sizes from the environment, `CLUSTER_TASKS=…`).
 */
export const benchCommand: CommandModule = {
  command: 'bench <subject>',
  describe: 'Measure the cluster on this machine (seed, latency, balance, map, reduce, shapes, actors, …)',
  builder: (y) =>
    tolerateSettingsVariables(y.env('CLUSTER'))
      .check(checkIntegerFlags)
      .command(
        benchmark({
          command: 'seed',
          describe: 'The seed benchmark: N tasks (1, k), workers add, the driver checks every sum',
          builder: (b) =>
            common(b)
              .option('tasks', { type: 'number', default: 100_000, describe: 'number of tasks' })
              .option('agents', { type: 'number', default: 1, describe: 'local agents' })
              .option('threads', { type: 'number', describe: 'threads per agent (default: cores / agents)' })
              .option('batch', { type: 'string', default: CLUSTER_DEFAULTS.batch, describe: "tasks per frame: 'auto' or N (1 = one task per frame)" })
              .option('local-transport', {
                choices: LOCAL_TRANSPORTS,
                default: CLUSTER_DEFAULTS.localTransport,
                describe: 'how the local agents reach the driver',
              })
              .option('via', { choices: ['call', 'map'] as const, default: 'call' as const, describe: 'one call() per task, or one map()' })
              .option('warmup', { type: 'boolean', default: true, describe: 'one unmeasured run first' })
              .option('transport', {
                choices: [...TRANSPORT_KINDS, 'all', 'naive-zmq'] as const,
                default: TRANSPORT_DEFAULTS.transport,
                describe:
                  "the design; 'all' runs the four one after another, plus each transport's naive baseline, and prints a table; 'naive-zmq' runs the seed's ZeroMQ design (PUSH/PULL, one message per task) alone",
              })
              .option('redis', { type: 'string', default: TRANSPORT_DEFAULTS.redisUrl, describe: 'Redis URL for the brokered designs' })
              .option('amqp', { type: 'string', default: TRANSPORT_DEFAULTS.amqpUrl, describe: 'RabbitMQ URL for the brokered designs' })
              .option('naive-tasks', {
                type: 'number',
                default: 20_000,
                describe: 'with --transport all: tasks of the brokered naive baselines (one message per task; at most --tasks; naive-zmq runs --tasks)',
              })
              .option('out', {
                type: 'string',
                default: 'docs/benchmarks',
                describe: "with --transport all: write seed.json, seed.svg and seed.md here ('' for none)",
              })
              .option('dashboard', { type: 'number', describe: 'serve the dashboard on this port while running (0 = a free one)' }),
          handler: async (a) => {
            if (a.transport === 'all') {
              const tasks = a.tasks
              const log = (line: string) => process.stderr.write(`${line}\n`)
              log(`seed benchmark over every design: ${tasks} tasks, naive baselines ${Math.min(tasks, a['naive-tasks'])} tasks, ${a.runs} runs each`)
              const r = await runSeedAll({ tasks, naiveTasks: Math.min(tasks, a['naive-tasks']), runs: a.runs, redisUrl: a.redis, amqpUrl: a.amqp }, log)
              const out = a.out
              if (out) log(`wrote ${(await writeSeedAll(r, out)).join(', ')}`)
              print(a.json, r, [seedAllMarkdown(r)])
              if (!r.ok) process.exitCode = 1
              return
            }
            if (a.transport === 'naive-zmq') {
              const r = await runNaive({ broker: 'zmq', tasks: a.tasks, workers: availableParallelism(), runs: a.runs, redisUrl: a.redis, amqpUrl: a.amqp })
              print(a.json, r, [
                `seed benchmark — naive-zmq (PUSH/PULL, one message per task), ${r.tasks} tasks, ${r.workers} worker threads`,
                ...r.runs.map(
                  (x, i) =>
                    `  run ${i + 1}: round trip ${x.roundTripSeconds.toFixed(3)} s, ${x.tasksPerSecond.toLocaleString('en-US')} tasks/s, check ${x.ok ? 'ok' : 'FAILED'}`,
                ),
                `median: round trip ${r.roundTripSeconds.toFixed(3)} s, ${r.tasksPerSecond.toLocaleString('en-US')} tasks/s, check ${r.ok ? 'ok (count and sum)' : 'FAILED'}`,
              ])
              if (!r.ok) process.exitCode = 1
              return
            }
            const r = await runSeed({
              tasks: a.tasks,
              agents: a.agents,
              threads: a.threads,
              batch: parseBatch(a.batch),
              runs: a.runs,
              warmup: a.warmup,
              via: a.via,
              localTransport: a['local-transport'],
              transport: a.transport,
              redisUrl: a.redis,
              amqpUrl: a.amqp,
              dashboard: a.dashboard,
              progress: !a.json,
              logger: commandLogger(a, 'warn'),
            })
            print(a.json, r, seedLines(r))
            if (!r.ok) process.exitCode = 1
          },
        }),
      )
      .command(
        benchmark({
          command: 'latency',
          describe: 'Round trip of one call at a time on loopback: p50 / p99',
          builder: (b) =>
            common(b)
              .option('calls', { type: 'number', default: 5000, describe: 'sequential calls per run' })
              .option('local-transport', {
                type: 'array',
                choices: LOCAL_TRANSPORTS,
                default: [...LOCAL_TRANSPORTS],
                describe: 'how the local agent reaches the driver',
              }),
          handler: async (a) => {
            const results = []
            for (const t of a['local-transport']) {
              results.push(await runLatency({ calls: a.calls, runs: a.runs, localTransport: t }))
            }
            print(a.json, results.length === 1 ? results[0]! : { results }, [
              `call latency — ${a.calls} sequential calls × ${a.runs} runs, embedded agent`,
              ...results.map(
                (r) =>
                  `  ${r.localTransport.padEnd(6)}: p50 ${r.p50Us.toFixed(0)} µs, p99 ${r.p99Us.toFixed(0)} µs, mean ${r.meanUs.toFixed(0)} µs (medians of runs)`,
              ),
            ])
          },
        }),
      )
      .command(
        benchmark({
          command: 'put',
          describe: 'One array used by many tasks on several agents: cluster.put against the array with each task (bytes on the wire, tasks/s)',
          builder: (b) =>
            common(b)
              .option('bytes', { type: 'number', default: 1_000_000, describe: 'bytes of the Float64Array (a multiple of 8)' })
              .option('tasks', { type: 'number', default: 10_000, describe: 'tasks that read the put array, per run' })
              .option('copy-tasks', { type: 'number', default: 300, describe: 'tasks that carry the array each, per run' })
              .option('agents', { type: 'number', default: 2, describe: 'local agents of one thread each, over TCP' })
              .option('transport', { choices: TRANSPORT_KINDS, default: TRANSPORT_DEFAULTS.transport, describe: 'the design' })
              .option('redis', { type: 'string', default: TRANSPORT_DEFAULTS.redisUrl, describe: 'Redis URL for the brokered designs' })
              .option('amqp', { type: 'string', default: TRANSPORT_DEFAULTS.amqpUrl, describe: 'RabbitMQ URL for the brokered designs' }),
          handler: async (a) => {
            // The array holds whole 8-byte elements: any other size would be measured as a smaller one than asked for.
            if (a.bytes % 8 !== 0) throw new InvalidArgumentError(`--bytes must be a multiple of 8 (a Float64Array's element), got ${a.bytes}`)
            const r = await runPut({
              bytes: a.bytes,
              tasks: a.tasks,
              copyTasks: a['copy-tasks'],
              agents: a.agents,
              runs: a.runs,
              transport: a.transport,
              redisUrl: a.redis,
              amqpUrl: a.amqp,
            })
            const mb = (n: number) => `${(n / 1e6).toFixed(2)} MB`
            print(a.json, r, [
              `shared input — design ${r.design}, a ${mb(r.bytes)} Float64Array, ${r.agents} agents × 1 thread (medians of ${a.runs} runs)`,
              `  put once : ${r.tasks} tasks, ${r.put.tasksPerSecond.toLocaleString('en-US')} tasks/s, ${mb(r.put.bytesOut)} sent by the driver (${r.put.bytesPerTask.toFixed(1)} B per task beyond one copy per node)`,
              `  each task: ${r.copyTasks} tasks, ${r.copy.tasksPerSecond.toLocaleString('en-US')} tasks/s, ${mb(r.copy.bytesOut)} sent by the driver`,
              `speedup ${r.speedup.toFixed(1)}× (goal ≥ 50×); bytes ${r.ok ? 'within' : 'OVER'} ${r.agents} × 1.1 × the array + 64 B per task`,
            ])
            if (!r.ok) process.exitCode = 1
          },
        }),
      )
      .command(
        benchmark({
          command: 'balance',
          describe: 'Heavy-tailed tasks (most 1 ms, 5% 50 ms) over several agents: makespan against the ideal',
          builder: (b) =>
            common(b)
              .option('tasks', { type: 'number', default: 2000 })
              .option('agents', { type: 'number', default: 2 })
              .option('threads', { type: 'number', default: 1, describe: 'threads per agent' }),
          handler: async (a) => {
            const r = await runBalance({ tasks: a.tasks, agents: a.agents, threads: a.threads, runs: a.runs })
            print(a.json, r, [
              `load balance — ${r.tasks} tasks (95% 1 ms, 5% 50 ms), ${r.agents} agents × ${r.threads} threads`,
              ...r.runs.map((x, i) => `  run ${i + 1}: makespan ${x.makespanMs.toFixed(0)} ms, ideal ${x.idealMs.toFixed(0)} ms, ratio ${x.ratio.toFixed(3)}`),
              `median ratio ${r.ratio.toFixed(3)} (goal ≤ 1.2)`,
            ])
          },
        }),
      )
      .command(
        benchmark({
          command: 'map',
          describe: 'map() over a lazily generated input: throughput and peak driver memory',
          builder: (b) => common(b).option('inputs', { type: 'number', default: 10_000_000 }).option('runs', { default: 1 }),
          handler: async (a) => {
            const r = await runMapMemory({ inputs: a.inputs, progress: !a.json })
            print(a.json, r, [
              `map over ${r.inputs.toLocaleString('en-US')} generated inputs: ${r.seconds.toFixed(1)} s, ${r.tasksPerSecond.toLocaleString('en-US')} tasks/s`,
              `peak RSS ${r.peakRssMB.toFixed(0)} MB (goal < 300 MB), check ${r.ok ? 'ok' : 'FAILED'}`,
            ])
            if (!r.ok) process.exitCode = 1
          },
        }),
      )
      .command(
        benchmark({
          command: 'shapes',
          describe: "Ray's microbenchmark shapes (tasks and actor calls, one at a time and 1,000 in flight; a 1 MB argument) beside Ray's published figures",
          builder: (b) =>
            common(b)
              .option('calls', { type: 'number', default: 100_000, describe: 'calls per run of the shapes with 1,000 in flight' })
              .option('sync-calls', { type: 'number', default: 5000, describe: 'calls per run of the one-at-a-time shapes' })
              .option('mb-tasks', { type: 'number', default: 1000, describe: 'tasks per run of the 1 MB argument shapes' })
              .option('agents', { type: 'number', default: 1, describe: 'local agents' })
              .option('threads', { type: 'number', describe: 'threads per agent (default: cores / agents); n_n uses agents × threads actors' }),
          handler: async (a) => {
            const log = (line: string) => process.stderr.write(`${line}\n`)
            const r = await runShapes(
              { calls: a.calls, syncCalls: a['sync-calls'], mbTasks: a['mb-tasks'], agents: a.agents, threads: a.threads, runs: a.runs },
              a.json ? undefined : log,
            )
            print(a.json, r, [shapesMarkdown(r)])
          },
        }),
      )
      .command(
        benchmark({
          command: 'actors',
          describe:
            'Actors: spawn many on several agents (actors/s, driver bytes per actor), ping-pong by tell on one node and across nodes, a token around a ring',
          builder: (b) =>
            common(b)
              .option('spawn', { type: 'number', default: 100_000, describe: 'actors spawned per run (0 skips)' })
              .option('messages', { type: 'number', default: 1_000_000, describe: 'messages per ping-pong run (0 skips the ping-pongs)' })
              .option('balls', { type: 'number', default: 100, describe: 'balls in play at once in a ping-pong' })
              .option('ring-size', { type: 'number', default: 1000, describe: 'actors in the ring (0 skips it)' })
              .option('ring-hops', { type: 'number', default: 1_000_000, describe: 'hops of the token per run' })
              .option('agents', { type: 'number', default: 2, describe: 'local agents' })
              .option('threads', { type: 'number', describe: 'threads per agent (default: cores / agents)' })
              .option('local-transport', {
                choices: LOCAL_TRANSPORTS,
                default: CLUSTER_DEFAULTS.localTransport,
                describe: 'how the local agents reach the driver',
              })
              .option('timeout-ms', { type: 'number', default: 120_000, describe: 'longest wait for one run' }),
          handler: async (a) => {
            if (a.balls > a.messages && a.messages > 0)
              throw new InvalidArgumentError(`--balls (${a.balls}) must not exceed --messages (${a.messages}): each ball is at least one message`)
            const log = (line: string) => process.stderr.write(`${line}\n`)
            const r = await runActorsBench(
              {
                spawn: a.spawn,
                messages: a.messages,
                balls: a.balls,
                ringSize: a['ring-size'],
                ringHops: a['ring-hops'],
                agents: a.agents,
                threads: a.threads,
                localTransport: a['local-transport'],
                runs: a.runs,
                timeoutMs: a['timeout-ms'],
              },
              a.json ? undefined : log,
            )
            print(a.json, r, [actorsMarkdown(r)])
          },
        }),
      )
      .command(
        benchmark({
          command: 'reduce',
          describe: 'Monte Carlo π: reduce on the agents against map + sum on the driver, in one run',
          builder: (b) =>
            common(b)
              .option('samples', { type: 'number', default: 10_000_000, describe: 'points drawn in all' })
              .option('per-task', { type: 'number', default: 100, describe: 'points per task' })
              .option('threads', { type: 'number', describe: 'threads of the local agent (default: cores)' })
              .option('chunk', { type: 'number', describe: 'inputs per chunk of the reduce (default: auto)' }),
          handler: async (a) => {
            const r = await runReduceBench({ samples: a.samples, perTask: a['per-task'], runs: a.runs, threads: a.threads, chunk: a.chunk })
            print(a.json, r, reduceBenchLines(r))
            if (!r.ok) process.exitCode = 1
          },
        }),
      )
      .command(
        benchmark({
          command: 'monitor',
          describe: 'What the dashboard and /metrics cost the seed benchmark: on and off alternated, medians',
          builder: (b) =>
            common(b)
              .option('tasks', { type: 'number', default: 300_000, describe: 'tasks per measured run' })
              .option('runs', { default: 11, describe: 'rounds of one run off and one run on' })
              .option('threads', { type: 'number', describe: 'threads of the local agent (default: cores)' })
              .option('via', {
                choices: ['call', 'map'] as const,
                default: 'call' as const,
                describe: 'one call() per task (the seed benchmark), or one map()',
              }),
          handler: async (a) => {
            const r = await runMonitorCost({ tasks: a.tasks, rounds: a.runs, threads: a.threads, via: a.via })
            const rate = (x: number) => `${Math.round(x).toLocaleString('en-US')}`
            print(a.json, r, [
              `monitoring cost — seed benchmark via ${r.via}, ${r.tasks.toLocaleString('en-US')} tasks per run, ${r.rounds} rounds of off/on, ${r.threads} threads`,
              `  off: ${r.off.map(rate).join(', ')} tasks/s`,
              `  on : ${r.on.map(rate).join(', ')} tasks/s (client got ${r.updates} live updates, ${r.scrapes} /metrics scrapes)`,
              `median off ${rate(r.offMedian)}, on ${rate(r.onMedian)} tasks/s: cost ${(100 * r.cost).toFixed(1)}% (goal ≤ 5%), check ${r.ok ? 'ok' : 'FAILED'}`,
              `per-round ratio on/off (median): ${r.pairedRatio.toFixed(3)}; CPU per task (median): off ${r.cpuUsPerTaskOff.toFixed(2)} µs, on ${r.cpuUsPerTaskOn.toFixed(2)} µs`,
            ])
            if (!r.ok) process.exitCode = 1
          },
        }),
      )
      .command(
        benchmark({
          command: 'chaos',
          describe: 'Kill an agent every few seconds during a job: tasks lost, duplicates, time to recover',
          builder: (b) =>
            b
              .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' })
              .option('transport', {
                choices: [...TRANSPORT_KINDS, 'all'] as const,
                default: TRANSPORT_DEFAULTS.transport,
                describe: "the design; 'all' runs the four one after another and prints a table",
              })
              .option('redis', { type: 'string', default: TRANSPORT_DEFAULTS.redisUrl, describe: 'Redis URL for the brokered designs' })
              .option('amqp', { type: 'string', default: TRANSPORT_DEFAULTS.amqpUrl, describe: 'RabbitMQ URL for the brokered designs' })
              .option('tasks', { type: 'number', default: 100_000 })
              .option('agents', { type: 'number', default: 4 })
              .option('kill-every-ms', { type: 'number', default: 2000 })
              .option('task-us', { type: 'number', default: 200, describe: 'busy time of each task, µs' })
              .option('heartbeat-ms', { type: 'number', default: CLUSTER_DEFAULTS.heartbeatMs })
              .option('node-timeout-ms', { type: 'number', default: CLUSTER_DEFAULTS.nodeTimeoutMs }),
          handler: async (a) => {
            const o = {
              tasks: a.tasks,
              agents: a.agents,
              killEveryMs: a['kill-every-ms'],
              taskUs: a['task-us'],
              heartbeatMs: a['heartbeat-ms'],
              nodeTimeoutMs: a['node-timeout-ms'],
              redisUrl: a.redis,
              amqpUrl: a.amqp,
            }
            if (a.transport === 'all') {
              const log = (line: string) => process.stderr.write(`${line}\n`)
              log(
                `chaos over every design: ${o.tasks} tasks over ${o.agents} agents, one SIGKILLed every ${o.killEveryMs} ms and replaced (heartbeat ${o.heartbeatMs} ms, node timeout ${o.nodeTimeoutMs} ms)`,
              )
              const rows = await runChaosAll(o, log)
              print(a.json, rows, [chaosAllMarkdown(rows)])
              if (!rows.every((r) => 'ok' in r && r.ok)) process.exitCode = 1
              return
            }
            const r = await runChaos({ ...o, transport: a.transport })
            const ms = (x: number | undefined) => (x === undefined ? '—' : `${Math.round(x)} ms`)
            print(a.json, r, [
              `chaos — design ${r.design}, ${r.tasks} tasks over ${r.agents} agents, one SIGKILLed every ${r.killEveryMs} ms and replaced (heartbeat ${r.heartbeatMs} ms, node timeout ${r.nodeTimeoutMs} ms)`,
              ...r.kills.map(
                (k, i) =>
                  `  kill ${i + 1}: pid ${k.pid}, declared lost after ${ms(k.detectedMs)}, ${k.requeued} tasks requeued, running elsewhere after ${ms(k.recoveryMs)}`,
              ),
              `${r.seconds.toFixed(1)} s, ${r.tasksPerSecond.toLocaleString('en-US')} tasks/s; lost ${r.lost}, delivered twice ${r.duplicates}, unknown ids ${r.unexpected}; recovery median ${ms(r.medianRecoveryMs)}, max ${ms(r.maxRecoveryMs)}; ${r.ok ? 'ok' : 'FAILED'}`,
            ])
            if (!r.ok) process.exitCode = 1
          },
        }),
      )
      .command(
        benchmark({
          command: 'scale',
          describe: 'Many lightweight agents (several per process, shared pools) on one driver: registration time, tasks/s, driver memory',
          builder: (b) =>
            common(b)
              .option('agents', { type: 'number', default: 1000, describe: 'agents to attach' })
              .option('procs', { type: 'number', describe: 'processes hosting them (default: one per 250 agents, at least 2)' })
              .option('tasks', { type: 'number', default: 100_000, describe: 'seed tasks per run' }),
          handler: async (a) => {
            const agents = a.agents
            const procs = a.procs
            if (procs !== undefined && procs > agents) {
              throw new InvalidArgumentError(`--procs must be an integer from 1 to --agents (${agents}), got ${String(procs)}`)
            }
            const r = await runScale({ agents, procs, tasks: a.tasks, runs: a.runs })
            print(a.json, r, [
              `scale — ${r.agents} agents in ${r.procs} processes (shared pools), one driver, seed benchmark of ${r.tasks.toLocaleString('en-US')} tasks`,
              `  registered ${r.registered}/${r.agents} in ${r.registerSeconds.toFixed(2)} s; ${r.withWork} agents got work; lost ${r.lost} nodes, ${r.requeued} tasks requeued`,
              ...r.runs.map(
                (x, i) => `  run ${i + 1}: ${x.seconds.toFixed(3)} s, ${x.tasksPerSecond.toLocaleString('en-US')} tasks/s, check ${x.ok ? 'ok' : 'FAILED'}`,
              ),
              `median ${r.tasksPerSecond.toLocaleString('en-US')} tasks/s; driver RSS ${r.driverBaseRssMB.toFixed(0)} MB before agents, ${r.driverRegisteredRssMB.toFixed(0)} MB with all registered, peak ${r.driverPeakRssMB.toFixed(0)} MB; ${r.ok ? 'ok' : 'FAILED'}`,
            ])
            if (!r.ok) process.exitCode = 1
          },
        }),
      )
      // Any other word (or none) lands here, so that the error names what was given rather than only what was missed.
      .command({
        command: '$0 [subject]',
        describe: false,
        builder: (b) => b.strict(false),
        handler: (a) => {
          const known = `${BENCHMARKS.slice(0, -1).join(', ')} or ${BENCHMARKS.at(-1)!}`
          const given = a['subject']
          if (given === undefined) throw new InvalidArgumentError(`name a benchmark: ${known}`)
          throw new InvalidArgumentError(`unknown benchmark ${JSON.stringify(given)}: name one of ${known}`)
        },
      }),
  handler: () => {},
}
