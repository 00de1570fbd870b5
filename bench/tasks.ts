/** Tasks the benchmarks run on the cluster. */
import type { ActorRef } from '../lib/index.js'

/** The seed benchmark's task: add the pair. */
export function add(a: number, b: number): number {
  return a + b
}

/** Reads one element of a (shared or sent) array: the shape of a task whose cost is its input, not its work. */
export function pick(values: Float64Array, i: number): number {
  return values[i % values.length]!
}

/** Holds its thread for `ms` (Atomics.wait: occupied like a compute task, without contending for the CPU). */
export function hold(ms: number): number {
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
  return ms
}

/** Busy-waits `us` microseconds; returns the input, the process that ran it and when it started (epoch ms). */
export function chaos(i: number, us: number): [number, number, number] {
  const started = Date.now()
  const end = performance.now() + us / 1000
  while (performance.now() < end) {
    // work
  }
  return [i, process.pid, started]
}

/** The length of a typed array: a task whose cost is its argument's trip (the 1 MB shape). */
export function byteLength(xs: Float64Array): number {
  return xs.byteLength
}

/** The actor of the call shapes: each call returns the number of calls so far. */
export class Pinger {
  private n = 0
  ping(): number {
    return ++this.n
  }
}

/**
 * An actor of the ping-pong benchmark: a ball received with hops left goes
 * back to the peer with one hop fewer, by `tell`; a ball with none left is
 * counted as finished.
 */
export class Bouncer {
  private peer: ActorRef<Bouncer> | undefined
  private received = 0
  private finished = 0

  /** Gives the actor its peer (a reference passed as a value). */
  link(peer: ActorRef<Bouncer>): void {
    this.peer = peer
  }

  /** Puts `balls` balls in play, each bouncing `hops` times between the two actors. */
  serve(balls: number, hops: number): void {
    for (let b = 0; b < balls; b++) this.peer!.tell.ball(hops - 1)
  }

  ball(left: number): void {
    this.received++
    if (left > 0) this.peer!.tell.ball(left - 1)
    else this.finished++
  }

  /** Balls received and balls finished here so far. */
  counts(): [received: number, finished: number] {
    return [this.received, this.finished]
  }
}

/** A member of the ring benchmark: passes the token to the next member until its hops run out. */
export class RingMember {
  private next: ActorRef<RingMember> | undefined
  private finished = 0

  link(next: ActorRef<RingMember>): void {
    this.next = next
  }

  token(left: number): void {
    if (left > 0) this.next!.tell.token(left - 1)
    else this.finished++
  }

  /** Tokens that ended their run here. */
  done(): number {
    return this.finished
  }
}
