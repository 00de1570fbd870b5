import { TasksModuleError } from './errors.js'

/** What a tasks module offers: its exported functions (tasks) and classes (actors). */
export interface Catalog {
  readonly functions: ReadonlyMap<string, (...args: unknown[]) => unknown>
  readonly classes: ReadonlyMap<string, new (...args: unknown[]) => object>
}

function isClass(v: unknown): v is new (...args: unknown[]) => object {
  return typeof v === 'function' && /^class[\s{]/.test(Function.prototype.toString.call(v))
}

/** Imports a tasks module and sorts its named exports into tasks and actor classes. */
export async function loadCatalog(specifier: string, where: string): Promise<Catalog> {
  let mod: Record<string, unknown>
  try {
    mod = (await import(specifier)) as Record<string, unknown>
  } catch (err) {
    throw new TasksModuleError(`tasks module ${specifier} failed to load on ${where}: ${(err as Error)?.message ?? String(err)}`, { cause: err })
  }
  const functions = new Map<string, (...args: unknown[]) => unknown>()
  const classes = new Map<string, new (...args: unknown[]) => object>()
  for (const [name, value] of Object.entries(mod)) {
    if (name === 'default') continue
    if (isClass(value)) classes.set(name, value)
    else if (typeof value === 'function') functions.set(name, value as (...args: unknown[]) => unknown)
  }
  if (functions.size === 0 && classes.size === 0) {
    // Likely the wrong file (a driver, a type-only module) or exports under `default`: nothing could ever run.
    const why = 'default' in mod ? 'its only export is the default one; export each task and actor class by name' : 'it exports no functions or classes'
    throw new TasksModuleError(`tasks module ${specifier} failed to load on ${where}: ${why}`)
  }
  return { functions, classes }
}
