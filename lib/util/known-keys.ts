/**
 * Options objects name only options there are: a key that is not one (a
 * typo such as `thread` for `threads`, or `timeout` for `timeoutMs`) is an
 * error naming it and the nearest known key, as Ray's `.options()` and
 * Python's keyword arguments refuse one, instead of a setting silently
 * ignored.
 */
import { InvalidArgumentError } from '../errors.js'
import { describeKind } from '../validate.js'

/** The keys of `T`, each listed once: the compiler says when an option is added to `T` and not here. */
export type KeyTable<T> = { readonly [K in keyof Required<T>]: true }

/** An InvalidArgumentError when `o`, given as `what` (`map options`, …), is not an options object; undefined when it is one. */
export function notAnOptionsObject(what: string, o: unknown): InvalidArgumentError | undefined {
  return o === null || typeof o !== 'object' || Array.isArray(o) ? new InvalidArgumentError(`${what} must be an object, got ${describeKind(o)}`) : undefined
}

/** Throws {@link unknownKey}'s error, if any. */
export function checkKnownKeys(what: string, o: object, known: Readonly<Record<string, true>>): void {
  const err = unknownKey(what, o, known)
  if (err) throw err
}

/** An InvalidArgumentError naming the first key of `o` not in `known` and `what` holds it (`map options`, …); undefined when every key is known. */
export function unknownKey(what: string, o: object, known: Readonly<Record<string, true>>): InvalidArgumentError | undefined {
  for (const key of Object.keys(o)) {
    if (Object.hasOwn(known, key)) continue
    const names = Object.keys(known)
    const near = nearest(key, names)
    return new InvalidArgumentError(`${what}: unknown option "${key}"${near === undefined ? '' : ` (did you mean "${near}"?)`}; known: ${names.join(', ')}`)
  }
  return undefined
}

/** The known name closest to `key` by edit distance, case aside, when close enough to be a typo or a prefix. */
function nearest(key: string, names: readonly string[]): string | undefined {
  const k = key.toLowerCase()
  let best: string | undefined
  let bestDistance = Math.max(2, Math.floor(k.length / 3)) + 1
  for (const name of names) {
    const n = name.toLowerCase()
    const d = n.startsWith(k) || k.startsWith(n) ? Math.min(1, Math.abs(n.length - k.length)) : distance(k, n)
    if (d < bestDistance) {
      best = name
      bestDistance = d
    }
  }
  return best
}

/** Levenshtein distance (insertions, deletions, substitutions). */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const next = [i]
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    row = next
  }
  return row[b.length]!
}
