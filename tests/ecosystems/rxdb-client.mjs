// An RxDB app syncing one collection with shapesync through `replicateRxCollection`, the way
// README's RxDB section tells users to (the pull, pullStream and push handlers are that code).
// Shared by the Node client (rxdb-node.mjs, memory storage) and the page in Chromium
// (rxdb-page.mjs, Dexie storage): `commands` are the ops the Rust tests send.
import { createRxDatabase } from 'rxdb'
import { replicateRxCollection } from 'rxdb/plugins/replication'
import { wrappedValidateAjvStorage } from 'rxdb/plugins/validate-ajv'
import { Subject } from 'rxjs'

/**
 * config: {url, table, name, schema (an RxDB JSON schema), token?, EventSource}.
 * Documents are validated against the schema (ajv), so a value of the wrong JSON type from
 * the server fails the test instead of slipping in.
 */
export async function rxdbClient(config, storage) {
  const { url, table, EventSource } = config
  const headers = { 'content-type': 'application/json' }
  if (config.token) headers.authorization = `Bearer ${config.token}`
  const path = `${url}/v1/rxdb/${encodeURIComponent(table)}`

  const db = await createRxDatabase({
    name: config.name,
    storage: wrappedValidateAjvStorage({ storage }),
    multiInstance: false,
  })
  const collections = await db.addCollections({ [table]: { schema: config.schema } })
  const collection = collections[table]

  // What the handlers saw, for the tests' assertions.
  const seen = { pulls: 0, pulled: 0, opens: 0, pushes: [], streamed: [], errors: [] }
  let replication = null
  let source = null
  // For a test: the next push is sent and applied, but its answer is lost (after `release`).
  let losing = null

  function start() {
    const stream$ = new Subject()
    // A browser's EventSource cannot send headers: the token goes in the query there.
    const streamUrl = config.token && !config.streamHeaders
      ? `${path}/pullStream?token=${encodeURIComponent(config.token)}`
      : `${path}/pullStream`
    source = new EventSource(streamUrl, config.streamHeaders ? {
      fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, ...headers } }),
    } : undefined)
    source.onmessage = (event) => {
      const data = JSON.parse(event.data)
      if (data !== 'RESYNC') seen.streamed.push(...data.documents.map((d) => d.id))
      stream$.next(data)
    }
    // Each (re)connection streams from "now": let RxDB pull what came in between.
    source.onopen = () => {
      seen.opens += 1
      stream$.next('RESYNC')
    }
    source.onerror = () => stream$.next('RESYNC')

    replication = replicateRxCollection({
      collection,
      replicationIdentifier: `shapesync-${table}-${url}`,
      live: true,
      retryTime: 200,
      waitForLeadership: false,
      pull: {
        async handler(checkpoint, batchSize) {
          seen.pulls += 1
          const qs = new URLSearchParams({ limit: String(batchSize) })
          if (checkpoint) qs.set('checkpoint', JSON.stringify(checkpoint))
          const r = await fetch(`${path}/pull?${qs}`, { headers })
          if (!r.ok) throw new Error(`pull: ${r.status} ${await r.text()}`)
          const body = await r.json()
          seen.pulled += 1
          return body
        },
        stream$,
      },
      push: {
        async handler(rows) {
          const r = await fetch(`${path}/push`, { method: 'POST', headers, body: JSON.stringify(rows) })
          if (!r.ok) throw new Error(`push: ${r.status} ${await r.text()}`)
          if (losing && !losing.sent) {
            await r.text()
            losing.sent = true
            await losing.released
            losing = null
            throw new Error('push: the answer was lost (a test)')
          }
          const conflicts = await r.json()
          seen.pushes.push({ rows: rows.map((row) => row.newDocumentState.id), conflicts })
          return conflicts
        },
      },
    })
    replication.error$.subscribe((error) => seen.errors.push(String(error?.message ?? error)))
  }

  async function stop() {
    source?.close()
    await replication?.cancel()
    replication = null
    source = null
  }

  async function docs() {
    const found = await collection.find().exec()
    return canonicalDocs(found.map((d) => d.toJSON()))
  }

  function doc(id) {
    return collection.findOne(id).exec().then((d) => {
      if (!d) throw new Error(`no document ${id}`)
      return d
    })
  }

  const commands = {
    // Starts (or restarts, as after going offline) replication; returns once the first
    // round of pull and push is done.
    async start() {
      start()
      await replication.awaitInitialReplication()
      return null
    },
    // Offline: replication cancelled, local writes keep going.
    stop,
    async inSync() {
      await replication.awaitInSync()
      return null
    },
    insert: async ({ doc }) => void (await collection.insert(doc)),
    patch: async ({ id, patch }) => void (await (await doc(id)).incrementalPatch(patch)),
    remove: async ({ id }) => void (await (await doc(id)).remove()),
    docs,
    // Waits, on the collection's own change feed, until the documents equal `expected`.
    async waitDocs({ expected, timeoutMs }) {
      const want = JSON.stringify(canonicalDocs(expected))
      let last = null
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          subscription.unsubscribe()
          reject(new Error(`documents never became ${want}; last: ${JSON.stringify(last)}`))
        }, timeoutMs)
        const subscription = collection.find().$.subscribe((found) => {
          last = canonicalDocs(found.map((d) => d.toJSON()))
          if (JSON.stringify(last) === want) {
            clearTimeout(timer)
            subscription.unsubscribe()
            resolve()
          }
        })
      })
      return null
    },
    seen: async () => seen,
    // The next push's answer is lost once it was applied; `releaseLostPush` lets RxDB retry.
    async losePushAnswer() {
      let release
      losing = { sent: false, released: new Promise((resolve) => { release = resolve }) }
      losing.release = release
      return null
    },
    lostPushSent: async () => Boolean(losing?.sent),
    async releaseLostPush() {
      losing?.release()
      return null
    },
    async close() {
      await stop()
      await db.close()
      return null
    },
  }
  return commands
}

function canonicalDocs(rows) {
  return rows
    .map((row) => Object.fromEntries(Object.keys(row).sort().map((k) => [k, row[k]])))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
}
