/**
 * The broker clients are optional peer dependencies: only the designs that
 * use them load them, and a missing one fails with the command that installs
 * it instead of a bare "cannot find package".
 */
import { TransportError } from '../errors.js'

/** Each optional client, the version this release is tested with, and the designs that need it. */
export const OPTIONAL_DEPENDENCIES = {
  ioredis: { version: '6.0.0', transports: ['redis', 'amqp+redis'] },
  amqplib: { version: '2.3.1', transports: ['amqp', 'amqp+redis'] },
} as const

export type OptionalDependency = keyof typeof OPTIONAL_DEPENDENCIES

/** How a module is imported; a parameter so that tests can stand in for a missing package. */
export type Importer = (specifier: string) => Promise<unknown>

const nativeImport: Importer = (specifier) => import(specifier)

/**
 * Imports an optional client, or throws a {@link TransportError}
 * (`ERR_DEPENDENCY_MISSING`) naming the transport and the install command.
 * Other failures (the package is there but broken) keep their own message,
 * as the cause of a `TransportError`.
 */
export async function loadOptional<T>(name: OptionalDependency, importer: Importer = nativeImport): Promise<T> {
  const { version, transports } = OPTIONAL_DEPENDENCIES[name]
  try {
    return (await importer(name)) as T
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    const missing = (e.code === 'ERR_MODULE_NOT_FOUND' || e.code === 'MODULE_NOT_FOUND') && e.message.includes(`'${name}'`)
    const designs = transports.map((t) => `'${t}'`).join(' and ')
    if (missing) {
      throw new TransportError(`transport ${designs} needs the ${name} package: npm install ${name}@${version}`, { cause: err, code: 'ERR_DEPENDENCY_MISSING' })
    }
    throw new TransportError(`the ${name} package (for transport ${designs}) failed to load: ${e.message}`, { cause: err })
  }
}
