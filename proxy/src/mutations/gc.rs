//! Purging what the write path keeps only for a while, in small transactions so that no lock is
//! held long:
//! - tombstoned rows whose tombstone is older than the retention, with their registers (after
//!   that, a write older than the delete can resurrect the row: the retention must exceed how
//!   long devices stay offline);
//! - registers of deleted rows (hard-delete tables) older than the same retention, and those of
//!   dropped tables;
//! - mutation ids older than their retention (a retry after that applies again);
//! - plain SQL writes recorded for rows whose registers are gone (purged above, or never
//!   taken since), which no mutation would take.
//!
//! `shapesync gc` runs it once; `serve`/`dev` run it in the background.

use std::time::Duration;

use shapes::schema::quote_identifier as quote;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::config::WriteConfig;
use crate::postgres::catalog::{self, CatalogError};
use crate::postgres::{self, DatabaseError};
use crate::tombstones::TombstoneSpec;

/// Rows deleted per transaction.
const BATCH: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("purging {table}: {source}")]
    Table {
        table: String,
        #[source]
        source: CatalogError,
    },
    #[error("purge query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// What one collection purged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    pub tombstones: u64,
    pub clocks: u64,
    pub mutation_ids: u64,
}

/// What to purge.
#[derive(Debug, Clone)]
pub struct GcPolicy {
    pub tombstones: Vec<TombstoneSpec>,
    /// `None`: keep tombstones and the registers of deleted rows.
    pub tombstone_retention: Option<Duration>,
    pub mutation_id_retention: Duration,
}

impl GcPolicy {
    pub fn from_config(config: &WriteConfig, tombstones: &[TombstoneSpec]) -> Self {
        Self {
            tombstones: tombstones.to_vec(),
            tombstone_retention: config.tombstone_retention,
            mutation_id_retention: config.mutation_id_retention,
        }
    }
}

/// Purges once.
pub async fn collect(client: &Client, policy: &GcPolicy) -> Result<GcReport, GcError> {
    let mut report = GcReport::default();
    if let Some(retention) = policy.tombstone_retention {
        let seconds = retention.as_secs_f64();
        for spec in &policy.tombstones {
            let (rows, clocks) = purge_tombstones(client, spec, seconds).await?;
            report.tombstones += rows;
            report.clocks += clocks;
        }
        report.clocks += repeat(client, PURGE_DELETED_CLOCKS, seconds).await?;
    }
    report.clocks += repeat(client, PURGE_DROPPED_TABLE_CLOCKS, 0.0).await?;
    repeat(client, PURGE_ORPHAN_PLAIN_WRITES, 0.0).await?;
    let seconds = policy.mutation_id_retention.as_secs_f64();
    report.mutation_ids += repeat(client, PURGE_MUTATION_IDS, seconds).await?;
    Ok(report)
}

const PURGE_DELETED_CLOCKS: &str = "DELETE FROM shapesync.row_clocks WHERE ctid IN (
     SELECT ctid FROM shapesync.row_clocks
     WHERE NOT live AND exists_us < (extract(epoch FROM now() - make_interval(secs => $1)) * 1000000)::int8
     LIMIT $2 FOR UPDATE SKIP LOCKED)";

const PURGE_DROPPED_TABLE_CLOCKS: &str = "DELETE FROM shapesync.row_clocks WHERE ctid IN (
     SELECT c.ctid FROM shapesync.row_clocks c
     WHERE $1::float8 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_class r WHERE r.oid = c.rel)
     LIMIT $2 FOR UPDATE SKIP LOCKED)";

const PURGE_ORPHAN_PLAIN_WRITES: &str = "DELETE FROM shapesync.plain_writes WHERE ctid IN (
     SELECT p.ctid FROM shapesync.plain_writes p
     WHERE $1::float8 IS NOT NULL AND NOT EXISTS (
         SELECT 1 FROM shapesync.row_clocks c WHERE c.rel = p.rel AND c.key = p.key)
     LIMIT $2 FOR UPDATE SKIP LOCKED)";

const PURGE_MUTATION_IDS: &str = "DELETE FROM shapesync.mutation_ids WHERE ctid IN (
     SELECT ctid FROM shapesync.mutation_ids WHERE recorded_at < now() - make_interval(secs => $1)
     LIMIT $2 FOR UPDATE SKIP LOCKED)";

/// Runs a `DELETE … LIMIT $2` until it deletes less than a batch.
async fn repeat(client: &Client, sql: &str, seconds: f64) -> Result<u64, GcError> {
    let statement = client.prepare(sql).await?;
    let mut total = 0;
    loop {
        let deleted = client.execute(&statement, &[&seconds, &BATCH]).await?;
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Deletes a tombstoned table's rows deleted longer ago than `seconds`, and their registers.
async fn purge_tombstones(
    client: &Client,
    spec: &TombstoneSpec,
    seconds: f64,
) -> Result<(u64, u64), GcError> {
    let table = match catalog::load_table(client, &spec.table).await {
        Ok(table) => table,
        // A configured table that does not exist (yet) has nothing to purge.
        Err(CatalogError::UnknownTable(_)) => return Ok((0, 0)),
        Err(source) => {
            return Err(GcError::Table {
                table: spec.table.to_string(),
                source,
            });
        }
    };
    let key: Vec<String> = table
        .primary_key()
        .iter()
        .map(|&i| format!("format('%s', t.{})", quote(&table.columns[i].name)))
        .collect();
    if key.is_empty() {
        return Ok((0, 0));
    }
    let tombstone = quote(&spec.column);
    let sql = format!(
        "WITH purged AS (
             DELETE FROM {name} AS t WHERE ctid IN (
                 SELECT ctid FROM {name} WHERE {tombstone} < now() - make_interval(secs => $1)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)
             AND t.{tombstone} < now() - make_interval(secs => $1)
             RETURNING to_json(ARRAY[{key}])::text AS key)
         , clocks AS (
             DELETE FROM shapesync.row_clocks c USING purged
             WHERE c.rel = $3 AND c.key = purged.key AND NOT c.live
             RETURNING 1)
         SELECT (SELECT count(*) FROM purged), (SELECT count(*) FROM clocks)",
        name = table.name,
        key = key.join(", "),
    );
    let statement = client.prepare(&sql).await?;
    let (mut rows, mut clocks) = (0, 0);
    loop {
        let row = client
            .query_one(&statement, &[&seconds, &BATCH, &table.oid])
            .await?;
        let purged: i64 = row.try_get(0)?;
        rows += u64::try_from(purged).unwrap_or(0);
        clocks += u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0);
        if purged < BATCH {
            return Ok((rows, clocks));
        }
    }
}

/// Runs [`collect`] now and every `interval` until `shutdown`; failures are logged and retried
/// at the next tick.
pub async fn run_periodically(
    database_url: String,
    policy: GcPolicy,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match collect_once(&database_url, &policy).await {
            Ok(report) if report != GcReport::default() => {
                tracing::info!(?report, "purged old tombstones and mutation ids");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "purging old tombstones failed; will retry"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One collection on a fresh connection (with the display settings the keys are written in).
pub async fn collect_once(database_url: &str, policy: &GcPolicy) -> Result<GcReport, GcError> {
    let client = postgres::connect(database_url).await?;
    client
        .batch_execute(shapes::display::SET_STATEMENTS)
        .await?;
    collect(&client, policy).await
}
