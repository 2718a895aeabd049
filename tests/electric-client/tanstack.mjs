// Drives TanStack DB's electric collection (@tanstack/electric-db-collection + @tanstack/db, as
// an application would use them) against a shapesync for the Rust tests (tests/src/tanstack.rs).
// Configuration: one JSON argument {url, params, key}. Output: JSON lines on stdout.
//   {"type":"rows","status":…,"rows":{key: row},"initialRequests":n,"conflicts":n,"movesAsEvents":n}
//       the collection's materialised rows, whenever they change (and once when it is ready);
//       initialRequests counts requests with offset=-1 (more than one is a refetch), movesAsEvents
//       those asking moves=events, conflicts
//       counts 409 answers
//   {"type":"error","message":…}
import { createCollection } from '@tanstack/db'
import { electricCollectionOptions } from '@tanstack/electric-db-collection'

const config = JSON.parse(process.argv[2])
const key = config.key ?? 'id'
let initialRequests = 0
let conflicts = 0
let movesAsEvents = 0

const emit = (obj) =>
  process.stdout.write(
    JSON.stringify(obj, (_k, v) => (typeof v === 'bigint' ? { bigint: v.toString() } : v)) + '\n',
  )

const countingFetch = async (input, init) => {
  const url = new URL(String(input instanceof Request ? input.url : input))
  if (url.searchParams.get('offset') === '-1') initialRequests++
  if (url.searchParams.get('moves') === 'events') movesAsEvents++
  const response = await fetch(input, init)
  if (response.status === 409) conflicts++
  return response
}

const collection = createCollection(
  electricCollectionOptions({
    id: 'shapesync-test',
    shapeOptions: {
      url: `${config.url}/v1/shape`,
      params: config.params,
      fetchClient: countingFetch,
      backoffOptions: { initialDelay: 50, maxDelay: 500, multiplier: 1.5 },
      onError: (error) => {
        emit({ type: 'error', status: error?.status ?? null, message: String(error?.message ?? error) })
        return {}
      },
    },
    getKey: (row) => row[key],
  }),
)

const report = () =>
  emit({
    type: 'rows',
    status: collection.status,
    // Without TanStack DB's virtual properties ($key, $synced, $origin, $collectionId).
    rows: Object.fromEntries(
      [...collection.state].map(([k, row]) => [k, Object.fromEntries(Object.entries(row).filter(([c]) => !c.startsWith('$')))]),
    ),
    initialRequests,
    movesAsEvents,
    conflicts,
  })

collection.subscribeChanges(report)
collection.onFirstReady(report)
collection.preload().catch((error) => emit({ type: 'error', status: null, message: String(error?.message ?? error) }))
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
