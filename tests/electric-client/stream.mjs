// Drives the official @electric-sql/client against a shapesync for the Rust tests
// (tests/src/electric.rs). Configuration: one JSON argument. Output: JSON lines on stdout.
//   {"type":"messages","messages":[…]}      every batch the ShapeStream delivers
//   {"type":"rows","handle":…,"offset":…,"rows":{key: row}}   the materialised Shape, on change
//   {"type":"error","status":…,"message":…}
//   {"type":"response","status":…,"url":…,"retryAfter":…}   every HTTP answer, with `responses`
//   {"type":"fetch-error","url":…,"message":…}   a request that got no HTTP answer, with `responses`
// Commands on stdin, one JSON per line: {"op":"requestSnapshot"|"fetchSnapshot", "params":{…}}
//   → {"type":"snapshot","op":…,"result":…}
import { ShapeStream, Shape, FetchError } from '@electric-sql/client'
import { createInterface } from 'node:readline'

const config = JSON.parse(process.argv[2])
const identity = (v) => v
// With `raw`, every value stays the text Postgres sent (arrays are still split).
const rawParser = Object.fromEntries(
  ['int2', 'int4', 'int8', 'bool', 'float4', 'float8', 'json', 'jsonb'].map((t) => [t, identity]),
)

const emit = (obj) =>
  process.stdout.write(
    JSON.stringify(obj, (_k, v) => (typeof v === 'bigint' ? { bigint: v.toString() } : v)) + '\n',
  )

// With `responses`, every request's outcome is reported (status, URL, retry-after).
const recordingFetch = async (input, init) => {
  const url = String(input instanceof Request ? input.url : input)
  try {
    const response = await fetch(input, init)
    emit({ type: 'response', status: response.status, url, retryAfter: response.headers.get('retry-after') })
    return response
  } catch (error) {
    if (error?.name !== 'AbortError') emit({ type: 'fetch-error', url, message: String(error?.message ?? error) })
    throw error
  }
}

const stream = new ShapeStream({
  url: `${config.url}/v1/shape`,
  params: config.params,
  liveSse: Boolean(config.sse),
  log: config.log ?? 'full',
  offset: config.offset ?? undefined,
  handle: config.handle ?? undefined,
  subscribe: config.subscribe ?? true,
  headers: config.headers ?? undefined,
  parser: config.raw ? rawParser : undefined,
  fetchClient: config.responses ? recordingFetch : undefined,
  backoffOptions: { initialDelay: 50, maxDelay: 500, multiplier: 1.5 },
  onError: (error) => {
    emit({
      type: 'error',
      status: error instanceof FetchError ? error.status : null,
      message: String(error?.message ?? error),
      json: error instanceof FetchError ? (error.json ?? null) : null,
    })
    // Keep syncing through transient trouble; stop on client errors.
    if (error instanceof FetchError && error.status >= 400 && error.status < 500) return
    return {}
  },
})

stream.subscribe(
  (messages) => emit({ type: 'messages', handle: stream.shapeHandle, offset: stream.lastOffset, messages }),
  (error) => emit({ type: 'error', status: null, message: String(error?.message ?? error) }),
)

const shape = new Shape(stream)
shape.subscribe(({ value }) =>
  emit({ type: 'rows', handle: shape.handle, offset: shape.lastOffset, rows: Object.fromEntries(value) }),
)

const commands = createInterface({ input: process.stdin })
commands.on('line', async (line) => {
  if (!line.trim()) return
  const command = JSON.parse(line)
  try {
    const result =
      command.op === 'fetchSnapshot'
        ? await stream.fetchSnapshot(command.params)
        : await stream.requestSnapshot(command.params)
    emit({ type: 'snapshot', op: command.op, result: result ?? null })
  } catch (error) {
    emit({ type: 'error', status: error?.status ?? null, message: String(error?.message ?? error), op: command.op })
  }
})
commands.on('close', () => process.exit(0))
