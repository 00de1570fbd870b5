import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createSocket, type Socket } from 'node:dgram'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import type { ActorRef, Cluster, SpawnOptions } from '../lib/index.js'
import type { Actors } from '../lib/driver/actors.js'
import { resolveSpawnOptions } from '../lib/driver/task-options.js'

// Drivers on a loopback `listen` leave their agents' keys under XDG_RUNTIME_DIR (or the home directory); one that a
// test kills cannot remove them. Each test process (and what it starts) gets a private runtime directory of its
// own instead (mkdtemp: 0700, unpredictable), removed when the process exits.
if (process.env['ACTOR_CLUSTER_TEST_RUNTIME'] === undefined) {
  const runtime = mkdtempSync(join(tmpdir(), 'actor-cluster-test-'))
  process.env['XDG_RUNTIME_DIR'] = runtime
  process.env['ACTOR_CLUSTER_TEST_RUNTIME'] = runtime
  process.on('exit', () => rmSync(runtime, { recursive: true, force: true }))
}

/** The compiled fixtures module (dist/test/fixtures/tasks.js). */
export const FIXTURE_TASKS = new URL('./fixtures/tasks.js', import.meta.url)
export const CLI = new URL('../bin/cluster.js', import.meta.url).pathname

/** Heartbeats for fault tests: short enough to keep them quick, long enough that a loaded machine does not starve a live agent past them. */
export const FAST = { heartbeatMs: 200, nodeTimeoutMs: 1500 }

/**
 * `cluster agent` arguments for an agent of `threads` on the fixtures, connecting to `address` (undefined for the
 * brokered designs: the transport and cluster id come in `more` or the environment), `more` after them.
 */
export function agentArgs(address: string | undefined, threads = 1, ...more: string[]): string[] {
  return ['agent', ...(address === undefined ? [] : ['--connect', address]), '--tasks', FIXTURE_TASKS.href, '--threads', String(threads), ...more]
}

/** {@link agentArgs} of one thread with the {@link FAST} timings. */
export function fastAgentArgs(address: string | undefined, ...more: string[]): string[] {
  return agentArgs(address, 1, '--heartbeat-ms', String(FAST.heartbeatMs), '--driver-timeout-ms', String(FAST.nodeTimeoutMs), ...more)
}

// Ports for tests, 20000–31999: below the kernel's ephemeral range (32768–60999 here). Agents reconnect to a
// driver's port while it is down; a port inside the ephemeral range can then be picked as the connecting socket's
// own source port, and TCP connects the socket to itself — the agent would sit on that connection until it redials.
const PORT_BASE = 20_000
const PORT_BLOCK = 100
const PORT_BLOCKS = 120

// The block of ports this process hands out now (the next one to give, and the end), and the locks of every block it
// took: a used-up block keeps its lock, since its ports may still be bound.
let block: { next: number; end: number } | undefined
const locks: Socket[] = []

/** Holds `port` as a UDP socket (not a TCP listener: nothing can connect to it), or undefined when another process does. */
async function udpLock(port: number): Promise<Socket | undefined> {
  const sock = createSocket({ type: 'udp4', reuseAddr: false })
  const ok = await new Promise<boolean>((resolve) => {
    sock.once('error', () => resolve(false))
    sock.bind({ port, address: '127.0.0.1', exclusive: true }, () => resolve(true))
  })
  if (!ok) {
    sock.close()
    return undefined
  }
  // Held for the life of the process, without keeping it alive; the kernel lets go of it when the process ends, however.
  sock.unref()
  return sock
}

async function reserveBlock(): Promise<NonNullable<typeof block>> {
  const first = Math.floor(Math.random() * PORT_BLOCKS)
  for (let i = 0; i < PORT_BLOCKS; i++) {
    const base = PORT_BASE + ((first + i) % PORT_BLOCKS) * PORT_BLOCK
    const lock = await udpLock(base)
    if (lock) {
      locks.push(lock)
      return { next: base + 1, end: base + PORT_BLOCK }
    }
  }
  throw new Error(`no free block of test ports between ${PORT_BASE} and ${PORT_BASE + PORT_BLOCK * PORT_BLOCKS - 1}`)
}

async function tcpFree(port: number): Promise<boolean> {
  const srv = createServer()
  const ok = await new Promise<boolean>((resolve) => {
    srv.once('error', () => resolve(false))
    srv.listen(port, '127.0.0.1', () => resolve(true))
  })
  if (ok) {
    srv.close()
    await once(srv, 'close')
  }
  return ok
}

/**
 * A loopback TCP port no other test process is given: each process reserves a block of 99 ports of its own
 * (the block's first port, held as a UDP socket for the life of the process, is the lock; the kernel releases it
 * when the process ends, even by SIGKILL) and hands them out in turn, each once, skipping any that a program
 * outside the tests has bound. Nothing listens on it until the caller binds it. Where the code under test can
 * bind port 0 and say which port it got (`Cluster.address`, a transport's `address`), bind `:0` instead.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    block ??= await reserveBlock()
    while (block.next < block.end) {
      const port = block.next++
      if (await tcpFree(port)) return port
    }
    block = undefined
  }
}

export interface Proc {
  child: ChildProcess
  output(): string
  exited: Promise<number | null>
}

/** Runs the `cluster` CLI; the process is killed when the test ends, pass or fail. */
export function runCli(t: TestContext, args: string[], env: Record<string, string> = {}): Proc {
  return runProcess(t, process.execPath, [CLI, ...args], env)
}

/** Runs a command, collecting its output; it is killed when the test ends, pass or fail. */
export function runProcess(t: TestContext, command: string, args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return { child, output: () => out, exited }
}

/** Resolves when `predicate` holds (it may answer asynchronously), polling; rejects after `ms`, naming what it waited for. */
export async function waitFor(predicate: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms
  while (!(await predicate())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** `p`, or a rejection naming what it waited for (a text, or a function giving it then) after `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string | (() => string)): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>(
    (_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${typeof what === 'string' ? what : what()}`)), ms)),
  )
  try {
    return await Promise.race([p, late])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Maps `add` over an endless input (`[k, 1]` for k = 0, 1, …) with `concurrency`, checks that the results come in
 * order and stops after `count`: how many inputs were pulled in all, and at most ahead of the consumer.
 */
export async function mapAhead(cluster: Cluster, concurrency: number, count: number): Promise<{ pulled: number; consumed: number; maxAhead: number }> {
  let pulled = 0
  let consumed = 0
  let maxAhead = 0
  function* endless() {
    for (let k = 0; ; k++) {
      pulled++
      maxAhead = Math.max(maxAhead, pulled - consumed)
      yield [k, 1]
    }
  }
  for await (const r of cluster.map<number>('add', endless(), { concurrency })) {
    assert.equal(r, consumed + 1)
    if (++consumed === count) break
  }
  return { pulled, consumed, maxAhead }
}

/**
 * Spawns an actor as the child of `parent`, through the driver's internal
 * spawn (what an actor's `context.spawn` reaches).
 */
export function spawnChild<T extends object>(
  cluster: Cluster,
  parent: { id: string },
  className: string,
  args: unknown[] = [],
  options: SpawnOptions = {},
): Promise<ActorRef<T>> {
  const actors = (cluster as unknown as { actors: Actors }).actors
  return actors.spawn<T>(className, args, { ...resolveSpawnOptions(options), parent: parent.id })
}
