//! Reading the status report's figures off the running proxy, at most as often as the page
//! needs them and only while someone looks: the report is built at most once per second
//! whatever the number of watchers, the slot is asked at most once per second (on the shared
//! metadata connection, never the replication one, with a timeout), and the storage
//! directory is walked every few seconds at most (less often when walking it takes long).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Mutex as AsyncMutex;

use super::report::{
    MutationRate, ReplicationReport, ShapeReport, ShapesReport, StatusReport, StorageReport,
    WritesReport, unix_ms,
};
use crate::http::AppState;
use crate::observability::prometheus::{self, SlotWal};
use crate::observability::recent_errors;
use crate::storage::shape_store::{Shape, ShapeState};

/// A report is reused for this long.
const REPORT_EVERY: Duration = Duration::from_millis(900);
/// The slot is asked at most this often.
const SLOT_EVERY: Duration = Duration::from_secs(1);
/// How long the slot query may take before the report goes without it.
const SLOT_TIMEOUT: Duration = Duration::from_secs(2);
/// The storage directory is walked at most this often…
const STORAGE_EVERY: Duration = Duration::from_secs(5);
/// …and no more often than this many times the last walk took.
const STORAGE_BACKOFF: u32 = 10;

/// Where reports come from, shared by the status endpoints.
#[derive(Debug)]
pub struct StatusSource {
    started_at: SystemTime,
    /// The last report, as JSON.
    report: AsyncMutex<Option<(Instant, Arc<str>)>>,
    slot: AsyncMutex<Option<(Instant, SlotReading)>>,
    storage: AsyncMutex<Option<StorageReading>>,
    rate: Mutex<MutationRate>,
}

/// The slot's figures (`None`: no such slot), or why they could not be read.
type SlotReading = Result<Option<SlotWal>, String>;

#[derive(Debug, Clone)]
struct StorageReading {
    /// The next walk not before then.
    next: Instant,
    report: StorageReport,
}

impl StatusSource {
    pub fn new() -> Self {
        Self {
            started_at: SystemTime::now(),
            report: AsyncMutex::new(None),
            slot: AsyncMutex::new(None),
            storage: AsyncMutex::new(None),
            rate: Mutex::new(MutationRate::default()),
        }
    }

    /// The report as JSON: the last one if it is recent enough, else a new one.
    pub async fn json(&self, state: &AppState) -> Arc<str> {
        let mut last = self.report.lock().await;
        if let Some((at, json)) = last.as_ref()
            && at.elapsed() < REPORT_EVERY
        {
            return json.clone();
        }
        let report = self.report(state).await;
        let json: Arc<str> = serde_json::to_string(&report)
            .unwrap_or_else(|err| format!(r#"{{"error":"cannot encode the report: {err}"}}"#))
            .into();
        *last = Some((Instant::now(), json.clone()));
        json
    }

    async fn report(&self, state: &AppState) -> StatusReport {
        let health = *state.health.borrow();
        let shapes = &state.shapes;
        let activity = shapes.activity();
        let replication = ReplicationReport::new(
            (health, shapes.is_standby(), shapes.demand().stream()),
            state.settings.slot.clone(),
            self.slot_wal(state).await,
            activity.last_commit(),
        );
        let listed = shapes
            .all()
            .iter()
            .map(|shape| shape_report(shape, activity.rotations_of(shape.definition.canonical())))
            .collect();
        let totals = state.writes.outcomes();
        let rate = self
            .rate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(Instant::now(), totals.total());
        StatusReport {
            version: env!("CARGO_PKG_VERSION"),
            generated_at_ms: unix_ms(SystemTime::now()),
            started_at_ms: unix_ms(self.started_at),
            replication,
            shapes: ShapesReport::new(listed, activity.rotations_total()),
            writes: WritesReport::new(totals, rate),
            errors: recent_errors::recent(),
            storage: self.storage(&state.settings.storage_dir).await,
        }
    }

    async fn slot_wal(&self, state: &AppState) -> SlotReading {
        let mut last = self.slot.lock().await;
        if let Some((at, reading)) = last.as_ref()
            && at.elapsed() < SLOT_EVERY
        {
            return reading.clone();
        }
        let read = prometheus::read_slot(state.shapes.metadata(), &state.settings.slot);
        let reading = match tokio::time::timeout(SLOT_TIMEOUT, read).await {
            Ok(Ok(wal)) => Ok(wal),
            Ok(Err(err)) => Err(format!("cannot read the replication slot: {err}")),
            Err(_) => Err(format!(
                "the database did not answer within {} s",
                SLOT_TIMEOUT.as_secs()
            )),
        };
        *last = Some((Instant::now(), reading.clone()));
        reading
    }

    async fn storage(&self, dir: &Path) -> StorageReport {
        let mut last = self.storage.lock().await;
        if let Some(reading) = last.as_ref()
            && Instant::now() < reading.next
        {
            return reading.report.clone();
        }
        let started = Instant::now();
        let walked = {
            let dir = dir.to_owned();
            tokio::task::spawn_blocking(move || measure(&dir)).await
        };
        let took = started.elapsed();
        let mut report = StorageReport {
            dir: dir.display().to_string(),
            bytes: None,
            available_bytes: available_bytes(dir),
            measured_at_ms: None,
            error: None,
        };
        match walked {
            Ok(Ok(bytes)) => {
                report.bytes = Some(bytes);
                report.measured_at_ms = Some(unix_ms(SystemTime::now()));
            }
            Ok(Err(err)) => report.error = Some(format!("cannot measure {}: {err}", dir.display())),
            Err(err) => report.error = Some(format!("measuring the storage directory: {err}")),
        }
        *last = Some(StorageReading {
            next: Instant::now() + STORAGE_EVERY.max(took * STORAGE_BACKOFF),
            report: report.clone(),
        });
        report
    }
}

impl Default for StatusSource {
    fn default() -> Self {
        Self::new()
    }
}

fn shape_report(shape: &Shape, rotations: u32) -> ShapeReport {
    let request = &shape.meta.request;
    ShapeReport {
        handle: shape.handle.as_str().to_owned(),
        table: shape.definition.table().to_string(),
        where_: request.where_.clone(),
        params: request.params.clone(),
        filter: request.filter.as_ref().map(|f| f.where_.clone()),
        columns: request.columns.clone(),
        state: match shape.state() {
            ShapeState::Creating => "creating",
            ShapeState::Ready => "ready",
            ShapeState::Failed(_) => "failed",
            ShapeState::Gone => "gone",
        },
        live_clients: shape.live_clients(),
        rows: shape.log.rows(),
        log_bytes: shape.log.bytes(),
        last_change_ms: shape.log.last_change().map(unix_ms),
        rotations,
    }
}

/// What the files under `dir` take on disk (allocated blocks), symbolic links not followed.
/// Files that vanish during the walk (a shape removed meanwhile) are skipped.
fn measure(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut pending: Vec<PathBuf> = vec![dir.to_owned()];
    let mut first = true;
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // The top directory must be there; one below may go while we walk.
            Err(err) if first => return Err(err),
            Err(_) => continue,
        };
        first = false;
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.blocks() * 512;
            }
        }
    }
    Ok(total)
}

/// Bytes an unprivileged process may still write on the filesystem of `dir`.
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a NUL-terminated string and `stat` a zeroed struct statvfs fills in;
    // neither is kept past the call.
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
            return None;
        }
        stat
    };
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_use_counts_the_files_below_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("v1/shapes/h")).unwrap();
        std::fs::write(dir.path().join("v1/resume.lsn"), b"1").unwrap();
        std::fs::write(
            dir.path().join("v1/shapes/h/changes.log"),
            vec![7u8; 20_000],
        )
        .unwrap();
        let bytes = measure(dir.path()).unwrap();
        assert!(bytes >= 20_000, "{bytes}");
        assert!(measure(&dir.path().join("missing")).is_err());
        assert!(available_bytes(dir.path()).is_some_and(|b| b > 0));
    }
}
