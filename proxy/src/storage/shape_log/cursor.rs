//! Reading a shape entry by entry, from a position finer than an offset: the sync protocols of
//! other client databases (RxDB, WatermelonDB) page through a shape a few hundred documents at
//! a time, and snapshot rows share one offset per chunk, so a page must be able to end (and
//! the next one start) between two rows of a chunk.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use shapes::offset::Offset;

use super::ShapeLog;
use super::record::{RecordKind, RecordScanner};

/// Where a reader stands: before the snapshot record at byte `pos` of `snapshot.log`, or after
/// a log entry (`Offset::SNAPSHOT_END`: after the whole snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Snapshot(u64),
    After(Offset),
}

impl Position {
    pub const START: Position = Position::Snapshot(0);
}

/// One message and where a reader stands after it.
#[derive(Debug)]
pub struct Entry {
    pub next: Position,
    /// The log offset of a change (`None` in the snapshot).
    pub offset: Option<Offset>,
    pub payload: Vec<u8>,
}

/// What one read gave.
#[derive(Debug)]
pub struct Entries {
    pub entries: Vec<Entry>,
    /// Where the next read starts.
    pub next: Position,
    /// Everything visible was read.
    pub at_end: bool,
}

impl ShapeLog {
    /// Up to `max` entries from `from`, through the snapshot and on into the log. An error of
    /// kind `InvalidInput` says `from` is not a position of this shape (not a record boundary
    /// of its snapshot, or past its end).
    pub fn entries_from(&self, from: Position, max: usize) -> io::Result<Entries> {
        let mut entries = Vec::new();
        let mut next = from;
        if let Position::Snapshot(pos) = from {
            let Some(end) = self.snapshot().map(|s| s.end) else {
                return Err(io::Error::other("the snapshot is not complete"));
            };
            next = self.snapshot_entries(pos, end, max, &mut entries)?;
        }
        loop {
            let (Position::After(after), true) = (next, entries.len() < max) else {
                return Ok(Entries {
                    entries,
                    next,
                    at_end: false,
                });
            };
            let Some(plan) = self.plan_read(after.max(Offset::SNAPSHOT_END))? else {
                return Ok(Entries {
                    entries,
                    next,
                    at_end: true,
                });
            };
            let reader = BufReader::new(plan.reader());
            let mut scanner = RecordScanner::new(reader.take(plan.end - plan.start));
            while entries.len() < max {
                let Some((offset, payload)) = scanner.next_entry_after(Some(plan.after))? else {
                    break;
                };
                entries.push(Entry {
                    next: Position::After(offset),
                    offset: Some(offset),
                    payload: payload.to_vec(),
                });
            }
            // Past the entries read, and past retractions not meant for this reader.
            let Some(last) = scanner.passed() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "shape log damaged inside its visible part",
                ));
            };
            next = Position::After(last);
            if last == plan.last && plan.to_visible_end {
                return Ok(Entries {
                    entries,
                    next,
                    at_end: true,
                });
            }
        }
    }

    /// Appends the snapshot entries from byte `pos` (up to `max` in all) to `entries`; returns
    /// where the reader then stands.
    fn snapshot_entries(
        &self,
        pos: u64,
        end: u64,
        max: usize,
        entries: &mut Vec<Entry>,
    ) -> io::Result<Position> {
        if pos > end {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "past the end of the snapshot",
            ));
        }
        let file = File::open(self.dir().snapshot_log())?;
        let mut reader = BufReader::new(file);
        reader.seek(SeekFrom::Start(pos))?;
        let mut scanner = RecordScanner::new(reader.take(end - pos));
        let mut at = pos;
        while at < end && entries.len() < max {
            let Some((header, payload)) = scanner.next_record()? else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a record boundary of the snapshot",
                ));
            };
            at += header.total_len();
            if header.kind == RecordKind::Entry {
                entries.push(Entry {
                    next: Position::Snapshot(at),
                    offset: None,
                    payload: payload.to_vec(),
                });
            }
        }
        Ok(if at >= end {
            Position::After(Offset::SNAPSHOT_END)
        } else {
            Position::Snapshot(at)
        })
    }
}
