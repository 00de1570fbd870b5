import yargs from 'yargs'
import { hideBin } from 'yargs/helpers'
import { agentCommand } from './commands/agent.js'
import { benchCommand } from './commands/bench.js'
import { downCommand, statusCommand, upCommand } from './commands/hosts.js'
import { runCommand } from './commands/run.js'
import { keysCommand } from './commands/keys.js'
import { dashboardCommand } from './commands/dashboard.js'
import { LOG_LEVELS } from '../monitor/options.js'
import { VERSION } from '../version.js'
import { ClusterError } from '../errors.js'

/**
 * The `cluster` command line. Every flag can also be given as an environment
 * variable `CLUSTER_<FLAG>` (e.g. `CLUSTER_THREADS=4`); flags win.
 */
export async function main(argv = hideBin(process.argv)): Promise<void> {
  await yargs(argv)
    .scriptName('cluster')
    // `cluster dashboard -- node job.js`: what follows `--` is a program, not flags.
    .parserConfiguration({ 'populate--': true })
    .env('CLUSTER')
    .version(VERSION)
    .option('log-level', { choices: LOG_LEVELS, global: true, describe: 'structured log level on stderr (default: info for agent and dashboard, warn for bench)' })
    // Set by `cluster dashboard -- <program>` for the clusters a program starts (read by Cluster.start, not here);
    // declared so that a `cluster` command run that way does not reject them as unknown CLUSTER_* flags.
    .option('dashboard', { type: 'number', hidden: true, global: true })
    .option('dashboard-host', { type: 'string', hidden: true, global: true })
    .option('dashboard-token', { type: 'string', hidden: true, global: true })
    .option('dashboard-update-ms', { type: 'number', hidden: true, global: true })
    .command(agentCommand)
    .command(benchCommand)
    .command(upCommand)
    .command(statusCommand)
    .command(downCommand)
    .command(runCommand)
    .command(keysCommand)
    .command(dashboardCommand)
    .demandCommand(1, 'name a command: up, status, down, run, agent, bench, dashboard or keys')
    .strict()
    .help()
    .fail((msg, err, y) => {
      if (err) {
        const code = err instanceof ClusterError ? ` [${err.code}]` : ''
        process.stderr.write(`cluster: ${err.message}${code}\n`)
      } else {
        process.stderr.write(`${y.help()}\n\ncluster: ${msg}\n`)
      }
      process.exit(1)
    })
    .parseAsync()
}
