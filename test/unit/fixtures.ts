/** Fixtures shared by the unit tests: an assertion on option errors; Hellos, nodes and a membership on a fake clock. */
import assert from 'node:assert/strict'
import type { Ledger, Settle, TaskEntry } from '../../lib/driver/ledger.js'
import { ClusterNode, Membership, type MembershipEvents } from '../../lib/driver/membership.js'
import type { ResolvedTaskOptions } from '../../lib/driver/task-options.js'
import { parseHeader, type Header } from '../../lib/protocol/codec.js'
import { ActorOp, type HelloInfo } from '../../lib/protocol/messages.js'
import { InvalidArgumentError } from '../../lib/errors.js'

/** Asserts `fn` throws InvalidArgumentError with exactly `message`. */
export function rejects(fn: () => unknown, message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${String(err)}`)
    assert.equal(err.code, 'ERR_INVALID_ARGUMENT')
    assert.equal(err.message, message)
    return true
  })
}

/** A Hello of an agent of two threads and a window of 8, with `more` over it. */
export function hello(agentId: string, more: Partial<HelloInfo> = {}): HelloInfo {
  return { agentId, threads: 2, pid: 100, host: 'host-1', version: '1.2.3', tasks: ['sq', 'add'], actors: ['Counter'], window: 8, ...more }
}

/** A node that registered with `threads` and `window`, not local. */
export function node(agentId: string, threads: number, window: number): ClusterNode {
  return new ClusterNode(agentId, hello(agentId, { threads, window }), false, 0)
}

/** A membership on a fake clock, with every event recorded (frames decoded as a peer would). */
export function membership(
  o: { heartbeatMs?: number; nodeTimeoutMs?: number; localIds?: string[]; verifyKey?: (peer: string, info: HelloInfo) => string | undefined } = {},
) {
  const clock = { t: 1000 }
  const sent: { peer: string; h: Header }[] = []
  const joined: ClusterNode[] = []
  const removed: { node: ClusterNode; how: 'left' | 'lost'; reason: string }[] = []
  let badFrames = 0
  const events: MembershipEvents = {
    send(peer, parts) {
      assert.equal(parts.length, 1, 'membership frames are header-only')
      sent.push({ peer, h: parseHeader(parts[0]) })
    },
    joined: (node) => joined.push(node),
    removed: (node, how, reason) => removed.push({ node, how, reason }),
    badFrame: () => badFrames++,
  }
  const m = new Membership(
    {
      heartbeatMs: o.heartbeatMs ?? 100,
      nodeTimeoutMs: o.nodeTimeoutMs ?? 500,
      session: 'session-xyz',
      localIds: new Set(o.localIds ?? []),
      now: () => clock.t,
      ...(o.verifyKey ? { verifyKey: o.verifyKey } : {}),
    },
    events,
  )
  const types = () => sent.map((s) => [s.peer, s.h.type])
  return { m, clock, sent, joined, removed, bad: () => badFrames, types }
}

/** Adds a call of `name` (not to an actor) to `ledger` under its next id; `settle` hears how it ends. */
export function addCall(ledger: Ledger, name: string, args: unknown[] = [], options?: ResolvedTaskOptions, settle: Settle = () => {}): TaskEntry {
  return ledger.add(ledger.nextId, name, args, settle, 0, undefined, ActorOp.Call, options, undefined)
}
