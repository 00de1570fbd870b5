/**
 * The task and actor class names a driver accepts: those of its own tasks
 * module when it loaded one, otherwise those the nodes offered (and any name
 * while no node has joined).
 */
import { InvalidArgumentError, UnknownTaskError } from '../errors.js'
import { parseReduceTaskName } from '../protocol/reduce.js'
import type { Catalog } from '../tasks-module.js'
import type { Membership } from './membership.js'

export class KnownNames {
  constructor(
    private readonly catalog: Catalog | undefined,
    private readonly membership: Membership,
  ) {}

  private tasks(): ReadonlySet<string> | undefined {
    return this.catalog ? new Set(this.catalog.functions.keys()) : this.membership.offered((n) => n.tasks)
  }

  /** Known, unknown, or undefined: no catalog and no node to ask yet. */
  private hasTask(name: string): boolean | undefined {
    if (this.catalog) return this.catalog.functions.has(name)
    if (this.membership.size === 0) return undefined
    for (const n of this.membership) if (n.tasks.has(name)) return true
    return false
  }

  /**
   * Throws for a task name that is not a string or that no one offers; `what`
   * names its role in the message. A chunk of a reduce (`reduce(task,
   * combiner)`) is known when both its task and its combiner are.
   */
  checkTask(name: string, what: 'task' | 'combiner' = 'task'): void {
    if (typeof name !== 'string') throw new InvalidArgumentError(`${what} name must be a string, got ${typeof name}`)
    if (this.hasTask(name) !== false) return
    const chunk = parseReduceTaskName(name)
    if (chunk) {
      this.checkTask(chunk.task)
      this.checkTask(chunk.combiner, 'combiner')
      return
    }
    throw UnknownTaskError.of(name, [...(this.tasks() ?? [])], what)
  }

  /** The driver's own copy of a function of the tasks module (undefined without one loaded). */
  localFunction(name: string): ((...args: unknown[]) => unknown) | undefined {
    return this.catalog?.functions.get(name)
  }

  actorClasses(): ReadonlySet<string> | undefined {
    return this.catalog ? new Set(this.catalog.classes.keys()) : this.membership.offered((n) => n.actorClasses)
  }
}
