// An HTTP/2 client (Node's own `http2`) that follows many shapes live over server-sent events
// on ONE connection, as a browser does behind an HTTP/2 edge (tests/tests/cdn.rs).
//
//   node h2.mjs '{"url":"https://127.0.0.1:port","ca":"/path/cert.pem","queries":["table=t&where=…",…]}'
//
// Each query is caught up from offset=-1 to up-to-date, then followed with live_sse=true.
// Prints JSON lines: {"type":"ready","streams":n,"sessions":1} once every live stream has its
// response head, then {"type":"change","shape":i,"value":{…}} for every change a live stream
// receives. Exits when stdin closes.
import http2 from 'node:http2'
import fs from 'node:fs'

const config = JSON.parse(process.argv[2])
const print = (line) => process.stdout.write(JSON.stringify(line) + '\n')
let sessions = 0
const session = http2.connect(config.url, { ca: fs.readFileSync(config.ca) })
session.on('connect', () => { sessions += 1 })
session.on('error', (err) => { print({ type: 'error', message: String(err) }); process.exit(1) })

function request(path) {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path })
    let head
    const chunks = []
    stream.on('response', (h) => { head = h })
    stream.on('data', (c) => chunks.push(c))
    stream.on('end', () => resolve({ head, body: Buffer.concat(chunks).toString('utf8') }))
    stream.on('error', reject)
    stream.end()
  })
}

async function catchUp(query) {
  let path = `/v1/shape?${query}&offset=-1`
  for (;;) {
    const { head, body } = await request(path)
    if (head[':status'] !== 200) throw new Error(`${path}: ${head[':status']} ${body}`)
    const handle = head['electric-handle']
    const offset = head['electric-offset']
    if (head['electric-up-to-date'] !== undefined) return { handle, offset }
    path = `/v1/shape?${query}&handle=${handle}&offset=${offset}`
  }
}

function follow(index, query, at) {
  return new Promise((resolve, reject) => {
    const path = `/v1/shape?${query}&handle=${at.handle}&offset=${at.offset}&live=true&live_sse=true`
    const stream = session.request({ ':path': path, accept: 'text/event-stream' })
    let buffer = ''
    stream.setEncoding('utf8')
    stream.on('response', (h) => {
      if (h[':status'] !== 200) reject(new Error(`${path}: ${h[':status']}`))
      else resolve()
    })
    stream.on('data', (text) => {
      buffer += text
      let end
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        for (const line of event.split('\n')) {
          if (!line.startsWith('data:')) continue
          const message = JSON.parse(line.slice(5))
          if (message.headers?.operation) print({ type: 'change', shape: index, value: message.value })
        }
      }
    })
    stream.on('error', (err) => print({ type: 'error', message: `shape ${index}: ${err}` }))
  })
}

const positions = await Promise.all(config.queries.map(catchUp))
await Promise.all(config.queries.map((q, i) => follow(i, q, positions[i])))
print({ type: 'ready', streams: config.queries.length, sessions })
process.stdin.resume()
process.stdin.on('end', () => { session.close(); process.exit(0) })
