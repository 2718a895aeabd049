//! Writing the compacted file: the merged range, then the rest of the log byte for byte.
//!
//! ```text
//! changes.log.compact := mark(RANGE_START | FRESH_INSERTS)
//!                        { merged entries and retractions of one window, commit mark(CHUNK_END) }
//!                        merged entries of the last window, commit mark(CHUNK_END | RANGE_END, rows)
//!                        the old log from the cut on, unchanged
//! ```
//! Windows are closed once their merged entries reach `window_bytes`: after any entry outside
//! an earlier compacted range, and inside one only where one of its windows ended (so a new
//! window is always a union of old ones, and a reader paging inside an old window still
//! resumes correctly in the new file).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shapes::offset::Offset;
use shapes::wire::operation_of;

use super::super::positional::FileReader;
use super::super::record::{self, CommitMark, RecordKind, RecordScanner, Retraction};
use super::super::row_delta;
use super::CompactionError;
use super::merge::{MergedEntry, Origin, Window};

/// Reads of the old log: the merge looks at the clock once per read.
const READ_BUF: usize = 64 * 1024;
/// How long the merge keeps a CPU before it gives it up for [`PAUSE`].
const WORK_SLICE: Duration = Duration::from_millis(1);
/// Long enough for a woken walsender to send a commit and the proxy to write it (tens of
/// microseconds each); it costs the merge about a tenth of its speed.
const PAUSE: Duration = Duration::from_micros(100);

/// A [`Read`] that sleeps for [`PAUSE`] once per [`WORK_SLICE`] of work. The merge thread runs
/// under `SCHED_IDLE`, which ranks it below the proxy's own threads but not below a thread of
/// another scheduling group (every Postgres backend is one): a walsender woken onto its CPU
/// was measured waiting there up to 20 ms while the merge ran (`sched_yield` did not help:
/// it only lets the proxy's own threads go first). A sleep leaves the CPU to whatever waits.
struct Pausing<R> {
    inner: R,
    since: Instant,
}

impl<R> Pausing<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            since: Instant::now(),
        }
    }
}

impl<R: Read> Read for Pausing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.since.elapsed() >= WORK_SLICE {
            std::thread::sleep(PAUSE);
            self.since = Instant::now();
        }
        self.inner.read(buf)
    }
}

/// The log from its start, read by the merge.
fn paced_reader(file: &Arc<File>) -> BufReader<Pausing<FileReader>> {
    BufReader::with_capacity(READ_BUF, Pausing::new(FileReader::new(file.clone(), 0)))
}

/// Where the compacted range ends: right after the commit record of a transaction (or of an
/// earlier compacted range), which the range's end mark repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub pos: u64,
    pub commit_lsn: u64,
    pub end_lsn: u64,
}

/// The last transaction end at or before `target` outside an earlier compacted range.
pub fn find_cut(file: &Arc<File>, target: u64) -> io::Result<Option<Cut>> {
    let reader = paced_reader(file);
    let mut scanner = RecordScanner::new(reader.take(target));
    let (mut pos, mut in_range, mut cut) = (0, false, None);
    while let Some((header, payload)) = scanner.next_record()? {
        pos += header.total_len();
        if header.kind != RecordKind::Commit || Retraction::decode(payload).is_some() {
            continue;
        }
        match CommitMark::decode(payload) {
            Some(mark) if mark.has(CommitMark::RANGE_START) => in_range = true,
            Some(mark) if mark.has(CommitMark::RANGE_END) => in_range = false,
            _ => {}
        }
        if !in_range {
            cut = Some(Cut {
                pos,
                commit_lsn: header.tx,
                end_lsn: header.op,
            });
        }
    }
    Ok(cut)
}

/// What merging the range did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    pub entries_before: usize,
    pub entries_after: usize,
    pub windows: usize,
    /// Bytes written (the compacted range).
    pub bytes: u64,
}

/// Writes the compacted range of `[0, cut.pos)` of `file` to `out`, in windows of about
/// `window_bytes` merged bytes.
pub fn write_range(
    file: &Arc<File>,
    cut: Cut,
    window_bytes: u64,
    out: &File,
) -> Result<Merged, CompactionError> {
    let reader = paced_reader(file);
    let mut scanner = RecordScanner::new(reader.take(cut.pos));
    let mut writer = RangeWriter {
        out: BufWriter::with_capacity(256 * 1024, out),
        record: Vec::new(),
        merged: Merged::default(),
    };
    writer.mark(0, 0, CommitMark::RANGE_START | CommitMark::FRESH_INSERTS, 0)?;
    let mut window = Window::default();
    let (mut rows, mut txn_rows) = (0i64, 0i64);
    // Inside an earlier compacted range: how its merged inserts read, and where its windows
    // end.
    let mut range: Option<OldRange> = None;
    while let Some((header, payload)) = scanner.next_record()? {
        let offset = header.offset();
        match header.kind {
            RecordKind::Entry => {
                let origin = match range.as_mut() {
                    Some(old) => old.origin(offset),
                    None => {
                        txn_rows += row_delta(operation_of(payload));
                        Origin::Logged
                    }
                };
                window.push(offset, payload, origin)?;
                writer.merged.entries_before += 1;
                if range.is_none() && window.size() >= window_bytes {
                    writer.window(&mut window, header.tx, CommitMark::CHUNK_END, 0)?;
                }
            }
            RecordKind::Commit => {
                if let Some(retraction) = Retraction::decode(payload) {
                    if let Some(old) = range.as_mut() {
                        old.read(offset);
                    }
                    window.push_retraction(offset, retraction.held_from, retraction.message)?;
                    writer.merged.entries_before += 1;
                    continue;
                }
                let mark = CommitMark::decode(payload);
                if let Some(start) = mark.filter(|m| m.has(CommitMark::RANGE_START)) {
                    range = Some(OldRange::new(start.has(CommitMark::FRESH_INSERTS)));
                    continue;
                }
                if let Some(mark) = mark.filter(|m| m.has(CommitMark::RANGE_END)) {
                    range = None;
                    txn_rows = mark.rows;
                }
                rows += std::mem::take(&mut txn_rows);
                let window_ended = mark.is_some_and(|m| m.has(CommitMark::CHUNK_END));
                if window_ended {
                    if let Some(old) = range.as_mut() {
                        old.window_ended();
                    }
                    if window.size() >= window_bytes {
                        writer.window(&mut window, header.tx, CommitMark::CHUNK_END, 0)?;
                    }
                }
            }
            RecordKind::SnapshotComplete => {
                return Err(CompactionError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a snapshot record inside a change log",
                )));
            }
        }
    }
    if scanner.valid_len() != cut.pos {
        return Err(CompactionError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "shape log damaged inside its visible part",
        )));
    }
    let entries = window.take()?;
    writer.entries(entries)?;
    writer.mark(
        cut.commit_lsn,
        cut.end_lsn,
        CommitMark::CHUNK_END | CommitMark::RANGE_END,
        rows,
    )?;
    writer.out.flush()?;
    Ok(writer.merged)
}

/// An earlier compacted range being read.
struct OldRange {
    fresh_inserts: bool,
    /// The last entry of the window before the one being read (the range begins right
    /// after the snapshot).
    previous_end: Offset,
    /// The last entry read.
    last: Offset,
}

impl OldRange {
    fn new(fresh_inserts: bool) -> Self {
        Self {
            fresh_inserts,
            previous_end: Offset::SNAPSHOT_END,
            last: Offset::SNAPSHOT_END,
        }
    }

    /// The origin of the entry at `offset`, the next of the range.
    fn origin(&mut self, offset: Offset) -> Origin {
        self.read(offset);
        Origin::Merged {
            window_from: successor(self.previous_end),
            fresh_inserts: self.fresh_inserts,
        }
    }

    /// The entry or retraction at `offset` was read.
    fn read(&mut self, offset: Offset) {
        self.last = offset;
    }

    /// One of its windows ended.
    fn window_ended(&mut self) {
        self.previous_end = self.last;
    }
}

/// The first offset after `offset`.
pub fn successor(offset: Offset) -> Offset {
    match offset {
        Offset::At { tx, op: u64::MAX } => Offset::At {
            tx: tx.saturating_add(1),
            op: 0,
        },
        Offset::At { tx, op } => Offset::At { tx, op: op + 1 },
        Offset::BeforeAll => Offset::At { tx: 0, op: 0 },
    }
}

struct RangeWriter<'a> {
    out: BufWriter<&'a File>,
    record: Vec<u8>,
    merged: Merged,
}

impl RangeWriter<'_> {
    fn window(
        &mut self,
        window: &mut Window,
        tx: u64,
        flags: u8,
        rows: i64,
    ) -> Result<(), CompactionError> {
        let entries = window.take()?;
        self.entries(entries)?;
        self.mark(tx, tx, flags, rows)?;
        Ok(())
    }

    fn entries(&mut self, entries: Vec<(Offset, MergedEntry)>) -> io::Result<()> {
        if !entries.is_empty() {
            self.merged.windows += 1;
        }
        let mut retraction = Vec::new();
        for (offset, entry) in entries {
            let Offset::At { tx, op } = offset else {
                continue;
            };
            match entry {
                MergedEntry::Change(payload) => self.write(RecordKind::Entry, tx, op, &payload)?,
                MergedEntry::Retraction { held_from, message } => {
                    retraction.clear();
                    Retraction::encode(&mut retraction, held_from, &message);
                    self.write(RecordKind::Commit, tx, op, &retraction)?;
                }
            }
            self.merged.entries_after += 1;
        }
        Ok(())
    }

    fn mark(&mut self, tx: u64, op: u64, flags: u8, rows: i64) -> io::Result<()> {
        let mark = CommitMark { flags, rows }.encode();
        self.write(RecordKind::Commit, tx, op, &mark)
    }

    fn write(&mut self, kind: RecordKind, tx: u64, op: u64, payload: &[u8]) -> io::Result<()> {
        self.record.clear();
        record::encode(&mut self.record, kind, tx, op, payload);
        self.out.write_all(&self.record)?;
        self.merged.bytes += self.record.len() as u64;
        Ok(())
    }
}

/// Copies `[from, to)` of `src` to `dst` at `at`.
pub fn copy_range(src: &File, from: u64, to: u64, dst: &File, at: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = from;
    while pos < to {
        let n = usize::try_from((to - pos).min(buf.len() as u64)).unwrap_or(buf.len());
        src.read_exact_at(&mut buf[..n], pos)?;
        dst.write_all_at(&buf[..n], at + (pos - from))?;
        pos += n as u64;
    }
    Ok(())
}
