// The command loop every client script of this folder runs under (driven from Rust by
// tests/src/ecosystems.rs): one JSON command per line on stdin, `{"seq":n,"op":…,…}`, one JSON
// reply per line on stdout, `{"seq":n,"ok":true,"result":…}` or `{"seq":n,"ok":false,
// "error":"…"}`. Commands run concurrently (a `sync` may wait on a later `release`), so a
// reply may overtake an earlier command's. Unsolicited `{"event":…}` lines report progress.
// Libraries log to stdout too: the Rust side passes on every line that is not one of ours.
import { createInterface } from 'node:readline'

export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

/** Runs `handlers[op](command)` for each command; exits when stdin closes. */
export function serve(handlers) {
  const lines = createInterface({ input: process.stdin })
  const running = new Set()
  lines.on('line', (line) => {
    if (!line.trim()) return
    const command = JSON.parse(line)
    const handler = handlers[command.op]
    const done = (async () => {
      try {
        if (!handler) throw new Error(`unknown op ${command.op}`)
        const result = await handler(command)
        emit({ seq: command.seq, ok: true, result: result ?? null })
      } catch (error) {
        emit({ seq: command.seq, ok: false, error: String(error?.message ?? error) })
      }
    })()
    running.add(done)
    done.finally(() => running.delete(done))
  })
  // Libraries keep timers alive: leave once stdin is closed and every command answered.
  lines.on('close', async () => {
    await Promise.allSettled([...running])
    process.exit(0)
  })
}

/** A promise that a later `release(name)` resolves: holds a client between two steps. */
export function gates() {
  const waiting = new Map()
  return {
    wait(name) {
      emit({ event: 'gate', gate: name })
      return new Promise((resolve) => waiting.set(name, resolve))
    },
    release(name) {
      const resolve = waiting.get(name)
      if (!resolve) throw new Error(`nobody waits at gate ${name}`)
      waiting.delete(name)
      resolve()
    },
  }
}

/** `rows` sorted by id, each with its keys sorted: comparable as JSON text. */
export function canonical(rows) {
  return rows
    .map((row) => Object.fromEntries(Object.keys(row).sort().map((k) => [k, row[k]])))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
}
