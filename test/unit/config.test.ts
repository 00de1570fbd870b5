import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile, readdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { applyConfig, checkConfig, clusterOptionsOf, findConfig, loadConfig } from '../../lib/config.js'
import { ConfigError, defineConfig } from '../../lib/index.js'

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ac-config-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  return dir
}

test('a config file loads from .mjs/.js, and from .ts through the project’s typescript', async (t) => {
  const dir = await tempDir(t)
  assert.equal(findConfig(dir), undefined)
  await writeFile(join(dir, 'cluster.config.ts'), `const threads: number = 3\nexport default { name: 'ts', threads, tasks: './tasks.js' }\n`)
  // A .ts config next to the typescript package: compiled on the fly, the temporary file removed.
  const repoLocal = join(process.cwd(), `.cluster.config.test-${process.pid}.ts`)
  await writeFile(
    repoLocal,
    `import { defineConfig } from 'actor-cluster'\nconst n: number = 4\nexport default defineConfig({ name: 'typed', threads: n, listen: 'tcp://127.0.0.1:7100' })\n`,
  )
  t.after(() => rm(repoLocal, { force: true }))
  const typed = await loadConfig(repoLocal)
  assert.deepEqual(typed.config, { name: 'typed', threads: 4, listen: 'tcp://127.0.0.1:7100' })
  assert.equal(typed.root, process.cwd())
  assert.deepEqual(
    (await readdir(process.cwd())).filter((f) => f.startsWith(`.cluster.config.test-${process.pid}`) && f.endsWith('.mjs')),
    [],
  )
  // Where no typescript is installed, the error says what to do.
  assert.equal(findConfig(dir), join(dir, 'cluster.config.ts'))
  await assert.rejects(
    loadConfig(join(dir, 'cluster.config.ts')),
    (e: unknown) => e instanceof ConfigError && /does not run TypeScript and the "typescript" package is not installed next to it/.test(e.message),
  )
  await writeFile(join(dir, 'cluster.config.mjs'), `export default { name: 'm', root: 'sub', tasks: './t.js' }\n`)
  assert.equal(findConfig(dir), join(dir, 'cluster.config.mjs'))
  const m = await loadConfig(pathToFileURL(join(dir, 'cluster.config.mjs')))
  assert.equal(m.root, join(dir, 'sub'))
  assert.deepEqual(clusterOptionsOf(m.config, m.root), { tasks: join(dir, 'sub', 't.js') })
})

test('bad configs fail naming the file and the field', async (t) => {
  const dir = await tempDir(t)
  const cases: [string, RegExp][] = [
    ['export default 42', /must export an object .*got number/],
    // A default export that is null or undefined is the config given, not a sign to read the module's named exports.
    ['export default null', /must export an object .*got null/],
    ['export default undefined', /must export an object .*got undefined/],
    ['export default { treads: 2 }', /unknown field "treads"/],
    ['export default { ssh: { identity: 3 } }', /ssh\.identity must be a non-empty string, got number/],
    ['export default { ssh: { options: ["-oX"] } }', /ssh\.options must be a list of "Key=value" strings/],
    ['export default { ssh: { port: 0 } }', /ssh\.port must be a number ≥ 1/],
    ['export default { ssh: { bogus: 1 } }', /unknown field "ssh\.bogus"/],
    ['export default { remote: [] }', /remote must be an object, got an array/],
    ['export default { sync: { exclude: [""] } }', /sync\.exclude must be a list of patterns/],
    ['export default { name: "a b" }', /name must be 1 to 64 letters/],
    ['export default { registerTimeoutS: -1 }', /registerTimeoutS must be a number ≥ 1/],
    ['export default { slurm: { partiton: "gpu" } }', /unknown field "slurm\.partiton" \(known: nodes, partition, time/],
    ['export default { slurm: { nodes: "4" } }', /slurm\.nodes must be a positive integer, got "4"/],
    ['export default { slurm: { time: 3600 } }', /slurm\.time must be a non-empty string, got number/],
    ['export default { slurm: { sbatchArgs: "--qos=long" } }', /slurm\.sbatchArgs must be a list of sbatch arguments/],
    ['throw new Error("config exploded")', /failed to load: config exploded/],
  ]
  let i = 0
  for (const [src, re] of cases) {
    const file = join(dir, `c${i++}.mjs`)
    await writeFile(file, `${src}\n`)
    await assert.rejects(loadConfig(file), (e: unknown) => e instanceof ConfigError && e.message.includes(file) && re.test(e.message), src)
  }
  await assert.rejects(loadConfig(join(dir, 'none.mjs')), /none\.mjs does not exist/)
  assert.throws(() => checkConfig({ sync: 'yes' }), /sync must be an object, got "yes"/)
  assert.doesNotThrow(() => checkConfig(defineConfig({ sync: { exclude: ['*.log'] }, ssh: { options: ['Compression yes'] } })))
  assert.doesNotThrow(() =>
    checkConfig(
      defineConfig({ slurm: { nodes: 2, partition: 'gpu', time: '01:00:00', account: 'lab', cpusPerNode: 8, sbatchArgs: ['--qos=long'], waitS: 60 } }),
    ),
  )
})

test('applyConfig: explicit options win, CLUSTER_CONFIG is used without one, {} means none', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'cluster.config.mjs')
  await writeFile(file, `export default { tasks: './tasks.js', threads: 3, batch: 64, name: 'x', hosts: 'h.txt' }\n`)
  assert.deepEqual(await applyConfig({ config: file, threads: 1, batch: undefined }), { tasks: join(dir, 'tasks.js'), threads: 1, batch: 64 })
  assert.deepEqual(await applyConfig({ config: { threads: 2, root: dir, tasks: 'a.js' } }), { threads: 2, tasks: join(dir, 'a.js') })
  const before = process.env['CLUSTER_CONFIG']
  process.env['CLUSTER_CONFIG'] = file
  t.after(() => {
    if (before === undefined) delete process.env['CLUSTER_CONFIG']
    else process.env['CLUSTER_CONFIG'] = before
  })
  assert.deepEqual(await applyConfig({ localAgents: 0 }), { tasks: join(dir, 'tasks.js'), threads: 3, batch: 64, localAgents: 0 })
  assert.deepEqual(await applyConfig({ config: {}, localAgents: 0 }), { localAgents: 0 })
  await assert.rejects(applyConfig({ config: { bogus: 1 } as never }), /options\.config: unknown field "bogus"/)
})
