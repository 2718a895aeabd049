//! New shapes made durable together.
//!
//! A new shape is complete once two things are durable: its `snapshot.log`, and the
//! transactions it captured while the snapshot ran (moved into its `changes.log`; Postgres
//! will not send them again). Only then is its `shape.json` written to say so. Synced one by
//! one (with `shape.json` too), a burst of new shapes (an app with a shape per user, after a
//! deploy) waited on three fsyncs per shape in turn, which capped creation far below what the
//! snapshots allowed.
//!
//! Here the shapes that finish their snapshots while a sync runs wait for the next one
//! together, and a group of two or more is made durable with one `syncfs` of their filesystem
//! (one write-back whatever the group's size, as the change logs' group fsync does in
//! [`durability`](super::durability)). When `syncfs` fails, or cannot report write-back errors
//! (Linux before 5.8), each file is fsynced through the descriptor its writes went through, so
//! an error reaches exactly the shape it belongs to; that shape's creation fails and it is
//! removed, the others are complete.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};

use super::durability;
use crate::storage::shape_log::LogFile;

/// What one new shape needs durable before its `shape.json` is written.
#[derive(Debug)]
pub struct NewShapeFiles {
    /// `snapshot.log`, as its writer left it.
    pub snapshot: File,
    /// The log the captured transactions were moved into, if there were any.
    pub captured: Option<LogFile>,
}

impl NewShapeFiles {
    /// Fsyncs each file.
    fn sync_each(&self) -> io::Result<()> {
        self.snapshot.sync_data()?;
        match &self.captured {
            Some(log) => log.sync_data(),
            None => Ok(()),
        }
    }
}

type Request = (NewShapeFiles, oneshot::Sender<io::Result<()>>);

/// The group sync of new shapes: one task, started with the first request.
#[derive(Debug, Default)]
pub struct CreationSync {
    requests: OnceLock<mpsc::UnboundedSender<Request>>,
}

impl CreationSync {
    /// Makes `files` durable, with those of other new shapes waiting at the same time.
    pub async fn sync(&self, files: NewShapeFiles) -> io::Result<()> {
        let requests = self.requests.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        requests
            .send((files, reply))
            .map_err(|_| io::Error::other("the sync task of new shapes stopped"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the sync task of new shapes stopped"))?
    }
}

async fn run(mut requests: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = requests.recv().await {
        let mut group = vec![first];
        while let Ok(more) = requests.try_recv() {
            group.push(more);
        }
        let (files, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        let count = files.len();
        match tokio::task::spawn_blocking(move || sync_group(files)).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(join) => {
                tracing::error!(shapes = count, error = %join, "the sync of new shapes failed");
                for reply in replies {
                    let _ = reply.send(Err(io::Error::other(format!(
                        "the sync task of new shapes failed: {join}"
                    ))));
                }
            }
        }
    }
}

/// Makes every shape's files durable; what happened to each, in the group's order.
fn sync_group(group: Vec<NewShapeFiles>) -> Vec<io::Result<()>> {
    // A test build's faults stand for the fsyncs of the captured transactions.
    let faults: Vec<io::Result<()>> = group
        .iter()
        .map(|files| files.captured.as_ref().map_or(Ok(()), durability::fault_of))
        .collect();
    let healthy: Vec<&NewShapeFiles> = group
        .iter()
        .zip(&faults)
        .filter(|(_, fault)| fault.is_ok())
        .map(|(files, _)| files)
        .collect();
    let together = healthy.len() >= 2
        && durability::syncfs_reports_errors()
        && one_filesystem(&healthy)
        && sync_filesystem(&healthy[0].snapshot)
            .inspect_err(|err| {
                tracing::warn!(
                    error = %err,
                    shapes = healthy.len(),
                    "syncfs of new shapes failed; fsyncing each to find which"
                );
            })
            .is_ok();
    group
        .iter()
        .zip(faults)
        .map(|(files, fault)| match fault {
            Ok(()) if !together => files.sync_each(),
            other => other,
        })
        .collect()
}

/// Whether every shape's files are on one filesystem (all of a shape's are in its directory).
fn one_filesystem(group: &[&NewShapeFiles]) -> bool {
    let device = |files: &&NewShapeFiles| files.snapshot.metadata().map(|m| m.dev()).ok();
    let first = device(&group[0]);
    first.is_some() && group.iter().all(|files| device(files) == first)
}

/// `syncfs` of the filesystem `file` is on.
#[cfg(target_os = "linux")]
fn sync_filesystem(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for as long as `file` lives.
    match unsafe { libc::syncfs(file.as_raw_fd()) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_filesystem(_: &File) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::storage::shape_dir::ShapeDir;
    use crate::storage::shape_log::{LogAppender, ShapeLog};

    /// Fails the fsync of directories holding a `fail` file (no other test has one).
    fn fail_marked(dir: &Path) -> io::Result<()> {
        if dir.join("fail").exists() {
            return Err(io::Error::other("injected fsync failure"));
        }
        Ok(())
    }

    /// A new shape's files in `root/name`, with captured transactions or not, whose fsync
    /// fails or not.
    fn new_shape(root: &Path, name: &str, captured: bool, failing: bool) -> NewShapeFiles {
        let dir = ShapeDir::at(root.join(name));
        let log = ShapeLog::create(&dir, 1 << 20).unwrap();
        let snapshot = File::create(dir.snapshot_log()).unwrap();
        std::io::Write::write_all(&mut &snapshot, b"rows").unwrap();
        if failing {
            std::fs::write(dir.path().join("fail"), b"").unwrap();
        }
        let captured = captured.then(|| LogAppender::open(&log).unwrap().log_file().clone());
        NewShapeFiles { snapshot, captured }
    }

    #[test]
    fn a_group_is_synced_together_and_a_failure_stays_with_its_shape() {
        durability::inject_fsync_faults(fail_marked);
        let root = tempfile::tempdir().unwrap();
        let results = sync_group(vec![
            new_shape(root.path(), "a", true, false),
            new_shape(root.path(), "b", true, true),
            new_shape(root.path(), "c", false, false),
            new_shape(root.path(), "d", false, true),
        ]);
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        // A shape without captured transactions has no fsync that a fault stands for.
        assert_eq!(ok, [true, false, true, true], "{results:?}");
        let alone = sync_group(vec![new_shape(root.path(), "e", true, true)]);
        assert!(alone[0].is_err(), "one shape, fsynced file by file");
    }

    #[tokio::test]
    async fn shapes_waiting_at_once_each_hear_of_their_own_sync() {
        durability::inject_fsync_faults(fail_marked);
        let root = tempfile::tempdir().unwrap();
        let sync = CreationSync::default();
        let (good, bad, other) = tokio::join!(
            sync.sync(new_shape(root.path(), "a", true, false)),
            sync.sync(new_shape(root.path(), "b", true, true)),
            sync.sync(new_shape(root.path(), "c", false, false)),
        );
        assert!(good.is_ok() && other.is_ok(), "{good:?} {other:?}");
        assert!(bad.is_err());
    }
}
