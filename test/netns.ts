/**
 * Real hosts for the multi-host tests: network namespaces on a private
 * bridge, each with its own address (10.77.0.x, inside these namespaces
 * only) and its own sshd, reached with a key generated for the run. The
 * bridge and the head (where the driver and the `cluster` commands run) are
 * namespaces too, so nothing touches the machine's own network — unless
 * `attachHere` puts it on the bridge (bench/slurm.ts does, to drive the
 * hosts from its own process), until the lab closes.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile, chmod, mkdir } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'
import type { TestContext } from 'node:test'
import { CLI, type Proc } from './helpers.js'

/** A process in a namespace; `stdout()` apart from the combined `output()`. */
export interface NsProc extends Proc {
  stdout(): string
}

const exec = promisify(execFile)

const SUBNET = '10.77.0'
export const HEAD_ADDRESS = `${SUBNET}.1`

export interface NetHost {
  ns: string
  address: string
}

export interface Lab {
  readonly prefix: string
  readonly dir: string
  readonly head: NetHost
  readonly hosts: NetHost[]
  /** ssh_config for the client side: known_hosts of the lab, strict host key checking. */
  readonly sshConfig: string
  /** The client key that every host's sshd accepts. */
  readonly key: string
  /** A key no host accepts. */
  readonly wrongKey: string
  /** Takes a host off the network (its link goes down) or puts it back. */
  setLink(host: NetHost, up: boolean): Promise<void>
  /** Runs the `cluster` CLI inside the head namespace (in `cwd`). */
  cli(t: TestContext, args: string[], cwd?: string): NsProc
  /** Runs a command inside a namespace. */
  exec(t: TestContext, ns: string, argv: string[], cwd?: string): NsProc
  /**
   * Puts this process's own namespace on the lab's bridge at `address`
   * (10.77.0.x, not a host's): a driver bound there is reachable from every
   * host, as the head of a Slurm lab is. The link goes with the lab.
   */
  attachHere(address: string): Promise<void>
  close(): Promise<void>
}

/** SIGKILLs every process running inside network namespace `ns` (a test's cleanup; none there is fine). */
export async function killInNamespace(ns: string): Promise<void> {
  const pids = await exec('ip', ['netns', 'pids', ns]).then(
    (r) => r.stdout.split(/\s+/).filter(Boolean),
    () => [],
  )
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL')
    } catch {
      // already gone
    }
  }
}

async function ip(...args: string[]): Promise<void> {
  await exec('ip', args)
}

/** Why the multi-host lab (namespaces with sshd and rsync) cannot be made here, or undefined when it can. */
export async function netnsUnavailable(): Promise<string | undefined> {
  for (const [bin, pkg] of [
    ['/usr/sbin/sshd', 'openssh-server'],
    ['/usr/bin/ssh', 'openssh-client'],
    ['/usr/bin/ssh-keygen', 'openssh-client'],
    ['/usr/bin/rsync', 'rsync'],
  ] as const) {
    if (!existsSync(bin)) return `${bin} is missing (apt-get install ${pkg})`
  }
  return namespacesUnavailable()
}

/** Why network namespaces cannot be made here, or undefined when they can. */
export async function namespacesUnavailable(): Promise<string | undefined> {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`
  if (process.getuid?.() !== 0) return 'network namespaces need root'
  const probe = `acprobe${randomBytes(3).toString('hex')}`
  try {
    await ip('netns', 'add', probe)
  } catch (err) {
    return `cannot create a network namespace: ${((err as { stderr?: string }).stderr ?? (err as Error).message).trim()}`
  }
  await ip('netns', 'del', probe).catch(() => {})
  return undefined
}

function spawnProc(argv: string[], cwd: string | undefined): NsProc {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], cwd })
  let out = ''
  let stdout = ''
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString()
    stdout += d.toString()
  })
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  return { child, output: () => out, stdout: () => stdout, exited }
}

/** Waits until something accepts TCP connections at address:port inside a namespace (checked from the head). */
async function waitForPort(headNs: string, address: string, port: number, ms: number): Promise<void> {
  const end = Date.now() + ms
  for (;;) {
    try {
      await exec('ip', [
        'netns',
        'exec',
        headNs,
        process.execPath,
        '-e',
        `const s=require('net').connect(${port},'${address}');s.on('connect',()=>process.exit(0));s.on('error',()=>process.exit(1))`,
      ])
      return
    } catch {
      if (Date.now() > end) throw new Error(`sshd at ${address}:${port} did not come up within ${ms} ms`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
}

/**
 * Builds the lab: a bridge namespace, a head namespace at 10.77.0.1 and
 * `count` host namespaces at 10.77.0.11…, each running sshd. Everything is
 * torn down by `close()` (and by t.after in the tests), even after a failure.
 */
export async function createLab(count: number): Promise<Lab> {
  const prefix = newPrefix()
  const dir = await mkdtemp(join(tmpdir(), `${prefix}-lab-`))
  const namespaces: string[] = []
  const sshds: ChildProcess[] = []
  const br = `${prefix}-br`
  const here = `${prefix}-here`
  let attached = false
  const head: NetHost = { ns: `${prefix}-head`, address: HEAD_ADDRESS }
  const hosts: NetHost[] = Array.from({ length: count }, (_, i) => ({ ns: `${prefix}-h${i + 1}`, address: `${SUBNET}.${11 + i}` }))
  const close = async () => {
    for (const s of sshds) if (s.exitCode === null && s.signalCode === null) s.kill('SIGKILL')
    // Deleting the bridge's namespace would take the pair with it; deleted first, so nothing is left here even if that fails.
    if (attached) await ip('link', 'del', here).catch(() => {})
    for (const ns of namespaces) {
      // Whatever still runs inside (agents, sshd sessions) goes with its namespace.
      await killInNamespace(ns)
      await ip('netns', 'del', ns).catch(() => {})
    }
    await rm(dir, { recursive: true, force: true })
  }
  try {
    for (const ns of [br, head.ns, ...hosts.map((h) => h.ns)]) {
      await ip('netns', 'add', ns)
      namespaces.push(ns)
      await ip('-n', ns, 'link', 'set', 'lo', 'up')
    }
    await ip('-n', br, 'link', 'add', 'br0', 'type', 'bridge')
    await ip('-n', br, 'link', 'set', 'br0', 'up')
    let i = 0
    for (const h of [head, ...hosts]) {
      const port = `p${i++}`
      await ip('-n', br, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns)
      await ip('-n', br, 'link', 'set', port, 'master', 'br0', 'up')
      await ip('-n', h.ns, 'addr', 'add', `${h.address}/24`, 'dev', 'eth0')
      await ip('-n', h.ns, 'link', 'set', 'eth0', 'up')
    }
    // Keys: one host key for every sshd, one client key they accept, one they do not.
    const key = join(dir, 'id_ed25519')
    const wrongKey = join(dir, 'wrong_ed25519')
    const hostKey = join(dir, 'host_ed25519')
    const strangerKey = join(dir, 'stranger_ed25519')
    for (const k of [key, wrongKey, hostKey, strangerKey]) await exec('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', prefix, '-f', k])
    await writeFile(join(dir, 'authorized_keys'), await readFile(`${key}.pub`))
    const hostPub = (await readFile(`${hostKey}.pub`, 'utf8')).trim().split(' ').slice(0, 2).join(' ')
    await writeFile(join(dir, 'known_hosts'), hosts.map((h) => `${h.address} ${hostPub}\n[${h.address}]:2222 ${hostPub}\n`).join(''))
    const sshConfig = join(dir, 'ssh_config')
    await writeFile(
      sshConfig,
      ['Host *', `  UserKnownHostsFile ${join(dir, 'known_hosts')}`, '  StrictHostKeyChecking yes', '  User root', '  LogLevel ERROR', ''].join('\n'),
    )
    await mkdir('/run/sshd', { recursive: true, mode: 0o755 })
    await chmod('/run/sshd', 0o755)
    // Two ports, so one host can stand for two lines of a hosts file; the last host's
    // port 2222 is another sshd, whose host key known_hosts does not hold.
    const daemons = hosts.map((h, i) => ({ h, ports: i < hosts.length - 1 ? [22, 2222] : [22], key: hostKey }))
    daemons.push({ h: hosts[hosts.length - 1]!, ports: [2222], key: strangerKey })
    for (const { h, ports, key: hk } of daemons) {
      const cfg = join(dir, `sshd_${h.address}_${ports.join('_')}.conf`)
      await writeFile(
        cfg,
        [
          ...ports.map((p) => `ListenAddress ${h.address}:${p}`),
          `HostKey ${hk}`,
          'PidFile none',
          `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
          'StrictModes no',
          'UsePAM no',
          'PasswordAuthentication no',
          'KbdInteractiveAuthentication no',
          'PermitRootLogin prohibit-password',
          'PubkeyAuthentication yes',
          'PrintMotd no',
          'LogLevel ERROR',
          'MaxStartups 200',
          'MaxSessions 50',
          '',
        ].join('\n'),
      )
      const sshd = spawn('ip', ['netns', 'exec', h.ns, '/usr/sbin/sshd', '-D', '-e', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] })
      sshd.stderr.resume()
      sshds.push(sshd)
    }
    for (const { h, ports } of daemons) for (const port of ports) await waitForPort(head.ns, h.address, port, 10_000)
    const run = (t: TestContext, ns: string, argv: string[], cwd?: string) => {
      const p = spawnProc(['ip', 'netns', 'exec', ns, ...argv], cwd)
      t.after(() => {
        if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
      })
      return p
    }
    return {
      prefix,
      dir,
      head,
      hosts,
      sshConfig,
      key,
      wrongKey,
      setLink: (h, up) => ip('-n', h.ns, 'link', 'set', 'eth0', up ? 'up' : 'down'),
      cli: (t, args, cwd) => run(t, head.ns, [process.execPath, CLI, ...args], cwd),
      exec: (t, ns, argv, cwd) => run(t, ns, argv, cwd),
      attachHere: async (address) => {
        if (attached) throw new Error('this namespace is already on the lab’s bridge')
        if ([head, ...hosts].some((h) => h.address === address) || !address.startsWith(`${SUBNET}.`)) {
          throw new Error(`attachHere needs a free address in ${SUBNET}.0/24, got ${address}`)
        }
        await ip('link', 'add', here, 'type', 'veth', 'peer', 'name', 'phere', 'netns', br)
        attached = true
        await ip('-n', br, 'link', 'set', 'phere', 'master', 'br0', 'up')
        await ip('addr', 'add', `${address}/24`, 'dev', here)
        await ip('link', 'set', here, 'up')
      },
      close,
    }
  } catch (err) {
    await close()
    throw err
  }
}

/** A fresh prefix for the names of a test's namespaces and links: random, so runs side by side never meet. */
function newPrefix(): string {
  return `ac${randomBytes(3).toString('hex')}`
}

/** The namespaces and links whose names start with `prefix`: what is left of a test after its cleanup (none, when it cleaned up). */
export async function leftovers(prefix: string): Promise<string[]> {
  const names = (out: string, pattern: RegExp) => [...out.matchAll(pattern)].map((m) => m[1]!).filter((n) => n.startsWith(prefix))
  const netns = (await exec('ip', ['netns', 'list'])).stdout
  const links = (await exec('ip', ['-o', 'link', 'show'])).stdout
  return [...names(netns, /^(\S+)/gm).map((n) => `netns ${n}`), ...names(links, /^\d+: ([^:@\s]+)/gm).map((n) => `link ${n}`)]
}

/** A namespace joined to this one by a veth pair on a private /30 of its own. */
export interface VethNamespace {
  readonly prefix: string
  readonly ns: string
  /** The pair's end in this process's namespace, and its address. */
  readonly hostIf: string
  readonly hostAddress: string
  /** The address of the end inside the namespace. */
  readonly nsAddress: string
  /** Takes the host end down (a partition) or up again. */
  setLink(up: boolean): Promise<void>
  /** Kills what runs in the namespace, deletes the pair (both ends, and the address here) and the namespace. Safe to call twice. */
  close(): Promise<void>
}

/**
 * A namespace with a veth pair to this namespace: random names (`ac` and six
 * hex digits), a random 10.78.x.y/30 that no address here is in, and the
 * cleanup registered on `t.after` so it also runs when the test fails. The
 * host end is the only thing this namespace gets, and it goes with `close()`.
 */
export async function createVethNamespace(t: TestContext): Promise<VethNamespace> {
  const taken = (await exec('ip', ['-o', '-4', 'addr', 'show'])).stdout
  let base: string | undefined
  for (let i = 0; i < 100 && base === undefined; i++) {
    const b = randomBytes(2)
    const net = `10.78.${b[0]!}.`
    if (!taken.includes(` ${net}`)) base = `${net}${b[1]! & 0xfc}`
  }
  if (base === undefined) throw new Error('no free 10.78.x.0/24 for a veth pair: every one tried is in use here')
  const [a, b, c, d] = base.split('.').map(Number) as [number, number, number, number]
  const prefix = newPrefix()
  const ns = `${prefix}-ns`
  const hostIf = `${prefix}h`
  const nsIf = `${prefix}n`
  const hostAddress = `${a}.${b}.${c}.${d + 1}`
  const nsAddress = `${a}.${b}.${c}.${d + 2}`
  let closed: Promise<void> | undefined
  const close = () =>
    (closed ??= (async () => {
      await killInNamespace(ns)
      await ip('link', 'del', hostIf).catch(() => {})
      await ip('netns', 'del', ns).catch(() => {})
    })())
  t.after(close)
  try {
    await ip('netns', 'add', ns)
    await ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', ns)
    await ip('addr', 'add', `${hostAddress}/30`, 'dev', hostIf)
    await ip('link', 'set', hostIf, 'up')
    await ip('-n', ns, 'addr', 'add', `${nsAddress}/30`, 'dev', nsIf)
    await ip('-n', ns, 'link', 'set', nsIf, 'up')
    await ip('-n', ns, 'link', 'set', 'lo', 'up')
  } catch (err) {
    await close()
    throw err
  }
  return { prefix, ns, hostIf, hostAddress, nsAddress, setLink: (up) => ip('link', 'set', hostIf, up ? 'up' : 'down'), close }
}

/** A bare namespace (loopback up) with a random name; it and everything running in it are removed on `t.after`, also on failure. */
export async function createNamespace(t: TestContext): Promise<{ prefix: string; ns: string; close: () => Promise<void> }> {
  const prefix = newPrefix()
  const ns = `${prefix}-ns`
  let closed: Promise<void> | undefined
  const close = () =>
    (closed ??= (async () => {
      await killInNamespace(ns)
      await ip('netns', 'del', ns).catch(() => {})
    })())
  t.after(close)
  await ip('netns', 'add', ns)
  await ip('-n', ns, 'link', 'set', 'lo', 'up')
  return { prefix, ns, close }
}
