import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ENV_VARIABLE_NAMES, envName, mergeDashboardSettings, mergeHostsFlags, resolveAgentSettings, resolveClusterSettings } from '../../lib/settings.js'
import { CLUSTER_DEFAULTS, AGENT_DEFAULTS } from '../../lib/options.js'
import { loadConfig } from '../../lib/config.js'
import { loadOptional } from '../../lib/transport/optional.js'
import { integerOption } from '../../lib/validate.js'
import { InvalidArgumentError, TransportError } from '../../lib/errors.js'

const root = fileURLToPath(new URL('../../../', import.meta.url))

async function configFile(t: { after(fn: () => Promise<void>): void }, body: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ac-settings-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'cluster.config.mjs')
  await writeFile(file, `export default ${body}\n`)
  return file
}

test('option names map to CLUSTER_<UPPER_SNAKE> variables', () => {
  assert.equal(envName('threads'), 'CLUSTER_THREADS')
  assert.equal(envName('heartbeatMs'), 'CLUSTER_HEARTBEAT_MS')
  assert.equal(envName('redisUrl'), 'CLUSTER_REDIS_URL')
  assert.equal(envName('ssh-identity'), 'CLUSTER_SSH_IDENTITY')
})

test('driver: each layer overrides the one below (defaults < config < env < options)', async (t) => {
  const file = await configFile(t, `{ localAgents: 0, threads: 3, heartbeatMs: 500, nodeTimeoutMs: 4000, maxRetries: 5 }`)
  const env = { CLUSTER_CONFIG: file, CLUSTER_THREADS: '4', CLUSTER_HEARTBEAT_MS: '700' }
  const o = await resolveClusterSettings({ heartbeatMs: 900 }, env)
  assert.equal(o.batch, CLUSTER_DEFAULTS.batch) // defaults
  assert.equal(o.maxRetries, 5) // config over defaults
  assert.equal(o.nodeTimeoutMs, 4000)
  assert.equal(o.threads, 4) // env over config
  assert.equal(o.heartbeatMs, 900) // options over env
  // options.config names the file instead of the variable; {} means none.
  assert.equal((await resolveClusterSettings({ config: file }, {})).threads, 3)
  assert.equal((await resolveClusterSettings({ config: {}, localAgents: 0 }, env)).heartbeatMs, 700)
})

test('driver: every scalar option reads its variable, typed', async () => {
  const o = await resolveClusterSettings(
    {},
    {
      CLUSTER_LOCAL_AGENTS: '0',
      CLUSTER_LISTEN: 'tcp://127.0.0.1:7200',
      CLUSTER_BATCH: '64',
      CLUSTER_INSECURE: 'true',
      CLUSTER_MAX_FRAME_BYTES: '2048',
      CLUSTER_NODE_TIMEOUT_MS: '5000',
      CLUSTER_TRANSPORT: 'redis',
      CLUSTER_REDIS_URL: 'redis://10.0.0.1:6380',
      CLUSTER_CLUSTER_ID: 'c-1',
      CLUSTER_LOG_LEVEL: 'warn',
      CLUSTER_LOCAL_TRANSPORT: 'tcp',
    },
  )
  assert.deepEqual(
    [o.localAgents, o.listen, o.batch, o.insecure, o.maxFrameBytes, o.nodeTimeoutMs, o.transport, o.redisUrl, o.clusterId, o.logLevel, o.localTransport],
    [0, 'tcp://127.0.0.1:7200', 64, true, 2048, 5000, 'redis', 'redis://10.0.0.1:6380', 'c-1', 'warn', 'tcp'],
  )
})

test('bad variables are named with the value', async () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ CLUSTER_THREADS: 'x' }, /^CLUSTER_THREADS must be a positive integer, got "x"$/],
    [{ CLUSTER_THREADS: '0' }, /CLUSTER_THREADS must be a positive integer, got "0"/],
    [{ CLUSTER_HEARTBEAT_MS: '1.5' }, /CLUSTER_HEARTBEAT_MS must be a positive integer/],
    [{ CLUSTER_LISTEN: 'localhost:80' }, /CLUSTER_LISTEN must be an endpoint like tcp:\/\/127\.0\.0\.1:7100, got "localhost:80"/],
    [{ CLUSTER_INSECURE: 'maybe' }, /CLUSTER_INSECURE must be true or false/],
    [{ CLUSTER_TRANSPORT: 'kafka' }, /CLUSTER_TRANSPORT must be one of zmq, redis, amqp, amqp\+redis, got "kafka"/],
    [{ CLUSTER_REDIS_URL: 'http://x' }, /CLUSTER_REDIS_URL must be a redis: or rediss: URL with a host/],
    [{ CLUSTER_BATCH: 'lots' }, /CLUSTER_BATCH must be 'auto' or a positive integer/],
    [{ CLUSTER_DASHBOARD: 'yes' }, /CLUSTER_DASHBOARD must be a port number, got "yes"/],
    [{ CLUSTER_DASHBOARD: '0', CLUSTER_DASHBOARD_UPDATE_MS: '5' }, /CLUSTER_DASHBOARD_UPDATE_MS must be an integer from 20 to 1000/],
  ]
  for (const [env, re] of cases) {
    await assert.rejects(resolveClusterSettings({ localAgents: 0 }, env), (e: unknown) => e instanceof InvalidArgumentError && re.test(e.message), re.source)
  }
  await assert.rejects(
    resolveAgentSettings({ connect: 'tcp://127.0.0.1:1', tasks: 't.js' }, { CLUSTER_DRIVER_TIMEOUT_MS: '-1' }),
    /CLUSTER_DRIVER_TIMEOUT_MS must be a positive integer, got "-1"/,
  )
})

test('a variable whose value the option refuses is named, not the option: CLUSTER_THREADS=5000 says CLUSTER_THREADS', async () => {
  const named = (message: string) => (e: unknown) => e instanceof InvalidArgumentError && e.message === message
  await assert.rejects(
    resolveClusterSettings({ localAgents: 0 }, { CLUSTER_THREADS: '5000' }),
    named('CLUSTER_THREADS must be an integer from 1 to 4096, got 5000'),
  )
  await assert.rejects(
    resolveClusterSettings({ localAgents: 0 }, { CLUSTER_HEARTBEAT_MS: '5000' }),
    named('options.nodeTimeoutMs (3000) must exceed CLUSTER_HEARTBEAT_MS (5000)'),
  )
  await assert.rejects(
    resolveClusterSettings({ localAgents: 0 }, { CLUSTER_DASHBOARD: '0', CLUSTER_DASHBOARD_HOST: '0.0.0.0', CLUSTER_DASHBOARD_TOKEN: 'short' }),
    (e: unknown) => e instanceof InvalidArgumentError && /^CLUSTER_DASHBOARD_TOKEN /.test(e.message),
  )
  await assert.rejects(
    resolveAgentSettings({ connect: 'tcp://127.0.0.1:1', tasks: 't.js' }, { CLUSTER_AGENT_ID: 'x'.repeat(200) }),
    (e: unknown) => e instanceof InvalidArgumentError && e.message.startsWith('CLUSTER_AGENT_ID must be a string of 1 to 128 characters'),
  )
  // A value the caller gave keeps the option's name, even with the variable set.
  await assert.rejects(
    resolveClusterSettings({ localAgents: 0, threads: 5000 }, { CLUSTER_THREADS: '2' }),
    named('options.threads must be an integer from 1 to 4096, got 5000'),
  )
  const anArray = (e: unknown) => e instanceof InvalidArgumentError && e.message === 'options must be an object, got an array'
  await assert.rejects(resolveClusterSettings([] as never, {}), anArray)
  await assert.rejects(resolveAgentSettings([] as never, {}), anArray)
})

test('brokerReconnectMs: default 30000, read from CLUSTER_BROKER_RECONNECT_MS by driver and agent, 0 allowed, bad values named', async () => {
  assert.equal((await resolveClusterSettings({ localAgents: 0 }, {})).brokerReconnectMs, 30_000)
  assert.equal((await resolveClusterSettings({ localAgents: 0 }, { CLUSTER_BROKER_RECONNECT_MS: '0' })).brokerReconnectMs, 0)
  assert.equal((await resolveClusterSettings({ localAgents: 0, brokerReconnectMs: 5 }, { CLUSTER_BROKER_RECONNECT_MS: '7000' })).brokerReconnectMs, 5)
  const agent = { tasks: 't.js', transport: 'redis' as const, clusterId: 'c' }
  assert.equal((await resolveAgentSettings(agent, { CLUSTER_BROKER_RECONNECT_MS: '7000' })).brokerReconnectMs, 7000)
  await assert.rejects(
    resolveClusterSettings({ localAgents: 0 }, { CLUSTER_BROKER_RECONNECT_MS: '-1' }),
    (e: unknown) => e instanceof InvalidArgumentError && e.message === 'CLUSTER_BROKER_RECONNECT_MS must be a non-negative integer, got "-1"',
  )
  await assert.rejects(
    resolveClusterSettings({ localAgents: 0, brokerReconnectMs: 1.5 }, {}),
    (e: unknown) => e instanceof InvalidArgumentError && e.message === 'options.brokerReconnectMs must be a non-negative integer, got 1.5',
  )
})

test('dashboard: the variables win over the config, options over both', async (t) => {
  const file = await configFile(t, `{ localAgents: 0, dashboard: { port: 9100, host: '127.0.0.2' } }`)
  const fromConfig = await resolveClusterSettings({}, { CLUSTER_CONFIG: file })
  assert.equal(fromConfig.dashboard?.port, 9100)
  const env = await resolveClusterSettings({}, { CLUSTER_CONFIG: file, CLUSTER_DASHBOARD: '0', CLUSTER_DASHBOARD_UPDATE_MS: '50' })
  assert.deepEqual([env.dashboard?.port, env.dashboard?.host, env.dashboard?.updateMs], [0, '127.0.0.2', 50])
  // Without a port the variables adjust the config's dashboard, and turn none on.
  const host = await resolveClusterSettings({}, { CLUSTER_CONFIG: file, CLUSTER_DASHBOARD_HOST: '::1' })
  assert.deepEqual([host.dashboard?.port, host.dashboard?.host], [9100, '::1'])
  assert.equal((await resolveClusterSettings({ localAgents: 0 }, { CLUSTER_DASHBOARD_HOST: '::1' })).dashboard, undefined)
  assert.equal((await resolveClusterSettings({ dashboard: false }, { CLUSTER_CONFIG: file, CLUSTER_DASHBOARD: '0' })).dashboard, undefined)
  assert.equal((await resolveClusterSettings({ dashboard: 9200 }, { CLUSTER_CONFIG: file, CLUSTER_DASHBOARD: '0' })).dashboard?.port, 9200)
})

test('agent: each layer overrides the one below; the config counts only when named', async (t) => {
  const file = await configFile(
    t,
    `{ head: 'tcp://10.0.0.1:7100', tasks: './tasks.js', threads: 3, heartbeatMs: 500, localAgentOptions: { maxPoolBatch: 64 } }`,
  )
  const a = await resolveAgentSettings({ threads: 5 }, { CLUSTER_CONFIG: file, CLUSTER_THREADS: '4', CLUSTER_HEARTBEAT_MS: '600' })
  assert.equal(a.driverTimeoutMs, AGENT_DEFAULTS.driverTimeoutMs) // defaults
  assert.equal(a.connect, 'tcp://10.0.0.1:7100') // config
  assert.equal(a.maxPoolBatch, 64)
  assert.ok(a.tasks.endsWith('/tasks.js'))
  assert.equal(a.heartbeatMs, 600) // env over config
  assert.equal(a.threads, 5) // options over env
  const named = await resolveAgentSettings({ config: file }, {})
  assert.equal(named.threads, 3)
  const noConfig = await resolveAgentSettings({ connect: 'tcp://127.0.0.1:1' }, { CLUSTER_TASKS: 'env-tasks.js', CLUSTER_AGENT_ID: 'a-1' })
  assert.ok(noConfig.tasks.endsWith('/env-tasks.js'))
  assert.equal(noConfig.id, 'a-1')
})

test('agent: a config’s nodeTimeoutMs is its driverTimeoutMs, so a slow heartbeat the driver accepts is accepted by its agents too', async (t) => {
  const file = await configFile(t, `{ head: 'tcp://10.0.0.1:7100', tasks: './tasks.js', heartbeatMs: 5000, nodeTimeoutMs: 15000 }`)
  const a = await resolveAgentSettings({ config: file }, {})
  assert.deepEqual([a.heartbeatMs, a.driverTimeoutMs], [5000, 15000])
  assert.equal((await resolveAgentSettings({ config: file }, { CLUSTER_DRIVER_TIMEOUT_MS: '20000' })).driverTimeoutMs, 20000)
})

test('commands: flags over variables over defaults', () => {
  assert.deepEqual(mergeDashboardSettings({}, {}), { port: 8265, host: '127.0.0.1' })
  assert.deepEqual(mergeDashboardSettings({ port: 1 }, { CLUSTER_DASHBOARD: '2', CLUSTER_DASHBOARD_HOST: '::1' }), { port: 1, host: '::1' })
  assert.deepEqual(mergeHostsFlags({ threads: 2, name: undefined }, { CLUSTER_THREADS: '8', CLUSTER_NAME: 'n', CLUSTER_SSH_IDENTITY: 'k' }), {
    threads: 2,
    name: 'n',
    sshIdentity: 'k',
  })
})

test('one integer check for every resolver (the policy one included)', () => {
  assert.equal(integerOption('retries', undefined, 0), undefined)
  assert.equal(integerOption('retries', 0, 0), 0)
  assert.throws(() => integerOption('timeoutMs', 0, 1), /^InvalidArgumentError: options\.timeoutMs must be a positive integer, got 0$/)
  assert.throws(() => integerOption('dashboard.port', 70000, 0, 65535), /options\.dashboard\.port must be an integer from 0 to 65535, got 70000/)
  assert.throws(() => integerOption('CLUSTER_X', 1, 2), /^InvalidArgumentError: CLUSTER_X must be an integer ≥ 2, got 1$/)
})

test('a missing broker client says how to install it', async () => {
  const missing = async (name: string) => {
    throw Object.assign(new Error(`Cannot find package '${name}' imported from /x.js`), { code: 'ERR_MODULE_NOT_FOUND' })
  }
  await assert.rejects(
    loadOptional('ioredis', missing),
    (e: unknown) =>
      e instanceof TransportError &&
      e.code === 'ERR_DEPENDENCY_MISSING' &&
      /transport 'redis' and 'amqp\+redis' needs the ioredis package: npm install ioredis@6\.0\.0/.test(e.message),
  )
  await assert.rejects(loadOptional('amqplib', missing), /npm install amqplib@2\.3\.1/)
  const broken = async () => {
    throw new SyntaxError('bad')
  }
  await assert.rejects(
    loadOptional('amqplib', broken),
    (e: unknown) => e instanceof TransportError && e.code === 'ERR_TRANSPORT' && /failed to load: bad/.test(e.message),
  )
  assert.equal(await loadOptional('ioredis', async () => 'module'), 'module')
  // The hint's versions are the ones package.json pins.
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { peerDependencies: Record<string, string> }
  assert.deepEqual(pkg.peerDependencies, { amqplib: '2.3.1', ioredis: '6.0.0' })
})

test("the project's own cluster.config.ts loads in the project root", async () => {
  const loaded = await loadConfig(join(root, 'cluster.config.ts'))
  assert.equal(loaded.config.listen, 'tcp://127.0.0.1:7100')
  assert.equal(loaded.root, root.replace(/\/$/, ''))
})

test('docs/configuration.md lists every variable', async () => {
  const doc = await readFile(join(root, 'docs', 'configuration.md'), 'utf8')
  for (const name of ENV_VARIABLE_NAMES) assert.ok(doc.includes(`\`${name}\``), name)
})

test('nothing under lib/ imports bench/', async () => {
  const files = (await readdir(join(root, 'lib'), { recursive: true })).filter((f) => f.endsWith('.ts'))
  for (const f of files) {
    const src = await readFile(join(root, 'lib', f), 'utf8')
    assert.doesNotMatch(src, /from '(\.\.\/)+bench\//, f)
  }
})
