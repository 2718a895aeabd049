//! Group fsync of shape logs, and the flushed LSN the replication stream confirms.
//!
//! The router makes each transaction visible at once (page cache) and reports it here with
//! the log files it touched, as its appenders hold them open ([`LogFile`]: the fsync goes
//! through the descriptor the writes went through). This task fsyncs them in groups —
//! everything that arrived while the previous round ran goes into the next one, so a busy
//! stream pays one fsync per file per round, not per transaction — and only then publishes the
//! round's highest commit end LSN on the `flushed` watch: the replication stream confirms to
//! Postgres only what every affected shape log holds durably.
//!
//! An fsync error is final for the logs it touched: Linux may drop the dirty pages and report
//! success on the next try (the reason PostgreSQL panics on fsync failure), so a failed log is
//! never synced again and trusted. Its shape is dropped ([`LostLogs`]: removed from disk, its
//! clients get 409 and refetch a new snapshot) *before* anything past the failed round is
//! confirmed; if even that fails, nothing is confirmed again until a restart, which resumes
//! from the last confirmed position.
//!
//! It also keeps `resume.lsn` (at most every [`RESUME_EVERY`]): where the next run asks
//! Postgres to start. A stale value is safe, just slower: re-sent transactions are skipped
//! per shape by commit LSN.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use shapes::lsn::Lsn;
use tokio::sync::{mpsc, watch};

use crate::storage::shape_dir::{self, ShapeDir};
use crate::storage::shape_log::LogFile;

const RESUME_EVERY: Duration = Duration::from_millis(500);

/// A committed transaction: where it ends, and the shape logs it wrote.
#[derive(Debug)]
pub struct Written {
    pub end_lsn: Lsn,
    pub logs: Vec<LogFile>,
}

/// Drops the shapes whose log directories an fsync failed for, durably (their directories are
/// gone from disk when it returns `Ok`), so that nothing confirmed later depends on them.
pub type LostLogs = Arc<dyn Fn(&[ShapeDir]) -> io::Result<()> + Send + Sync>;

/// A test build's way to make an fsync fail: called with a shape log's directory before its
/// fsync; an error returned is taken as that fsync's error. The `shapesync` program never
/// installs one, so release behaviour is unchanged.
pub type FsyncFault = fn(&Path) -> io::Result<()>;

static FSYNC_FAULT: OnceLock<FsyncFault> = OnceLock::new();

/// Installs the test build's [`FsyncFault`] (once per process).
pub fn inject_fsync_faults(fault: FsyncFault) {
    let _ = FSYNC_FAULT.set(fault);
}

/// The position saved by an earlier run in `resume_file` (`Lsn::ZERO` if none).
pub fn load_resume(resume_file: &Path) -> Lsn {
    std::fs::read_to_string(resume_file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(Lsn::ZERO)
}

fn save_resume(resume_file: &Path, lsn: Lsn) -> io::Result<()> {
    shape_dir::replace_file(resume_file, lsn.as_u64().to_string().as_bytes())
}

/// Runs until the sender side closes; then saves the final position in `resume_file`
/// (`ShapeStore::resume_file`).
pub async fn run(
    resume_file: PathBuf,
    mut written: mpsc::UnboundedReceiver<Written>,
    flushed: watch::Sender<Lsn>,
    lost: LostLogs,
) {
    let mut saved = *flushed.borrow();
    let mut last_save = Instant::now();
    // Set when a failed log could not be dropped: from then on nothing is confirmed.
    let mut stuck = false;
    while let Some(first) = written.recv().await {
        let mut end = first.end_lsn;
        let mut logs = first.logs;
        while let Ok(more) = written.try_recv() {
            end = end.max(more.end_lsn);
            logs.extend(more.logs);
        }
        // One fsync per log and round, however many of its transactions the round holds.
        // By the path's bytes: comparing paths by components cost more than the fsyncs saved.
        logs.sort_unstable_by(|a, b| a.dir().path().as_os_str().cmp(b.dir().path().as_os_str()));
        logs.dedup_by(|a, b| a.dir().path().as_os_str() == b.dir().path().as_os_str());
        let failed = sync_round(logs).await;
        if !failed.is_empty() && !stuck {
            let confirmed = *flushed.borrow();
            stuck = !drop_lost(&lost, failed, confirmed, end).await;
        }
        if stuck {
            continue;
        }
        flushed.send_if_modified(|current| {
            let advance = end > *current;
            if advance {
                *current = end;
            }
            advance
        });
        if end > saved && last_save.elapsed() >= RESUME_EVERY {
            match save_resume(&resume_file, end) {
                Ok(()) => saved = end,
                Err(err) => tracing::warn!(error = %err, "cannot save the resume position"),
            }
            last_save = Instant::now();
        }
    }
    let last = *flushed.borrow();
    if last > saved
        && let Err(err) = save_resume(&resume_file, last)
    {
        tracing::warn!(error = %err, "cannot save the resume position");
    }
}

/// Says why, and drops the shapes of the logs an fsync failed for. True when they are gone
/// (the round can be confirmed: every log that remains was synced).
async fn drop_lost(
    lost: &LostLogs,
    failed: Vec<(ShapeDir, io::Error)>,
    confirmed: Lsn,
    round_end: Lsn,
) -> bool {
    for (dir, error) in &failed {
        tracing::error!(
            dir = %dir.path().display(),
            error = %error,
            confirmed = %confirmed,
            round_end = %round_end,
            "fsync of a shape log failed: its transactions after {confirmed} may not be on disk, \
             and an fsync error is final (a retry can report success for pages the kernel \
             dropped); the shape is rotated, its clients refetch it"
        );
    }
    let dirs: Vec<ShapeDir> = failed.into_iter().map(|(dir, _)| dir).collect();
    let lost = lost.clone();
    let dropped = tokio::task::spawn_blocking(move || lost(&dirs))
        .await
        .map_err(|join| io::Error::other(format!("the task dropping them failed: {join}")))
        .and_then(|result| result);
    match dropped {
        Ok(()) => true,
        Err(err) => {
            tracing::error!(
                error = %err,
                confirmed = %confirmed,
                "cannot remove shape logs whose fsync failed; the replication position stays \
                 at {confirmed} until shapesync is restarted (it resumes from there)"
            );
            false
        }
    }
}

/// From this many logs in a round on one filesystem, one `syncfs` replaces their fsyncs.
/// Each fsync commits the journal for its file and costs ~60 µs of CPU in the kernel (a 2-core
/// machine measured here); a transaction fanned out to 100 shapes, 100 times a second, spent
/// most of a core on them. `syncfs` writes back everything dirty on the filesystem (other
/// programs' files too, which they would write back anyway) with one journal commit, ~6 µs of
/// CPU per file written.
const SYNCFS_FROM: usize = 32;

/// Makes every log of a round durable; returns the directories of those that failed, with
/// their errors. Many logs on one filesystem: one `syncfs`; when it fails, each log is
/// fsynced, and Linux reports the write-back error to the fsync of each file that had one
/// (the error of a file is kept per open file, apart from the filesystem's), so only those
/// are lost.
async fn sync_round(logs: Vec<LogFile>) -> Vec<(ShapeDir, io::Error)> {
    if logs.len() < SYNCFS_FROM || !syncfs_reports_errors() {
        return sync_in_parallel(logs).await;
    }
    let dirs: Vec<ShapeDir> = logs.iter().map(|log| log.dir().clone()).collect();
    match tokio::task::spawn_blocking(move || sync_filesystem_of(logs)).await {
        Ok(Syncfs::Done(failed)) => failed,
        Ok(Syncfs::EachFile(logs, mut failed)) => {
            failed.extend(sync_in_parallel(logs).await);
            failed
        }
        Err(join) => lost_with(dirs, "syncfs", &join),
    }
}

/// Every log of `dirs` failed: the blocking task that was to sync them (`what`) did not end.
fn lost_with(
    dirs: Vec<ShapeDir>,
    what: &str,
    join: &tokio::task::JoinError,
) -> Vec<(ShapeDir, io::Error)> {
    dirs.into_iter()
        .map(|dir| {
            let err = io::Error::other(format!("the {what} task failed: {join}"));
            (dir, err)
        })
        .collect()
}

/// What [`sync_filesystem_of`] did.
enum Syncfs {
    /// Every log is durable but these.
    Done(Vec<(ShapeDir, io::Error)>),
    /// These logs still need an fsync each; those failed already.
    EachFile(Vec<LogFile>, Vec<(ShapeDir, io::Error)>),
}

fn sync_filesystem_of(logs: Vec<LogFile>) -> Syncfs {
    let device = logs[0].device();
    let one_filesystem = logs.iter().all(|log| log.device() == device);
    if !one_filesystem {
        return Syncfs::EachFile(logs, Vec::new());
    }
    // A test build's faults stand for the fsyncs the `syncfs` replaces.
    let (mut failed, mut healthy) = (Vec::new(), Vec::new());
    for log in logs {
        match fault_of(&log) {
            Ok(()) => healthy.push(log),
            Err(err) => failed.push((log.dir().clone(), err)),
        }
    }
    let Some(first) = healthy.first() else {
        return Syncfs::Done(failed);
    };
    match first.sync_filesystem() {
        Ok(()) => Syncfs::Done(failed),
        Err(err) => {
            tracing::warn!(error = %err, logs = healthy.len(), "syncfs of the shape logs failed; fsyncing each to find which");
            Syncfs::EachFile(healthy, failed)
        }
    }
}

/// Whether this kernel's `syncfs` reports write-back errors (Linux 5.8 and later).
pub(super) fn syncfs_reports_errors() -> bool {
    static REPORTS: OnceLock<bool> = OnceLock::new();
    *REPORTS.get_or_init(|| {
        cfg!(target_os = "linux")
            && std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .and_then(|release| {
                    let mut parts = release.trim().split(['.', '-']);
                    let major: u32 = parts.next()?.parse().ok()?;
                    let minor: u32 = parts.next()?.parse().ok()?;
                    Some((major, minor) >= (5, 8))
                })
                .unwrap_or(false)
    })
}

/// Most fsyncs of one round run at once: a filesystem with a journal commits concurrent ones
/// together, so a round of many logs (a transaction fanned out to many shapes) costs about as
/// much as a few, and the logs waiting for their round (each an open file) stay few.
const PARALLEL_FSYNCS: usize = 16;

/// Fsyncs every log, [`PARALLEL_FSYNCS`] at a time; returns the directories of those that
/// failed, with their errors.
async fn sync_in_parallel(logs: Vec<LogFile>) -> Vec<(ShapeDir, io::Error)> {
    let per_task = logs.len().div_ceil(PARALLEL_FSYNCS).max(1);
    let mut tasks = Vec::new();
    let mut logs = logs;
    while !logs.is_empty() {
        let rest = logs.split_off(per_task.min(logs.len()));
        let part = std::mem::replace(&mut logs, rest);
        let dirs: Vec<ShapeDir> = part.iter().map(|log| log.dir().clone()).collect();
        tasks.push((dirs, tokio::task::spawn_blocking(move || sync_all(&part))));
    }
    let mut failed = Vec::new();
    for (dirs, task) in tasks {
        match task.await {
            Ok(part) => failed.extend(part),
            Err(join) => failed.extend(lost_with(dirs, "fsync", &join)),
        }
    }
    failed
}

/// Fsyncs every log; returns the directories of those that failed, with their errors.
fn sync_all(logs: &[LogFile]) -> Vec<(ShapeDir, io::Error)> {
    logs.iter()
        .filter_map(|log| sync_log(log).err().map(|e| (log.dir().clone(), e)))
        .collect()
}

/// Makes a shape log durable (a test build's [`FsyncFault`] may fail it).
pub fn sync_log(log: &LogFile) -> io::Result<()> {
    fault_of(log)?;
    log.sync_data()
}

/// A test build's fault for the fsync of `log` (`Ok` in the `shapesync` program); also
/// asked for the transactions a new shape captured during its snapshot
/// ([`creation_sync`](super::creation_sync)).
pub(super) fn fault_of(log: &LogFile) -> io::Result<()> {
    // It stands for the fsync of a log on disk; a shape deleted meanwhile has nothing left to
    // make durable (its still open file syncs harmlessly).
    match FSYNC_FAULT.get() {
        Some(fault) if log.dir().changes_log().exists() => fault(log.dir().path()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::shape_log::{LogAppender, ShapeLog};
    use crate::storage::shape_store::ShapeStore;

    /// The log of a shape in `root/name`, as its writer holds it open.
    fn log_file(root: &Path, name: &str) -> LogFile {
        let log = ShapeLog::create(&ShapeDir::at(root.join(name)), 1 << 20).unwrap();
        LogAppender::open(&log).unwrap().log_file().clone()
    }

    #[tokio::test]
    async fn flushed_advances_after_the_round_and_the_resume_position_is_saved_at_the_end() {
        let root = tempfile::tempdir().unwrap();
        let store = ShapeStore::open(root.path()).unwrap();
        let log = log_file(root.path(), "s");
        let (tx, rx) = mpsc::unbounded_channel();
        let (flushed_tx, mut flushed_rx) = watch::channel(Lsn::ZERO);
        let task = tokio::spawn(run(
            store.resume_file(),
            rx,
            flushed_tx,
            Arc::new(|_: &[ShapeDir]| Ok(())),
        ));
        tx.send(Written {
            end_lsn: Lsn(100),
            logs: vec![log.clone(), log],
        })
        .unwrap();
        tx.send(Written {
            end_lsn: Lsn(200),
            logs: vec![],
        })
        .unwrap();
        flushed_rx
            .wait_for(|l| *l == Lsn(200))
            .await
            .expect("flushed reaches 200");
        drop(tx);
        task.await.unwrap();
        assert_eq!(load_resume(&store.resume_file()), Lsn(200));
    }

    /// Fails the fsync of directories holding a `fail` file (no other test has one).
    fn fail_marked(dir: &Path) -> io::Result<()> {
        if dir.join("fail").exists() {
            return Err(io::Error::other("injected fsync failure"));
        }
        Ok(())
    }

    fn shape_log(root: &Path, name: &str, failing: bool) -> LogFile {
        let log = log_file(root, name);
        if failing {
            std::fs::write(log.dir().path().join("fail"), b"").unwrap();
        }
        log
    }

    /// Runs the task over four rounds, one at a time: a healthy log (ends at 100), the
    /// healthy and a failing log (200), nothing (300), the healthy log (400). `lost` answers
    /// `drop_ok`. Returns the flushed position at the end and the directories handed to `lost`.
    async fn confirmations(drop_ok: bool) -> (Lsn, Vec<ShapeDir>) {
        inject_fsync_faults(fail_marked);
        let root = tempfile::tempdir().unwrap();
        let store = ShapeStore::open(root.path()).unwrap();
        let good = shape_log(root.path(), "good", false);
        let bad = shape_log(root.path(), "bad", true);
        let (handed_tx, mut handed_rx) = mpsc::unbounded_channel();
        let lost: LostLogs = Arc::new(move |dirs: &[ShapeDir]| {
            let _ = handed_tx.send(dirs.to_vec());
            if drop_ok {
                Ok(())
            } else {
                Err(io::Error::other("the disk is gone"))
            }
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (flushed_tx, mut flushed_rx) = watch::channel(Lsn::ZERO);
        let task = tokio::spawn(run(store.resume_file(), rx, flushed_tx, lost));
        let send = |end: u64, logs: Vec<LogFile>| {
            tx.send(Written {
                end_lsn: Lsn(end),
                logs,
            })
            .unwrap();
        };
        send(100, vec![good.clone()]);
        flushed_rx.wait_for(|l| *l == Lsn(100)).await.unwrap();
        send(200, vec![good.clone(), bad]);
        let handed = handed_rx
            .recv()
            .await
            .expect("the failed log is handed over");
        if drop_ok {
            flushed_rx.wait_for(|l| *l == Lsn(200)).await.unwrap();
        }
        send(300, vec![]);
        send(400, vec![good]);
        drop(tx);
        task.await.unwrap();
        let last = *flushed_rx.borrow();
        assert!(handed_rx.try_recv().is_err(), "handed over once");
        (last, handed)
    }

    #[tokio::test]
    async fn a_failed_fsync_drops_its_shape_before_anything_later_is_confirmed() {
        let (last, handed) = confirmations(true).await;
        assert_eq!(handed.len(), 1);
        assert!(handed[0].path().ends_with("bad"), "{handed:?}");
        assert_eq!(last, Lsn(400));
    }

    /// A round of many logs is made durable by one `syncfs`; a log whose (injected) fsync
    /// fails is still the only one dropped, before the round is confirmed.
    #[tokio::test]
    async fn a_round_of_many_logs_drops_only_the_failed_one() {
        inject_fsync_faults(fail_marked);
        let root = tempfile::tempdir().unwrap();
        let store = ShapeStore::open(root.path()).unwrap();
        let mut logs: Vec<LogFile> = (0..SYNCFS_FROM)
            .map(|i| shape_log(root.path(), &format!("good{i}"), false))
            .collect();
        logs.insert(SYNCFS_FROM / 2, shape_log(root.path(), "bad", true));
        let (handed_tx, mut handed_rx) = mpsc::unbounded_channel();
        let lost: LostLogs = Arc::new(move |dirs: &[ShapeDir]| {
            let _ = handed_tx.send(dirs.to_vec());
            Ok(())
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (flushed_tx, mut flushed_rx) = watch::channel(Lsn::ZERO);
        let task = tokio::spawn(run(store.resume_file(), rx, flushed_tx, lost));
        tx.send(Written {
            end_lsn: Lsn(100),
            logs,
        })
        .unwrap();
        flushed_rx.wait_for(|l| *l == Lsn(100)).await.unwrap();
        let handed = handed_rx
            .recv()
            .await
            .expect("the failed log is handed over");
        assert_eq!(handed.len(), 1, "{handed:?}");
        assert!(handed[0].path().ends_with("bad"), "{handed:?}");
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn when_a_failed_log_cannot_be_dropped_nothing_later_is_ever_confirmed() {
        let (last, handed) = confirmations(false).await;
        assert_eq!(handed.len(), 1, "{handed:?}");
        assert_eq!(last, Lsn(100), "nothing past the unsynced round");
    }
}
