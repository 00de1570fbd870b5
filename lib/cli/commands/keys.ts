import type { CommandModule } from 'yargs'
import { resolve } from 'node:path'
import { writeKeys, KEY_FILES } from '../../transport/curve.js'
import { InvalidArgumentError } from '../../errors.js'

interface KeysArgs {
  out: string
  force: boolean
}

export const keysCommand: CommandModule<object, KeysArgs> = {
  command: 'keys',
  describe: 'Write CURVE keys: the driver key pair, an agent key pair, and the list of accepted agents',
  builder: (y) =>
    y
      .option('out', { type: 'string', default: 'cluster-keys', describe: 'directory to write the keys into' })
      .option('force', { type: 'boolean', default: false, describe: 'overwrite existing keys' }),
  handler: (args) => {
    // An empty --out would resolve to the working directory and the printed instructions would lose the path.
    if (args.out.trim() === '') throw new InvalidArgumentError(`--out must name a directory, got ${JSON.stringify(args.out)}`)
    const { dir } = writeKeys(resolve(args.out), args.force)
    process.stdout.write(
      [
        `wrote CURVE keys to ${dir}:`,
        `  ${KEY_FILES.server}          the driver's key pair — keep it on the driver only`,
        `  ${KEY_FILES.serverPublic}           the driver's public key — give it to every agent`,
        `  ${KEY_FILES.agent}           an agent key pair — copy it to every agent (or make one per agent and list each)`,
        `  ${KEY_FILES.authorized}   agent public keys the driver accepts, one per line`,
        `driver: Cluster.start({ curve: { dir: '${args.out}' }, listen: 'tcp://0.0.0.0:7100', ... })`,
        `agent:  cluster agent --connect tcp://DRIVER:7100 --keys ${args.out} --tasks ./tasks.js`,
        '',
      ].join('\n'),
    )
  },
}
