// The test command Stryker runs for each mutant (its `command` test runner).
// Stryker instruments every mutant into one build and names the active one in
// __STRYKER_ACTIVE_MUTANT__; this script finds which core file holds that mutant
// and runs only the unit tests that exercise that file, one file at a time, the
// most direct first, stopping at the first failure: a killed mutant costs about
// a second instead of the whole unit suite. Without an active mutant (the
// initial run) it runs the test files of every file the run mutates.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'

// Core file (compiled) → the unit tests that exercise it.
const TESTS = {
  'dist/lib/driver/ledger.js': ['ledger', 'scheduler'],
  'dist/lib/driver/scheduler.js': ['scheduler', 'ledger'],
  'dist/lib/driver/membership.js': ['membership', 'membership-former', 'scheduler'],
  'dist/lib/agent/credit.js': ['credit', 'runner'],
  'dist/lib/protocol/codec.js': ['codec', 'bodies', 'membership', 'scheduler', 'runner'],
  'dist/lib/protocol/bodies.js': ['bodies', 'codec', 'scheduler', 'runner'],
  'dist/lib/driver/task-options.js': ['task-options', 'map', 'ledger', 'scheduler'],
  'dist/lib/validate.js': ['validate', 'options', 'task-options', 'transport', 'monitor', 'config', 'settings'],
}

const INDEX = '.mutant-files.json'

/** Mutant id → compiled file, read once from the instrumented build and kept beside it. */
function mutantFiles() {
  if (existsSync(INDEX)) return JSON.parse(readFileSync(INDEX, 'utf8'))
  const index = {}
  for (const file of Object.keys(TESTS)) {
    for (const [, id] of readFileSync(file, 'utf8').matchAll(/stryMutAct_9fa48\("(\d+)"\)/g)) index[id] = file
  }
  writeFileSync(`${INDEX}.${process.pid}`, JSON.stringify(index))
  renameSync(`${INDEX}.${process.pid}`, INDEX)
  return index
}

const active = process.env['__STRYKER_ACTIVE_MUTANT__']
// The initial run (no active mutant) runs the tests of the files this run mutates, so a run
// over one file (`--mutate lib/driver/scheduler.ts`) starts, and times its mutants, from the
// few seconds of that file's tests instead of the whole list.
const mutated = [...new Set(Object.values(mutantFiles()))]
const names =
  active === undefined
    ? (mutated.length > 0 ? mutated : Object.keys(TESTS)).flatMap((file) => TESTS[file])
    : (TESTS[mutantFiles()[active]] ?? Object.values(TESTS).flat())
for (const name of new Set(names)) {
  // Each file in its own process (node:test sets the exit code when a test fails).
  const run = spawnSync(process.execPath, [`dist/test/unit/${name}.test.js`], { stdio: 'inherit' })
  if (run.status !== 0) process.exit(run.status ?? 1)
}
