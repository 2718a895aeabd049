//! Group fsync of shape logs, and the flushed LSN the replication stream confirms.
//!
//! The change writer makes each transaction visible at once (page cache) and reports it here
//! with the log files it touched. This task fsyncs them in groups — everything that arrived
//! while the previous round ran goes into the next one, so a busy stream pays one fsync per
//! file per round, not per transaction — and only then publishes the round's highest commit
//! end LSN on the `flushed` watch: the replication stream confirms to Postgres only what
//! every affected shape log holds durably.
//!
//! It also keeps `resume.lsn` (at most every [`RESUME_EVERY`]): where the next run asks
//! Postgres to start. A stale value is safe, just slower: re-sent transactions are skipped
//! per shape by commit LSN.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shapes::lsn::Lsn;
use tokio::sync::{mpsc, watch};

use crate::shape_log::CHANGES_FILE;

const RESUME_EVERY: Duration = Duration::from_millis(500);
const RESUME_FILE: &str = "resume.lsn";

/// A committed transaction: where it ends, and the shape log directories it wrote.
#[derive(Debug)]
pub struct Written {
    pub end_lsn: Lsn,
    pub dirs: Vec<PathBuf>,
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
) {
    let mut saved = *flushed.borrow();
    let mut last_save = Instant::now();
    while let Some(first) = written.recv().await {
        let mut end = first.end_lsn;
        let mut dirs: BTreeSet<PathBuf> = first.dirs.into_iter().collect();
        while let Ok(more) = written.try_recv() {
            end = end.max(more.end_lsn);
            dirs.extend(more.dirs);
        }
        let synced = tokio::task::spawn_blocking(move || sync_all(&dirs)).await;
        match synced {
            Ok(Ok(())) => {
                flushed.send_if_modified(|current| {
                    let advance = end > *current;
                    if advance {
                        *current = end;
                    }
                    advance
                });
            }
            Ok(Err(err)) => {
                // Not confirmed, so Postgres keeps the WAL; the next round tries again.
                tracing::error!(error = %err, "fsync of shape logs failed; replication position not confirmed");
                continue;
            }
            Err(join) => {
                tracing::error!(error = %join, "fsync task failed");
                continue;
            }
        }
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

fn sync_all(dirs: &BTreeSet<PathBuf>) -> io::Result<()> {
    for dir in dirs {
        match std::fs::File::open(dir.join(CHANGES_FILE)) {
            Ok(file) => file.sync_data()?,
            // A shape deleted meanwhile has nothing left to make durable.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
        let task = tokio::spawn(run(root.path().to_owned(), rx, flushed_tx));
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
}
