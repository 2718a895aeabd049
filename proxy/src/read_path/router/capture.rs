//! Transactions captured for a shape while its snapshot is being taken
//! (`storage::shape_log::capture_file`).
//!
//! The snapshot/stream boundary (proxy/ARCHITECTURE.md): a shape is registered before its
//! snapshot starts, so every later
//! transaction is captured, in commit order, with its xid. When the snapshot is done, the
//! transactions it already contains (xid visible in it) are dropped and the rest move to the
//! shape's log.

use std::io;

use shapes::lsn::Xid;
use shapes::wire::{SnapshotInfo, operation_of};

use crate::storage::shape_log::capture_file::CaptureFile;
use crate::storage::shape_log::{LogAppender, ShapeLog, TxnChanges};

/// Moves the transactions the snapshot does not contain from `capture` into the shape's log,
/// in order, and deletes the capture file. Returns how many transactions were kept and
/// dropped.
pub fn replay_into(
    capture: CaptureFile,
    snapshot: &SnapshotInfo,
    log: &ShapeLog,
    appender: &mut LogAppender,
) -> io::Result<(usize, usize)> {
    let (mut kept, mut dropped) = (0, 0);
    // Once a transaction at or past xmax is seen, no later one can be in the snapshot.
    let mut filtering = true;
    capture.drain(|txn| {
        let xid = Xid::widen(txn.xid, snapshot.xmax);
        if filtering && xid >= snapshot.xmax {
            filtering = false;
        }
        if filtering && snapshot.sees(xid) {
            dropped += 1;
            return Ok(());
        }
        let mut changes = TxnChanges::default();
        for (offset, message) in txn.entries {
            appender.append(*offset, message)?;
            if let Some(operation) = operation_of(message) {
                changes.add(operation);
            }
        }
        let entries = appender.commit(log, txn.commit_lsn, txn.end_lsn)?;
        log.note_txn(changes, entries);
        kept += 1;
        Ok(())
    })?;
    Ok((kept, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::shape_dir::ShapeDir;
    use shapes::lsn::{Lsn, Xid32};
    use shapes::offset::Offset;

    #[test]
    fn transactions_seen_by_the_snapshot_are_dropped_and_the_rest_kept_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ShapeDir::at(tmp.path());
        let log = ShapeLog::create(&dir, 1 << 20).unwrap();
        let mut capture = CaptureFile::create(&dir).unwrap();
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
        let (kept, dropped) = replay_into(capture, &snapshot, &log, &mut appender).unwrap();
        assert_eq!((kept, dropped), (2, 1));
        assert!(!dir.capture_log().exists());

        let plan = log.plan_read(Offset::BeforeAll).unwrap().unwrap();
        let mut out = Vec::new();
        log.read(&plan, &mut out, |out: &mut Vec<u8>, message: &[u8]| {
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(message);
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"xid\":101},{\"xid\":105}"
        );
        assert_eq!(log.last_commit(), Lsn(30));
    }
}
