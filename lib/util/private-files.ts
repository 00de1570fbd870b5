/**
 * Directories and files that are the user's alone, on a machine shared with
 * other users: a directory is used only when it is ours, not a symbolic
 * link, and 0700, in a parent no one else may write to; a file is created
 * with `O_EXCL | O_NOFOLLOW`, so nothing planted beforehand (a link, a file
 * of someone else's) receives what we write.
 */
import { chmodSync, closeSync, constants, lstatSync, mkdirSync, openSync, statSync, writeSync, type Stats } from 'node:fs'
import { dirname } from 'node:path'
import { AuthError } from '../errors.js'

export const myUid = (): number | undefined => process.getuid?.()

export function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new AuthError(`cannot inspect ${path}: ${(err as Error).message}`, { cause: err })
  }
}

/** Why `st` (of `path`) is not a directory that is ours alone, or undefined if it is (modes other than 0700 are repaired). */
export function privateDirProblem(path: string, st: Stats): string | undefined {
  if (st.isSymbolicLink()) return 'it is a symbolic link'
  if (!st.isDirectory()) return 'it is not a directory'
  const uid = myUid()
  if (uid !== undefined && st.uid !== uid) return `it belongs to another user (uid ${st.uid})`
  if ((st.mode & 0o777) !== 0o700) {
    try {
      chmodSync(path, 0o700)
    } catch (err) {
      return `it cannot be made private (chmod 700: ${(err as Error).message})`
    }
  }
  return undefined
}

/** Why the file at `path` is not the user's alone (missing, not a regular file, another user's, open to others), or undefined. */
export function privateFileProblem(path: string): string | undefined {
  const st = lstatOrUndefined(path)
  if (!st) return 'it is missing'
  if (!st.isFile()) return st.isSymbolicLink() ? 'it is a symbolic link' : 'it is not a regular file'
  const uid = myUid()
  if (uid !== undefined && st.uid !== uid) return `it belongs to another user (uid ${st.uid})`
  if ((st.mode & 0o077) !== 0) return `it is open to other users (mode ${(st.mode & 0o777).toString(8)}; chmod 600 it)`
  return undefined
}

/** Why the parent of `path` lets another user replace it, or undefined. */
function parentProblem(path: string): string | undefined {
  const parent = statSync(dirname(path))
  const uid = myUid()
  if (uid !== undefined && parent.uid !== uid && parent.uid !== 0) return `its parent ${dirname(path)} belongs to another user (uid ${parent.uid})`
  if ((parent.mode & 0o022) !== 0 && (parent.mode & 0o1000) === 0) return `its parent ${dirname(path)} is writable by other users`
  return undefined
}

/**
 * Makes `path` a directory that is the user's alone (0700), creating it and
 * the missing directories below `root` (which must exist); throws AuthError
 * naming the directory and why when it is a symbolic link, another user's,
 * or in a directory others may write to.
 */
export function ensurePrivateDir(path: string, root: string): void {
  if (path !== root && !lstatOrUndefined(dirname(path))) ensurePrivateDir(dirname(path), root)
  let st = lstatOrUndefined(path)
  if (!st) {
    try {
      mkdirSync(path, { mode: 0o700 })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new AuthError(`cannot create ${path}: ${(err as Error).message}`, { cause: err })
    }
    st = lstatSync(path)
  }
  const why = privateDirProblem(path, st) ?? (path === root ? undefined : parentProblem(path))
  if (why) throw new AuthError(`refusing to keep keys in ${path}: ${why}`)
}

/** Creates `path` (which must not exist) with `mode` (default 0600) and writes `text`; never follows a link. */
export function writePrivateFile(path: string, text: string, mode = 0o600): void {
  let fd: number
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode)
  } catch (err) {
    throw new AuthError(`cannot create ${path}: ${(err as Error).message}`, { cause: err })
  }
  try {
    writeSync(fd, text)
  } finally {
    closeSync(fd)
  }
}
