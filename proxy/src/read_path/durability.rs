//! Group fsync of shape logs, and the flushed LSN the replication stream confirms.
//!
//! The router makes each transaction visible at once (page cache) and reports it here
//! with the log files it touched. This task fsyncs them in groups — everything that arrived
//! while the previous round ran goes into the next one, so a busy stream pays one fsync per
//! file per round, not per transaction — and only then publishes the round's highest commit
//! end LSN on the `flushed` watch: the replication stream confirms to Postgres only what
//! every affected shape log holds durably.
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

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use shapes::lsn::Lsn;
use tokio::sync::{mpsc, watch};

use crate::storage::shape_log::CHANGES_FILE;

const RESUME_EVERY: Duration = Duration::from_millis(500);
const RESUME_FILE: &str = "resume.lsn";

/// A committed transaction: where it ends, and the shape log directories it wrote.
#[derive(Debug)]
pub struct Written {
    pub end_lsn: Lsn,
    pub dirs: Vec<PathBuf>,
}

/// Drops the shapes whose log directories an fsync failed for, durably (their directories are
/// gone from disk when it returns `Ok`), so that nothing confirmed later depends on them.
pub type LostLogs = Arc<dyn Fn(&[PathBuf]) -> io::Result<()> + Send + Sync>;

/// A test build's way to make an fsync fail: called with a shape log's directory before its
/// fsync; an error returned is taken as that fsync's error. The `shapesync` program never
/// installs one, so release behaviour is unchanged.
pub type FsyncFault = fn(&Path) -> io::Result<()>;

static FSYNC_FAULT: OnceLock<FsyncFault> = OnceLock::new();

/// Installs the test build's [`FsyncFault`] (once per process).
pub fn inject_fsync_faults(fault: FsyncFault) {
    let _ = FSYNC_FAULT.set(fault);
}

/// The position saved by an earlier run (`Lsn::ZERO` if none).
pub fn load_resume(root: &Path) -> Lsn {
    std::fs::read_to_string(root.join(RESUME_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(Lsn::ZERO)
}

fn save_resume(root: &Path, lsn: Lsn) -> io::Result<()> {
    let tmp = root.join(format!("{RESUME_FILE}.tmp"));
    std::fs::write(&tmp, lsn.as_u64().to_string())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, root.join(RESUME_FILE))
}

/// Runs until the sender side closes; then saves the final position.
pub async fn run(
    root: PathBuf,
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
        let mut dirs: BTreeSet<PathBuf> = first.dirs.into_iter().collect();
        while let Ok(more) = written.try_recv() {
            end = end.max(more.end_lsn);
            dirs.extend(more.dirs);
        }
        let round: Vec<PathBuf> = dirs.iter().cloned().collect();
        let failed = match tokio::task::spawn_blocking(move || sync_all(&dirs)).await {
            Ok(failed) => failed,
            Err(join) => round
                .into_iter()
                .map(|dir| {
                    (
                        dir,
                        io::Error::other(format!("the fsync task failed: {join}")),
                    )
                })
                .collect(),
        };
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
            match save_resume(&root, end) {
                Ok(()) => saved = end,
                Err(err) => tracing::warn!(error = %err, "cannot save the resume position"),
            }
            last_save = Instant::now();
        }
    }
    let last = *flushed.borrow();
    if last > saved
        && let Err(err) = save_resume(&root, last)
    {
        tracing::warn!(error = %err, "cannot save the resume position");
    }
}

/// Says why, and drops the shapes of the logs an fsync failed for. True when they are gone
/// (the round can be confirmed: every log that remains was synced).
async fn drop_lost(
    lost: &LostLogs,
    failed: Vec<(PathBuf, io::Error)>,
    confirmed: Lsn,
    round_end: Lsn,
) -> bool {
    for (dir, error) in &failed {
        tracing::error!(
            dir = %dir.display(),
            error = %error,
            confirmed = %confirmed,
            round_end = %round_end,
            "fsync of a shape log failed: its transactions after {confirmed} may not be on disk, \
             and an fsync error is final (a retry can report success for pages the kernel \
             dropped); the shape is rotated, its clients refetch it"
        );
    }
    let dirs: Vec<PathBuf> = failed.into_iter().map(|(dir, _)| dir).collect();
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

/// Fsyncs every directory's change log; returns those that failed, with their errors.
fn sync_all(dirs: &BTreeSet<PathBuf>) -> Vec<(PathBuf, io::Error)> {
    dirs.iter()
        .filter_map(|dir| sync_one(dir).err().map(|e| (dir.clone(), e)))
        .collect()
}

fn sync_one(dir: &Path) -> io::Result<()> {
    match std::fs::File::open(dir.join(CHANGES_FILE)) {
        Ok(file) => {
            if let Some(fault) = FSYNC_FAULT.get() {
                fault(dir)?;
            }
            file.sync_data()
        }
        // A shape deleted meanwhile has nothing left to make durable.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flushed_advances_after_the_round_and_the_resume_position_is_saved_at_the_end() {
        let root = tempfile::tempdir().unwrap();
        let shape_dir = root.path().join("s");
        std::fs::create_dir_all(&shape_dir).unwrap();
        std::fs::write(shape_dir.join(CHANGES_FILE), b"x").unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (flushed_tx, mut flushed_rx) = watch::channel(Lsn::ZERO);
        let task = tokio::spawn(run(
            root.path().to_owned(),
            rx,
            flushed_tx,
            Arc::new(|_: &[PathBuf]| Ok(())),
        ));
        tx.send(Written {
            end_lsn: Lsn(100),
            dirs: vec![shape_dir.clone()],
        })
        .unwrap();
        tx.send(Written {
            end_lsn: Lsn(200),
            dirs: vec![],
        })
        .unwrap();
        flushed_rx
            .wait_for(|l| *l == Lsn(200))
            .await
            .expect("flushed reaches 200");
        drop(tx);
        task.await.unwrap();
        assert_eq!(load_resume(root.path()), Lsn(200));
    }

    /// Fails the fsync of directories holding a `fail` file (no other test has one).
    fn fail_marked(dir: &Path) -> io::Result<()> {
        if dir.join("fail").exists() {
            return Err(io::Error::other("injected fsync failure"));
        }
        Ok(())
    }

    fn shape_dir(root: &Path, name: &str, failing: bool) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CHANGES_FILE), b"x").unwrap();
        if failing {
            std::fs::write(dir.join("fail"), b"").unwrap();
        }
        dir
    }

    /// Runs the task over four rounds, one at a time: a healthy log (ends at 100), the
    /// healthy and a failing log (200), nothing (300), the healthy log (400). `lost` answers
    /// `drop_ok`. Returns the flushed position at the end and the directories handed to `lost`.
    async fn confirmations(drop_ok: bool) -> (Lsn, Vec<PathBuf>) {
        inject_fsync_faults(fail_marked);
        let root = tempfile::tempdir().unwrap();
        let good = shape_dir(root.path(), "good", false);
        let bad = shape_dir(root.path(), "bad", true);
        let (handed_tx, mut handed_rx) = mpsc::unbounded_channel();
        let lost: LostLogs = Arc::new(move |dirs: &[PathBuf]| {
            let _ = handed_tx.send(dirs.to_vec());
            if drop_ok {
                Ok(())
            } else {
                Err(io::Error::other("the disk is gone"))
            }
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (flushed_tx, mut flushed_rx) = watch::channel(Lsn::ZERO);
        let task = tokio::spawn(run(root.path().to_owned(), rx, flushed_tx, lost));
        let send = |end: u64, dirs: Vec<PathBuf>| {
            tx.send(Written {
                end_lsn: Lsn(end),
                dirs,
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
        assert!(handed[0].ends_with("bad"), "{handed:?}");
        assert_eq!(last, Lsn(400));
    }

    #[tokio::test]
    async fn when_a_failed_log_cannot_be_dropped_nothing_later_is_ever_confirmed() {
        let (last, handed) = confirmations(false).await;
        assert_eq!(handed.len(), 1, "{handed:?}");
        assert_eq!(last, Lsn(100), "nothing past the unsynced round");
    }
}
