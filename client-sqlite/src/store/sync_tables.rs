//! The client's own tables, all named `_shapesync_*`, created on open:
//!
//! - `_shapesync_meta`: the device's client id and the format version;
//! - `_shapesync_shapes`: per subscription, its definition, handle, offset (as of the last
//!   up-to-date), the `electric-schema` it was created from, the last `global_last_seen_lsn`
//!   (its "synced up to"), its sync priority;
//! - `_shapesync_outbox`: local writes not yet answered, in order (`seq`), with the exact JSON
//!   sent (so a retry sends the same mutation id);
//! - `_shapesync_overlays`: per pending write, the values it put on top of the server's row,
//!   one entry per column (plus row existence), until the write comes back from the server;
//! - `_shapesync_acked`: answered writes whose overlays wait for their echo (txid, LSN);
//! - `_shapesync_conflicts`: rolled-back writes, both versions, the reason and the time;
//! - `_shapesync_row_tags`, `_shapesync_tag_slots`: the tags and active conditions of subquery
//!   shapes' rows, and an index of them by position and value (see [`super::tag_table`]);
//! - `_shapesync_shadow_<table>`: the server's version of rows that have overlays.

use rusqlite::{Connection, OptionalExtension};

/// Bumped when these tables change shape.
pub const FORMAT_VERSION: i64 = 1;

const DDL: &str = "
CREATE TABLE IF NOT EXISTS _shapesync_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _shapesync_shapes (
    name        TEXT PRIMARY KEY,
    definition  TEXT NOT NULL,
    pg_table    TEXT NOT NULL,
    handle      TEXT,
    \"offset\"  TEXT NOT NULL DEFAULT '-1',
    schema      TEXT,
    global_lsn  INTEGER NOT NULL DEFAULT 0,
    last_sync   INTEGER
);
CREATE TABLE IF NOT EXISTS _shapesync_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    mutation_id  TEXT NOT NULL UNIQUE,
    shape        TEXT NOT NULL,
    row_key      TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS _shapesync_overlays (
    seq    INTEGER NOT NULL,
    shape  TEXT NOT NULL,
    row_key TEXT NOT NULL,
    kind   TEXT NOT NULL CHECK (kind IN ('exists', 'gone', 'set', 'merge')),
    col    TEXT,
    value
);
CREATE INDEX IF NOT EXISTS _shapesync_overlays_row ON _shapesync_overlays (shape, row_key, seq);
CREATE INDEX IF NOT EXISTS _shapesync_overlays_seq ON _shapesync_overlays (seq);
CREATE TABLE IF NOT EXISTS _shapesync_acked (
    seq       INTEGER PRIMARY KEY,
    shape     TEXT NOT NULL,
    txid      INTEGER,
    lsn       INTEGER,
    acked_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS _shapesync_conflicts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    mutation_id  TEXT NOT NULL,
    shape        TEXT NOT NULL,
    row_key      TEXT NOT NULL,
    status       TEXT NOT NULL,
    local        TEXT NOT NULL,
    server       TEXT,
    lost         TEXT,
    reason       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    resolved     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS _shapesync_row_tags (
    shape    TEXT NOT NULL,
    row_key  TEXT NOT NULL,
    tags     TEXT NOT NULL,
    active   TEXT,
    PRIMARY KEY (shape, row_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _shapesync_tag_slots (
    shape    TEXT NOT NULL,
    pos      INTEGER NOT NULL,
    value    TEXT NOT NULL,
    row_key  TEXT NOT NULL,
    PRIMARY KEY (shape, pos, value, row_key)
) WITHOUT ROWID;
";

/// Creates the tables (idempotent) and returns the device's client id (made on first open).
pub fn prepare(conn: &Connection, client_id: Option<&str>) -> rusqlite::Result<String> {
    conn.execute_batch(DDL)?;
    // Added after format 1 shipped: files made before get it with the default (the last).
    let has_priority: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('_shapesync_shapes') WHERE name = 'priority'",
        [],
        |r| r.get(0),
    )?;
    if !has_priority {
        conn.execute_batch(
            "ALTER TABLE _shapesync_shapes ADD COLUMN priority INTEGER NOT NULL DEFAULT 3",
        )?;
    }
    conn.execute(
        "INSERT OR IGNORE INTO _shapesync_meta VALUES ('format_version', ?1)",
        [FORMAT_VERSION.to_string()],
    )?;
    let stored: Option<String> = conn
        .query_row(
            "SELECT value FROM _shapesync_meta WHERE name = 'client_id'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let id = match (stored, client_id) {
        (_, Some(given)) => given.to_owned(),
        (Some(stored), None) => stored,
        (None, None) => format!("device-{:016x}", rand::random::<u64>()),
    };
    conn.execute(
        "INSERT INTO _shapesync_meta VALUES ('client_id', ?1)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [&id],
    )?;
    Ok(id)
}

/// The name of a shape's shadow table.
pub fn shadow_table(shape: &str) -> String {
    format!("_shapesync_shadow_{shape}")
}
