import yargs from 'yargs'
import { hideBin } from 'yargs/helpers'
import { agentCommand } from './commands/agent.js'
import { benchCommand } from './commands/bench.js'
import { downCommand, statusCommand, upCommand } from './commands/hosts.js'
import { runCommand } from './commands/run.js'
import { keysCommand } from './commands/keys.js'
import { VERSION } from '../version.js'
import { ClusterError } from '../errors.js'

/**
 * The `cluster` command line. Every flag can also be given as an environment
 * variable `CLUSTER_<FLAG>` (e.g. `CLUSTER_THREADS=4`); flags win.
 */
export async function main(argv = hideBin(process.argv)): Promise<void> {
  await yargs(argv)
    .scriptName('cluster')
    .env('CLUSTER')
    .version(VERSION)
    .command(agentCommand)
    .command(benchCommand)
    .command(upCommand)
    .command(statusCommand)
    .command(downCommand)
    .command(runCommand)
    .command(keysCommand)
    .demandCommand(1, 'name a command: up, status, down, run, agent, bench or keys')
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
