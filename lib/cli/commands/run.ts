import { spawn } from 'node:child_process'
import { statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { resolve } from 'node:path'
import type { CommandModule } from 'yargs'
import { findConfig, loadConfig } from '../../config.js'
import { ConfigError, InvalidArgumentError } from '../../errors.js'
import { prepareSlurmRun, slurmAllocation, type SlurmRun } from '../../hosts/slurm.js'
import { configFileOf } from '../../settings.js'
import { describe } from '../../validate.js'
import { exitCodeOf } from '../exit-code.js'

/**
 * `cluster run driver.js [-- args]`: runs a driver script with the cluster's
 * config in effect. The script's `Cluster.start()` picks it up through
 * `CLUSTER_CONFIG`, so it binds the head and finds the agents `cluster up`
 * started, with no address in its code. Inside a Slurm allocation it also
 * starts one agent per allocated node with `srun` (lib/hosts/slurm.ts): the
 * driver waits for them all, and their step ends when the driver exits.
 */
export const runCommand: CommandModule = {
  // Optional to yargs, required by the handler: yargs' own "Not enough non-option arguments" would not say what is missing.
  command: 'run [script] [args..]',
  describe: 'Run a driver script with the cluster config in effect (its Cluster.start() uses it)',
  builder: (y) =>
    y
      .usage('$0 run <script> [options] [-- args]')
      .positional('script', { type: 'string', describe: 'the driver script (required)' })
      .positional('args', { type: 'string', array: true, describe: 'arguments for the script (after --)' })
      .option('config', { type: 'string', describe: 'cluster.config file (or CLUSTER_CONFIG; default: cluster.config.{js,mjs,ts,mts} here)' })
      .option('slurm', {
        type: 'boolean',
        describe: 'inside a Slurm allocation, start one agent per node with srun (default true; --no-slurm runs the driver alone)',
      }),
  handler: async (a) => {
    const given: unknown = a['script']
    if (given === undefined || given === '') throw new InvalidArgumentError('cluster run needs a driver script: cluster run driver.js [-- args]')
    const named = a['config']
    const config = configFileOf(named === undefined || typeof named === 'string' ? named : describe(named)) ?? findConfig()
    if (config === undefined) throw new ConfigError('cluster run needs a config: pass --config or put a cluster.config.{js,mjs,ts} here')
    // Checked here, as every other command does, rather than by the driver once it starts (or never, if it does not call Cluster.start).
    await loadConfig(config)
    const script = typeof given === 'string' ? given : describe(given)
    // Found as node finds a main script (`driver` for driver.js too): else node's own stack would be all the user sees.
    try {
      createRequire(import.meta.url).resolve(resolve(script))
    } catch {
      // A directory node can run has a package.json main or an index.js, and resolved above.
      const what = statSync(script, { throwIfNoEntry: false })?.isDirectory() ? 'it is a directory (name the driver script in it)' : 'no such file'
      throw new InvalidArgumentError(`cannot run ${script}: ${what}`)
    }
    // Words after `--` go to the script untouched (yargs would turn "007" into 7).
    const dashes = process.argv.indexOf('--')
    const args = [...((a['args'] as unknown[] | undefined) ?? []).map(String), ...(dashes >= 0 ? process.argv.slice(dashes + 1) : [])]
    const allocation = a['slurm'] === false ? undefined : slurmAllocation()
    const slurm: SlurmRun | undefined = allocation ? await prepareSlurmRun(config, allocation) : undefined
    const child = spawn(process.execPath, [script, ...args], {
      stdio: 'inherit',
      env: { ...process.env, CLUSTER_CONFIG: config, ...slurm?.driverEnv },
    })
    const forward = (signal: NodeJS.Signals) => child.kill(signal)
    process.on('SIGINT', forward)
    process.on('SIGTERM', forward)
    if (slurm) {
      process.stderr.write(`cluster run: Slurm job ${slurm.allocation.jobId}: starting ${slurm.allocation.nodes} agents with srun, driver at ${slurm.head}\n`)
      slurm.startAgents()
    }
    const code = await new Promise<number>((done) => child.on('exit', (c, signal) => done(exitCodeOf(c, signal))))
    await slurm?.close()
    process.exitCode = code
  },
}
