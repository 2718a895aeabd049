//! Transactions captured for a shape while its snapshot is being taken (`capture.log`).
//!
//! The snapshot/stream boundary (proxy/ARCHITECTURE.md): a shape is registered before its
//! snapshot starts, so every later
//! transaction is captured here, in commit order, with its xid. When the snapshot is done, the
//! transactions it already contains (xid visible in it) are dropped and the rest move to the
//! shape's log.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use shapes::lsn::{Lsn, Xid, Xid32};
use shapes::offset::Offset;
use shapes::wire::SnapshotInfo;

use crate::storage::shape_log::record::{self, RecordKind, RecordScanner};
use crate::storage::shape_log::{LogAppender, ShapeLog};

pub const CAPTURE_FILE: &str = "capture.log";

#[derive(Debug)]
pub struct Capture {
    path: PathBuf,
    file: BufWriter<File>,
    /// Length of the file up to the last complete transaction.
    committed_len: u64,
    written: u64,
    record: Vec<u8>,
}

impl Capture {
    pub fn create(dir: &Path) -> io::Result<Self> {
        let path = dir.join(CAPTURE_FILE);
        let file = BufWriter::with_capacity(64 * 1024, File::create(&path)?);
        Ok(Self {
            path,
            file,
            committed_len: 0,
            written: 0,
            record: Vec::new(),
        })
    }

    pub fn append(&mut self, offset: Offset, message: &[u8]) -> io::Result<()> {
        let Offset::At { tx, op } = offset else {
            return Err(io::Error::other("captured entries need a log offset"));
        };
        self.write(RecordKind::Entry, tx, op, message)
    }

    /// Closes a captured transaction; the commit record carries its xid.
    pub fn commit(&mut self, xid: Xid32, commit_lsn: Lsn, end_lsn: Lsn) -> io::Result<()> {
        self.write(
            RecordKind::Commit,
            commit_lsn.as_u64(),
            end_lsn.as_u64(),
            &xid.0.to_le_bytes(),
        )?;
        self.file.flush()?;
        self.committed_len = self.written;
        Ok(())
    }

    /// Drops the open transaction's entries.
    pub fn abandon(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().set_len(self.committed_len)?;
        self.written = self.committed_len;
        Ok(())
    }

    fn write(&mut self, kind: RecordKind, tx: u64, op: u64, payload: &[u8]) -> io::Result<()> {
        self.record.clear();
        record::encode(&mut self.record, kind, tx, op, payload);
        self.file.write_all(&self.record)?;
        self.written += self.record.len() as u64;
        Ok(())
    }

    /// Moves the transactions the snapshot does not contain into the shape's log, in order,
    /// and deletes the capture file. Returns how many transactions were kept and dropped.
    pub fn replay_into(
        mut self,
        snapshot: &SnapshotInfo,
        log: &ShapeLog,
        appender: &mut LogAppender,
    ) -> io::Result<(usize, usize)> {
        self.file.flush()?;
        let file = File::open(&self.path)?;
        let mut scanner = RecordScanner::new(BufReader::with_capacity(256 * 1024, file));
        let mut entries: Vec<(Offset, Vec<u8>)> = Vec::new();
        let (mut kept, mut dropped) = (0, 0);
        // Once a transaction at or past xmax is seen, no later one can be in the snapshot.
        let mut filtering = true;
        let mut read = 0;
        while let Some((header, payload)) = scanner.next_record()? {
            read += header.total_len();
            if read > self.committed_len {
                break;
            }
            match header.kind {
                RecordKind::Entry => entries.push((
                    Offset::At {
                        tx: header.tx,
                        op: header.op,
                    },
                    payload.to_vec(),
                )),
                RecordKind::Commit => {
                    let xid32 = payload
                        .try_into()
                        .map(u32::from_le_bytes)
                        .map_err(|_| io::Error::other("capture commit without xid"))?;
                    let xid = Xid::widen(Xid32(xid32), snapshot.xmax);
                    if filtering && xid >= snapshot.xmax {
                        filtering = false;
                    }
                    if filtering && snapshot.sees(xid) {
                        dropped += 1;
                    } else {
                        for (offset, message) in &entries {
                            appender.append(*offset, message)?;
                        }
                        appender.commit(log, Lsn(header.tx), Lsn(header.op))?;
                        kept += 1;
                    }
                    entries.clear();
                }
                RecordKind::SnapshotComplete => {}
            }
        }
        drop(self.file);
        std::fs::remove_file(&self.path)?;
        Ok((kept, dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_seen_by_the_snapshot_are_dropped_and_the_rest_kept_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = ShapeLog::create(dir.path(), 1 << 20).unwrap();
        let mut capture = Capture::create(dir.path()).unwrap();
        // xid 100 committed before the snapshot; 101 was in progress; 105 started after.
        for (xid, lsn) in [(100u32, 10u64), (101, 20), (105, 30)] {
            capture
                .append(
                    Offset::log(Lsn(lsn), 0),
                    format!("{{\"xid\":{xid}}}").as_bytes(),
                )
                .unwrap();
            capture.commit(Xid32(xid), Lsn(lsn), Lsn(lsn + 1)).unwrap();
        }
        capture
            .append(Offset::log(Lsn(40), 0), b"{\"open\":1}")
            .unwrap();
        capture.abandon().unwrap();

        let snapshot = SnapshotInfo::parse("101:102:101").unwrap();
        let mut appender = LogAppender::open(&log).unwrap();
        let (kept, dropped) = capture.replay_into(&snapshot, &log, &mut appender).unwrap();
        assert_eq!((kept, dropped), (2, 1));
        assert!(!dir.path().join(CAPTURE_FILE).exists());

        let plan = log.plan_read(Offset::BeforeAll).unwrap();
        let mut out = Vec::new();
        log.read(
            &plan,
            &mut out,
            crate::storage::shape_log::Framing::JsonArray { first: true },
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"xid\":101},{\"xid\":105}"
        );
        assert_eq!(log.last_commit(), Lsn(30));
    }
}
