// The page that runs in Chromium (bundled by rxdb-browser.mjs with esbuild): rxdb-client.mjs
// over Dexie, i.e. IndexedDB, and the browser's own EventSource.
import { getRxStorageDexie } from 'rxdb/plugins/storage-dexie'
import { rxdbClient } from './rxdb-client.mjs'

let client = null
window.startClient = async (config) => {
  client = await rxdbClient({ ...config, EventSource: window.EventSource }, getRxStorageDexie())
}
window.runCommand = (command) => client[command.op](command)
