// An RxDB client in headless Chromium with the Dexie (IndexedDB) storage: bundles
// rxdb-page.mjs with esbuild, serves it from its own origin on 127.0.0.1 (so every request to
// the proxy is cross-origin, as from a real web app), opens it with playwright-core, and
// forwards the commands of driver.mjs into the page. Argument: rxdbClient's JSON config.
// CHROMIUM names the browser binary (default /usr/bin/chromium, Debian's package).
import { createServer } from 'node:http'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'
import { chromium } from 'playwright-core'
import { serve } from './driver.mjs'

const config = JSON.parse(process.argv[2])

const bundle = await esbuild.build({
  entryPoints: [fileURLToPath(new URL('./rxdb-page.mjs', import.meta.url))],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  write: false,
  logLevel: 'error',
})
const script = bundle.outputFiles[0].text
const html = '<!doctype html><meta charset="utf-8"><title>shapesync rxdb</title><script type="module" src="/app.js"></script>'
const server = createServer((req, res) => {
  if (req.url === '/app.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' }).end(script)
  } else {
    res.writeHead(200, { 'content-type': 'text/html' }).end(html)
  }
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const origin = `http://127.0.0.1:${server.address().port}`

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
})
const page = await browser.newPage()
page.on('console', (message) => console.error(`page: ${message.text()}`))
page.on('pageerror', (error) => console.error(`page error: ${error.message}`))
await page.goto(`${origin}/`)
await page.waitForFunction(() => typeof window.startClient === 'function')
await page.evaluate((c) => window.startClient(c), config)

const handlers = new Proxy(
  {},
  {
    get: (own, op) =>
      own[op] ?? ((command) => page.evaluate((c) => window.runCommand(c), { ...command, op })),
  },
)
// Closes the app and loads the page again: a new RxDB database over the same IndexedDB.
handlers.reload = async (command) => {
  await page.evaluate((c) => window.runCommand(c), { ...command, op: 'close' })
  await page.reload()
  await page.waitForFunction(() => typeof window.startClient === 'function')
  await page.evaluate((c) => window.startClient(c), config)
  return null
}
handlers.close = async (command) => {
  await page.evaluate((c) => window.runCommand(c), command)
  await browser.close()
  server.close()
  return null
}
serve(handlers)
