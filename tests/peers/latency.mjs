// The bench's peer line (`bench --scenarios peer_latency`): commit → client latency, one
// procedure for each system, each with a client in this Node process:
//
// - SYSTEM=zero: Rocicorp Zero. Starts zero-cache on the database and subscribes a Zero client
//   (in-memory store) to the whole table.
// - SYSTEM=electric: shapesync at SHAPESYNC_URL, followed by Electric's own TypeScript client
//   (`ShapeStream`, live over SSE with LIVE_SSE=1, long-polls otherwise).
//
// Against the database at PEER_DB_URL (a superuser URL; wal_level=logical): the table `peer`
// (made here if missing, with ten rows), then WARM + N single-row INSERTs one after the other,
// each waiting for the client to see its row. A latency is the time from the INSERT's commit
// acknowledgement to the client first holding the row. Prints one JSON line:
// {"system", "version", "node", "latencies_ms"}.
//
// Run by the bench with Node >= 22 (Zero 1.9 needs it; `install.sh` gets one from npm).
// Env: SYSTEM, PEER_DB_URL, SHAPESYNC_URL (electric), LIVE_SSE, N (default 200), WARM
// (default 5), WORK (a scratch directory for zero-cache; default: a new temporary one).
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Zero, createBuilder } from '@rocicorp/zero';
import { ShapeStream } from '@electric-sql/client';
import { schema } from './schema.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ZERO_DIR = path.join(HERE, 'node_modules/@rocicorp/zero');
const versionOf = dir => JSON.parse(fs.readFileSync(path.join(HERE, 'node_modules', dir, 'package.json'), 'utf8')).version;
const SYSTEM = process.env.SYSTEM ?? 'zero';
const DB = process.env.PEER_DB_URL;
const N = Number(process.env.N ?? 200);
const WARM = Number(process.env.WARM ?? 5);
const WORK = process.env.WORK ?? fs.mkdtempSync(path.join(os.tmpdir(), 'peer-'));

const log = (...a) => console.error(`[peer ${SYSTEM}]`, ...a);
const sleep = ms => new Promise(r => setTimeout(r, ms));

function portFree(port) {
  return new Promise(res => {
    const s = net.createServer();
    s.once('error', () => res(false));
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
  });
}

// zero-cache listens on its port and the next two (change streamer, replication manager).
async function threeFreePorts() {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 40000);
    if ((await portFree(port)) && (await portFree(port + 1)) && (await portFree(port + 2))) return port;
  }
}

async function sql(query, params) {
  const client = new pg.Client(DB);
  await client.connect();
  try {
    return await client.query(query, params);
  } finally {
    await client.end();
  }
}

let zeroCache;
let zero;
let stream;

/// Starts zero-cache and a Zero client on `peer`; calls `sees(id, at)` for each row the
/// client's view holds. Returns the version measured.
async function followWithZero(sees) {
  execFileSync(process.execPath, [path.join(ZERO_DIR, 'out/zero/src/deploy-permissions.js'),
    '--schema-path', path.join(HERE, 'schema.mjs'), '--upstream-db', DB],
    { cwd: HERE, stdio: ['ignore', 'ignore', 'inherit'] });
  const port = await threeFreePorts();
  const output = fs.openSync(path.join(WORK, 'zero-cache.log'), 'a');
  zeroCache = spawn(process.execPath, [path.join(ZERO_DIR, 'out/zero/src/cli.js')], {
    cwd: WORK,
    stdio: ['ignore', output, output],
    env: {
      ...process.env,
      ZERO_UPSTREAM_DB: DB,
      ZERO_REPLICA_FILE: path.join(WORK, 'replica.db'),
      ZERO_PORT: String(port),
      ZERO_CHANGE_STREAMER_ADDRESS: `127.0.0.1:${port + 1}`,
      // Required outside NODE_ENV=development.
      ZERO_ADMIN_PASSWORD: 'bench',
      ZERO_NUM_SYNC_WORKERS: '1',
      ZERO_UPSTREAM_MAX_CONNS: '4',
      ZERO_CVR_MAX_CONNS: '4',
      ZERO_LOG_LEVEL: 'warn',
      OTEL_SDK_DISABLED: 'true',
    },
  });
  const started = performance.now();
  for (;;) {
    if (zeroCache.exitCode !== null) throw new Error(`zero-cache exited; see ${WORK}/zero-cache.log`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/`)).ok) break;
    } catch {}
    if (performance.now() - started > 120_000) throw new Error('zero-cache did not start in 120 s');
    await sleep(100);
  }
  log(`zero-cache up after ${Math.round(performance.now() - started)} ms`);
  zero = new Zero({ cacheURL: `http://127.0.0.1:${port}`, userID: 'bench', schema, kvStore: 'mem', logLevel: 'error' });
  const view = zero.materialize(createBuilder(schema).peer);
  let hydrated;
  const complete = new Promise(resolve => (hydrated = resolve));
  view.addListener((rows, resultType) => {
    const now = performance.now();
    for (const row of rows) sees(Number(row.id), now);
    if (resultType === 'complete') hydrated();
  });
  await Promise.race([complete, sleep(60_000).then(() => { throw new Error('the client did not load the table in 60 s'); })]);
  return `Zero ${versionOf('@rocicorp/zero')}`;
}

/// Follows shapesync's shape of `peer` with Electric's TypeScript client.
async function followWithElectric(sees) {
  const url = process.env.SHAPESYNC_URL;
  if (!url) throw new Error('SHAPESYNC_URL is not set');
  const liveSse = process.env.LIVE_SSE === '1';
  stream = new ShapeStream({ url: `${url}/v1/shape`, params: { table: 'peer' }, liveSse });
  let upToDate;
  const loaded = new Promise(resolve => (upToDate = resolve));
  stream.subscribe(messages => {
    const now = performance.now();
    for (const message of messages) {
      if (message.headers?.operation === 'insert') sees(Number(message.value.id), now);
      if (message.headers?.control === 'up-to-date') upToDate();
    }
  });
  await Promise.race([loaded, sleep(60_000).then(() => { throw new Error('the client did not load the table in 60 s'); })]);
  return `@electric-sql/client ${versionOf('@electric-sql/client')} (${liveSse ? 'SSE' : 'long-poll'}) against shapesync`;
}

async function main() {
  if (!DB) throw new Error('PEER_DB_URL is not set');
  await sql('CREATE TABLE IF NOT EXISTS peer (id int8 PRIMARY KEY, title text NOT NULL)');
  await sql(`INSERT INTO peer SELECT g, 'seed ' || g FROM generate_series(1, 10) g ON CONFLICT DO NOTHING`);
  const seenAt = new Map();
  let waiting = null;
  const sees = (id, at) => {
    if (!seenAt.has(id)) seenAt.set(id, at);
    if (waiting?.id === id) {
      const { resolve } = waiting;
      waiting = null;
      resolve();
    }
  };
  const follow = { zero: followWithZero, electric: followWithElectric }[SYSTEM];
  if (!follow) throw new Error(`SYSTEM must be zero or electric, not ${SYSTEM}`);
  const version = await follow(sees);
  const seen = id => seenAt.has(id) ? Promise.resolve() : new Promise((resolve, reject) => {
    waiting = { id, resolve };
    setTimeout(() => { if (waiting?.id === id) reject(new Error(`row ${id} did not reach the client in 10 s`)); }, 10_000);
  });
  const writer = new pg.Client(DB);
  await writer.connect();
  const latencies = [];
  for (let i = 0; i < WARM + N; i++) {
    const id = 1000 + i;
    await writer.query('INSERT INTO peer (id, title) VALUES ($1, $2)', [id, `row ${id}`]);
    const acknowledged = performance.now();
    await seen(id);
    if (i >= WARM) latencies.push(seenAt.get(id) - acknowledged);
  }
  await writer.end();
  console.log(JSON.stringify({ system: SYSTEM, version, node: process.version, latencies_ms: latencies }));
}

let failed = false;
try {
  await main();
} catch (err) {
  console.error(`[peer ${SYSTEM}] failed:`, err);
  failed = true;
}
try { if (zero) await Promise.race([zero.close(), sleep(2000)]); } catch {}
stream?.unsubscribeAll?.();
if (zeroCache && zeroCache.exitCode === null) {
  zeroCache.kill('SIGTERM');
  await Promise.race([new Promise(r => zeroCache.once('exit', r)), sleep(8000)]);
  if (zeroCache.exitCode === null) zeroCache.kill('SIGKILL');
}
if (!process.env.WORK) fs.rmSync(WORK, { recursive: true, force: true });
process.exit(failed ? 1 : 0);
