// An RxDB client in Node with the memory storage (see rxdb-client.mjs), driven over stdin.
// Argument: the JSON config of rxdbClient (without EventSource: Node 20 has none built in).
import { EventSource } from 'eventsource'
import { getRxStorageMemory } from 'rxdb/plugins/storage-memory'
import { rxdbClient } from './rxdb-client.mjs'
import { serve } from './driver.mjs'

const config = JSON.parse(process.argv[2])
const commands = await rxdbClient({ ...config, EventSource, streamHeaders: true }, getRxStorageMemory())
serve(commands)
