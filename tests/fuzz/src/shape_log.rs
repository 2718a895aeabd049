//! The shape-log readers on damaged files: opening a log (recovery), reading its entries as a
//! client does, the snapshot file's chunk layout, and the record scanner itself.
//!
//! Input: `chunk_bytes: u8`, `snapshot_len: u16 LE`, then that many bytes of `snapshot.log`
//! and the rest as `changes.log` (the seeds are files written by the real writers, see
//! `seeds::shape_log`). Properties: opening never fails on damage (it cuts back to the last
//! whole transaction); reading everything after `-1`, a request at a time, makes progress,
//! never reports damage in the part the open kept, and (when the file's offsets increase, as
//! the appender writes them) returns each kept entry once, in order; every snapshot chunk
//! reads.

use std::path::Path;
use std::sync::OnceLock;

use proxy::storage::shape_dir::ShapeDir;
use proxy::storage::shape_log::ShapeLog;
use proxy::storage::shape_log::record::{CommitMark, RecordKind, RecordScanner, Retraction};
use shapes::offset::Offset;

pub fn run(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let Some((snapshot_len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let snapshot_len = usize::from(u16::from_le_bytes(*snapshot_len)).min(rest.len());
    let (snapshot, changes) = rest.split_at(snapshot_len);
    scan(snapshot);
    scan(changes);

    let dir = dir();
    write(&dir.changes_log(), changes);
    write(&dir.snapshot_log(), snapshot);
    let chunk_bytes = u64::from(chunk) * 16;
    let log = ShapeLog::open(dir, chunk_bytes).expect("opening a damaged log cuts it back");
    let kept = kept_entries(changes);
    let ordered = kept.windows(2).all(|pair| pair[0] < pair[1]);

    let mut out = Vec::new();
    let mut after = Offset::BeforeAll;
    let mut read: Vec<Offset> = Vec::new();
    while let Some(plan) = log
        .plan_read(after)
        .unwrap_or_else(|e| panic!("planning a read after {after:?}: {e}"))
    {
        out.clear();
        let outcome = log
            .read(&plan, &mut out, sse)
            .unwrap_or_else(|e| panic!("reading after {after:?} ({plan:?}): {e}"));
        let Some(last) = outcome.last_offset else {
            // Only a file whose records were reordered (valid checksums, offsets going back:
            // never written by the appender) can plan a read with nothing after `after`.
            assert!(
                !ordered,
                "a read after {after:?} returned nothing ({plan:?})"
            );
            break;
        };
        assert!(last > after, "a read after {after:?} went back to {last:?}");
        read.extend(kept.iter().copied().filter(|o| *o > after && *o <= last));
        after = last;
    }
    if ordered {
        assert_eq!(read, kept, "the entries read are those kept");
        assert_eq!(log.last_offset(), kept.last().copied());
    }

    if let Some(chunks) = log.snapshot() {
        for k in 0..chunks.count() {
            out.clear();
            let entries = log
                .read_snapshot_chunk(k, &mut out, comma_separated)
                .unwrap_or_else(|e| panic!("snapshot chunk {k}: {e}"));
            assert!(
                entries.is_some(),
                "snapshot chunk {k} of {}",
                chunks.count()
            );
        }
        let past = log
            .read_snapshot_chunk(chunks.count(), &mut out, sse)
            .expect("a chunk past the end");
        assert!(past.is_none());
    }
}

/// A reader's framing, as server-sent events.
fn sse(out: &mut Vec<u8>, message: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(message);
    out.extend_from_slice(b"\n\n");
}

/// A reader's framing, as the elements of a JSON array.
fn comma_separated(out: &mut Vec<u8>, message: &[u8]) {
    if !out.is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(message);
}

/// Runs the record scanner over `bytes` as they are.
fn scan(bytes: &[u8]) {
    let mut scanner = RecordScanner::new(bytes);
    let mut len = 0;
    while let Ok(Some((header, payload))) = scanner.next_record() {
        assert_eq!(payload.len(), header.payload_len as usize);
        len += header.total_len();
    }
    assert_eq!(scanner.valid_len(), len);
    assert!(len <= bytes.len() as u64);
}

/// The entry offsets of the whole transactions at the start of `changes`: what opening the log
/// keeps (entries up to the last commit record before damage or a snapshot-complete record).
fn kept_entries(changes: &[u8]) -> Vec<Offset> {
    let mut scanner = RecordScanner::new(changes);
    let mut kept = Vec::new();
    let mut pending = Vec::new();
    while let Ok(Some((header, payload))) = scanner.next_record() {
        let offset = Offset::At {
            tx: header.tx,
            op: header.op,
        };
        match header.kind {
            RecordKind::Entry => pending.push(offset),
            // A conditional delete of a compacted range: an entry of the index.
            RecordKind::Commit if Retraction::decode(payload).is_some() => pending.push(offset),
            // The mark opening a compacted range ends no transaction.
            RecordKind::Commit
                if header.tx == 0
                    && CommitMark::decode(payload)
                        .is_some_and(|mark| mark.has(CommitMark::RANGE_START)) => {}
            RecordKind::Commit => kept.append(&mut pending),
            RecordKind::SnapshotComplete => break,
        }
    }
    kept
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// This process's scratch directory for the log under test: in memory where there is a
/// tmpfs (opening a damaged log fsyncs the file it cut back, once per input).
fn dir() -> &'static ShapeDir {
    static DIR: OnceLock<ShapeDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        let dir = ShapeDir::at(base.join(format!("shapesync-fuzz-{}", std::process::id())));
        dir.create().expect("a scratch directory");
        dir
    })
}
