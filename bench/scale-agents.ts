/**
 * One process standing for many lightweight nodes in `cluster bench scale`:
 * `node scale-agents.js <address> <count> <prefix> [threads]` starts `count`
 * agents, each with its own socket, identity, credit and heartbeats, all
 * running their batches on one shared pool. SIGTERM closes them all.
 */
import { Agent, AgentPool } from '../lib/index.js'
import { BENCH_TASKS } from './seed.js'

const [address, countText, prefix, threadsText] = process.argv.slice(2)
const count = Number(countText)
if (!address || !Number.isSafeInteger(count) || count < 1 || !prefix) {
  process.stderr.write('usage: scale-agents.js <address> <count> <prefix> [pool threads]\n')
  process.exit(2)
}
const pool = await AgentPool.start({ tasks: BENCH_TASKS, threads: Number(threadsText ?? 1) })
const agents = await Promise.all(
  Array.from({ length: count }, (_, i) => Agent.start({ connect: address, tasks: BENCH_TASKS, threads: 1, pool, id: `${prefix}-${i}` })),
)
process.stdout.write(`started ${agents.length}\n`)
const stop = async () => {
  await Promise.all(agents.map((a) => a.close()))
  await pool.close()
  process.exit(0)
}
process.on('SIGTERM', () => void stop())
process.on('SIGINT', () => void stop())
setInterval(() => {}, 1 << 30)
