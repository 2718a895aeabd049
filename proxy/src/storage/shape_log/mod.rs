//! Durable, append-only logs of pre-encoded shape messages, one directory per shape.
//!
//! A shape directory holds `snapshot.log` (the initial rows, in chunks `0_k`, see
//! [`snapshot_file`]) and `changes.log` (entries at log offsets, closed per transaction by a
//! commit record, see [`record`]). [`ShapeLog`] is the shared, read-mostly view: readers plan
//! a read under a short lock ([`index::LogIndex::plan_read`]) and then read the file without
//! it. The single writer appends through a [`LogAppender`]; a transaction's entries become
//! visible together when its commit record is written (to the page cache: served at once,
//! fsynced by the durability task within milliseconds).
//!
//! Opening a log after a crash cuts `changes.log` back to its last commit record, so a
//! transaction is either wholly in the log or (to be re-sent by Postgres) not at all.
//!
//! [`compaction`] may replace `changes.log` by a smaller file holding the same offsets: the
//! file readers read and the index over it are one *generation*, swapped together, and a read
//! keeps the descriptor of the generation it was planned on ([`PlannedRead`]), so a read in
//! flight finishes on the file it started on.
//!
//! Reads hand each message to a framing function given by the reader (the HTTP layer lays
//! them out as a JSON array or as server-sent events), which appends it to the bytes being
//! sent: the log keeps only messages, never the punctuation of a response.
//!
//! A log also knows what an operator asks of it (the status page): its bytes, its rows (the
//! snapshot's, plus the inserts and minus the deletes of its committed transactions, told by
//! the writer, and counted from the messages when a log is reopened or a capture replayed)
//! and when its last transaction became visible.

pub mod capture_file;
pub mod compaction;
pub mod cursor;
pub mod index;
mod positional;
pub mod record;
pub mod snapshot_file;
mod stream;

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::storage::watched::{Watched, Watcher};
use shapes::lsn::Lsn;
use shapes::offset::Offset;
use shapes::wire::{Operation, operation_of};

use super::shape_dir::ShapeDir;
use index::{LogIndex, ReadPlan};
use positional::FileReader;
use record::{CommitMark, RecordKind, RecordScanner, Retraction};
use snapshot_file::SnapshotChunks;
pub use stream::blocking_pieces;

/// Bytes buffered by an appender before they go to the file (still invisible until commit).
const WRITE_THROUGH: usize = 256 * 1024;

/// One shape's log, shared by the writer and every reader.
#[derive(Debug)]
pub struct ShapeLog {
    dir: ShapeDir,
    current: Mutex<Generation>,
    snapshot: OnceLock<SnapshotChunks>,
    /// Last visible log offset; readers waiting for news subscribe here.
    latest: Watched<Option<Offset>>,
    /// Inserts minus deletes of the committed transactions (rows moving in and out count).
    change_rows: AtomicI64,
    /// [`History`] since the log was opened or last compacted, packed.
    history: AtomicU64,
    /// When the last transaction became visible, in microseconds since the Unix epoch; 0:
    /// none since the snapshot.
    last_change_micros: AtomicU64,
    /// The descriptor the last appender wrote through, while something still holds it (the
    /// durability task, until its fsync): the next appender takes it instead of opening the
    /// file again. Many shapes written in turn otherwise cost an `open` each per write, and
    /// a descriptor each until their fsync.
    append_file: Mutex<Weak<OpenLog>>,
}

/// The `changes.log` readers read now, and the index over it: swapped together when
/// compaction replaces the file.
#[derive(Debug)]
struct Generation {
    index: LogIndex,
    /// Its file, when a descriptor is kept (a standby's logs, and the old file while a
    /// compaction renames the new one over it). Otherwise `changes.log` is this generation's
    /// file and readers open it by name for as long as they read: an idle shape holds no
    /// descriptor, so 100,000 shapes do not need 100,000 of them.
    file: Option<Arc<File>>,
    /// `(st_dev, st_ino)` of its file.
    identity: (u64, u64),
    /// End of the compacted range at the start of the file (0: none).
    compacted_end: u64,
}

impl Deref for Generation {
    type Target = LogIndex;
    fn deref(&self) -> &LogIndex {
        &self.index
    }
}

impl DerefMut for Generation {
    fn deref_mut(&mut self) -> &mut LogIndex {
        &mut self.index
    }
}

/// A read planned on one generation of the log: it reads that generation's file, also after
/// compaction swapped another in.
#[derive(Debug, Clone)]
pub struct PlannedRead {
    plan: ReadPlan,
    file: Arc<File>,
}

impl PlannedRead {
    /// The file of the generation planned on, from the start of the plan.
    fn reader(&self) -> FileReader {
        FileReader::new(self.file.clone(), self.plan.start)
    }
}

impl Deref for PlannedRead {
    type Target = ReadPlan;
    fn deref(&self) -> &ReadPlan {
        &self.plan
    }
}

/// What the open transaction writes to a shape's log, told to the log at its commit
/// ([`ShapeLog::note_txn`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxnChanges {
    /// Inserts minus deletes (rows moving in and out count).
    pub rows: i32,
    /// Updates and deletes: the changes a compaction may merge away.
    pub superseding: u32,
}

impl TxnChanges {
    /// Adds those of `other` (written to the same log in the same transaction).
    pub fn absorb(&mut self, other: TxnChanges) {
        self.rows = self.rows.saturating_add(other.rows);
        self.superseding = self.superseding.saturating_add(other.superseding);
    }

    pub fn add(&mut self, operation: Operation) {
        self.add_many(operation, 1);
    }

    /// Adds `n` changes of `operation`.
    pub fn add_many(&mut self, operation: Operation, n: usize) {
        let n = i32::try_from(n).unwrap_or(i32::MAX);
        self.rows = self
            .rows
            .saturating_add((row_delta(Some(operation)) as i32).saturating_mul(n));
        if operation != Operation::Insert {
            self.superseding = self.superseding.saturating_add(n.unsigned_abs());
        }
    }
}

/// Entries appended to a log since it was opened or last compacted, and how many of them
/// were updates or deletes: whether compacting it can gain anything
/// (`compaction::policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    pub entries: u64,
    pub superseding: u64,
}

impl History {
    /// Packed into one `u64` (32 bits each, saturating), for an atomic.
    fn pack(self) -> u64 {
        let half = |n: u64| n.min(u64::from(u32::MAX));
        half(self.entries) << 32 | half(self.superseding)
    }

    fn unpack(packed: u64) -> Self {
        Self {
            entries: packed >> 32,
            superseding: packed & u64::from(u32::MAX),
        }
    }
}

/// What scanning a log file found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Scanned {
    /// Rows its committed transactions add (inserts minus deletes).
    rows: i64,
    /// End of its compacted range, if it has one.
    compacted_end: Option<u64>,
    /// Its committed entries after the compacted range.
    history: History,
}

/// The open `changes.log` of a shape as its writer holds it, shared with the durability task:
/// the fsync goes through the descriptor the writes went through (it reports their writeback
/// errors) and needs no open by name. Cloning it is cheap; the file stays open while any
/// clone lives, also after the writer closed its own.
#[derive(Debug, Clone)]
pub struct LogFile(Arc<OpenLog>);

#[derive(Debug)]
struct OpenLog {
    dir: ShapeDir,
    file: File,
    /// `st_dev` of the file, taken when it was opened (a round of the durability task asks
    /// every log of it).
    device: u64,
}

impl LogFile {
    /// The directory of the shape whose log this is.
    pub fn dir(&self) -> &ShapeDir {
        &self.0.dir
    }

    /// Makes what was written to the log durable (`fdatasync`).
    pub fn sync_data(&self) -> io::Result<()> {
        self.0.file.sync_data()
    }

    /// The device of the filesystem the log is on.
    pub fn device(&self) -> u64 {
        self.0.device
    }

    /// Makes everything written to the log's filesystem durable, this log's and every other
    /// file's (`syncfs`: one journal commit for any number of files). Linux reports a
    /// write-back error of any file of the filesystem since 5.8 only; the caller checks.
    #[cfg(target_os = "linux")]
    pub fn sync_filesystem(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for as long as `self` lives.
        match unsafe { libc::syncfs(self.0.file.as_raw_fd()) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn sync_filesystem(&self) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    fn file(&self) -> &File {
        &self.0.file
    }
}

/// What a read produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOutcome {
    pub entries: usize,
    /// Offset of the last entry read (served, or a retraction not meant for this reader):
    /// where the reader stands after the read.
    pub last_offset: Option<Offset>,
    /// Nothing after the entries read is visible yet.
    pub at_end: bool,
}

impl ShapeLog {
    /// A new, empty log in `dir` (created).
    pub fn create(dir: &ShapeDir, chunk_bytes: u64) -> io::Result<Self> {
        dir.create()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.changes_log())?;
        let identity = identity_of(&file)?;
        Ok(Self::with_index(
            dir,
            LogIndex::new(chunk_bytes),
            None,
            identity,
            0,
        ))
    }

    /// Opens an existing log, cutting off anything after its last complete transaction.
    pub fn open(dir: &ShapeDir, chunk_bytes: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.changes_log())?;
        // A compaction the last run did not finish: the log it left is whole.
        compaction::discard_unfinished(dir)?;
        let file = Arc::new(file);
        let mut index = LogIndex::new(chunk_bytes);
        let scanned = scan_committed(&file, &mut index)?;
        let metadata = file.metadata()?;
        if metadata.len() > index.visible_len() {
            file.set_len(index.visible_len())?;
            file.sync_data()?;
        }
        Self::with_snapshot(dir, index, None, identity_of(&file)?, scanned, &metadata)
    }

    /// Opens an existing log that another process is writing (a standby during a rolling
    /// deploy): reads up to its last complete transaction and changes nothing in the file.
    /// [`ShapeLog::follow_writer`] takes in what the writer commits later.
    pub fn open_read_only(dir: &ShapeDir, chunk_bytes: u64) -> io::Result<Self> {
        let file = Arc::new(File::open(dir.changes_log())?);
        let mut index = LogIndex::new(chunk_bytes);
        let scanned = scan_committed(&file, &mut index)?;
        let metadata = file.metadata()?;
        // The writer may rename a compacted file over it at any time: keep this one.
        let identity = identity_of(&file)?;
        Self::with_snapshot(dir, index, Some(file), identity, scanned, &metadata)
    }

    /// Takes in the transactions another process committed to this log since it was opened
    /// read-only (or last followed), and wakes the readers waiting for news. Returns whether
    /// anything new became visible. A transaction still being written stays invisible. When
    /// the writer compacted the log (another file under its name), the new file is read whole
    /// and served from then on.
    pub fn follow_writer(&self) -> io::Result<bool> {
        let file = Arc::new(File::open(self.dir.changes_log())?);
        let metadata = file.metadata()?;
        let (same, visible, mut index) = {
            let current = self.index();
            let same = current.identity == (metadata.dev(), metadata.ino());
            (same, current.visible_len(), current.index.clone())
        };
        if !same {
            let mut index = LogIndex::new(index.chunk_bytes());
            let scanned = scan_committed(&file, &mut index)?;
            let last = index.last_offset();
            let identity = (metadata.dev(), metadata.ino());
            let compacted_end = scanned.compacted_end.unwrap_or(0);
            let (_, _) = self.install(index, Some(file), identity, compacted_end);
            self.change_rows.store(scanned.rows, Ordering::Relaxed);
            self.latest.send_replace(last);
            return Ok(true);
        }
        if metadata.len() <= visible {
            return Ok(false);
        }
        // Scan a copy: readers keep planning on the old index meanwhile.
        let scanned = scan_committed_from(&file, visible, &mut index)?;
        if index.visible_len() == visible {
            return Ok(false);
        }
        let last = index.last_offset();
        self.index().index = index;
        self.note_rows(scanned.rows);
        self.note_history(scanned.history);
        self.last_change_micros
            .store(unix_micros(SystemTime::now()), Ordering::Relaxed);
        self.latest.send_replace(last);
        Ok(true)
    }

    /// A log opened with `index` (holding `rows` of committed changes), with its snapshot.
    fn with_snapshot(
        dir: &ShapeDir,
        index: LogIndex,
        file: Option<Arc<File>>,
        identity: (u64, u64),
        scanned: Scanned,
        metadata: &std::fs::Metadata,
    ) -> io::Result<Self> {
        let compacted_end = scanned.compacted_end.unwrap_or(0);
        let log = Self::with_index(dir, index, file, identity, compacted_end);
        log.note_rows(scanned.rows);
        log.note_history(scanned.history);
        // The file's time is the best guess of a log written by an earlier run.
        if log.last_offset().is_some()
            && let Ok(modified) = metadata.modified()
        {
            log.last_change_micros
                .store(unix_micros(modified), Ordering::Relaxed);
        }
        if let Some(chunks) = snapshot_file::load(dir)? {
            let _ = log.snapshot.set(chunks);
        }
        Ok(log)
    }

    fn with_index(
        dir: &ShapeDir,
        index: LogIndex,
        file: Option<Arc<File>>,
        identity: (u64, u64),
        compacted_end: u64,
    ) -> Self {
        let latest = Watched::new(index.last_offset());
        Self {
            dir: dir.clone(),
            current: Mutex::new(Generation {
                index,
                file,
                identity,
                compacted_end,
            }),
            snapshot: OnceLock::new(),
            latest,
            change_rows: AtomicI64::new(0),
            history: AtomicU64::new(0),
            last_change_micros: AtomicU64::new(0),
            append_file: Mutex::new(Weak::new()),
        }
    }

    pub fn dir(&self) -> &ShapeDir {
        &self.dir
    }

    fn index(&self) -> MutexGuard<'_, Generation> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `index` over the file `identity` names the generation readers use (`file`: its
    /// descriptor, when one is to be kept; else `changes.log` must name it already). Returns
    /// the kept descriptor and visible length of the one it replaces.
    fn install(
        &self,
        index: LogIndex,
        file: Option<Arc<File>>,
        identity: (u64, u64),
        compacted_end: u64,
    ) -> (Option<Arc<File>>, u64) {
        let mut current = self.index();
        // A new file: its history starts now (the few transactions copied after its
        // compacted range are not counted).
        self.history.store(0, Ordering::Relaxed);
        let old = std::mem::replace(
            &mut *current,
            Generation {
                index,
                file,
                identity,
                compacted_end,
            },
        );
        (old.file, old.index.visible_len())
    }

    /// The current generation's file: its kept descriptor, or `changes.log` opened now (and
    /// checked to be that file).
    fn current_file(&self, current: &Generation) -> io::Result<Arc<File>> {
        self.generation_file(current.file.as_ref(), current.identity)
    }

    /// A generation's file: `kept`, or `changes.log` opened now and checked to be the file
    /// `identity` names. Needs no lock: a caller that must not hold the log's lock while it
    /// opens a file copies `kept` and `identity` under it.
    fn generation_file(
        &self,
        kept: Option<&Arc<File>>,
        identity: (u64, u64),
    ) -> io::Result<Arc<File>> {
        if let Some(file) = kept {
            return Ok(file.clone());
        }
        let file = File::open(self.dir.changes_log())?;
        if identity_of(&file)? != identity {
            return Err(io::Error::other(
                "changes.log was replaced under a read; the read is retried",
            ));
        }
        Ok(Arc::new(file))
    }

    /// The current generation's file with its visible length, its descriptor kept from now on
    /// (a compaction about to rename another file over `changes.log`: readers planning on
    /// this generation meanwhile read this file).
    pub(super) fn pin_current_file(&self) -> io::Result<(Arc<File>, u64)> {
        let mut current = self.index();
        let file = self.current_file(&current)?;
        current.file = Some(file.clone());
        Ok((file, current.visible_len()))
    }

    /// Bytes of the log after its compacted range (all of it if it was never compacted).
    pub fn uncompacted_bytes(&self) -> u64 {
        let current = self.index();
        current.visible_len().saturating_sub(current.compacted_end)
    }

    /// Records that the snapshot file is complete.
    pub fn set_snapshot(&self, chunks: SnapshotChunks) {
        let _ = self.snapshot.set(chunks);
    }

    pub fn snapshot(&self) -> Option<&SnapshotChunks> {
        self.snapshot.get()
    }

    pub fn last_offset(&self) -> Option<Offset> {
        self.index().last_offset()
    }

    pub fn last_commit(&self) -> Lsn {
        self.index().last_commit()
    }

    /// Counts what a transaction of `entries` entries committed (see [`LogAppender::commit`]).
    pub fn note_txn(&self, changes: TxnChanges, entries: usize) {
        self.note_rows(i64::from(changes.rows));
        self.note_history(History {
            entries: entries as u64,
            superseding: u64::from(changes.superseding),
        });
    }

    fn note_rows(&self, delta: i64) {
        if delta != 0 {
            self.change_rows.fetch_add(delta, Ordering::Relaxed);
        }
    }

    fn note_history(&self, more: History) {
        let _ = self
            .history
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                let was = History::unpack(packed);
                Some(
                    History {
                        entries: was.entries.saturating_add(more.entries),
                        superseding: was.superseding.saturating_add(more.superseding),
                    }
                    .pack(),
                )
            });
    }

    /// Entries committed since the log was opened or last compacted, and how many of them
    /// were updates or deletes.
    pub fn history(&self) -> History {
        History::unpack(self.history.load(Ordering::Relaxed))
    }

    /// Rows a client that followed the whole log holds: the snapshot's, plus the inserts and
    /// minus the deletes since. (A `changes_only` shape has no snapshot rows: deletes of rows
    /// it never sent can take it below zero, shown as 0.)
    pub fn rows(&self) -> u64 {
        let snapshot = self.snapshot.get().map_or(0, |s| s.rows);
        let changes = self.change_rows.load(Ordering::Relaxed);
        snapshot.saturating_add_signed(changes)
    }

    /// Bytes of the snapshot and of the committed log on disk.
    pub fn bytes(&self) -> u64 {
        let snapshot = self.snapshot.get().map_or(0, |s| s.end);
        snapshot + self.index().visible_len()
    }

    /// When the last transaction became visible (for a log written by an earlier run: when
    /// its file was last written); `None` if none since the snapshot.
    pub fn last_change(&self) -> Option<SystemTime> {
        match self.last_change_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(UNIX_EPOCH + Duration::from_micros(micros)),
        }
    }

    /// A receiver that changes whenever new entries become visible.
    pub fn subscribe(&self) -> Watcher<Option<Offset>> {
        self.latest.subscribe()
    }

    /// Where "entries after `after`" are, if there are any.
    pub fn plan_read(&self, after: Offset) -> io::Result<Option<PlannedRead>> {
        let current = self.index();
        let Some(plan) = current.plan_read(after) else {
            return Ok(None);
        };
        let file = self.current_file(&current)?;
        Ok(Some(PlannedRead { plan, file }))
    }

    /// Appends the entries of `plan` to `out`, each laid out by `frame(out, message)`.
    pub fn read(
        &self,
        plan: &PlannedRead,
        out: &mut Vec<u8>,
        frame: impl FnMut(&mut Vec<u8>, &[u8]),
    ) -> io::Result<ReadOutcome> {
        let (entries, last_offset) = copy_payloads(
            &plan.file,
            plan.start,
            plan.end,
            Some(plan.after),
            out,
            frame,
        )?;
        Ok(ReadOutcome {
            entries,
            last_offset,
            at_end: plan.to_visible_end,
        })
    }

    /// The entries of `plan`, each laid out by `frame`, as a stream of pieces read while the
    /// socket drains.
    pub fn stream(
        &self,
        plan: &PlannedRead,
        frame: impl FnMut(&mut Vec<u8>, &[u8]) + Send + 'static,
    ) -> tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>> {
        stream::stream_range(
            stream::Source::Open(plan.file.clone()),
            plan.start,
            plan.end,
            Some(plan.after),
            frame,
        )
    }

    /// Snapshot chunk `k`, each message laid out by `frame`, as a stream; `None` if there is
    /// no such chunk.
    pub fn stream_snapshot_chunk(
        &self,
        k: usize,
        frame: impl FnMut(&mut Vec<u8>, &[u8]) + Send + 'static,
    ) -> Option<tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>> {
        let (start, end) = self.snapshot.get().and_then(|s| s.range(k))?;
        Some(stream::stream_range(
            stream::Source::Path(self.dir.snapshot_log()),
            start,
            end,
            None,
            frame,
        ))
    }

    /// Appends snapshot chunk `k`'s messages to `out`, each laid out by `frame`; `None` if
    /// there is no such chunk.
    pub fn read_snapshot_chunk(
        &self,
        k: usize,
        out: &mut Vec<u8>,
        frame: impl FnMut(&mut Vec<u8>, &[u8]),
    ) -> io::Result<Option<usize>> {
        let Some((start, end)) = self.snapshot.get().and_then(|s| s.range(k)) else {
            return Ok(None);
        };
        let file = File::open(self.dir.snapshot_log())?;
        let (entries, _) = copy_payloads(&file, start, end, None, out, frame)?;
        Ok(Some(entries))
    }
}

/// Notes in `index` every transaction of `file` that ends with a commit record (and the
/// marks of a compacted range).
fn scan_committed(file: &Arc<File>, index: &mut LogIndex) -> io::Result<Scanned> {
    scan_committed_from(file, 0, index)
}

/// Like [`scan_committed`], from `start` (the end of what `index` already holds, a record
/// boundary outside a compacted range).
fn scan_committed_from(file: &Arc<File>, start: u64, index: &mut LogIndex) -> io::Result<Scanned> {
    let reader = BufReader::with_capacity(256 * 1024, FileReader::new(file.clone(), start));
    let mut scanner = RecordScanner::new(reader);
    let mut pos = start;
    // Rows of committed transactions only: a torn tail does not count. Inside a compacted
    // range the entries are not counted: its end mark says what the range adds.
    let (mut rows, mut txn_rows) = (0, 0);
    let (mut history, mut txn_history) = (History::default(), History::default());
    let mut in_range = false;
    let mut compacted_end = None;
    while let Some((header, payload)) = scanner.next_record()? {
        let len = header.total_len();
        match header.kind {
            RecordKind::Commit if header.tx == 0 && is_range_start(payload) => {
                // Opens a range: no transaction ends here.
                index.suspend_size_cuts(true);
                in_range = true;
            }
            RecordKind::Commit if Retraction::decode(payload).is_some() => {
                // A conditional delete (inside a compacted range, whose end mark counts rows).
                index.note_entry(header.offset(), pos, u64::from(header.payload_len));
            }
            RecordKind::Entry => {
                if !in_range {
                    let operation = operation_of(payload);
                    txn_rows += row_delta(operation);
                    txn_history.entries += 1;
                    txn_history.superseding += u64::from(matches!(
                        operation,
                        Some(Operation::Update | Operation::Delete)
                    ));
                }
                index.note_entry(header.offset(), pos, u64::from(header.payload_len));
            }
            RecordKind::Commit => {
                if let Some(mark) = CommitMark::decode(payload) {
                    if mark.has(CommitMark::CHUNK_END) {
                        index.end_chunk();
                    }
                    if mark.has(CommitMark::RANGE_END) {
                        index.suspend_size_cuts(false);
                        in_range = false;
                        txn_rows = mark.rows;
                        compacted_end = Some(pos + len);
                    }
                }
                index.note_commit(Lsn(header.tx), pos + len);
                rows += std::mem::take(&mut txn_rows);
                let txn = std::mem::take(&mut txn_history);
                history.entries += txn.entries;
                history.superseding += txn.superseding;
            }
            RecordKind::SnapshotComplete => break,
        }
        pos += len;
    }
    index.rollback_to_visible();
    // A range cut short (a torn copy) never became visible: its end is what counts.
    let compacted_end = compacted_end.filter(|end| *end <= index.visible_len());
    Ok(Scanned {
        rows,
        compacted_end,
        history,
    })
}

fn is_range_start(payload: &[u8]) -> bool {
    CommitMark::decode(payload).is_some_and(|m| m.has(CommitMark::RANGE_START))
}

/// What a message does to the rows of its shape: an insert adds one, a delete takes one away
/// (a row moving into or out of a shape arrives as one; a key change as both).
pub fn row_delta(operation: Option<Operation>) -> i64 {
    match operation {
        Some(Operation::Insert) => 1,
        Some(Operation::Delete) => -1,
        Some(Operation::Update) | None => 0,
    }
}

fn unix_micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Copies the payloads of the entries in `[start, end)` (after `after`) into `out`.
fn copy_payloads(
    file: &File,
    start: u64,
    end: u64,
    after: Option<Offset>,
    out: &mut Vec<u8>,
    mut frame: impl FnMut(&mut Vec<u8>, &[u8]),
) -> io::Result<(usize, Option<Offset>)> {
    let len = usize::try_from(end.saturating_sub(start))
        .map_err(|_| io::Error::other("read range too large"))?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, start)?;
    // The payloads are most of the range: one allocation instead of doublings.
    out.reserve(len);
    let mut scanner = RecordScanner::new(&bytes[..]);
    let mut entries = 0;
    while let Some((_, payload)) = scanner.next_entry_after(after)? {
        frame(out, payload);
        entries += 1;
    }
    let last = scanner.passed();
    if scanner.valid_len() < len as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "shape log damaged inside its visible part",
        ));
    }
    Ok((entries, last))
}

/// The writer's side of one log: buffers a transaction's entries and makes them visible at
/// its commit.
#[derive(Debug)]
pub struct LogAppender {
    file: LogFile,
    /// File length including what is buffered.
    pos: u64,
    buf: Vec<u8>,
    /// Entries of the open transaction (offset, position, payload length): noted in the
    /// index at commit.
    pending: Vec<(Offset, u64, u64)>,
}

impl LogAppender {
    pub fn open(log: &ShapeLog) -> io::Result<Self> {
        let (pos, identity) = {
            let current = log.index();
            (current.visible_len(), current.identity)
        };
        let kept = log.append_file.lock().expect("append file lock").upgrade();
        let (open, metadata) = match kept {
            // Still the file readers read (no compaction replaced it since).
            Some(open) => match open.file.metadata() {
                Ok(metadata) if (metadata.dev(), metadata.ino()) == identity => (open, metadata),
                _ => Self::open_file(log)?,
            },
            None => Self::open_file(log)?,
        };
        // Cut off what a transaction left unfinished, if anything: a truncate is a metadata
        // write, and with many shapes appenders are opened for nearly every write.
        if metadata.len() != pos {
            open.file.set_len(pos)?;
        }
        Ok(Self {
            file: LogFile(open),
            pos,
            // Most transactions write a few hundred bytes to a shape; the buffer grows for
            // the others. (Under 1 KiB: glibc consolidates its free lists on every request of
            // 1 KiB or more, which showed in profiles with appenders opened per write.)
            buf: Vec::with_capacity(512),
            pending: Vec::new(),
        })
    }

    fn open_file(log: &ShapeLog) -> io::Result<(Arc<OpenLog>, std::fs::Metadata)> {
        // O_APPEND: every write lands at the end, also after `set_len` cut a transaction off.
        let file = OpenOptions::new()
            .append(true)
            .open(log.dir.changes_log())?;
        let metadata = file.metadata()?;
        let open = Arc::new(OpenLog {
            dir: log.dir.clone(),
            file,
            device: metadata.dev(),
        });
        *log.append_file.lock().expect("append file lock") = Arc::downgrade(&open);
        Ok((open, metadata))
    }

    /// Adds an entry to the open transaction.
    pub fn append(&mut self, offset: Offset, message: &[u8]) -> io::Result<()> {
        let start = self.pos + self.buf.len() as u64;
        let Offset::At { tx, op } = offset else {
            return Err(io::Error::other("log entries need a log offset"));
        };
        record::encode(&mut self.buf, RecordKind::Entry, tx, op, message);
        self.pending.push((offset, start, message.len() as u64));
        if self.buf.len() >= WRITE_THROUGH {
            self.write_buffer()?;
        }
        Ok(())
    }

    /// Closes the open transaction and makes its entries visible.
    /// Makes the buffered entries visible behind a commit record; returns how many there
    /// were.
    pub fn commit(&mut self, log: &ShapeLog, commit_lsn: Lsn, end_lsn: Lsn) -> io::Result<usize> {
        record::encode(
            &mut self.buf,
            RecordKind::Commit,
            commit_lsn.as_u64(),
            end_lsn.as_u64(),
            b"",
        );
        self.write_buffer()?;
        let entries = self.pending.len();
        let last = {
            let mut index = log.index();
            for (offset, pos, len) in self.pending.drain(..) {
                index.note_entry(offset, pos, len);
            }
            index.note_commit(commit_lsn, self.pos);
            index.last_offset()
        };
        log.latest.send_replace(last);
        log.last_change_micros
            .store(unix_micros(SystemTime::now()), Ordering::Relaxed);
        Ok(entries)
    }

    /// The log file this appender writes, for an fsync of what it committed.
    pub fn log_file(&self) -> &LogFile {
        &self.file
    }

    /// Drops the open transaction (its entries were never visible).
    pub fn abandon(&mut self, log: &ShapeLog) -> io::Result<()> {
        self.buf.clear();
        self.pending.clear();
        self.pos = log.index().visible_len();
        self.file.file().set_len(self.pos)
    }

    fn write_buffer(&mut self) -> io::Result<()> {
        if let Err(err) = self.file.file().write_all(&self.buf) {
            // Leave the file as it was: a full disk must not leave half a record.
            let _ = self.file.file().set_len(self.pos);
            self.buf.clear();
            return Err(err);
        }
        self.pos += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// `(st_dev, st_ino)` of an open file.
fn identity_of(file: &File) -> io::Result<(u64, u64)> {
    let metadata = file.metadata()?;
    Ok((metadata.dev(), metadata.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(tx: u64, op: u64) -> Offset {
        Offset::At { tx, op }
    }

    /// A reader's framing: the messages separated by commas.
    pub(crate) fn comma_separated(out: &mut Vec<u8>, message: &[u8]) {
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(message);
    }

    fn read_all(log: &ShapeLog, after: Offset) -> (String, ReadOutcome) {
        let plan = log.plan_read(after).unwrap().expect("something to read");
        let mut out = Vec::new();
        let outcome = log.read(&plan, &mut out, comma_separated).unwrap();
        (String::from_utf8(out).unwrap(), outcome)
    }

    fn temp_shape_dir() -> (tempfile::TempDir, ShapeDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ShapeDir::at(tmp.path());
        (tmp, dir)
    }

    #[test]
    fn committed_entries_are_served_after_an_offset_and_survive_reopening() {
        let (_tmp, dir) = temp_shape_dir();
        let log = ShapeLog::create(&dir, 1 << 20).unwrap();
        let mut rx = log.subscribe();
        let mut appender = LogAppender::open(&log).unwrap();
        appender.append(off(100, 0), b"{\"a\":1}").unwrap();
        appender.append(off(100, 2), b"{\"a\":2}").unwrap();
        assert!(
            log.plan_read(Offset::SNAPSHOT_END).unwrap().is_none(),
            "invisible before commit"
        );
        appender.commit(&log, Lsn(100), Lsn(120)).unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), Some(off(100, 2)));

        let (body, outcome) = read_all(&log, Offset::SNAPSHOT_END);
        assert_eq!(body, "{\"a\":1},{\"a\":2}");
        assert_eq!(outcome.last_offset, Some(off(100, 2)));
        assert!(outcome.at_end);
        let (body, _) = read_all(&log, off(100, 0));
        assert_eq!(body, "{\"a\":2}");

        // A transaction cut short by a crash is gone after reopening.
        appender.append(off(200, 0), b"{\"a\":3}").unwrap();
        appender.write_buffer().unwrap();
        drop(appender);
        let reopened = ShapeLog::open(&dir, 1 << 20).unwrap();
        assert_eq!(reopened.last_offset(), Some(off(100, 2)));
        assert_eq!(reopened.last_commit(), Lsn(100));
        let len = std::fs::metadata(dir.changes_log()).unwrap().len();
        assert_eq!(len, reopened.index().visible_len());
        let (body, _) = read_all(&reopened, Offset::BeforeAll);
        assert_eq!(body, "{\"a\":1},{\"a\":2}");
    }

    /// A change message as the router writes them (only its operation matters here).
    fn change(operation: &str) -> Vec<u8> {
        format!(r#"{{"key":"k","value":{{}},"headers":{{"operation":"{operation}"}}}}"#)
            .into_bytes()
    }

    #[test]
    fn rows_are_the_snapshots_plus_committed_inserts_minus_deletes_also_after_reopening() {
        let (_tmp, dir) = temp_shape_dir();
        let log = ShapeLog::create(&dir, 1 << 20).unwrap();
        let mut writer = snapshot_file::SnapshotWriter::create(&dir, 1 << 20).unwrap();
        for _ in 0..3 {
            writer.push_row(b"{}").unwrap();
        }
        log.set_snapshot(writer.finish(b"{\"end\":true}").unwrap());
        assert_eq!(log.rows(), 3);
        assert_eq!(log.last_change(), None, "no transaction yet");

        let mut appender = LogAppender::open(&log).unwrap();
        appender.append(off(100, 0), &change("insert")).unwrap();
        appender.append(off(100, 2), &change("update")).unwrap();
        appender.append(off(100, 4), &change("insert")).unwrap();
        appender.append(off(100, 6), &change("delete")).unwrap();
        appender.commit(&log, Lsn(100), Lsn(110)).unwrap();
        // The writer tells what it wrote: two inserts and a delete.
        log.note_rows(1);
        assert_eq!(log.rows(), 4);
        assert!(log.last_change().is_some());
        let bytes = log.bytes();
        assert!(bytes > 0);

        // A transaction cut short by a crash counts for nothing.
        appender.append(off(200, 0), &change("insert")).unwrap();
        appender.write_buffer().unwrap();
        drop(appender);
        let reopened = ShapeLog::open(&dir, 1 << 20).unwrap();
        assert_eq!(reopened.rows(), 4, "counted again from the messages");
        assert_eq!(reopened.bytes(), bytes);
        assert!(reopened.last_change().is_some());
    }

    #[test]
    fn a_read_only_view_follows_what_another_writer_commits_and_changes_nothing() {
        let (_tmp, dir) = temp_shape_dir();
        let log = ShapeLog::create(&dir, 64).unwrap();
        let mut appender = LogAppender::open(&log).unwrap();
        appender.append(off(100, 0), b"{\"a\":1}").unwrap();
        appender.commit(&log, Lsn(100), Lsn(110)).unwrap();
        // Half a transaction is on disk when the standby opens the log.
        appender.append(off(200, 0), b"{\"a\":2}").unwrap();
        appender.write_buffer().unwrap();
        let len_before = std::fs::metadata(dir.changes_log()).unwrap().len();

        let standby = ShapeLog::open_read_only(&dir, 64).unwrap();
        let news = standby.subscribe();
        assert_eq!(standby.last_offset(), Some(off(100, 0)));
        assert_eq!(
            std::fs::metadata(dir.changes_log()).unwrap().len(),
            len_before,
            "the writer's open transaction is left alone"
        );
        assert!(!standby.follow_writer().unwrap(), "nothing committed yet");
        assert!(!news.has_changed().unwrap());

        appender.append(off(200, 2), b"{\"a\":3}").unwrap();
        appender.commit(&log, Lsn(200), Lsn(210)).unwrap();
        for tx in 3..40u64 {
            appender
                .append(off(tx * 100, 0), b"{\"padding\":\"xxxxxxxxxxxxxxxx\"}")
                .unwrap();
            appender
                .commit(&log, Lsn(tx * 100), Lsn(tx * 100 + 10))
                .unwrap();
        }
        assert!(standby.follow_writer().unwrap());
        assert!(news.has_changed().unwrap());
        assert_eq!(standby.last_offset(), log.last_offset());
        assert_eq!(standby.last_commit(), Lsn(3900));
        // The same chunks, so the same (handle, offset) URLs, as the writer's own view.
        assert_eq!(standby.index().index, log.index().index);
        let (body, _) = read_all(&standby, off(100, 0));
        assert!(body.starts_with("{\"a\":2},{\"a\":3}"), "{body}");
        assert_eq!(
            read_all(&standby, off(1000, 0)),
            read_all(&log, off(1000, 0))
        );
    }

    #[test]
    fn a_reopened_appender_appends_after_what_is_there() {
        let (_tmp, dir) = temp_shape_dir();
        let log = ShapeLog::create(&dir, 1 << 20).unwrap();
        let mut appender = LogAppender::open(&log).unwrap();
        appender.append(off(100, 0), b"{\"a\":1}").unwrap();
        appender.commit(&log, Lsn(100), Lsn(110)).unwrap();
        drop(appender);
        let log = ShapeLog::open(&dir, 1 << 20).unwrap();
        let mut appender = LogAppender::open(&log).unwrap();
        appender.append(off(200, 0), b"{\"a\":2}").unwrap();
        appender.commit(&log, Lsn(200), Lsn(210)).unwrap();
        let (body, _) = read_all(&log, Offset::BeforeAll);
        assert_eq!(body, "{\"a\":1},{\"a\":2}");
    }

    #[test]
    fn an_abandoned_transaction_leaves_no_trace() {
        let (_tmp, dir) = temp_shape_dir();
        let log = ShapeLog::create(&dir, 1 << 20).unwrap();
        let mut appender = LogAppender::open(&log).unwrap();
        appender.append(off(100, 0), b"{}").unwrap();
        appender.abandon(&log).unwrap();
        appender.append(off(300, 0), b"{\"b\":1}").unwrap();
        appender.commit(&log, Lsn(300), Lsn(310)).unwrap();
        let (body, _) = read_all(&log, Offset::BeforeAll);
        assert_eq!(body, "{\"b\":1}");
    }

    /// The durability task fsyncs through the appender's file, which stays open after the
    /// appender closes it (idle appenders are closed) and after the shape is deleted.
    #[test]
    fn the_log_file_outlives_its_appender_for_the_fsync() {
        let (_tmp, dir) = temp_shape_dir();
        let log = ShapeLog::create(&dir, 1 << 20).unwrap();
        let mut appender = LogAppender::open(&log).unwrap();
        appender.append(off(100, 0), b"{}").unwrap();
        appender.commit(&log, Lsn(100), Lsn(110)).unwrap();
        let file = appender.log_file().clone();
        drop(appender);
        assert_eq!(file.dir(), &dir);
        assert_eq!(file.dir(), log.dir());
        file.sync_data().unwrap();
        dir.remove().unwrap();
        file.sync_data().unwrap();
    }

    /// A log written by many appenders in turn (each closed after its transaction, as with
    /// many shapes) opens its file once while the durability task still holds it, and again
    /// once nothing does; an appender never writes to a file other than `changes.log`.
    #[test]
    fn appenders_share_the_descriptor_the_fsync_still_holds() {
        let (_tmp, dir) = temp_shape_dir();
        let log = ShapeLog::create(&dir, 1 << 20).unwrap();
        let write = |tx: u64| {
            let mut appender = LogAppender::open(&log).unwrap();
            appender.append(off(tx, 0), b"{}").unwrap();
            appender.commit(&log, Lsn(tx), Lsn(tx + 10)).unwrap();
            appender.log_file().clone()
        };
        let held = write(100);
        let next = write(200);
        assert!(Arc::ptr_eq(&held.0, &next.0), "one descriptor while held");
        drop((held, next));
        let reopened = write(300);
        assert_eq!(log.last_offset(), Some(off(300, 0)));
        // Another file under the name (as a compaction puts one): the kept descriptor is
        // not used.
        let replacement = dir.path().join("replacement");
        std::fs::copy(dir.changes_log(), &replacement).unwrap();
        std::fs::rename(&replacement, dir.changes_log()).unwrap();
        let mut index = log.index().index.clone();
        index.note_commit(Lsn(300), reopened.file().metadata().unwrap().len());
        let file = File::open(dir.changes_log()).unwrap();
        let identity = identity_of(&file).unwrap();
        log.install(index, None, identity, 0);
        let after = write(400);
        assert!(!Arc::ptr_eq(&reopened.0, &after.0));
        assert_eq!(identity_of(after.file()).unwrap(), identity);
    }

    #[test]
    fn snapshot_chunks_are_read_whole() {
        let (_tmp, dir) = temp_shape_dir();
        let log = ShapeLog::create(&dir, 1 << 20).unwrap();
        let mut writer = snapshot_file::SnapshotWriter::create(&dir, 1 << 20).unwrap();
        writer.push_row(b"{\"r\":1}").unwrap();
        writer.push_row(b"{\"r\":2}").unwrap();
        log.set_snapshot(writer.finish(b"{\"end\":true}").unwrap());
        let mut out = Vec::new();
        assert_eq!(
            log.read_snapshot_chunk(0, &mut out, comma_separated)
                .unwrap(),
            Some(3)
        );
        assert_eq!(out, b"{\"r\":1},{\"r\":2},{\"end\":true}");
        assert_eq!(
            log.read_snapshot_chunk(1, &mut out, comma_separated)
                .unwrap(),
            None
        );
        let reopened = ShapeLog::open(&dir, 1 << 20).unwrap();
        assert_eq!(reopened.snapshot().map(SnapshotChunks::count), Some(1));
    }
}
