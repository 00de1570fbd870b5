// The dashboard page: one EventSource on /api/events; each message is a full
// cluster snapshot (see ClusterSnapshot in lib/monitor/monitor.ts). Every
// value from the cluster is written with textContent, never as HTML: task
// names, error messages and stacks come from the network.
/* global uPlot */
'use strict'

const $ = (id) => document.getElementById(id)
const fmt = new Intl.NumberFormat('en-US')
const num = (n) => fmt.format(Math.round(n))

function el(tag, attrs, ...children) {
  const e = document.createElement(tag)
  if (attrs) for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)))
  return e
}

function ms(v) {
  if (!Number.isFinite(v)) return '–'
  if (v < 1) return `${(v * 1000).toFixed(0)} µs`
  if (v < 1000) return `${v.toFixed(v < 10 ? 2 : 1)} ms`
  return `${(v / 1000).toFixed(2)} s`
}

function duration(msec) {
  const s = Math.floor(msec / 1000)
  if (s < 60) return `${s} s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m} min ${s % 60} s`
  return `${Math.floor(m / 60)} h ${m % 60} min`
}

function bytes(n) {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024
    i++
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`
}

function fill(tbody, rows, empty, cols) {
  tbody.replaceChildren(...(rows.length ? rows : [el('tr', null, el('td', { class: 'empty', colspan: String(cols) }, empty))]))
}

let chart
function chartWidth() {
  return Math.max(300, $('chart').clientWidth)
}
function drawChart(tp) {
  const data = [tp.t, tp.done, tp.failed]
  $('chart').dataset.peak = String(Math.max(0, ...tp.done))
  $('chart').dataset.points = String(tp.t.length)
  if (!chart) {
    chart = new uPlot(
      {
        width: chartWidth(),
        height: 240,
        series: [
          {},
          { label: 'settled/s', stroke: '#2f6fdb', fill: 'rgba(47,111,219,0.12)', width: 2, value: (_u, v) => (v == null ? '–' : num(v)) },
          { label: 'failed/s', stroke: '#c62f2f', width: 1.5, value: (_u, v) => (v == null ? '–' : num(v)) },
        ],
        axes: [
          {
            space: 100,
            incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300],
            values: (_u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })),
          },
          { size: 70, values: (_u, ticks) => ticks.map((v) => (v >= 1e6 ? `${v / 1e6}M` : v >= 1e3 ? `${v / 1e3}k` : v)) },
        ],
        scales: { y: { range: (_u, _min, max) => [0, Math.max(10, max * 1.1)] } },
      },
      data,
      $('chart'),
    )
    window.addEventListener('resize', () => chart.setSize({ width: chartWidth(), height: 240 }))
  } else {
    chart.setData(data)
  }
}

function renderNodes(s) {
  const late = 1.5 * s.heartbeatMs
  const rows = s.nodes.map((n) => {
    const busyPct = n.threads ? Math.min(100, (100 * n.busyThreads) / n.threads) : 0
    const state = n.state === 'up' && n.heartbeatAgeMs > late ? 'late' : n.state
    const bar = el('span', { class: 'busy' }, el('i', { style: `width:${busyPct.toFixed(0)}%` }))
    return el(
      'tr',
      { 'data-node': n.id },
      el('td', { class: 'mono' }, n.id, n.local ? ' (local)' : ''),
      el('td', null, n.host),
      el('td', null, el('span', { class: `state ${state}` }, state)),
      el('td', null, n.threads),
      el('td', null, bar, `${n.busyThreads}/${n.threads}`),
      el('td', null, `${num(n.inFlight)} / ${num(n.window)}`),
      el('td', { class: 'done' }, num(n.tasksDone)),
      el('td', null, `${(n.heartbeatAgeMs / 1000).toFixed(1)} s ago`),
      el('td', null, n.heartbeatsMissed),
      el('td', null, n.actors),
    )
  })
  fill($('nodes').tBodies[0], rows, 'no node has joined yet', 10)
  $('node-count').textContent = `${s.nodes.length} node${s.nodes.length === 1 ? '' : 's'}, ${s.nodes.reduce((a, n) => a + n.threads, 0)} threads`
}

const openStacks = new Set()
function renderFailures(s) {
  const list = $('failures')
  if (s.failures.length === 0) {
    list.replaceChildren(el('li', { class: 'empty' }, 'no task has failed'))
  } else {
    list.replaceChildren(
      ...s.failures.map((f, i) => {
        const key = `${f.id}`
        const details = el('details', null, el('summary', null, 'stack'), el('pre', null, f.stack || '(no stack)'))
        if (openStacks.has(key) || (i === 0 && openStacks.size === 0)) details.open = true
        details.addEventListener('toggle', () => (details.open ? openStacks.add(key) : openStacks.delete(key)))
        return el(
          'li',
          { 'data-task': f.task },
          el('span', { class: 'what' }, f.task),
          el('span', { class: 'where' }, `#${f.id} on ${f.node ?? 'no node'} at ${new Date(f.time).toLocaleTimeString()}`),
          el('div', { class: 'msg' }, `${f.error}${f.code ? ` [${f.code}]` : ''}: ${f.message}`),
          details,
        )
      }),
    )
  }
  $('failure-count').textContent = `${num(s.tasks.failed)} failed in all`
}

function render(s) {
  $('address').textContent = s.address
  $('transport').textContent = s.transport.name
  $('uptime').textContent = duration(s.uptimeMs)
  $('version').textContent = `v${s.version}`
  for (const k of ['pending', 'running', 'succeeded', 'failed', 'retried']) $(`t-${k}`).textContent = num(s.tasks[k])
  $('t-rate').textContent = num(s.tasks.ratePerSecond)
  $('l-p50').textContent = s.latency.count ? ms(s.latency.p50Ms) : '–'
  $('l-p90').textContent = s.latency.count ? ms(s.latency.p90Ms) : '–'
  $('l-p99').textContent = s.latency.count ? ms(s.latency.p99Ms) : '–'
  $('l-max').textContent = s.latency.count ? ms(s.latency.maxMs) : '–'
  $('l-count').textContent = num(s.latency.count)
  drawChart(s.throughput)
  renderNodes(s)
  renderFailures(s)
  fill(
    $('names').tBodies[0],
    s.taskNames
      .slice(0, 20)
      .map((n) =>
        el('tr', null, el('td', { class: 'mono' }, n.name), el('td', null, num(n.succeeded)), el('td', null, num(n.failed)), el('td', null, num(n.retried))),
      ),
    'no task yet',
    4,
  )
  fill(
    $('actors').tBodies[0],
    s.actors.list.map((a) => el('tr', null, el('td', { class: 'mono' }, a.id), el('td', null, a.className), el('td', { class: 'mono' }, a.node))),
    'no live actor',
    3,
  )
  $('actor-count').textContent = s.actors.count > s.actors.list.length ? `${s.actors.list.length} of ${num(s.actors.count)}` : `${s.actors.count}`
  const t = s.transport
  fill(
    $('wire').tBodies[0],
    [
      ['bytes in', bytes(t.bytesIn)],
      ['bytes out', bytes(t.bytesOut)],
      ['frames in', num(t.framesIn)],
      ['frames out', num(t.framesOut)],
      ['send errors', num(t.sendErrors)],
      ['bad frames dropped', num(s.badFrames)],
      ['heartbeats missed', num(s.heartbeatsMissed)],
      ['late results dropped', num(s.tasks.lateResultsDropped)],
      ['tasks cancelled', num(s.tasks.cancelled)],
      ['nodes lost', num(s.nodesLost)],
      ['connections refused (auth)', num(s.authDenied)],
      ...(s.dashboard ? [['pages watching', num(s.dashboard.clients)]] : []),
    ].map(([k, v]) => el('tr', null, el('th', null, k), el('td', null, v))),
    '',
    2,
  )
  document.body.dataset.updated = String(s.time)
}

function setConn(cls, text) {
  const c = $('conn')
  c.className = `conn ${cls}`
  c.textContent = text
}

let lastUpdate = 0
function connect() {
  const token = new URLSearchParams(location.search).get('token')
  const query = token ? `?token=${encodeURIComponent(token)}` : ''
  const es = new EventSource(`api/events${query}`)
  es.addEventListener('snapshot', (e) => {
    lastUpdate = Date.now()
    setConn('live', 'live')
    render(JSON.parse(e.data))
  })
  es.onerror = () => {
    if (es.readyState !== EventSource.CLOSED) return setConn('wait', 'reconnecting…')
    setConn('down', 'disconnected')
    // An EventSource does not say why it gave up: ask once, so a missing or wrong token is named.
    fetch(`api/stats${query}`, { method: 'HEAD' }).then(
      (r) => r.status === 401 && setConn('down', token === null ? 'token needed: open the page with ?token=<token>' : 'wrong token'),
      () => {},
    )
  }
}
setInterval(() => {
  if (lastUpdate && Date.now() - lastUpdate > 5000) setConn('wait', 'no update for 5 s')
}, 1000)
connect()
