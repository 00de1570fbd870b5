/**
 * The tasks module of the metapopulation example: one actor class, the
 * patch. Each patch holds its compartments, steps them when the driver asks,
 * and sends its travellers straight to its neighbours' actors with `tell`
 * (the driver never sees them).
 *
 * The tick protocol never waits inside a method (an actor runs one message at
 * a time, so a method that awaited its neighbours' travellers would hold its
 * own mailbox shut against them): `step(t)` returns `null` while travellers
 * of tick `t - 1` are still on their way, and the driver asks again.
 */
import type { ActorRef } from '../../lib/index.js'
import {
  arrive,
  checkParams,
  gridNeighbours,
  tick,
  type Compartments,
  type InitialConditions,
  type ModelParams,
  type PatchState,
  initialState,
} from './model.js'

/** Travellers that reached a patch for one tick, and from how many neighbours. */
interface Arrivals extends Compartments {
  from: number
}

/** One patch of the grid, as an actor. */
export class Patch {
  private readonly state: PatchState
  private readonly expected: number[]
  private neighbours: ActorRef<Patch>[] = []
  private readonly arrivals = new Map<number, Arrivals>()
  /** The tick `step` runs next. */
  private next = 0

  constructor(
    index: number,
    private readonly conditions: InitialConditions,
    private readonly params: ModelParams,
  ) {
    checkParams(params)
    this.state = initialState(index, conditions)
    this.expected = gridNeighbours(index, conditions.width, conditions.height)
  }

  /** Gives the patch its neighbours' references, in the order of `gridNeighbours`; returns how many it has. */
  link(neighbours: ActorRef<Patch>[]): number {
    if (!Array.isArray(neighbours) || neighbours.length !== this.expected.length) {
      throw new RangeError(
        `patch ${this.state.index} has ${this.expected.length} neighbours, got ${Array.isArray(neighbours) ? neighbours.length : typeof neighbours}`,
      )
    }
    this.neighbours = neighbours
    return neighbours.length
  }

  /**
   * Runs tick `t`: adds the travellers of tick `t - 1`, draws infections,
   * recoveries and the travellers leaving, and tells each neighbour its
   * share. Returns the compartments before travel, or `null` (nothing done)
   * while some neighbour's travellers of tick `t - 1` have not arrived.
   */
  step(t: number): [s: number, i: number, r: number] | null {
    if (this.neighbours.length !== this.expected.length) throw new Error(`patch ${this.state.index} is not linked to its neighbours yet (call link first)`)
    if (t !== this.next) throw new RangeError(`patch ${this.state.index} runs tick ${this.next} next, asked for tick ${t}`)
    if (t > 0) {
      const came = this.arrivals.get(t - 1)
      if ((came?.from ?? 0) < this.neighbours.length) return null
      if (came) arrive(this.state, came)
      this.arrivals.delete(t - 1)
    }
    const { before, travellers } = tick(this.state, this.neighbours.length, this.params, this.conditions.seed, t)
    for (let k = 0; k < this.neighbours.length; k++) {
      const c = travellers[k]!
      this.neighbours[k]!.tell.arrive(t, c.s, c.i, c.r)
    }
    this.next = t + 1
    return [before.s, before.i, before.r]
  }

  /** Travellers from one neighbour, who left it at tick `t` (added before this patch's tick `t + 1`). */
  arrive(t: number, s: number, i: number, r: number): void {
    // Travellers can be a tick ahead (a neighbour ran tick t while this patch waits for tick t - 1's), never more.
    if (t < this.next - 1 || t > this.next) throw new RangeError(`patch ${this.state.index} at tick ${this.next} got travellers of tick ${t}`)
    let a = this.arrivals.get(t)
    if (!a) this.arrivals.set(t, (a = { from: 0, s: 0, i: 0, r: 0 }))
    a.from++
    a.s += s
    a.i += i
    a.r += r
  }
}
