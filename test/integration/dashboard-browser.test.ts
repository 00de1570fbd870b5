/**
 * The dashboard in a real browser: Debian's headless Chromium, driven by
 * playwright-core. Skips with a one-line reason when /usr/bin/chromium is
 * missing, unless REQUIRE_BROWSER=1 (set by .ci/run), where it fails.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, rmSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { chromium, type Page } from 'playwright-core'
import { Agent, Cluster, RemoteTaskError } from '../../lib/index.js'
import { FIXTURE_TASKS, runCli, waitFor } from '../helpers.js'
import type * as Tasks from '../fixtures/tasks.js'

const CHROMIUM = '/usr/bin/chromium'
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]
/** Where the screenshot goes: DASHBOARD_SCREENSHOT (e.g. docs/dashboard.png), else next to the compiled test. */
const SHOT = process.env['DASHBOARD_SCREENSHOT'] ?? new URL('../dashboard.png', import.meta.url).pathname

const missing = !existsSync(CHROMIUM)
if (missing && process.env['REQUIRE_BROWSER'] === '1') {
  test('the browser is installed', () => assert.fail(`${CHROMIUM} is missing and REQUIRE_BROWSER=1: install Debian's chromium`))
}

/** A page of a fresh headless Chromium, closed with the test. */
async function openBrowser(t: TestContext): Promise<Page> {
  const profile = mkdtempSync(join(tmpdir(), 'ac-chromium-'))
  t.after(() => rmSync(profile, { recursive: true, force: true }))
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    args: ARGS,
    headless: true,
    viewport: { width: 1400, height: 1000 },
  })
  t.after(() => browser.close())
  return browser.pages()[0] ?? (await browser.newPage())
}

test('the dashboard shows nodes, throughput and a failed task in a real browser', { skip: missing && `${CHROMIUM} not installed` }, async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 2, dashboard: 0, listen: 'tcp://127.0.0.1:0' })
  t.after(() => cluster.close())
  const agent = runCli(t, ['agent', '--connect', cluster.address, '--tasks', FIXTURE_TASKS.href, '--threads', '1', '--id', 'remote-agent-1'])
  await waitFor(() => cluster.nodes().length === 2, 15_000, 'the remote agent').catch((err: Error) => {
    throw new Error(`${err.message}\n${agent.output()}`)
  })
  const counter = await cluster.spawn<Tasks.Counter>('Counter', 1)
  await cluster.spawn<Tasks.Counter>('Counter', 2)
  assert.equal(await counter.inc(5), 6)

  // A job that keeps the cluster busy for a few seconds (bounded in count and time).
  let stop = false
  const load = (async () => {
    const end = Date.now() + 9000
    for (let round = 0; round < 40 && !stop && Date.now() < end; round++) {
      let n = 0
      for await (const _ of cluster.map(
        'sleep',
        Array.from({ length: 300 }, (_, i) => [1, i]),
        { ordered: false },
      ))
        n++
      assert.equal(n, 300)
      await Promise.all(Array.from({ length: 5000 }, (_, k) => cluster.call('add', 1, k)))
    }
  })()
  const failure = await cluster.call('fail', 'deliberate failure: parameter set 42 diverged').catch((e: unknown) => e)
  assert.ok(failure instanceof RemoteTaskError)

  const page = await openBrowser(t)
  const url = new URL(cluster.dashboardUrl!)
  const foreign: string[] = []
  const loads: Promise<number>[] = []
  await page.route('**/*', (route) => {
    const u = new URL(route.request().url())
    if (u.origin !== url.origin) {
      foreign.push(u.href)
      return route.abort()
    }
    return route.continue()
  })
  page.on('response', (r) => {
    if (!r.url().includes('/api/events'))
      loads.push(
        r
          .request()
          .sizes()
          .then((s) => s.responseBodySize + s.responseHeadersSize),
      )
  })
  await page.goto(url.href, { waitUntil: 'load' })

  // Nodes: both agents, with their ids, threads and done counts.
  for (const n of cluster.nodes()) {
    const row = page.locator(`#nodes tr[data-node="${n.id}"]`)
    await row.waitFor({ timeout: 10_000 })
    assert.match(await row.innerText(), new RegExp(`${n.host}\\s+up\\s+${n.threads}\\b`))
  }
  // The deliberately failed task, with its node and its remote stack.
  const failed = page.locator('#failures li[data-task="fail"]').first()
  await failed.waitFor({ timeout: 10_000 })
  const failedText = await failed.innerText()
  assert.match(failedText, /RemoteTaskError \[ERR_TASK_FAILED\]: deliberate failure: parameter set 42 diverged/)
  assert.match((await failed.locator('pre').textContent()) ?? '', /at fail \(.*fixtures\/tasks\.js/)
  assert.equal(await page.locator('#t-failed').innerText(), '1')
  // Throughput: the chart holds a point with tasks settled, and counts move live.
  const chart = page.locator('#chart')
  await chart.locator('canvas').waitFor({ timeout: 10_000 })
  await waitFor(async () => Number(await chart.getAttribute('data-peak')) > 0, 10_000, 'a throughput point above 0')
  const count = async () => Number((await page.locator('#t-succeeded').innerText()).replace(/,/g, ''))
  const before = await count()
  await waitFor(async () => (await count()) > before, 10_000, 'the succeeded count to move')
  assert.match(await page.locator('#actors tbody').innerText(), /Counter-\d+-\w+\s+Counter/)
  assert.equal(await page.locator('#conn').innerText(), 'live')
  assert.match(await page.locator('#transport').innerText(), /^zmq$/)

  // Let the chart fill a few seconds, and keep a picture of it while the job runs.
  await waitFor(async () => Number(await chart.getAttribute('data-points')) >= 5, 15_000, 'five seconds of throughput')
  mkdirSync(dirname(SHOT), { recursive: true })
  await page.screenshot({ path: SHOT, fullPage: true })
  stop = true
  await load
  assert.deepEqual(foreign, [], 'the page must load nothing from elsewhere (it works offline)')
  const transferred = (await Promise.all(loads)).reduce((a, b) => a + b, 0)
  t.diagnostic(`first load: ${transferred} bytes transferred; screenshot in ${SHOT}`)
  assert.ok(transferred > 10_000 && transferred <= 200 * 1024, `first load transferred ${transferred} bytes; goal ≤ 200 KB`)
})

test('the page loads without a console error and shows HTML from tasks and agents as text', { skip: missing && `${CHROMIUM} not installed` }, async (t) => {
  const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, dashboard: 0, listen: 'tcp://127.0.0.1:0' })
  t.after(() => cluster.close())
  // Every value here comes from tasks and agents: the page must show it as text, never run or render it.
  const hostile = "<img src=x onerror=document.title='pwned'>"
  const agent = await Agent.start({ connect: cluster.address, tasks: FIXTURE_TASKS, threads: 1, id: `<i>node</i>${hostile}` })
  t.after(() => agent.close())
  await waitFor(() => cluster.nodes().length === 2, 15_000, 'the second agent')
  await cluster.call('fail', `<b>bold</b>${hostile}`).catch(() => undefined)
  await cluster.with({ name: '<b>x</b>' }).spawn('Counter', 1)

  const page = await openBrowser(t)
  const problems: string[] = []
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()} (${m.location().url})`)
  })
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`))
  await page.goto(cluster.dashboardUrl!, { waitUntil: 'load' })
  await page.locator('#failures li[data-task="fail"]').waitFor({ timeout: 10_000 })
  await page.locator(`#nodes tr[data-node="${agent.id}"]`).waitFor({ timeout: 10_000 })
  // Let a few updates arrive, and anything the browser fetches on its own (an icon) fail if it will.
  const first = await page.locator('body').getAttribute('data-updated')
  await waitFor(async () => (await page.locator('body').getAttribute('data-updated')) !== first, 10_000, 'a live update')

  assert.equal(await page.locator('main img, main b, main i:not(.busy > i)').count(), 0, 'no element made from a value')
  assert.equal(await page.title(), 'actor-cluster')
  assert.match(await page.locator('#failures .msg').first().innerText(), /: <b>bold<\/b><img src=x onerror=/)
  assert.equal(await page.locator(`#nodes tr[data-node="${agent.id}"] td`).first().innerText(), agent.id)
  assert.deepEqual(problems, [], 'the page logs no error or warning')
})

test(
  'a page opened without the token, or with a wrong one, says so instead of a bare "disconnected"',
  { skip: missing && `${CHROMIUM} not installed` },
  async (t) => {
    const token = 'dashboard-token-0123456789'
    const cluster = await Cluster.start({ tasks: FIXTURE_TASKS, threads: 1, dashboard: { port: 0, token } })
    t.after(() => cluster.close())
    const page = await openBrowser(t)
    const base = new URL(cluster.dashboardUrl!)
    base.search = ''
    for (const [search, said] of [
      ['', /token needed: open the page with \?token=<token>/],
      ['?token=***', /wrong token/],
    ] as const) {
      await page.goto(`${base.href}${search}`, { waitUntil: 'load' })
      await waitFor(async () => said.test(await page.locator('#conn').innerText()), 10_000, `the page to say ${said}`).catch(async (err: Error) => {
        throw new Error(`${err.message}; it says ${JSON.stringify(await page.locator('#conn').innerText())}`)
      })
    }
    await page.goto(cluster.dashboardUrl!, { waitUntil: 'load' })
    await waitFor(async () => (await page.locator('#conn').innerText()) === 'live', 10_000, 'the page with the token to go live')
  },
)
