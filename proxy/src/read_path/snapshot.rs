//! Initial snapshots: a shape's rows as of one consistent Postgres snapshot, streamed straight
//! into its `snapshot.log`.
//!
//! The order of the snapshot/stream boundary (proxy/ARCHITECTURE.md) is the caller's: the
//! table is in the publication and the
//! shape registered with the router (capturing) before [`take`] runs. Here:
//! `REPEATABLE READ READ ONLY`, `pg_current_snapshot()` as the first statement (so the
//! captured transactions can be told apart by xid), then one query rebuilt from the parsed
//! `where` with bound parameters. Values are read in each type's text output (the same
//! function pgoutput uses) under the session settings of
//! [`shapes::display::STARTUP_OPTIONS`], the replication connection's.

use std::sync::Arc;

use futures_util::{StreamExt, pin_mut};
use shapes::definition::LogMode;
use shapes::lsn::Lsn;
use shapes::schema::{PgType, TableSchema, TypeKind, quote_identifier};
use shapes::wire::{self, ChangeMessage, Operation, SnapshotInfo};
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::storage::shape_log::snapshot_file::SnapshotWriter;
use crate::storage::shape_store::Shape;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot query failed: {}", crate::postgres::describe(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("writing the snapshot: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected pg_current_snapshot() output {0:?}")]
    BadSnapshot(String),
}

impl SnapshotError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Query(e) => crate::postgres::is_transient(e),
            Self::Io(_) | Self::BadSnapshot(_) => false,
        }
    }
}

/// The result of a snapshot.
#[derive(Debug)]
pub struct SnapshotTaken {
    pub info: SnapshotInfo,
    /// `pg_current_wal_insert_lsn()` right after the snapshot was taken: every transaction the
    /// snapshot holds committed below it (a commit is visible only once its record is
    /// inserted; with `synchronous_commit=off` possibly before it is written, so not
    /// `pg_current_wal_lsn()`).
    pub wal_lsn: Lsn,
    pub rows: u64,
    /// `snapshot.log`, written whole but not yet synced: the caller makes it durable before
    /// `shape.json` says the snapshot is complete.
    pub file: std::fs::File,
}

/// Table positions of the snapshot query's columns, in order: the selected ones plus the key.
fn query_columns(shape: &Shape) -> Vec<usize> {
    let mut columns: Vec<usize> = shape.definition.selected_columns().to_vec();
    // A subquery shape's headers are computed from the columns its `where` reads.
    if let Some(w) = shape
        .definition
        .where_clause()
        .filter(|w| w.has_subqueries())
    {
        for i in w.columns_used() {
            if !columns.contains(&i) {
                columns.push(i);
            }
        }
    }
    for k in wire::key_columns(&shape.table) {
        if !columns.contains(&k) {
            columns.push(k);
        }
    }
    columns.sort_unstable();
    columns
}

/// The name of the query's output for column `i`: one no column of the table has.
fn output_name(table: &TableSchema, i: usize) -> String {
    let mut name = format!("shapesync_text_{i}");
    while table.columns.iter().any(|c| c.name == name) {
        name.insert(0, '_');
    }
    name
}

/// Whether `ty`'s cast to text is its output function, so `::text` prints what pgoutput
/// prints (and costs Postgres half what `format('%s')` does). True of the built-in types
/// below: Postgres has no cast from them to text and converts through their output function.
/// Not of `bool`, `bpchar`, `"char"`, `name`, `inet` and `cidr` (casts of their own), nor of
/// user types, which may be given a cast.
pub(super) fn text_cast_is_output(ty: &PgType) -> bool {
    /// Postgres' first OID for objects created after initdb.
    const FIRST_NORMAL_OID: u32 = 16384;
    match &ty.kind {
        TypeKind::Domain { base } => text_cast_is_output(base),
        TypeKind::Base => {
            ty.oid < FIRST_NORMAL_OID
                && matches!(
                    ty.name.as_str(),
                    "text"
                        | "varchar"
                        | "int2"
                        | "int4"
                        | "int8"
                        | "oid"
                        | "float4"
                        | "float8"
                        | "numeric"
                        | "uuid"
                        | "date"
                        | "time"
                        | "timetz"
                        | "timestamp"
                        | "timestamptz"
                        | "interval"
                        | "json"
                        | "jsonb"
                        | "bytea"
                )
        }
        TypeKind::Enum { .. } | TypeKind::Array { .. } | TypeKind::Other => false,
    }
}

/// Extra conditions of a subset snapshot: SQL with `$n` placeholders numbered after the
/// shape's own, their text values, and an `ORDER BY … LIMIT … OFFSET …` tail.
#[derive(Debug, Clone, Default)]
pub struct Narrowing {
    pub condition: Option<(String, Vec<String>)>,
    pub tail: String,
}

/// The SELECT for a shape's rows (narrowed for a subset snapshot) and its text parameters.
pub fn snapshot_query(shape: &Shape, narrowing: Option<&Narrowing>) -> (String, Vec<String>) {
    let table = &shape.table;
    let columns = query_columns(shape);
    let select: Vec<String> = columns
        .iter()
        .map(|&i| {
            let column = &table.columns[i];
            let col = quote_identifier(&column.name);
            let text = if column.dims == 0 && text_cast_is_output(&column.ty) {
                format!("{col}::text")
            } else {
                // format('%s') applies the type's output function (what pgoutput prints),
                // where a cast to text may not (bool → `true`, bpchar loses its padding).
                format!("CASE WHEN {col} IS NULL THEN NULL ELSE format('%s', {col}) END")
            };
            // Named apart from every column: a subset's `ORDER BY "id"` must sort by the
            // column, not by this text (a simple name in ORDER BY means an output column
            // first).
            format!("{text} AS {}", quote_identifier(&output_name(table, i)))
        })
        .collect();
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(column) = shape.tombstone {
        conditions.push(format!(
            "{} IS NULL",
            quote_identifier(&table.columns[column].name)
        ));
    }
    if let Some(where_clause) = shape.definition.where_clause() {
        let (sql, values) = where_clause.to_sql_with_offset(1);
        conditions.push(format!("({sql})"));
        params = values;
    }
    if let Some((sql, values)) = narrowing.and_then(|n| n.condition.as_ref()) {
        conditions.push(format!("({sql})"));
        params.extend(values.iter().cloned());
    }
    let mut sql = format!("SELECT {} FROM {}", select.join(", "), table.name);
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    if let Some(narrowing) = narrowing {
        sql.push_str(&narrowing.tail);
    }
    (sql, params)
}

/// Starts a `REPEATABLE READ READ ONLY` transaction and records its snapshot first.
pub async fn begin(
    client: &mut Client,
) -> Result<(tokio_postgres::Transaction<'_>, SnapshotInfo, Lsn), SnapshotError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let row = tx
        .query_one(
            "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text",
            &[],
        )
        .await?;
    let snapshot_text: String = row.get(0);
    let info = SnapshotInfo::parse(&snapshot_text)
        .ok_or_else(|| SnapshotError::BadSnapshot(snapshot_text.clone()))?;
    let lsn_text: String = row.get(1);
    let wal_lsn = lsn_text
        .parse()
        .map_err(|_| SnapshotError::BadSnapshot(lsn_text.clone()))?;
    Ok((tx, info, wal_lsn))
}

/// Runs the shape's query in `tx` and hands each encoded row message to `sink`.
pub async fn stream_rows(
    tx: &tokio_postgres::Transaction<'_>,
    shape: &Shape,
    narrowing: Option<&Narrowing>,
    snapshot_mark: Option<u64>,
    sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, SnapshotError> {
    stream_rows_with(tx, shape, narrowing, snapshot_mark, None, sink).await
}

/// Headers to add to a row's message (starting with a comma), from the row's values in
/// table order (`None` for columns the query did not read).
pub type RowHeaders<'a> = &'a (dyn Fn(&[Option<&str>]) -> String + Sync);

/// [`stream_rows`], adding `headers` of each row to its message.
pub async fn stream_rows_with(
    tx: &tokio_postgres::Transaction<'_>,
    shape: &Shape,
    narrowing: Option<&Narrowing>,
    snapshot_mark: Option<u64>,
    headers: Option<RowHeaders<'_>>,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, SnapshotError> {
    let (sql, params) = snapshot_query(shape, narrowing);
    let statement = tx
        .prepare_typed(&sql, &vec![Type::TEXT; params.len()])
        .await?;
    let stream = tx.query_raw(&statement, params.iter()).await?;
    pin_mut!(stream);
    let mut encoder = RowEncoder::new(shape, snapshot_mark);
    encoder.headers = headers;
    let mut rows = 0;
    while let Some(row) = stream.next().await {
        encoder.encode(&row?)?;
        sink(&encoder.bytes)?;
        rows += 1;
    }
    Ok(rows)
}

/// Takes the snapshot of `shape` on `client` (a connection of its own, opened with
/// [`shapes::display::STARTUP_OPTIONS`]) and writes it to the shape's directory.
pub async fn take(
    client: &mut Client,
    shape: &Arc<Shape>,
    chunk_bytes: u64,
) -> Result<SnapshotTaken, SnapshotError> {
    let (tx, info, wal_lsn) = begin(client).await?;
    let (rows, file) = write_unsynced(&tx, shape, chunk_bytes, &info, None).await?;
    tx.commit().await?;
    Ok(SnapshotTaken {
        info,
        wal_lsn,
        rows,
        file,
    })
}

/// Writes the snapshot of `shape` as `tx` (begun by [`begin`], with snapshot `info`) sees
/// it, into the shape's directory, adding `headers` of each row to its message, and fsyncs it.
pub async fn write_in_with(
    tx: &tokio_postgres::Transaction<'_>,
    shape: &Arc<Shape>,
    chunk_bytes: u64,
    info: &SnapshotInfo,
    headers: Option<RowHeaders<'_>>,
) -> Result<u64, SnapshotError> {
    let (rows, file) = write_unsynced(tx, shape, chunk_bytes, info, headers).await?;
    file.sync_data()?;
    Ok(rows)
}

/// [`write_in_with`] without the fsync of `snapshot.log`, which is handed back.
async fn write_unsynced(
    tx: &tokio_postgres::Transaction<'_>,
    shape: &Arc<Shape>,
    chunk_bytes: u64,
    info: &SnapshotInfo,
    headers: Option<RowHeaders<'_>>,
) -> Result<(u64, std::fs::File), SnapshotError> {
    let mut writer = SnapshotWriter::create(shape.log.dir(), chunk_bytes)?;
    let mut rows = 0;
    if shape.definition.log() == LogMode::Full {
        rows = stream_rows_with(tx, shape, None, None, headers, |message| {
            writer.push_row(message)
        })
        .await?;
        metrics::counter!(crate::observability::prometheus::SNAPSHOT_ROWS).increment(rows);
    }
    let (chunks, file) = writer.finish_unsynced(info.snapshot_end_message().as_bytes())?;
    // Not served before the shape is ready, which it is only once the file is durable.
    shape.log.set_snapshot(chunks);
    Ok((rows, file))
}

/// Encodes snapshot rows (`operation: insert`, no log headers) of one shape.
struct RowEncoder<'a> {
    shape: &'a Shape,
    snapshot_mark: Option<u64>,
    /// Table positions of the query's columns, in query order.
    columns: Vec<usize>,
    key_columns: Vec<usize>,
    bytes: Vec<u8>,
    headers: Option<RowHeaders<'a>>,
}

impl<'a> RowEncoder<'a> {
    fn new(shape: &'a Shape, snapshot_mark: Option<u64>) -> Self {
        Self {
            shape,
            snapshot_mark,
            columns: query_columns(shape),
            key_columns: wire::key_columns(&shape.table),
            bytes: Vec::with_capacity(256),
            headers: None,
        }
    }

    fn encode(&mut self, row: &tokio_postgres::Row) -> Result<(), tokio_postgres::Error> {
        // Texts borrowed from the row as received: no `String` per value.
        let mut texts: Vec<Option<&str>> = vec![None; self.shape.table.columns.len()];
        for (n, &i) in self.columns.iter().enumerate() {
            texts[i] = row.try_get::<_, Option<&str>>(n)?;
        }
        let key = wire::message_key(
            &self.shape.table.name,
            self.key_columns.iter().map(|&i| texts[i]),
        );
        self.bytes.clear();
        let names = &self.shape.table.columns;
        let values = self
            .shape
            .definition
            .selected_columns()
            .iter()
            .map(|&i| (names[i].name.as_str(), texts[i]));
        ChangeMessage {
            key: &key,
            operation: Operation::Insert,
            relation: &self.shape.table.name,
            log: None,
            key_change: None,
            snapshot_mark: self.snapshot_mark,
        }
        .write(&mut self.bytes, values, None);
        if let Some(headers) = self.headers {
            let extra = headers(&texts);
            crate::read_path::subquery::tags::splice_headers(&mut self.bytes, &extra);
        }
        Ok(())
    }
}
