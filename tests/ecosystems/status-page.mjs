// shapesync's status page (GET /) in headless Chromium, driven by tests/tests/status_page.rs
// with the commands of driver.mjs. Argument: {"url": the page's URL, with ?secret= if needed}.
// CHROMIUM names the browser binary (default /usr/bin/chromium, Debian's package).
//
// Commands:
//   open {timeoutMs}                      load the page, wait for its first report
//   shape {handle, expect, timeoutMs}     wait until the shape's row shows `expect`
//                                         ({field: text}); answer what the row shows
//   texts {selectors}                     the text of each selector ({name: selector})
//   screenshot {path}                     the whole page, as PNG
//   close
import { chromium } from 'playwright-core'
import { serve } from './driver.mjs'

const config = JSON.parse(process.argv[2])

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
})
const page = await browser.newPage({ viewport: { width: 1360, height: 640 } })
page.on('console', (message) => console.error(`page: ${message.text()}`))
page.on('pageerror', (error) => console.error(`page error: ${error.message}`))
// Loads of the page: a reload would count a second one.
let navigations = 0
page.on('framenavigated', (frame) => {
  if (frame === page.mainFrame()) navigations++
})

/** What the page shows of the shape `handle` (null if it has no row), and of the page. */
function rowState(handle) {
  return page.evaluate((handle) => {
    const row = [...document.querySelectorAll('tr[data-handle]')].find((r) => r.dataset.handle === handle)
    const fields = {}
    for (const cell of row ? row.querySelectorAll('[data-field]') : []) {
      fields[cell.dataset.field] = cell.textContent
    }
    return {
      found: Boolean(row),
      fields,
      reports: Number(document.body.dataset.reports || 0),
      connection: document.getElementById('connection').textContent,
      mark: window.statusTestMark ?? null,
    }
  }, handle)
}

serve({
  async open({ timeoutMs }) {
    await page.goto(config.url)
    await page.waitForFunction(() => Number(document.body.dataset.reports || 0) > 0, null, {
      timeout: timeoutMs,
    })
    // Gone if the page is ever loaded again.
    await page.evaluate(() => {
      window.statusTestMark = 'kept'
    })
    return { title: await page.title() }
  },

  async shape({ handle, expect, timeoutMs }) {
    try {
      await page.waitForFunction(
        ({ handle, expect }) => {
          const row = [...document.querySelectorAll('tr[data-handle]')].find((r) => r.dataset.handle === handle)
          return (
            row &&
            Object.entries(expect).every(
              ([name, text]) => row.querySelector(`[data-field="${name}"]`)?.textContent === text,
            )
          )
        },
        { handle, expect },
        { timeout: timeoutMs, polling: 100 },
      )
    } catch (error) {
      const shown = await rowState(handle)
      throw new Error(`the row of ${handle} never showed ${JSON.stringify(expect)}; it shows ${JSON.stringify(shown)}: ${error.message}`)
    }
    return { ...(await rowState(handle)), navigations }
  },

  async texts({ selectors }) {
    return page.evaluate((selectors) => {
      const texts = {}
      for (const [name, selector] of Object.entries(selectors)) {
        texts[name] = document.querySelector(selector)?.textContent ?? null
      }
      return texts
    }, selectors)
  },

  async screenshot({ path }) {
    await page.screenshot({ path, fullPage: true })
    return null
  },

  async close() {
    await browser.close()
    return null
  },
})
