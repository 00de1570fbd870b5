// Mutation testing of what changed: the lines of the core files (the `mutate`
// list of stryker.config.json) that differ from a base, and nothing else.
//
//   node scripts/mutation-changed.mjs [base]
//
// The base is the merge base of HEAD and the given ref (or of MUTATION_BASE);
// without either, HEAD~1 (the last commit). Only added or changed lines are
// mutated (Stryker's `file:start-end` ranges); a change touching no core file
// runs nothing and says so. To keep the run inside CI's time, at most
// MAX_LINES changed lines are mutated (the first, in the order of the core
// list), the rest are named as skipped; Stryker breaks the run under the
// score in stryker.config.json's `thresholds.break` (85), and a run past
// LIMIT_MS is stopped and fails. MUTATION_CONCURRENCY sets Stryker's
// `--concurrency` (default: the config's).
import { spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'

// About two mutants a changed line, 1–3 s each (11 s for one that loops until its timeout): 200 lines
// stay near 8 minutes at concurrency 2 on two cores, and the hard stop keeps CI inside 15.
const MAX_LINES = 200
const LIMIT_MS = 15 * 60 * 1000

function git(...args) {
  const r = spawnSync('git', args, { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : undefined
}

const core = JSON.parse(readFileSync('stryker.config.json', 'utf8')).mutate
const ref = process.argv[2] ?? process.env['MUTATION_BASE']
const base = ref ? git('merge-base', ref, 'HEAD') : git('rev-parse', '--verify', '--quiet', 'HEAD~1')
if (base === undefined) {
  console.log(
    ref
      ? `mutation (changed): no merge base of ${ref} and HEAD (is the history fetched?); nothing run`
      : 'mutation (changed): no HEAD~1 to compare with (a shallow checkout, or no git history here; give a base: npm run test:mutation:changed -- <ref>); nothing run',
  )
  process.exit(ref ? 1 : 0)
}

/** Added or changed line ranges of `file` since the base (working tree included), from the diff's hunk headers. */
function changedRanges(file) {
  const diff = git('diff', '--unified=0', '--no-color', base, '--', file) ?? ''
  const ranges = []
  for (const [, start, count] of diff.matchAll(/^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@/gm)) {
    const n = count === undefined ? 1 : Number(count)
    if (n > 0) ranges.push([Number(start), Number(start) + n - 1])
  }
  return ranges
}

const chosen = []
const skipped = []
let lines = 0
for (const file of core) {
  for (const [from, to] of changedRanges(file)) {
    const room = MAX_LINES - lines
    if (room <= 0) {
      skipped.push(`${file}:${from}-${to}`)
      continue
    }
    const end = Math.min(to, from + room - 1)
    chosen.push(`${file}:${from}-${end}`)
    if (end < to) skipped.push(`${file}:${end + 1}-${to}`)
    lines += end - from + 1
  }
}
const short = base.slice(0, 12)
if (chosen.length === 0) {
  console.log(`mutation (changed): no line of a core file changed since ${short}; nothing run (core: ${core.join(', ')})`)
  process.exit(0)
}
console.log(`mutation (changed): ${lines} changed lines of core files since ${short}: ${chosen.join(', ')}`)
if (skipped.length > 0) console.log(`mutation (changed): over ${MAX_LINES} lines, not mutated this time: ${skipped.join(', ')}`)

const args = ['stryker', 'run', '--mutate', chosen.join(',')]
if (process.env['MUTATION_CONCURRENCY']) args.push('--concurrency', process.env['MUTATION_CONCURRENCY'])
const child = spawn('npx', args, { stdio: 'inherit', detached: true })
const timer = setTimeout(() => {
  console.error(`mutation (changed): still running after ${LIMIT_MS / 60_000} min; stopped`)
  process.kill(-child.pid, 'SIGTERM')
  process.exitCode = 1
}, LIMIT_MS)
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.kill(-child.pid, sig))
child.on('exit', (code, signal) => {
  clearTimeout(timer)
  if (process.exitCode === undefined) process.exitCode = code ?? (signal ? 1 : 0)
})
