// The official @electric-sql/client in headless Chromium, following many shapes live over SSE
// through nginx with TLS: a browser opens at most 6 HTTP/1.1 connections per origin, so only
// HTTP/2 lets all of them stream at once. Bundles the client (from tests/electric-client) with
// esbuild into a page served from its own origin on 127.0.0.1, opens it with playwright-core
// (the edge's certificate is self-signed: certificate errors are ignored for this context).
// Argument: {"url": "https://127.0.0.1:<port>", "queries": ["table=…&where=…", …],
//            "expect": "<title of the row the test inserts>"}
// Output, JSON lines: {"type":"ready","streams":N} once every shape is up to date, then
// {"type":"done","changed":N,"protocols":[…]} once every shape has the expected row (or after
// 60 s), with the protocol of each shape response (from the DevTools protocol).
// CHROMIUM names the browser binary (default /usr/bin/chromium, Debian's package).
import { createServer } from 'node:http'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'
import { chromium } from 'playwright-core'

const config = JSON.parse(process.argv[2])
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const page = `
import { ShapeStream } from '@electric-sql/client'
window.follow = (url, queries) => {
  window.shapes = queries.map((query) => {
    const shape = { titles: new Map(), upToDate: false, error: null }
    const stream = new ShapeStream({
      url: url + '/v1/shape',
      params: Object.fromEntries(new URLSearchParams(query)),
      liveSse: true,
      onError: (error) => { shape.error = String(error?.message ?? error); return {} },
    })
    stream.subscribe((messages) => {
      for (const m of messages) {
        if (m.headers?.operation === 'delete') shape.titles.delete(m.key)
        else if (m.key) shape.titles.set(m.key, m.value.title)
        else if (m.headers?.control === 'up-to-date') shape.upToDate = true
      }
    })
    return shape
  })
}
window.state = (expect) => ({
  upToDate: window.shapes.filter((s) => s.upToDate).length,
  changed: window.shapes.filter((s) => [...s.titles.values()].includes(expect)).length,
  errors: window.shapes.map((s) => s.error).filter(Boolean),
})
`
const bundle = await esbuild.build({
  stdin: { contents: page, resolveDir: process.cwd(), loader: 'js' },
  nodePaths: [fileURLToPath(new URL('../electric-client/node_modules', import.meta.url))],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  write: false,
  logLevel: 'error',
})
const script = bundle.outputFiles[0].text
const html = '<!doctype html><meta charset="utf-8"><title>shapesync over HTTP/2</title><script type="module" src="/app.js"></script>'
const server = createServer((req, res) => {
  if (req.url === '/app.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(script)
  else res.writeHead(200, { 'content-type': 'text/html' }).end(html)
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
})
const context = await browser.newContext({ ignoreHTTPSErrors: true })
const tab = await context.newPage()
tab.on('pageerror', (error) => console.error(`page error: ${error.message}`))
// The protocol of every shape response, as the browser's network stack reports it.
const protocols = []
const devtools = await context.newCDPSession(tab)
await devtools.send('Network.enable')
devtools.on('Network.responseReceived', ({ response }) => {
  if (response.url.includes('/v1/shape')) protocols.push(response.protocol)
})
await tab.goto(`http://127.0.0.1:${server.address().port}/`)
await tab.waitForFunction(() => typeof window.follow === 'function')
await tab.evaluate(({ url, queries }) => window.follow(url, queries), config)

const state = () => tab.evaluate((expect) => window.state(expect), config.expect)
const until = async (done) => {
  const deadline = Date.now() + 60_000
  for (;;) {
    const now = await state()
    if (done(now) || Date.now() > deadline) return now
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}
const ready = await until((s) => s.upToDate === config.queries.length)
emit({ type: 'ready', streams: ready.upToDate, errors: ready.errors })
const done = await until((s) => s.changed === config.queries.length)
emit({ type: 'done', changed: done.changed, errors: done.errors, protocols })
await browser.close()
server.close()
