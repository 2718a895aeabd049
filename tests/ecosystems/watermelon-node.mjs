// A WatermelonDB app in Node (LokiJS adapter, in memory) syncing with shapesync through
// `synchronize()`, with the pullChanges/pushChanges of README's WatermelonDB section. Driven
// over stdin (driver.mjs). Argument: JSON {url, token?, name, tables: {name: [column, …]}}
// where a column is Watermelon's {name, type, isOptional?}.
//
// Models are plain Model subclasses without decorators (no Babel here): records are read and
// written by their raw column names, which are the Postgres column names anyway.
import { createRequire } from 'node:module'
import { canonical, gates, serve } from './driver.mjs'

const require = createRequire(import.meta.url)
const { Database, Model, appSchema, tableSchema } = require('@nozbe/watermelondb')
const LokiJSAdapter = require('@nozbe/watermelondb/adapters/lokijs').default
const { synchronize, hasUnsyncedChanges } = require('@nozbe/watermelondb/sync')
// Watermelon reports a server's protocol mistakes ("Server wants client to create record …
// but it already exists locally") by logging, not throwing: each sync returns what it logged
// as errors, and the tests require none. Its chatter (log, warn) is dropped.
const logger = require('@nozbe/watermelondb/utils/common/logger').default
const logged = []
logger.error = (...messages) => logged.push(messages.map((m) => String(m?.message ?? m)).join(' '))
logger.log = () => {}
logger.warn = () => {}
logger.debug = () => {}

const config = JSON.parse(process.argv[2])
const url = config.url
const headers = { 'content-type': 'application/json' }
if (config.token) headers.authorization = `Bearer ${config.token}`
const tableNames = Object.keys(config.tables)

const schema = appSchema({
  version: 1,
  tables: tableNames.map((name) => tableSchema({ name, columns: config.tables[name] })),
})
const modelClasses = tableNames.map((name) => class extends Model { static table = name })
const adapter = new LokiJSAdapter({
  schema,
  dbName: config.name,
  useWebWorker: false,
  useIncrementalIndexedDB: false,
  onSetUpError: (error) => console.error('LokiJS set-up failed', error),
})
const database = new Database({ adapter, modelClasses })
const gate = gates()

function setColumns(record, raw) {
  for (const [column, value] of Object.entries(raw)) {
    if (column !== 'id') record._setRaw(column, value)
  }
}

serve({
  // One synchronize() as README shows it. With `holdBeforePush`, waits at that gate between
  // applying the pull and sending the push (so a test can change the server in between).
  // Returns what the server answered, the error synchronize() threw (if any), and the errors
  // Watermelon logged meanwhile.
  async sync({ holdBeforePush }) {
    const pulls = []
    const pushes = []
    let error = null
    logged.length = 0
    try {
      await synchronize({
        database,
        pullChanges: async ({ lastPulledAt, schemaVersion, migration }) => {
          const qs = new URLSearchParams({
            last_pulled_at: String(lastPulledAt ?? null),
            schema_version: String(schemaVersion),
            migration: JSON.stringify(migration ?? null),
            tables: tableNames.join(','),
          })
          const r = await fetch(`${url}/v1/watermelon/pull?${qs}`, { headers })
          if (!r.ok) throw new Error(await r.text())
          const body = await r.json()
          pulls.push(body)
          return body
        },
        pushChanges: async ({ changes, lastPulledAt }) => {
          if (holdBeforePush) await gate.wait(holdBeforePush)
          const r = await fetch(`${url}/v1/watermelon/push?last_pulled_at=${lastPulledAt}`, {
            method: 'POST',
            headers,
            body: JSON.stringify(changes),
          })
          const text = await r.text()
          pushes.push({ status: r.status, body: text ? JSON.parse(text) : null })
          if (!r.ok) throw new Error(text)
          return text ? JSON.parse(text) : {}
        },
        sendCreatedAsUpdated: true,
      })
    } catch (e) {
      error = String(e?.message ?? e)
    }
    return { error, pulls, pushes, logged: [...logged] }
  },
  release: async ({ gate: name }) => gate.release(name),
  create: ({ table, raw }) =>
    database.write(async () => {
      await database.get(table).create((record) => {
        record._raw.id = raw.id
        setColumns(record, raw)
      })
    }),
  update: ({ table, id, raw }) =>
    database.write(async () => {
      const record = await database.get(table).find(id)
      await record.update(() => setColumns(record, raw))
    }),
  // A synced delete: the record is marked and its id pushed as deleted.
  delete: ({ table, id }) =>
    database.write(async () => {
      const record = await database.get(table).find(id)
      await record.markAsDeleted()
    }),
  // The records of `table` (not those marked deleted), raw columns only, sorted by id.
  async records({ table }) {
    const found = await database.get(table).query().fetch()
    return canonical(found.map(({ _raw: { _status, _changed, ...columns } }) => columns))
  },
  unsynced: () => hasUnsyncedChanges({ database }),
})
