/**
 * A dashboard client for `cluster bench monitor`, run as its own process (as a
 * browser would be): it holds the live stream of /api/events open, reading
 * every update, and scrapes /metrics once a second, until it is killed.
 * Usage: node monitor-client.js <dashboard url>
 */
const base = process.argv[2]
if (!base) throw new Error('usage: monitor-client <dashboard url>')

let updates = 0
let scrapes = 0
async function stream(): Promise<void> {
  const res = await fetch(new URL('api/events', base))
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  const decoder = new TextDecoder()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) return
    updates += decoder.decode(value).split('event: snapshot').length - 1
  }
}
const scraper = setInterval(() => {
  void fetch(new URL('metrics', base))
    .then((r) => r.text())
    .then(() => scrapes++)
}, 1000)
process.on('SIGTERM', () => {
  clearInterval(scraper)
  process.stdout.write(`${JSON.stringify({ updates, scrapes })}\n`)
  process.exit(0)
})
void stream().catch(() => {})
process.stdout.write('ready\n')
