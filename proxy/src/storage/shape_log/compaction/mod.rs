//! Compaction of a shape's change log: the older part of `changes.log` is rewritten with one
//! entry per key and merge window ([`merge`]), the recent tail is kept byte for byte, and
//! the new file replaces the old one only once it is durable.
//!
//! **Offsets keep their meaning.** A merged entry takes the offset of its key's last change
//! in its window, so every offset a client may hold stays a position of the log: resuming
//! from any offset, inside or before the compacted range, and reading to the end gives the
//! shape's rows. A window closes once its merged entries reach about a chunk (at least
//! [`MIN_WINDOW`]). Responses inside the compacted range end only where a window ends (the
//! index is told by commit marks, [`super::record::CommitMark`]), the one place where a
//! client that read the compacted file holds exactly the rows the history gives there; so it
//! may continue with a response cached before the compaction, or from another instance.
//! Chunk boundaries do change (the compacted range is one chunk per window, the tail is cut
//! by size from the range's end): responses cached for the old boundaries are still right.
//!
//! **A row born and dead in a window is gone** for every reader that cannot hold it: its
//! last delete stays as a [`Retraction`](super::record::Retraction), which only a reader
//! resuming from between the row's insert and that delete (an offset of the old file) gets
//! (see [`merge`]). So a reader from `-1` or from a window's end reads a clean history.
//!
//! **Never blocks the writer, survives a crash at any moment.** [`prepare`] runs on a thread
//! of the compactor's, at idle priority, and holds the log's lock (which the writer takes for
//! every transaction) only to copy a few figures: it merges `[0, cut)` into
//! `changes.log.compact`, copies the tail the writer committed meanwhile, and fsyncs it.
//! [`install`] runs on the consumer task between two transactions: it copies the few
//! transactions committed since, fsyncs, renames the file over `changes.log`, fsyncs the
//! directory and swaps the log's generation (readers in flight finish on the old file). A
//! crash before the rename leaves the old log (the unfinished file is removed when the log is
//! opened), after it the new one; both hold every committed transaction.
//!
//! Shapes with subqueries are never given to it (their tags are not merged; see the
//! compactor).

mod build;
mod merge;
pub mod message;
pub mod policy;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::index::LogIndex;
use super::{ShapeLog, scan_committed, scan_committed_from};
use crate::storage::shape_dir::ShapeDir;
pub use merge::MergeError;
use policy::{CompactionPolicy, LogSizes};

/// Merged bytes a window may reach before it closes, when chunks are smaller: a key's
/// changes merge only within a window, so a window must hold many keys; its memory while
/// merging, and the size of a response inside the compacted range, are about this.
const MIN_WINDOW: u64 = 4 << 20;

/// The tail copied while preparing, at most this many rounds behind the writer.
const CATCH_UP_ROUNDS: usize = 4;
/// Copying stops trying to catch up with the writer once it is this close: the rest is
/// copied by [`install`] on the consumer task.
const CATCH_UP_CLOSE: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    /// Transient: retried by a later compaction.
    #[error("reading or writing the shape log: {0}")]
    Io(#[from] io::Error),
    /// Definite for this history: the log is left as it is until it grows.
    #[error("the shape log cannot be merged: {0}")]
    History(#[from] MergeError),
    /// The log was removed or replaced while the compaction ran.
    #[error("the shape log changed while it was compacted")]
    Stale,
}

/// What a compaction did, for its log line and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub entries_before: usize,
    pub entries_after: usize,
    pub windows: usize,
    /// From the start of [`prepare`] to the end of [`install`].
    pub duration: Duration,
    /// What [`install`] took on the consumer task (the writer's pause).
    pub handoff: Duration,
}

/// A compacted file ready to replace a log's `changes.log`.
#[derive(Debug)]
pub struct Prepared {
    dir: ShapeDir,
    file: Arc<File>,
    /// The file it was built from (device, inode).
    source: (u64, u64),
    /// Position of the source copied through.
    copied_to: u64,
    len: u64,
    index: LogIndex,
    compacted_end: u64,
    stats: Stats,
    started: Instant,
}

impl Prepared {
    /// Removes the file (a compaction given up).
    pub fn discard(self) {
        let _ = std::fs::remove_file(self.dir.compacting_log());
    }
}

/// Whether `log` is due for compaction under `policy`.
pub fn due(log: &ShapeLog, policy: CompactionPolicy) -> bool {
    let (compacted, uncompacted) = {
        let current = log.index();
        let compacted = current.compacted_end;
        (compacted, current.visible_len().saturating_sub(compacted))
    };
    let history = log.history();
    policy.due(LogSizes {
        snapshot: log.snapshot().map_or(0, |s| s.end),
        compacted,
        uncompacted,
        entries: history.entries,
        superseding: history.superseding,
    })
}

/// Builds the compacted file of `log` (blocking; the writer goes on meanwhile). `None` if
/// there is nothing to compact.
pub fn prepare(
    log: &ShapeLog,
    policy: CompactionPolicy,
) -> Result<Option<Prepared>, CompactionError> {
    prepare_in_windows(log, policy, MIN_WINDOW)
}

/// [`prepare`] with windows of at least `min_window` merged bytes.
fn prepare_in_windows(
    log: &ShapeLog,
    policy: CompactionPolicy,
    min_window: u64,
) -> Result<Option<Prepared>, CompactionError> {
    let started = Instant::now();
    // The file is opened after the lock is released: this runs at idle priority, and the
    // writer takes the same lock for every transaction it appends.
    let (kept, identity, visible, chunk_bytes, compacted_end) = {
        let current = log.index();
        (
            current.file.clone(),
            current.identity,
            current.visible_len(),
            current.chunk_bytes(),
            current.compacted_end,
        )
    };
    let source = log.generation_file(kept.as_ref(), identity)?;
    let target = visible.saturating_sub(policy.keep_tail(chunk_bytes));
    let Some(cut) = build::find_cut(&source, target)? else {
        return Ok(None);
    };
    if cut.pos <= compacted_end {
        return Ok(None);
    }
    let dir = log.dir().clone();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.compacting_log())?;
    let window_bytes = chunk_bytes.max(min_window);
    let result = build_file(log, &source, cut, window_bytes, &file);
    let (merged, copied_to, len) = match result {
        Ok(built) => built,
        Err(err) => {
            let _ = std::fs::remove_file(dir.compacting_log());
            return Err(err);
        }
    };
    let file = Arc::new(file);
    let mut index = LogIndex::new(chunk_bytes);
    let scanned = scan_committed(&file, &mut index)?;
    if index.visible_len() != len || scanned.compacted_end != Some(merged.bytes) {
        let _ = std::fs::remove_file(dir.compacting_log());
        return Err(CompactionError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "the compacted file does not read back as written",
        )));
    }
    let metadata = source.metadata()?;
    crash_point("built");
    Ok(Some(Prepared {
        dir,
        file,
        source: (metadata.dev(), metadata.ino()),
        copied_to,
        len,
        index,
        compacted_end: merged.bytes,
        stats: Stats {
            bytes_before: visible,
            bytes_after: 0,
            entries_before: merged.entries_before,
            entries_after: merged.entries_after,
            windows: merged.windows,
            duration: Duration::ZERO,
            handoff: Duration::ZERO,
        },
        started,
    }))
}

/// Writes the merged range and the tail; returns what merging did, the source position
/// copied through and the file's length. The file is fsynced.
fn build_file(
    log: &ShapeLog,
    source: &Arc<File>,
    cut: build::Cut,
    window_bytes: u64,
    file: &File,
) -> Result<(build::Merged, u64, u64), CompactionError> {
    let merged = build::write_range(source, cut, window_bytes, file)?;
    let (mut copied_to, mut len) = (cut.pos, merged.bytes);
    for _ in 0..CATCH_UP_ROUNDS {
        let visible = log.index().visible_len();
        build::copy_range(source, copied_to, visible, file, len)?;
        len += visible - copied_to;
        let behind = visible - copied_to;
        copied_to = visible;
        if behind <= CATCH_UP_CLOSE {
            break;
        }
    }
    file.sync_data()?;
    Ok((merged, copied_to, len))
}

/// Puts `prepared` in place of `log`'s `changes.log`. Call it where nothing writes the log
/// (the consumer task, between transactions), then reopen the log's appender: it appends to
/// the new file. Takes the transactions committed since [`prepare`] copied, two fsyncs and a
/// rename, whatever the log's size.
pub fn install(
    log: &ShapeLog,
    mut prepared: Prepared,
) -> Result<(Stats, Retired), CompactionError> {
    let handoff = Instant::now();
    // Kept from now on: readers planning on this generation while the new file is renamed
    // over `changes.log` read this one.
    let (source, visible) = log.pin_current_file()?;
    let metadata = source.metadata()?;
    if (metadata.dev(), metadata.ino()) != prepared.source
        || visible < prepared.copied_to
        || log.dir() != &prepared.dir
    {
        prepared.discard();
        return Err(CompactionError::Stale);
    }
    if let Err(err) = finish_file(&source, visible, &mut prepared) {
        prepared.discard();
        return Err(err);
    }
    if let Err(err) = std::fs::rename(prepared.dir.compacting_log(), prepared.dir.changes_log()) {
        prepared.discard();
        return Err(err.into());
    }
    crash_point("renamed");
    prepared.dir.sync()?;
    let len = prepared.len;
    let metadata = prepared.file.metadata()?;
    let identity = (metadata.dev(), metadata.ino());
    let (old, _) = log.install(prepared.index, None, identity, prepared.compacted_end);
    let old = old.unwrap_or(source);
    crash_point("installed");
    let stats = Stats {
        bytes_after: len,
        bytes_before: visible,
        duration: prepared.started.elapsed(),
        handoff: handoff.elapsed(),
        ..prepared.stats
    };
    Ok((stats, Retired(old)))
}

/// The file a compaction replaced, still open (readers in flight may read it). Freeing a big
/// file's blocks takes the kernel a while (hundreds of milliseconds for a few hundred MB), and
/// the last `close` of an unlinked file does it: [`Retired::release`] keeps this descriptor
/// open until the others of this process are closed, so that the last close is its caller's,
/// never the writer's. (It never truncates the file: a standby process may still read it
/// until it notices the new one; then its own last close frees it.)
#[derive(Debug)]
pub struct Retired(Arc<File>);

impl Retired {
    /// Time for the writer's appender and the durability task's fsync of the old file to
    /// close their descriptors of it.
    const LINGER: Duration = Duration::from_secs(2);

    /// Waits (polling every 100 ms, at most `patience`) until no reader of this process holds
    /// the old file, then [`Retired::LINGER`] more, and closes it. Blocking.
    pub fn release(self, patience: Duration) {
        let deadline = Instant::now() + patience;
        while Arc::strong_count(&self.0) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Self::LINGER);
    }
}

/// Copies what the writer committed since the prepared copy, and fsyncs.
fn finish_file(
    source: &File,
    visible: u64,
    prepared: &mut Prepared,
) -> Result<(), CompactionError> {
    let delta = visible - prepared.copied_to;
    if delta > 0 {
        build::copy_range(
            source,
            prepared.copied_to,
            visible,
            &prepared.file,
            prepared.len,
        )?;
        scan_committed_from(&prepared.file, prepared.len, &mut prepared.index)?;
        prepared.len += delta;
        if prepared.index.visible_len() != prepared.len {
            return Err(CompactionError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "the log's tail does not end with a commit",
            )));
        }
        prepared.file.sync_data()?;
    }
    Ok(())
}

/// Removes the file of a compaction that did not finish (the log it would have replaced is
/// whole).
pub fn discard_unfinished(dir: &ShapeDir) -> io::Result<()> {
    match std::fs::remove_file(dir.compacting_log()) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Test hook for the kill -9 tests: `SHAPESYNC_TEST_COMPACTION_CRASH=<stage>` aborts the
/// process at that stage (`built`: the new file is durable, not in place; `renamed`: in place,
/// its directory entry not fsynced; `installed`: served). Never set in production.
fn crash_point(stage: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("SHAPESYNC_TEST_COMPACTION_CRASH").ok());
    if at.as_deref() == Some(stage) {
        eprintln!("test hook: aborting at compaction stage {stage}");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests;
