import type { Argv } from 'yargs'
import { InvalidArgumentError } from '../errors.js'
import { envName, renameOptions } from '../settings.js'

/**
 * What was typed for `--key` and where: the flag (the last one, as yargs keeps),
 * else its `CLUSTER_*` variable (`cluster bench` reads them; `variable` names
 * another, or none when null).
 */
function typed(
  key: string,
  words: readonly string[],
  env: NodeJS.ProcessEnv,
  variable: string | null = envName(key),
): { name: string; raw: string | undefined } {
  let found: string | undefined
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!
    if (w === '--') break
    if (w === `--${key}`) found = words[i + 1]
    else if (w.startsWith(`--${key}=`)) found = w.slice(key.length + 3)
  }
  return found === undefined && variable !== null && env[variable] !== undefined ? { name: variable, raw: env[variable] } : { name: `--${key}`, raw: found }
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

/**
 * The flag that sets an option (its variable is `CLUSTER_` and the flag's
 * name), or the flag and the variable that stands for it when absent (null: none).
 */
export type FlagOf = string | { readonly flag: string; readonly variable: string | null }

/**
 * An options error in the terms the user typed: each `options.<path>` in its
 * message whose value came from a flag (or from the variable read in its
 * place) becomes that flag or variable, so `cluster agent --threads 0` says
 * `--threads must be …` rather than `options.threads must be …`. `flags` maps
 * option paths to flags (`{ 'dashboard.port': { flag: 'port', variable:
 * 'CLUSTER_DASHBOARD' } }`); a value from a config file keeps the option's
 * name, and any other error is returned as is.
 */
export function inFlagTerms(
  err: unknown,
  flags: Readonly<Record<string, FlagOf>>,
  words: readonly string[] = process.argv.slice(2),
  env: NodeJS.ProcessEnv = process.env,
): unknown {
  return renameOptions(err, (path) => {
    const of = flags[path]
    if (of === undefined) return undefined
    const { name, raw } = typeof of === 'string' ? typed(of, words, env) : typed(of.flag, words, env, of.variable)
    return raw === undefined ? undefined : name
  })
}
