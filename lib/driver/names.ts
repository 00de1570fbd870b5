/**
 * The task and actor class names a driver accepts: those of its own tasks
 * module when it loaded one, otherwise those the nodes offered (and any name
 * while no node has joined).
 */
import { InvalidArgumentError, UnknownTaskError } from '../errors.js'
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

  /** Throws for a task name that is not a string or that no one offers. */
  checkTask(name: string): void {
    if (typeof name !== 'string') throw new InvalidArgumentError(`task name must be a string, got ${typeof name}`)
    if (this.hasTask(name) === false) throw UnknownTaskError.of(name, [...(this.tasks() ?? [])])
  }

  actorClasses(): ReadonlySet<string> | undefined {
    return this.catalog ? new Set(this.catalog.classes.keys()) : this.membership.offered((n) => n.actorClasses)
  }
}
