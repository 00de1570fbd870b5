import { constants } from 'node:os'

/**
 * The exit code of a command that ran a program: the program's own, or, when
 * a signal ended it, 128 + the signal's number as a shell reports it
 * (SIGKILL 137, SIGTERM 143), so that a caller can tell which signal it was.
 */
export function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code
  const n = signal === null ? undefined : constants.signals[signal]
  return n === undefined ? 1 : 128 + n
}
