/**
 * A real Slurm cluster for the Slurm tests: each compute node is a network
 * namespace on a bridge of its own (10.79.x.0/24, x chosen per run), running
 * `slurmd -N nodeI`; slurmctld and munged run on the host side, with a
 * slurm.conf, a munge key and state directories made for the run in a
 * temporary directory (`SLURM_CONF` points the client commands there).
 * `close()` kills every daemon and process started, and removes the
 * namespaces, the bridge and the directory.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes, randomInt } from 'node:crypto'
import { promisify } from 'node:util'
import { freePort } from './helpers.js'
import { killInNamespace } from './netns.js'

const exec = promisify(execFile)

export interface SlurmNode {
  readonly name: string
  readonly ns: string
  readonly address: string
}

export interface SlurmLab {
  readonly dir: string
  /** The host side's address on the nodes' bridge: a driver bound there is reachable from every node. */
  readonly head: string
  /** The environment for Slurm's client commands and for `cluster` (SLURM_CONF). */
  readonly env: NodeJS.ProcessEnv
  /** Nodes that run a slurmd. */
  readonly nodes: SlurmNode[]
  /** The partition every node is in. */
  readonly partition: string
  /** Runs a Slurm client command (squeue, sbatch, scontrol …) with the lab's config. */
  slurm(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string }>
  close(): Promise<void>
}

const SBIN = ['/usr/sbin/slurmctld', '/usr/sbin/slurmd', '/usr/sbin/munged', '/usr/bin/sbatch', '/usr/bin/srun', '/usr/bin/nsenter']

/** Why a Slurm lab cannot be made here, or undefined when it can. */
export async function slurmUnavailable(): Promise<string | undefined> {
  if (process.platform !== 'linux') return `Slurm tests need Linux (this is ${process.platform})`
  if (process.getuid?.() !== 0) return 'Slurm tests need root (network namespaces, slurmd)'
  for (const bin of SBIN) if (!existsSync(bin)) return `${bin} is missing (apt-get install slurm-wlm munge)`
  try {
    await exec('ip', ['link', 'show'])
  } catch {
    return 'the ip command is missing (apt-get install iproute2)'
  }
  return undefined
}

/** A /24 under 10.79 that no interface of this machine uses yet. */
async function freeSubnet(): Promise<string> {
  const { stdout } = await exec('ip', ['-4', 'addr', 'show'])
  for (;;) {
    const s = `10.79.${randomInt(1, 255)}`
    if (!stdout.includes(`inet ${s}.`)) return s
  }
}

async function waitUntil(check: () => Promise<boolean>, ms: number, what: string, log?: () => Promise<string>): Promise<void> {
  const end = Date.now() + ms
  while (!(await check().catch(() => false))) {
    if (Date.now() > end) throw new Error(`${what} within ${ms} ms${log ? `\n${await log()}` : ''}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

/**
 * Starts munged, slurmctld and `count` slurmd. `extraNodes` are listed in
 * slurm.conf but run no slurmd (jobs needing them stay pending).
 */
export async function createSlurmLab(count: number, extraNodes = 0): Promise<SlurmLab> {
  const id = randomBytes(3).toString('hex')
  const prefix = `sl${id}`
  const dir = await mkdtemp(join(tmpdir(), `${prefix}-slurm-`))
  await chmod(dir, 0o755)
  const subnet = await freeSubnet()
  const bridge = `${prefix}br`
  const bridgeAddress = `${subnet}.1`
  const nodes: SlurmNode[] = Array.from({ length: count }, (_, i) => ({ name: `node${i + 1}`, ns: `${prefix}n${i + 1}`, address: `${subnet}.${11 + i}` }))
  const ghosts = Array.from({ length: extraNodes }, (_, i) => ({ name: `node${count + i + 1}`, address: `${subnet}.${11 + count + i}` }))
  const daemons: ChildProcess[] = []
  const namespaces: string[] = []
  let bridgeMade = false
  const env: NodeJS.ProcessEnv = { ...process.env, SLURM_CONF: join(dir, 'slurm.conf') }
  const slurm = (cmd: string, args: string[]) => exec(cmd, args, { env })

  const close = async () => {
    // Jobs first, while slurmctld still answers; then every process in the nodes, then the daemons.
    await slurm('scancel', ['--full', '--quiet', `--partition=${prefix}`]).catch(() => {})
    for (const ns of namespaces) await killInNamespace(ns)
    const running = daemons.filter((d) => d.exitCode === null && d.signalCode === null)
    for (const d of running) d.kill('SIGKILL')
    await Promise.all(running.map((d) => new Promise((r) => d.once('close', r))))
    for (const ns of namespaces) await exec('ip', ['netns', 'del', ns]).catch(() => {})
    if (bridgeMade) await exec('ip', ['link', 'del', bridge]).catch(() => {})
    await rm(dir, { recursive: true, force: true })
  }

  const logs = async () => {
    let out = ''
    for (const f of ['slurmctld.log', ...nodes.map((n) => `slurmd-${n.name}.log`), 'munged.log']) {
      out += `--- ${f}\n${(await readFile(join(dir, f), 'utf8').catch(() => '')).split('\n').slice(-15).join('\n')}\n`
    }
    return out
  }

  const start = (argv: string[], name: string) => {
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env })
    let out = ''
    p.stdout?.on('data', (d: Buffer) => (out += d.toString()))
    p.stderr?.on('data', (d: Buffer) => (out += d.toString()))
    p.on('close', (code, signal) => {
      if (signal !== 'SIGKILL' && out) process.stderr.write(`# ${name} exited (${code ?? signal}): ${out.slice(-2000)}\n`)
    })
    daemons.push(p)
    return p
  }

  try {
    await exec('ip', ['link', 'add', bridge, 'type', 'bridge'])
    bridgeMade = true
    await exec('ip', ['addr', 'add', `${bridgeAddress}/24`, 'dev', bridge])
    await exec('ip', ['link', 'set', bridge, 'up'])
    for (const [i, n] of nodes.entries()) {
      await exec('ip', ['netns', 'add', n.ns])
      namespaces.push(n.ns)
      await exec('ip', ['-n', n.ns, 'link', 'set', 'lo', 'up'])
      const port = `${prefix}p${i + 1}`
      await exec('ip', ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.ns])
      await exec('ip', ['link', 'set', port, 'master', bridge, 'up'])
      await exec('ip', ['-n', n.ns, 'addr', 'add', `${n.address}/24`, 'dev', 'eth0'])
      await exec('ip', ['-n', n.ns, 'link', 'set', 'eth0', 'up'])
    }

    // munge: its own key, socket and files; the daemon runs as root, hence --force.
    const munge = {
      key: join(dir, 'munge.key'),
      socket: join(dir, 'munge.sock'),
    }
    await writeFile(munge.key, randomBytes(1024), { mode: 0o400 })
    const munged = start(
      [
        '/usr/sbin/munged',
        '--foreground',
        '--force',
        `--key-file=${munge.key}`,
        `--socket=${munge.socket}`,
        `--pid-file=${join(dir, 'munged.pid')}`,
        `--log-file=${join(dir, 'munged.log')}`,
        `--seed-file=${join(dir, 'munged.seed')}`,
      ],
      'munged',
    )
    await waitUntil(async () => existsSync(munge.socket) || munged.exitCode !== null, 10_000, 'munged did not start')
    if (munged.exitCode !== null) throw new Error(`munged exited: ${await logs()}`)

    const ctldPort = await freePort()
    const slurmdPort = await freePort()
    const cpus = 2
    for (const d of ['state', 'spool']) await mkdir(join(dir, d), { recursive: true })
    const allNodes = [...nodes, ...ghosts]
    await writeFile(
      join(dir, 'slurm.conf'),
      [
        `ClusterName=${prefix}`,
        `SlurmctldHost=${hostname().split('.')[0]}(${bridgeAddress})`,
        `SlurmctldPort=${ctldPort}`,
        `SlurmdPort=${slurmdPort}`,
        'SlurmUser=root',
        'SlurmdUser=root',
        `AuthInfo=socket=${munge.socket}`,
        'AuthType=auth/munge',
        'CredType=cred/munge',
        `StateSaveLocation=${join(dir, 'state')}`,
        `SlurmdSpoolDir=${join(dir, 'spool')}/%n`,
        `SlurmctldPidFile=${join(dir, 'slurmctld.pid')}`,
        `SlurmdPidFile=${join(dir, 'slurmd-%n.pid')}`,
        `SlurmctldLogFile=${join(dir, 'slurmctld.log')}`,
        `SlurmdLogFile=${join(dir, 'slurmd-%n.log')}`,
        'ProctrackType=proctrack/linuxproc',
        'TaskPlugin=task/none',
        'SelectType=select/linear',
        'SchedulerType=sched/builtin',
        'ReturnToService=2',
        'MpiDefault=none',
        'JobAcctGatherType=jobacct_gather/none',
        'AccountingStorageType=accounting_storage/none',
        'SlurmctldTimeout=30',
        'SlurmdTimeout=30',
        'InactiveLimit=0',
        'KillWait=5',
        'MinJobAge=2',
        'SlurmctldDebug=info',
        'SlurmdDebug=info',
        ...allNodes.map((n) => `NodeName=${n.name} NodeAddr=${n.address} CPUs=${cpus} State=UNKNOWN`),
        `PartitionName=${prefix} Nodes=${allNodes.map((n) => n.name).join(',')} Default=YES MaxTime=INFINITE State=UP`,
        '',
      ].join('\n'),
    )
    start(['/usr/sbin/slurmctld', '-D', '-i', '-f', env['SLURM_CONF']!], 'slurmctld')
    await waitUntil(async () => (await slurm('scontrol', ['ping'])).stdout.includes('UP'), 30_000, 'slurmctld did not answer', logs)
    for (const n of nodes) {
      // nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup hierarchy slurmd reads.
      start(['/usr/bin/nsenter', `--net=/var/run/netns/${n.ns}`, '/usr/sbin/slurmd', '-D', '-N', n.name, '-f', env['SLURM_CONF']!], `slurmd ${n.name}`)
    }
    await waitUntil(
      async () => {
        const { stdout } = await slurm('sinfo', ['-h', '-N', '-o', '%N %t', `--nodes=${nodes.map((n) => n.name).join(',')}`])
        const idle = stdout.split('\n').filter((l) => / idle$/.test(l.trim())).length
        return idle === nodes.length
      },
      60_000,
      `the ${nodes.length} slurmd did not register as idle`,
      logs,
    )
    return { dir, head: bridgeAddress, env, nodes, partition: prefix, slurm, close }
  } catch (err) {
    await close()
    throw err
  }
}
