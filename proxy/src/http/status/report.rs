//! The status report: every figure the status page shows, as the JSON of `GET /v1/status`
//! and of each event of `GET /v1/status/stream`. Pure: built from figures `gather` reads off
//! the running proxy, so what each figure means is decided (and tested) here.
//!
//! Times are milliseconds since the Unix epoch; byte counts are bytes.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::mutations::outcomes::OutcomeTotals;
use crate::observability::prometheus::SlotWal;
use crate::observability::recent_errors::LoggedError;
use crate::read_path::Health;
use crate::read_path::activity::AppliedCommit;
use crate::read_path::idle::Stream;

/// Shapes listed at most; the rest are counted (`shapes.not_listed`). The busiest come first.
pub const LISTED_SHAPES: usize = 200;

/// How far back the mutation rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub version: &'static str,
    pub generated_at_ms: u64,
    pub started_at_ms: u64,
    pub replication: ReplicationReport,
    pub shapes: ShapesReport,
    pub writes: WritesReport,
    /// The last warnings and errors logged, newest first.
    pub errors: Vec<LoggedError>,
    pub storage: StorageReport,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicationReport {
    /// `streaming`, `reconnecting` (the database is unreachable; it retries by itself),
    /// `starting`, `standby` (another instance on the slot runs; this one takes over when it
    /// exits), `idle` (closed by `--replication-idle-timeout` until the next request) or
    /// `reopening`.
    pub state: &'static str,
    pub connected: bool,
    pub slot: String,
    /// Whether Postgres says a walsender streams from the slot (`null`: not read).
    pub slot_active: Option<bool>,
    /// WAL written that the slot has not confirmed: `pg_current_wal_lsn() -
    /// confirmed_flush_lsn`. The proxy confirms what every shape log holds durably.
    pub lag_bytes: Option<u64>,
    /// Commit → applied delay of the last transaction the proxy applied: when it is behind,
    /// that is how far (see [`AppliedCommit::delay`]). `null` before the first transaction
    /// of this run. A proxy that stops applying altogether shows as growing `lag_bytes` and
    /// an ageing `last_commit`, not here.
    pub lag_seconds: Option<f64>,
    /// WAL the slot keeps on the database server: `pg_current_wal_lsn() - restart_lsn`.
    pub retained_wal_bytes: Option<u64>,
    /// Why the slot's figures are missing, if they are.
    pub slot_error: Option<String>,
    pub last_commit: Option<CommitReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommitReport {
    /// `16/B374D848`.
    pub lsn: String,
    pub committed_at_ms: u64,
    pub applied_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapesReport {
    /// Shapes served.
    pub count: usize,
    /// Long-polls and SSE streams waiting on any shape.
    pub live_clients: usize,
    /// Shapes rotated since the proxy started.
    pub rotations: u64,
    /// The busiest [`LISTED_SHAPES`]: most live clients first, then the latest change.
    pub listed: Vec<ShapeReport>,
    pub not_listed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapeReport {
    pub handle: String,
    /// `"public"."todos"`.
    pub table: String,
    /// The `where` the client asked for, as it sent it.
    #[serde(rename = "where")]
    pub where_: Option<String>,
    /// Its `params[n]`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<usize, String>,
    /// The auth rules' row filter ANDed into it (claims as `$n`), if any.
    pub filter: Option<String>,
    pub columns: Option<String>,
    /// `creating` (its snapshot runs), `ready`, `failed` or `gone`.
    pub state: &'static str,
    pub live_clients: usize,
    /// Rows a client following the shape holds: the snapshot's, plus inserts minus deletes.
    pub rows: u64,
    /// Snapshot and log on disk.
    pub log_bytes: u64,
    /// When its last transaction became visible (`null`: none since the snapshot).
    pub last_change_ms: Option<u64>,
    /// Rotations of its definition since the proxy started (its predecessors').
    pub rotations: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WritesReport {
    /// Mutations answered per second over the last ten seconds (or since the first report).
    pub mutations_per_second: f64,
    #[serde(flatten)]
    pub totals: OutcomeTotals,
    /// Every mutation answered since the proxy started.
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageReport {
    /// `--storage-dir`.
    pub dir: String,
    /// What its files take on disk.
    pub bytes: Option<u64>,
    /// Free for the proxy on its filesystem.
    pub available_bytes: Option<u64>,
    /// When `bytes` was measured (the directory is walked every few seconds at most).
    pub measured_at_ms: Option<u64>,
    pub error: Option<String>,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ReplicationReport {
    /// `wal`: the slot's figures (`Ok(None)`: no such slot), or why they could not be read.
    pub fn new(
        (health, standby, stream): (Health, bool, Stream),
        slot: String,
        wal: Result<Option<SlotWal>, String>,
        last_commit: Option<AppliedCommit>,
    ) -> Self {
        let state = match (health, standby, stream) {
            (_, true, _) => "standby",
            (_, false, Stream::Closed) => "idle",
            (_, false, Stream::Reopening) => "reopening",
            (Health::Active, false, Stream::Open) => "streaming",
            (Health::Waiting, false, Stream::Open) => "reconnecting",
            (Health::Starting, false, Stream::Open) => "starting",
        };
        let (wal, slot_error) = match wal {
            Ok(Some(wal)) => (Some(wal), None),
            Ok(None) => (
                None,
                Some(format!("the replication slot {slot} does not exist")),
            ),
            Err(err) => (None, Some(err)),
        };
        Self {
            state,
            connected: health == Health::Active,
            slot,
            slot_active: wal.map(|w| w.active),
            lag_bytes: wal.map(|w| w.lag_bytes),
            lag_seconds: last_commit.map(|c| c.delay().as_secs_f64()),
            retained_wal_bytes: wal.map(|w| w.retained_bytes),
            slot_error,
            last_commit: last_commit.map(|c| CommitReport {
                lsn: c.lsn.to_string(),
                committed_at_ms: unix_ms(c.committed_at),
                applied_at_ms: unix_ms(c.applied_at),
            }),
        }
    }
}

impl ShapesReport {
    /// Lists the busiest of `shapes`: live clients, then the latest change, then the table.
    pub fn new(mut shapes: Vec<ShapeReport>, rotations: u64) -> Self {
        let count = shapes.len();
        let live_clients = shapes.iter().map(|s| s.live_clients).sum();
        shapes.sort_by(|a, b| {
            b.live_clients
                .cmp(&a.live_clients)
                .then(b.last_change_ms.cmp(&a.last_change_ms))
                .then_with(|| a.table.cmp(&b.table))
                .then_with(|| a.handle.cmp(&b.handle))
        });
        shapes.truncate(LISTED_SHAPES);
        Self {
            count,
            live_clients,
            rotations,
            not_listed: count - shapes.len(),
            listed: shapes,
        }
    }
}

impl WritesReport {
    pub fn new(totals: OutcomeTotals, mutations_per_second: f64) -> Self {
        Self {
            mutations_per_second,
            total: totals.total(),
            totals,
        }
    }
}

/// Mutations per second from the running total, sampled at each report.
#[derive(Debug, Default)]
pub struct MutationRate {
    samples: VecDeque<(Instant, u64)>,
}

impl MutationRate {
    /// Notes the total at `now`; the rate since the oldest sample of the last ten seconds (or
    /// the one before, if that is all there is).
    pub fn observe(&mut self, now: Instant, total: u64) -> f64 {
        self.samples.push_back((now, total));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let Some(&(since, from)) = self.samples.front() else {
            return 0.0;
        };
        let seconds = now.duration_since(since).as_secs_f64();
        if seconds < 0.5 {
            return 0.0;
        }
        total.saturating_sub(from) as f64 / seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shapes::lsn::Lsn;

    fn shape(handle: &str, live_clients: usize, last_change_ms: Option<u64>) -> ShapeReport {
        ShapeReport {
            handle: handle.into(),
            table: "\"public\".\"t\"".into(),
            where_: Some("id > 1".into()),
            params: BTreeMap::new(),
            filter: None,
            columns: None,
            state: "ready",
            live_clients,
            rows: 3,
            log_bytes: 100,
            last_change_ms,
            rotations: 0,
        }
    }

    #[test]
    fn the_busiest_shapes_are_listed_first_and_the_rest_counted() {
        let mut shapes: Vec<ShapeReport> = (0..LISTED_SHAPES + 3)
            .map(|i| shape(&format!("h{i:04}"), 0, None))
            .collect();
        shapes.push(shape("recent", 0, Some(50)));
        shapes.push(shape("watched", 2, Some(10)));
        let report = ShapesReport::new(shapes, 4);
        assert_eq!(report.count, LISTED_SHAPES + 5);
        assert_eq!(report.live_clients, 2);
        assert_eq!(report.rotations, 4);
        assert_eq!(report.listed.len(), LISTED_SHAPES);
        assert_eq!(report.not_listed, 5);
        assert_eq!(report.listed[0].handle, "watched");
        assert_eq!(report.listed[1].handle, "recent");
        assert_eq!(report.listed[2].handle, "h0000", "then in a stable order");
    }

    #[test]
    fn replication_lag_in_seconds_is_the_last_commits_delay_and_bytes_come_from_the_slot() {
        let committed_at = UNIX_EPOCH + Duration::from_secs(1_000);
        let commit = AppliedCommit {
            lsn: Lsn(0x1_0000_0010),
            committed_at,
            applied_at: committed_at + Duration::from_millis(250),
        };
        let wal = SlotWal {
            lag_bytes: 10,
            retained_bytes: 4096,
            active: true,
        };
        let report = ReplicationReport::new(
            (Health::Active, false, Stream::Open),
            "s".into(),
            Ok(Some(wal)),
            Some(commit),
        );
        assert_eq!(report.state, "streaming");
        assert!(report.connected);
        assert_eq!(report.lag_seconds, Some(0.25));
        assert_eq!(report.lag_bytes, Some(10));
        assert_eq!(report.retained_wal_bytes, Some(4096));
        assert_eq!(report.slot_active, Some(true));
        let last = report.last_commit.expect("a commit");
        assert_eq!(last.lsn, "1/10");
        assert_eq!(
            (last.committed_at_ms, last.applied_at_ms),
            (1_000_000, 1_000_250)
        );

        let down = ReplicationReport::new(
            (Health::Waiting, false, Stream::Open),
            "s".into(),
            Err("no answer".into()),
            None,
        );
        assert_eq!((down.state, down.connected), ("reconnecting", false));
        assert_eq!((down.lag_bytes, down.lag_seconds), (None, None));
        assert_eq!(down.slot_error.as_deref(), Some("no answer"));
        let missing = ReplicationReport::new(
            (Health::Starting, false, Stream::Open),
            "s".into(),
            Ok(None),
            None,
        );
        assert_eq!(
            missing.slot_error.as_deref(),
            Some("the replication slot s does not exist")
        );
    }

    #[test]
    fn the_mutation_rate_is_taken_over_the_last_ten_seconds() {
        let mut rate = MutationRate::default();
        let t0 = Instant::now();
        assert_eq!(rate.observe(t0, 100), 0.0, "one sample says nothing");
        assert_eq!(rate.observe(t0 + Duration::from_secs(2), 300), 100.0);
        assert_eq!(rate.observe(t0 + Duration::from_secs(4), 300), 50.0);
        // Twenty seconds on, the first samples are out of the window.
        assert_eq!(rate.observe(t0 + Duration::from_secs(20), 300), 0.0);
        assert_eq!(rate.observe(t0 + Duration::from_secs(22), 320), 10.0);
    }

    #[test]
    fn the_report_is_json_with_the_protocols_names() {
        let mut with_params = shape("h", 1, Some(7));
        with_params.params.insert(1, "a".into());
        let json = serde_json::to_value(&with_params).unwrap();
        assert_eq!(json["where"], "id > 1");
        assert_eq!(json["params"]["1"], "a");
        assert_eq!(json["last_change_ms"], 7);
        let writes = WritesReport::new(
            OutcomeTotals {
                applied: 2,
                rejected: BTreeMap::from([("forbidden".into(), 1)]),
                ..OutcomeTotals::default()
            },
            1.5,
        );
        let json = serde_json::to_value(&writes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"mutations_per_second": 1.5, "applied": 2, "conflicts": 0,
                               "aborted": 0, "rejected": {"forbidden": 1}, "total": 3})
        );
    }
}
