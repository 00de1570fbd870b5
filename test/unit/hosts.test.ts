import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseHostsFile, readHostsFile, hostLabel } from '../../lib/hosts/hosts-file.js'
import { sshFailure, sshOptions, shq, type SshResult } from '../../lib/hosts/ssh.js'
import { parseReply } from '../../lib/hosts/remote.js'
import { agentIdFor, remoteDirFor, remoteTasksFor, resolveHostsPlan } from '../../lib/hosts/plan.js'
import { checkProbe } from '../../lib/hosts/up.js'
import { parseAgentStatus } from '../../lib/hosts/status.js'
import { formatTable, mapLimit } from '../../lib/hosts/progress.js'
import { readState, updateState } from '../../lib/hosts/state.js'
import { ConfigError, HostsFileError, HostSetupError, InvalidArgumentError, VERSION } from '../../lib/index.js'

test('a hosts file: users, ports, IPv6, threads and keys, comments and blank lines', () => {
  const hosts = parseHostsFile(
    [
      '# the lab',
      '',
      'node1',
      'alice@node2:2222 threads=8   # a comment',
      '  10.0.0.3 threads=1 node=/opt/node/bin/node cli=/opt/ac/dist/bin/cluster.js dir=work/proj key=~/.ssh/lab',
      '[fe80::1]:22',
      'bob@[::1]',
      '\t',
    ].join('\n'),
    'hosts.txt',
  )
  assert.deepEqual(
    hosts.map((h) => [h.label, h.user, h.host, h.port, h.threads, h.line]),
    [
      ['node1', undefined, 'node1', undefined, undefined, 3],
      ['alice@node2:2222', 'alice', 'node2', 2222, 8, 4],
      ['10.0.0.3', undefined, '10.0.0.3', undefined, 1, 5],
      ['[fe80::1]:22', undefined, 'fe80::1', 22, undefined, 6],
      ['bob@[::1]', 'bob', '::1', undefined, undefined, 7],
    ],
  )
  const h3 = hosts[2]!
  assert.deepEqual([h3.node, h3.cli, h3.dir, h3.key], ['/opt/node/bin/node', '/opt/ac/dist/bin/cluster.js', 'work/proj', '~/.ssh/lab'])
  assert.equal(hostLabel({ host: '::1', port: 2200 }), '[::1]:2200')
})

test('malformed lines fail with the file, the line number and the reason, all at once', () => {
  const bad = [
    'good1',
    'host:99999',
    'threads=4',
    'a b',
    'host2 threads=0',
    'host3 thread=4',
    'host4 threads=x',
    '-oProxyCommand=evil',
    'us er@host5',
    '[::1',
    'a:b:c',
    'host6 node=',
    'host7 threads=2 threads=3',
    'good1:22',
    'bad$host',
  ].join('\n')
  let err: unknown
  try {
    parseHostsFile(bad, 'hosts.txt')
  } catch (e) {
    err = e
  }
  assert.ok(err instanceof HostsFileError)
  assert.equal(err.code, 'ERR_HOSTS_FILE')
  assert.equal(err.file, 'hosts.txt')
  assert.deepEqual(
    err.problems.map((p) => p.line),
    [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
  )
  const lines = err.message.split('\n')
  const expect = [
    /^hosts\.txt:2: bad SSH port "99999"/,
    /^hosts\.txt:3: expected \[user@\]host\[:port\] first, got "threads=4"/,
    /^hosts\.txt:4: expected key=value, got "b"/,
    /^hosts\.txt:5: threads must be an integer from 1 to 4096, got "0"/,
    /^hosts\.txt:6: unknown key "thread" \(known: threads, node, cli, dir, key\)/,
    /^hosts\.txt:7: threads must be an integer/,
    /^hosts\.txt:8: a host cannot start with "-"/,
    /^hosts\.txt:9: expected key=value, got "er@host5"/,
    /^hosts\.txt:10: unclosed "\["/,
    /^hosts\.txt:11: .*write IPv6 addresses in brackets/,
    /^hosts\.txt:12: node= needs a value/,
    /^hosts\.txt:13: threads= given twice/,
    /^hosts\.txt:14: duplicate host good1:22: already listed on line 1/,
    /^hosts\.txt:15: bad host name "bad\$host"/,
  ]
  assert.equal(lines.length, expect.length, err.message)
  expect.forEach((re, i) => assert.match(lines[i]!, re))
})

test('duplicates: the same user, host and port, whatever the spelling; other users or ports are other hosts', () => {
  assert.throws(() => parseHostsFile('Node1\nnode1\n', 'h'), /h:2: duplicate host node1: already listed on line 1/)
  assert.throws(() => parseHostsFile('u@n:22\nu@n\n', 'h'), /h:2: duplicate host u@n/)
  assert.equal(parseHostsFile('n\nu@n\nn:2222\n').length, 3)
})

test('an empty or missing hosts file is an error naming it', async () => {
  assert.throws(
    () => parseHostsFile('# nothing\n\n', 'hosts.txt'),
    (e: unknown) => e instanceof HostsFileError && /hosts\.txt lists no hosts/.test(e.message),
  )
  await assert.rejects(
    readHostsFile('/nonexistent/hosts.txt'),
    (e: unknown) => e instanceof HostsFileError && /cannot read hosts file \/nonexistent\/hosts\.txt/.test(e.message),
  )
})

const settings = { configFile: undefined, identity: undefined, user: undefined, port: undefined, options: [], connectTimeoutS: 5 }
const target = { label: 'h', user: undefined, host: 'h', port: undefined, key: undefined }

test('ssh options: batch mode, timeouts, and the host line winning over the defaults', () => {
  const base = sshOptions(settings, target)
  assert.deepEqual(base, ['-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=3'])
  const full = sshOptions(
    { ...settings, configFile: '/c', identity: '/id', user: 'def', port: 2200, options: ['StrictHostKeyChecking=accept-new'] },
    { label: 'u@h:22', user: 'u', host: 'h', port: 22, key: '/k' },
  )
  assert.deepEqual(full.slice(0, 2), ['-F', '/c'])
  assert.deepEqual(full.slice(10), ['-i', '/k', '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=accept-new', '-p', '22', '-l', 'u'])
  assert.deepEqual(sshOptions({ ...settings, identity: '/id', user: 'def', port: 2200 }, target).slice(8), [
    '-i',
    '/id',
    '-o',
    'IdentitiesOnly=yes',
    '-p',
    '2200',
    '-l',
    'def',
  ])
  assert.equal(shq('plain/path-1.js'), 'plain/path-1.js')
  assert.equal(shq("it's here"), `'it'\\''s here'`)
  assert.equal(shq(''), "''")
})

test('ssh failures are classified into causes a person can act on', () => {
  const r = (code: number | null, stderr: string, timedOut = false): SshResult => ({ code, stdout: '', stderr, timedOut })
  const cases: [SshResult, string | undefined, RegExp][] = [
    [r(255, 'root@h: Permission denied (publickey).\n'), 'auth', /refused the SSH key.*\(ssh: root@h: Permission denied \(publickey\)\.\)/],
    [r(255, 'Host key verification failed.\n'), 'host-key', /not in known_hosts/],
    [
      r(255, 'ssh: connect to host h port 22: Connection refused\n'),
      'unreachable',
      /connection refused.*\(ssh: connect to host h port 22: Connection refused\)/,
    ],
    [r(255, 'ssh: connect to host h port 22: Connection timed out\n'), 'unreachable', /did not answer/],
    [r(255, 'ssh: Could not resolve hostname h: Name or service not known\n'), 'unreachable', /did not answer/],
    [r(255, 'something else\n'), 'failed', /ssh failed \(ssh: something else\)/],
    [r(null, '', true), 'timeout', /h: probing timed out after 3 s/],
    [r(1, 'Permission denied'), undefined, /./],
    [r(0, ''), undefined, /./],
  ]
  for (const [res, reason, message] of cases) {
    const e = sshFailure(res, target, 'probing', 3000)
    assert.equal(e?.reason, reason, res.stderr)
    if (e) {
      assert.equal(e.code, 'ERR_SSH')
      assert.equal(e.host, 'h')
      assert.match(e.message, message)
    }
  }
  // rsync relays ssh's words with its own exit codes.
  assert.equal(
    sshFailure(r(12, 'ssh: connect to host h port 22: No route to host\nrsync: connection unexpectedly closed'), target, 'sync', 1000, 'rsync')?.reason,
    'unreachable',
  )
  assert.equal(sshFailure(r(23, 'rsync: some files vanished'), target, 'sync', 1000, 'rsync'), undefined)
})

test('replies from hosts: key=value lines, log lines gathered, junk ignored', () => {
  const r = parseReply('hostname=n1\nnoise\nlog=first\nBAD=1\nlog=second\nversion=1.2.3\r\n=x\nagent=a\nagent=b\n')
  assert.equal(r.values.get('hostname'), 'n1')
  assert.equal(r.values.get('version'), '1.2.3')
  assert.equal(r.values.has('BAD'), false)
  assert.deepEqual(r.log, ['first', 'second'])
  assert.deepEqual(
    r.pairs.filter(([k]) => k === 'agent').map(([, v]) => v),
    ['a', 'b'],
  )
})

test('the host check reads the probe and names what a host lacks', () => {
  const h = parseHostsFile('n1')[0]!
  const probe = (lines: string[]) => checkProbe(h, parseReply(lines.join('\n')), 'node', undefined)
  const good = ['hostname=n1', 'dir=/p', 'node=v20.19.1', 'cli=/p/cli.js', `version=${VERSION}`]
  assert.deepEqual(probe(good), { dir: '/p', cli: '/p/cli.js', version: VERSION, hostname: 'n1' })
  const fail = (lines: string[], reason: string, re: RegExp) => {
    const e = probe(lines)
    assert.ok(e instanceof HostSetupError, JSON.stringify(e))
    assert.equal(e.reason, reason)
    assert.equal(e.code, 'ERR_HOST_SETUP')
    assert.match(e.message, re)
  }
  fail(
    ['error=no-node', 'path=/usr/bin:/bin'],
    'no-node',
    /n1: Node\.js not found: "node" is not on the PATH of a non-interactive SSH session \(PATH=\/usr\/bin:\/bin\)/,
  )
  fail(['dir=/p', 'node=v18.20.0', 'error=no-actor-cluster'], 'old-node', /Node\.js v18\.20\.0 at "node" is too old; actor-cluster needs ≥ 20\.19/)
  fail(['dir=/p', 'node=v20.18.9', `version=${VERSION}`, 'cli=/x'], 'old-node', /v20\.18\.9/)
  fail(['dir=/p', 'node=v22.1.0', 'error=no-rsync'], 'no-rsync', /rsync is not installed there/)
  fail(['dir=/p', 'node=v22.1.0', 'error=dir'], 'dir', /cannot create the project directory \/p/)
  fail(
    ['dir=/p', 'node=v22.1.0', 'error=no-actor-cluster'],
    'no-actor-cluster',
    /looked in \/p\/node_modules and in the global packages of node.*npm install -g actor-cluster@/,
  )
  fail(['dir=/p', 'node=v22.1.0', 'cli=/x.js', 'error=no-actor-cluster'], 'no-actor-cluster', /\/x\.js does not exist/)
  fail(
    ['dir=/p', 'node=v22.1.0', 'cli=/x.js', 'error=cli-failed', 'log=SyntaxError: nope'],
    'no-actor-cluster',
    /actor-cluster at \/x\.js does not run: SyntaxError: nope/,
  )
  fail(
    [...good.slice(0, 4), 'version=0.0.1'],
    'version',
    new RegExp(`actor-cluster 0\\.0\\.1 is installed at /p/cli\\.js, this machine runs ${VERSION.replace(/\./g, '\\.')}`),
  )
  fail(['hostname=n1'], 'bad-reply', /unexpected answer/)
})

test('agent status files from hosts are checked field by field', () => {
  const good = {
    id: 'a',
    pid: 1,
    host: 'h',
    threads: 2,
    version: '1.0.0',
    state: 'ready',
    connect: 'tcp://h:1',
    tasksDone: 5,
    busy: 1,
    queued: 0,
    driverAgeMs: 12,
    startedAt: 1,
    updatedAt: 2,
  }
  assert.deepEqual(parseAgentStatus(JSON.stringify(good)), good)
  assert.deepEqual(parseAgentStatus(JSON.stringify({ ...good, driverAgeMs: null }))?.driverAgeMs, null)
  for (const bad of [
    undefined,
    '',
    'not json',
    '[]',
    'null',
    JSON.stringify({ ...good, state: 'weird' }),
    JSON.stringify({ ...good, threads: -1 }),
    JSON.stringify({ ...good, id: 7 }),
    'x'.repeat(70_000),
  ]) {
    assert.equal(parseAgentStatus(bad), undefined, String(bad).slice(0, 40))
  }
})

test('tables and bounded parallelism', async () => {
  assert.equal(
    formatTable(
      ['A', 'LONG'],
      [
        ['xyz', '1'],
        ['q', '22'],
      ],
    ),
    'A    LONG\nxyz  1\nq    22',
  )
  let running = 0
  let most = 0
  const out = await mapLimit([1, 2, 3, 4, 5, 6, 7], 3, async (x) => {
    most = Math.max(most, ++running)
    await new Promise((r) => setTimeout(r, 5))
    running--
    return x * 2
  })
  assert.deepEqual(out, [2, 4, 6, 8, 10, 12, 14])
  assert.equal(most, 3)
})

test('the plan: config file under flags, head from listen, paths against the project, clear errors', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ac-plan-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  await writeFile(
    join(dir, 'cluster.config.mjs'),
    `export default { name: 'lab', tasks: './dist/tasks.js', listen: 'tcp://10.0.0.1:7100', hosts: 'hosts.txt', ssh: { identity: 'keys/id', options: ['Compression=yes'], connectTimeoutS: 3 }, remote: { node: '/opt/node' }, heartbeatMs: 500 }\n`,
  )
  const plan = await resolveHostsPlan({}, dir)
  assert.equal(plan.name, 'lab')
  assert.equal(plan.root, dir)
  assert.equal(plan.head, 'tcp://10.0.0.1:7100')
  assert.equal(plan.hostsFile, join(dir, 'hosts.txt'))
  assert.equal(plan.tasks, join(dir, 'dist/tasks.js'))
  assert.equal(plan.stateFile, join(dir, '.actor-cluster', 'lab.json'))
  assert.equal(plan.ssh.identity, join(dir, 'keys/id'))
  assert.equal(plan.ssh.connectTimeoutS, 3)
  assert.equal(plan.sync, true)
  assert.equal(plan.remote.node, '/opt/node')
  assert.equal(plan.heartbeatMs, 500)
  assert.equal(remoteTasksFor(plan), 'dist/tasks.js')
  assert.equal(remoteDirFor(plan, { dir: undefined }), 'actor-cluster/lab')
  assert.equal(remoteDirFor(plan, { dir: '/srv/x' }), '/srv/x')
  assert.equal(agentIdFor(plan, { label: 'u@[::1]:22' }), 'lab@u@[::1]:22')
  assert.ok(agentIdFor(plan, { label: 'x'.repeat(300) }).length <= 120)

  const flagged = await resolveHostsPlan(
    { name: 'other', head: 'tcp://10.0.0.9:7200', sync: false, sshOption: ['Ciphers=aes128-ctr'], connectTimeout: 1, sshIdentity: '~/.ssh/k', remoteDir: 'p' },
    dir,
  )
  assert.equal(flagged.name, 'other')
  assert.equal(flagged.head, 'tcp://10.0.0.9:7200')
  assert.equal(flagged.listen, 'tcp://10.0.0.1:7100')
  assert.deepEqual(flagged.ssh.options, ['Compression=yes', 'Ciphers=aes128-ctr'])
  assert.equal(flagged.ssh.identity, '~/.ssh/k')
  assert.equal(flagged.ssh.connectTimeoutS, 1)
  assert.equal(remoteDirFor(flagged, { dir: undefined }), 'p')

  const noSync = await resolveHostsPlan({ sync: false, tasks: '/elsewhere/tasks.js' }, dir)
  assert.equal(remoteTasksFor(noSync), '/elsewhere/tasks.js')
  assert.equal(remoteDirFor(noSync, { dir: undefined }), dir)
  const outside = await resolveHostsPlan({ tasks: '/elsewhere/tasks.js' }, dir)
  assert.throws(
    () => remoteTasksFor(outside),
    (e: unknown) => e instanceof ConfigError && /outside the project directory/.test(e.message),
  )

  await assert.rejects(resolveHostsPlan({ listen: 'tcp://0.0.0.0:7100' }, dir), /binds every interface; set head/)
  await assert.rejects(resolveHostsPlan({ head: 'tcp://10.0.0.1:0' }, dir), /needs a fixed port/)
  await assert.rejects(resolveHostsPlan({ head: 'http://x' }, dir), /--head must be an address like tcp:\/\/10\.0\.0\.1:7100/)
  await assert.rejects(
    resolveHostsPlan({ connectTimeout: 0 }, dir),
    (e: unknown) => e instanceof InvalidArgumentError && /--connect-timeout must be a number ≥ 1, got 0/.test(e.message),
  )
  for (const threads of [5000, 2.5, 0]) {
    await assert.rejects(
      resolveHostsPlan({ threads }, dir),
      (e: unknown) => e instanceof InvalidArgumentError && e.message === `--threads must be an integer from 1 to 4096, got ${threads}`,
    )
  }
  assert.equal((await resolveHostsPlan({ threads: 4096 }, dir)).threads, 4096)
  await assert.rejects(resolveHostsPlan({ name: 'bad name' }, dir), /--name must be 1 to 64 letters/)
  await assert.rejects(resolveHostsPlan({ config: 'missing.mjs' }, dir), /config file .*missing\.mjs does not exist/)
  assert.equal(plan.dashboard, undefined)
  const dashboards: [string, unknown][] = [
    ['true', { url: 'http://127.0.0.1:8265/', token: undefined }],
    ['9000', { url: 'http://127.0.0.1:9000/', token: undefined }],
    ["{ port: 9001, host: '0.0.0.0', token: 'sixteen-characters!' }", { url: 'http://127.0.0.1:9001/', token: 'sixteen-characters!' }],
    ["{ port: 9002, host: '10.0.0.5' }", { url: 'http://10.0.0.5:9002/', token: undefined }],
    ['0', undefined],
    ['false', undefined],
  ]
  // One file per case: a module is imported once per path.
  for (const [i, [value, want]] of dashboards.entries()) {
    await writeFile(join(dir, `d${i}.mjs`), `export default { dashboard: ${value} }\n`)
    assert.deepEqual((await resolveHostsPlan({ config: `d${i}.mjs` }, dir)).dashboard, want, value)
  }
  assert.deepEqual((await resolveHostsPlan({ config: 'd0.mjs', dashboard: 'http://h:1/' }, dir)).dashboard, { url: 'http://h:1/', token: undefined })
  const empty = await mkdtemp(join(tmpdir(), 'ac-plan-empty-'))
  t.after(() => rm(empty, { recursive: true, force: true }))
  const bare = await resolveHostsPlan({}, empty)
  assert.equal(bare.configFile, undefined)
  assert.equal(bare.head, undefined)
  assert.throws(() => remoteTasksFor(bare), /no tasks module/)
})

test('the state file: written atomically, merged, and a corrupt one named', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ac-state-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'sub', 'c.json')
  assert.equal(await readState(file), undefined)
  await updateState(file, 'c', (hosts) => hosts.set('a', { label: 'a', host: 'a', agentId: 'c@a', state: 'up', updatedAt: 1 }))
  await updateState(file, 'c', (hosts) => hosts.set('b', { label: 'b', host: 'b', agentId: 'c@b', state: 'unknown', updatedAt: 2 }))
  assert.deepEqual(
    (await readState(file))?.hosts.map((h) => h.label),
    ['a', 'b'],
  )
  await writeFile(file, '{ nope')
  await assert.rejects(readState(file), (e: unknown) => e instanceof ConfigError && /is not valid JSON/.test(e.message))
  await writeFile(file, '{"version": 2, "hosts": []}')
  await assert.rejects(readState(file), /not an actor-cluster state file/)
})

test('the state file: Slurm jobs are a list, and a file recording one job as an object reads as a list of it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ac-state-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'c.json')
  const one = { jobId: '7', nodes: 2, output: '/o/job-7.out', keys: '/o/keys' }
  await writeFile(file, JSON.stringify({ version: 1, name: 'c', updatedAt: 1, hosts: [], slurm: one }))
  assert.deepEqual((await readState(file))?.slurm, [one])
  await updateState(file, 'c', (_hosts, s) => {
    s.slurm = [...(s.slurm ?? []), { jobId: '8', nodes: 1, output: '/o/job-8.out', dir: '/o/job-8' }]
  })
  assert.deepEqual(
    (await readState(file))?.slurm?.map((j) => [j.jobId, j.nodes]),
    [
      ['7', 2],
      ['8', 1],
    ],
  )
})

test('the hosts example: its config and hosts file are valid', async () => {
  const plan = await resolveHostsPlan({ config: fileURLToPath(new URL('../../examples/hosts/cluster.config.js', import.meta.url)) })
  assert.equal(plan.name, 'sweep')
  assert.equal(plan.head, 'tcp://head.lan:7100')
  assert.equal(plan.listen, 'tcp://0.0.0.0:7100')
  assert.equal(plan.curve?.dir, join(plan.root, 'cluster-keys'))
  assert.equal(remoteTasksFor(plan), 'tasks.js')
  const hosts = await readHostsFile(fileURLToPath(new URL('../../../examples/hosts/hosts.txt', import.meta.url)))
  assert.deepEqual(
    hosts.map((h) => [h.label, h.threads]),
    [
      ['alice@node1.lan', 8],
      ['node2.lan:2222', 4],
    ],
  )
})
