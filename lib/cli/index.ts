import yargs, { type CommandModule } from 'yargs'
import { hideBin } from 'yargs/helpers'
import { agentCommand } from './commands/agent.js'
import { downCommand, statusCommand, upCommand } from './commands/hosts.js'
import { runCommand } from './commands/run.js'
import { keysCommand } from './commands/keys.js'
import { dashboardCommand } from './commands/dashboard.js'
import { LOG_LEVELS } from '../monitor/options.js'
import { VERSION } from '../version.js'
import { ClusterError } from '../errors.js'
import { oneLine, rejectNotANumber } from './flags.js'

/**
 * The `cluster` command line. Settings resolve as everywhere else (see
 * `lib/settings.ts`): defaults < config file < `CLUSTER_*` variables < flags.
 * `commands` adds commands that are not part of the library (the `bench`
 * command lives with the benchmarks and is added by `bin/cluster.ts`).
 */
export async function main(argv = hideBin(process.argv), commands: readonly CommandModule[] = []): Promise<void> {
  let cli = yargs(argv)
    .scriptName('cluster')
    // `cluster dashboard -- node job.js`: what follows `--` is a program, not flags.
    .parserConfiguration({ 'populate--': true })
    .version(VERSION)
    .option('log-level', {
      choices: LOG_LEVELS,
      global: true,
      describe: 'structured log level on stderr, or CLUSTER_LOG_LEVEL (default: info for agent and dashboard, warn for bench)',
    })
    .command(agentCommand)
  for (const c of commands) cli = cli.command(c)
  // Before any command's own checks: a number flag given something else must not reach them as NaN.
  // yargs reuses this instance for the command it runs, so its options are that command's by then.
  const self = cli
  cli = cli.middleware((args) => rejectNotANumber(args, self, argv), true)
  cli = cli
    .command(upCommand)
    .command(statusCommand)
    .command(downCommand)
    .command(runCommand)
    .command(keysCommand)
    .command(dashboardCommand)
    .demandCommand(1, `name a command: up, status, down, run, agent, ${commands.map((c) => `${String(c.command).split(' ')[0]}, `).join('')}dashboard or keys`)
    .strict()
    .help()
    .fail((msg, err, y) => {
      if (err) {
        failed(err)
      } else {
        // In a fail handler yargs passes its usage object, whose help() returns the help text (@types/yargs types it as Argv).
        // eslint-disable-next-line @typescript-eslint/restrict-template-expressions -- a string at run time, see above
        process.stderr.write(`${y.help()}\n\ncluster: ${oneLine(msg)}\n`)
      }
      process.exit(1)
    })
  try {
    await cli.parseAsync()
  } catch (err) {
    // A handler that throws before its first await escapes yargs' fail handler: said the same way.
    failed(err instanceof Error ? err : new Error(String(err)))
    process.exit(1)
  }
}

/** A command's error as one line on stderr, with its code. */
function failed(err: Error): void {
  const code = err instanceof ClusterError ? ` [${err.code}]` : ''
  process.stderr.write(`cluster: ${err.message}${code}\n`)
}
