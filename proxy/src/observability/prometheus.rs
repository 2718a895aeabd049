//! Prometheus metrics (`GET /metrics`) and the replication health checks behind them.
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `shapesync_shapes` | gauge | shapes the proxy holds |
//! | `shapesync_clients` | gauge | open HTTP connections from clients (idle keep-alive ones too) |
//! | `shapesync_live_connections` | gauge | long-poll and SSE requests waiting for changes |
//! | `shapesync_http_requests_total` | counter | requests to `/v1/shape` answered, whatever their status |
//! | `shapesync_transactions_total` | counter | transactions read from the WAL |
//! | `shapesync_changes_total` | counter | row changes read from the WAL (rate = changes/s) |
//! | `shapesync_snapshot_rows_total` | counter | rows written by initial snapshots |
//! | `shapesync_replication_lag_bytes` | gauge | WAL written by Postgres that the slot has not confirmed: `pg_current_wal_lsn() - confirmed_flush_lsn` |
//! | `shapesync_replication_lag_seconds` | gauge | commit → processed delay of the last transaction |
//! | `shapesync_slot_retained_wal_bytes` | gauge | WAL the replication slot keeps on the database server: `pg_current_wal_lsn() - restart_lsn` |
//! | `shapesync_compactions_total` | counter | shape log compactions put in place |
//! | `shapesync_compaction_bytes_before_total` | counter | bytes of the `changes.log` files compactions replaced |
//! | `shapesync_compaction_bytes_after_total` | counter | bytes of the files that replaced them (before − after = bytes saved) |
//!
//! The two WAL gauges are measured every 10 s, both from `pg_replication_slots`: the proxy
//! confirms a position once every shape log holds what came before it durably (or, idle, once
//! nothing before it concerns a shape), so the slot's `confirmed_flush_lsn` is the proxy's
//! durable position as Postgres knows it. (Measuring from the proxy's last durable *commit*
//! instead made an idle proxy report the WAL written since, unrelated tables and checkpoints
//! included, or the absolute LSN before its first transaction.)

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::postgres::MetadataClient;

pub const SHAPES: &str = "shapesync_shapes";
pub const CLIENTS: &str = "shapesync_clients";
pub const LIVE_CONNECTIONS: &str = "shapesync_live_connections";
pub const HTTP_REQUESTS: &str = "shapesync_http_requests_total";
pub const TRANSACTIONS: &str = "shapesync_transactions_total";
pub const CHANGES: &str = "shapesync_changes_total";
pub const SNAPSHOT_ROWS: &str = "shapesync_snapshot_rows_total";
pub const LAG_BYTES: &str = "shapesync_replication_lag_bytes";
pub const LAG_SECONDS: &str = "shapesync_replication_lag_seconds";
pub const RETAINED_WAL: &str = "shapesync_slot_retained_wal_bytes";
pub const COMPACTIONS: &str = "shapesync_compactions_total";
pub const COMPACTION_BYTES_BEFORE: &str = "shapesync_compaction_bytes_before_total";
pub const COMPACTION_BYTES_AFTER: &str = "shapesync_compaction_bytes_after_total";

/// The process-wide recorder (installed on first use) and its handle for `/metrics`.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (e.g. by an embedding program); then
            // that one gets the metrics and ours renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!(SHAPES, "Shapes the proxy holds");
    metrics::describe_gauge!(
        CLIENTS,
        "Open HTTP connections from clients, idle keep-alive ones included"
    );
    metrics::describe_gauge!(
        LIVE_CONNECTIONS,
        "Live long-poll and SSE requests waiting for changes"
    );
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "Requests to /v1/shape answered, whatever their status"
    );
    metrics::describe_counter!(TRANSACTIONS, "Transactions read from the WAL");
    metrics::describe_counter!(CHANGES, "Row changes read from the WAL");
    metrics::describe_counter!(SNAPSHOT_ROWS, "Rows written by initial snapshots");
    metrics::describe_counter!(COMPACTIONS, "Shape log compactions put in place");
    metrics::describe_counter!(
        COMPACTION_BYTES_BEFORE,
        "Bytes of the change logs compactions replaced"
    );
    metrics::describe_counter!(
        COMPACTION_BYTES_AFTER,
        "Bytes of the compacted change logs that replaced them"
    );
    metrics::describe_gauge!(
        LAG_BYTES,
        "WAL bytes written by the server that the replication slot has not confirmed"
    );
    metrics::describe_gauge!(
        LAG_SECONDS,
        "Seconds from commit to processing of the last transaction"
    );
    metrics::describe_gauge!(
        RETAINED_WAL,
        "WAL bytes the replication slot retains on the server"
    );
}

/// Counts an open client connection, from accept to close.
pub struct ClientConnection;

impl ClientConnection {
    pub fn open() -> Self {
        metrics::gauge!(CLIENTS).increment(1.0);
        Self
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        metrics::gauge!(CLIENTS).decrement(1.0);
    }
}

/// Counts a live request while it waits.
pub struct LiveConnection;

impl LiveConnection {
    pub fn open() -> Self {
        metrics::gauge!(LIVE_CONNECTIONS).increment(1.0);
        Self
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        metrics::gauge!(LIVE_CONNECTIONS).decrement(1.0);
    }
}

/// What `pg_replication_slots` says of the proxy's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotWal {
    /// WAL written by the server that the slot has not confirmed:
    /// `pg_current_wal_lsn() - confirmed_flush_lsn`.
    pub lag_bytes: u64,
    /// WAL the slot keeps on the server: `pg_current_wal_lsn() - restart_lsn`.
    pub retained_bytes: u64,
    /// A walsender streams from the slot now.
    pub active: bool,
}

/// Reads the slot's WAL figures on the shared metadata connection (never the replication
/// connection); `None` if the slot does not exist.
pub async fn read_slot(
    metadata: &MetadataClient,
    slot: &str,
) -> Result<Option<SlotWal>, crate::postgres::DatabaseError> {
    let client = metadata.get().await?;
    let row = client
        .query_opt(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::float8,
                    (pg_current_wal_lsn() - restart_lsn)::float8, active
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(crate::postgres::DatabaseError::Query)?;
    let bytes = |value: Option<f64>| value.unwrap_or(0.0).max(0.0) as u64;
    Ok(row.map(|row| SlotWal {
        lag_bytes: bytes(row.get(0)),
        retained_bytes: bytes(row.get(1)),
        active: row.get(2),
    }))
}

/// Every `every` while `awake()`, measures replication lag and the slot's retained WAL; an
/// ERROR log when the slot retains more than `max_lag_bytes` (a stuck or forgotten slot fills
/// the server's disk).
pub async fn watch_slot(
    metadata: &MetadataClient,
    slot: &str,
    max_lag_bytes: u64,
    every: Duration,
    awake: impl Fn() -> bool,
    shutdown: CancellationToken,
) {
    let mut warned_at: Option<tokio::time::Instant> = None;
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => return,
            }
        }
        first = false;
        if !awake() {
            continue;
        }
        let Ok(Some(wal)) = read_slot(metadata, slot).await else {
            continue;
        };
        metrics::gauge!(LAG_BYTES).set(wal.lag_bytes as f64);
        let retained = wal.retained_bytes as f64;
        metrics::gauge!(RETAINED_WAL).set(retained);
        if retained > max_lag_bytes as f64
            && warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            warned_at = Some(tokio::time::Instant::now());
            tracing::error!(
                slot,
                retained_bytes = retained as u64,
                max_lag_bytes,
                "the replication slot retains more WAL than --max-lag-bytes: shapesync is falling behind or stuck; check its logs, or drop the slot with `shapesync uninstall` if this proxy is gone for good"
            );
        }
    }
}
