import type { Argv } from 'yargs'
import { InvalidArgumentError } from '../errors.js'
import { envName } from '../settings.js'

/** What was typed for `--key` and where: the flag (the last one, as yargs keeps), else its `CLUSTER_*` variable (`cluster bench` reads them). */
function typed(key: string, words: readonly string[], env: NodeJS.ProcessEnv): { name: string; raw: string | undefined } {
  let found: string | undefined
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!
    if (w === '--') break
    if (w === `--${key}`) found = words[i + 1]
    else if (w.startsWith(`--${key}=`)) found = w.slice(key.length + 3)
  }
  const variable = envName(key)
  return found === undefined && env[variable] !== undefined ? { name: variable, raw: env[variable] } : { name: `--${key}`, raw: found }
}

/**
 * A number flag given something that is not a number reaches the commands as
 * NaN, and their messages then say "got NaN": refused here instead, with what
 * was typed (`--threads must be a number, got "abc"`, or `CLUSTER_TASKS must be …`
 * when `cluster bench` read it from there).
 */
export function rejectNotANumber(args: Record<string, unknown>, y: Argv, words: readonly string[], env: NodeJS.ProcessEnv = process.env): void {
  // yargs' getOptions() (the options declared so far, by type) is public at run time; @types/yargs leaves it out.
  const numbers = (y as unknown as { getOptions(): { number: string[] } }).getOptions().number
  for (const key of numbers) {
    const v = args[key]
    if (!(Array.isArray(v) ? v : [v]).some((x) => typeof x === 'number' && Number.isNaN(x))) continue
    const { name, raw } = typed(key, words, env)
    throw new InvalidArgumentError(`${name} must be a number, got ${raw === undefined ? 'something else' : JSON.stringify(raw)}`)
  }
}

/**
 * yargs' usage errors in one line like the commands' own: its "Invalid
 * values:" list of `Argument: x, Given: "y", Choices: …` lines becomes
 * `--x must be one of …, got "y"`.
 */
export function oneLine(msg: string): string {
  if (!msg.startsWith('Invalid values:')) return msg
  const each = [...msg.matchAll(/Argument: (\S+), Given: (.*), Choices: (.*)$/gm)].map((m) => `--${m[1]!} must be one of ${m[3]!}, got ${m[2]!}`)
  return each.length > 0 ? each.join('; ') : msg.replace(/\s*\n\s*/g, ' ')
}
