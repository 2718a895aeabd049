//! The compaction of real log files: what readers, a reopened log and a standby see.

use std::collections::HashMap;

use shapes::lsn::Lsn;
use shapes::offset::Offset;

use super::policy::CompactionPolicy;
use super::{MIN_WINDOW, install};
use crate::storage::shape_dir::ShapeDir;
use crate::storage::shape_log::cursor::Position;
use crate::storage::shape_log::{History, LogAppender, ShapeLog, TxnChanges};
use shapes::wire::Operation;

const POLICY: CompactionPolicy = CompactionPolicy {
    compact_after: 2000,
};

/// Windows of about a chunk (1500 bytes here), so that a log of a few kilobytes has many.
fn prepare(
    log: &ShapeLog,
    policy: CompactionPolicy,
) -> Result<Option<super::Prepared>, super::CompactionError> {
    super::prepare_in_windows(log, policy, 0)
}

fn message(op: &str, id: u32, n: u32, lsn: u64, pos: u64) -> Vec<u8> {
    let value = match op {
        "delete" => format!(r#"{{"id":"{id}"}}"#),
        _ => format!(r#"{{"id":"{id}","n":"{n}"}}"#),
    };
    format!(
        r#"{{"key":"k{id}","value":{value},"headers":{{"operation":"{op}","relation":["public","t"],"txids":[1],"lsn":"{lsn}","op_position":{pos}}}}}"#
    )
    .into_bytes()
}

/// Writes a history: rows of ten keys inserted, updated many times, some deleted and
/// inserted again (whether a key is there is read from the log).
fn write_history(log: &ShapeLog, appender: &mut LogAppender, from_tx: u64, txns: u64) {
    let mut present = Rows::new();
    read_from(log, Offset::BeforeAll, &mut present);
    for t in from_tx..from_tx + txns {
        let lsn = t * 100;
        for (i, id) in [(t % 10) as u32, ((t + 3) % 10) as u32]
            .into_iter()
            .enumerate()
        {
            let key = format!("k{id}");
            let op = match present.contains_key(&key) {
                false => "insert",
                true if t % 7 == 0 && i == 1 => "delete",
                true => "update",
            };
            if op == "delete" {
                present.remove(&key);
            } else {
                present.insert(key, serde_json::Value::Null);
            }
            let pos = i as u64 * 2;
            let bytes = message(op, id, t as u32, lsn, pos);
            appender
                .append(Offset::At { tx: lsn, op: pos }, &bytes)
                .unwrap();
        }
        appender.commit(log, Lsn(lsn), Lsn(lsn + 10)).unwrap();
    }
}

type Rows = HashMap<String, serde_json::Value>;

fn apply(rows: &mut Rows, payload: &[u8]) {
    let m: serde_json::Value = serde_json::from_slice(payload).unwrap();
    let key = m["key"].as_str().unwrap().to_owned();
    match m["headers"]["operation"].as_str().unwrap() {
        "insert" => {
            rows.insert(key, m["value"].clone());
        }
        "update" => {
            if let Some(row) = rows.get_mut(&key) {
                for (k, v) in m["value"].as_object().unwrap() {
                    row[k] = v.clone();
                }
            }
        }
        _ => {
            rows.remove(&key);
        }
    }
}

/// Every entry after `after`, walking the log response by response; the response ends.
fn read_from(log: &ShapeLog, mut after: Offset, rows: &mut Rows) -> Vec<Offset> {
    let mut ends = Vec::new();
    while let Some(plan) = log.plan_read(after).unwrap() {
        let mut entries = Vec::new();
        log.read(&plan, &mut Vec::new(), |_, m| entries.push(m.to_vec()))
            .unwrap();
        for e in &entries {
            apply(rows, e);
        }
        after = plan.last;
        ends.push(after);
    }
    ends
}

fn offsets(log: &ShapeLog) -> Vec<Offset> {
    let mut all = Vec::new();
    let mut after = Offset::BeforeAll;
    while let Some(plan) = log.plan_read(after).unwrap() {
        let mut scanner_offsets = Vec::new();
        let mut out = Vec::new();
        log.read(&plan, &mut out, |_, m| {
            let v: serde_json::Value = serde_json::from_slice(m).unwrap();
            let lsn: u64 = v["headers"]["lsn"].as_str().unwrap().parse().unwrap();
            let op = v["headers"]["op_position"].as_u64().unwrap();
            scanner_offsets.push(Offset::At { tx: lsn, op });
        })
        .unwrap();
        all.extend(scanner_offsets);
        after = plan.last;
    }
    all
}

fn setup(chunk_bytes: u64) -> (tempfile::TempDir, ShapeDir, ShapeLog, LogAppender) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ShapeDir::at(tmp.path().join("s"));
    let log = ShapeLog::create(&dir, chunk_bytes).unwrap();
    let appender = LogAppender::open(&log).unwrap();
    (tmp, dir, log, appender)
}

#[test]
fn after_compaction_resuming_from_every_old_offset_gives_the_same_rows_and_the_log_shrinks() {
    let (_tmp, dir, log, mut appender) = setup(1500);
    write_history(&log, &mut appender, 1, 150);
    let before_offsets = offsets(&log);
    let mut expected = Rows::new();
    read_from(&log, Offset::BeforeAll, &mut expected);
    // Each held offset and the rows a client had there.
    let held: Vec<(Offset, Rows)> = std::iter::once(Offset::BeforeAll)
        .chain(before_offsets.iter().copied())
        .map(|o| {
            let mut rows = Rows::new();
            for (_, bytes) in entries_upto(&log, o) {
                apply(&mut rows, &bytes);
            }
            (o, rows)
        })
        .collect();
    let bytes_before = log.bytes();

    let prepared = prepare(&log, POLICY).unwrap().expect("due");
    // The writer goes on between preparing and installing.
    write_history(&log, &mut appender, 151, 3);
    read_from(&log, *before_offsets.last().unwrap(), &mut expected);
    let (stats, _) = install(&log, prepared).unwrap();
    drop(appender);
    assert!(stats.bytes_after < stats.bytes_before / 3, "{stats:?}");
    assert!(log.bytes() < bytes_before);
    assert!(!dir.compacting_log().exists());

    for (offset, mut rows) in held {
        let ends = read_from(&log, offset, &mut rows);
        assert_eq!(
            rows, expected,
            "resuming from {offset} (responses {ends:?})"
        );
    }
    // The same after reopening, and the writer appends after it.
    let reopened = ShapeLog::open(&dir, 1500).unwrap();
    assert_eq!(
        reopened.rows(),
        expected.len() as u64,
        "rows counted from the marks"
    );
    assert_eq!(reopened.last_offset(), log.last_offset());
    assert_eq!(reopened.index().index, log.index().index, "the same chunks");
    let mut appender = LogAppender::open(&reopened).unwrap();
    write_history(&reopened, &mut appender, 154, 2);
    assert!(reopened.last_offset() > log.last_offset());
    let mut rows = expected.clone();
    read_from(&reopened, log.last_offset().unwrap(), &mut rows);
    let mut all = Rows::new();
    read_from(&reopened, Offset::BeforeAll, &mut all);
    assert_eq!(all, rows, "appended after the compacted file");
}

/// The entries a client that read the log up to `upto` applied (whole history, old file).
fn entries_upto(log: &ShapeLog, upto: Offset) -> Vec<(Offset, Vec<u8>)> {
    let mut out = Vec::new();
    let mut after = Offset::BeforeAll;
    while let Some(plan) = log.plan_read(after).unwrap() {
        let mut offsets_seen = Vec::new();
        log.read(&plan, &mut Vec::new(), |_, m| offsets_seen.push(m.to_vec()))
            .unwrap();
        for m in offsets_seen {
            let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
            let lsn: u64 = v["headers"]["lsn"].as_str().unwrap().parse().unwrap();
            let op = v["headers"]["op_position"].as_u64().unwrap();
            let o = Offset::At { tx: lsn, op };
            if o <= upto {
                out.push((o, m));
            }
        }
        after = plan.last;
    }
    out
}

#[test]
fn a_read_planned_before_the_swap_finishes_on_the_old_file() {
    let (_tmp, _dir, log, mut appender) = setup(1 << 20);
    write_history(&log, &mut appender, 1, 100);
    let plan = log.plan_read(Offset::BeforeAll).unwrap().unwrap();
    // Another descriptor of the same file, to watch it after the swap.
    let witness = std::fs::File::open(log.dir().changes_log()).unwrap();
    let prepared = prepare(&log, POLICY).unwrap().unwrap();
    let (_, retired) = install(&log, prepared).unwrap();
    let mut count = 0;
    log.read(&plan, &mut Vec::new(), |_, _| count += 1).unwrap();
    assert_eq!(count, 200, "the whole old history");
    drop(plan);
    retired.release(std::time::Duration::from_secs(5));
    // Another process (a standby) still reading the old file reads it whole.
    assert!(witness.metadata().unwrap().len() > 0);
}

#[test]
fn a_second_compaction_merges_the_first_and_new_history() {
    let (_tmp, dir, log, mut appender) = setup(1500);
    write_history(&log, &mut appender, 1, 100);
    install(&log, prepare(&log, POLICY).unwrap().unwrap()).unwrap();
    let first = log.bytes();
    let mut appender = LogAppender::open(&log).unwrap();
    write_history(&log, &mut appender, 101, 200);
    let mut expected = Rows::new();
    read_from(&log, Offset::BeforeAll, &mut expected);
    install(&log, prepare(&log, POLICY).unwrap().unwrap()).unwrap();
    assert!(log.bytes() < first * 2, "{} vs {first}", log.bytes());
    let mut rows = Rows::new();
    read_from(&log, Offset::BeforeAll, &mut rows);
    assert_eq!(rows, expected);
    let reopened = ShapeLog::open(&dir, 1500).unwrap();
    assert_eq!(reopened.index().index, log.index().index);
}

#[test]
fn a_compaction_not_installed_leaves_the_old_log_whole_after_a_crash() {
    let (_tmp, dir, log, mut appender) = setup(1500);
    write_history(&log, &mut appender, 1, 100);
    let bytes = log.bytes();
    let prepared = prepare(&log, POLICY).unwrap().unwrap();
    assert!(dir.compacting_log().exists());
    std::mem::forget(prepared);
    let reopened = ShapeLog::open(&dir, 1500).unwrap();
    assert!(
        !dir.compacting_log().exists(),
        "the unfinished file is removed"
    );
    assert_eq!(reopened.bytes(), bytes);
}

#[test]
fn a_standby_notices_the_new_file_and_reads_it_whole() {
    let (_tmp, dir, log, mut appender) = setup(1500);
    write_history(&log, &mut appender, 1, 100);
    let standby = ShapeLog::open_read_only(&dir, 1500).unwrap();
    install(&log, prepare(&log, POLICY).unwrap().unwrap()).unwrap();
    let mut appender = LogAppender::open(&log).unwrap();
    write_history(&log, &mut appender, 101, 2);
    assert!(standby.follow_writer().unwrap());
    assert_eq!(standby.index().index, log.index().index);
    let fresh = ShapeLog::open_read_only(&dir, 1500).unwrap();
    assert_eq!(standby.rows(), fresh.rows());
    assert!(!standby.follow_writer().unwrap(), "nothing new since");
}

#[test]
fn by_default_a_window_holds_at_least_min_window_bytes() {
    let (_tmp, _dir, log, mut appender) = setup(1500);
    write_history(&log, &mut appender, 1, 150);
    let (stats, _) = install(&log, super::prepare(&log, POLICY).unwrap().unwrap()).unwrap();
    assert_eq!(stats.windows, 1);
    assert!(MIN_WINDOW > log.bytes());
    assert!(stats.entries_after <= 10, "one entry per key: {stats:?}");
}

#[test]
fn a_log_too_small_to_compact_is_left_alone() {
    let (_tmp, _dir, log, mut appender) = setup(1500);
    write_history(&log, &mut appender, 1, 2);
    assert!(!super::due(&log, POLICY));
    let policy = CompactionPolicy {
        compact_after: 1 << 30,
    };
    assert!(prepare(&log, policy).unwrap().is_none());
}

/// Every message a reader from `after` gets, walking response by response.
fn messages_from(log: &ShapeLog, mut after: Offset) -> Vec<serde_json::Value> {
    let mut messages = Vec::new();
    while let Some(plan) = log.plan_read(after).unwrap() {
        log.read(&plan, &mut Vec::new(), |_, m| {
            messages.push(serde_json::from_slice(m).unwrap());
        })
        .unwrap();
        after = plan.last;
    }
    messages
}

#[test]
fn rows_inserted_and_deleted_before_the_cut_reach_only_readers_that_may_hold_them() {
    let (_tmp, dir, log, mut appender) = setup(1500);
    // Each transaction updates a lasting row, inserts a short-lived one and deletes the one
    // before it.
    for t in 1..=80u64 {
        let lsn = t * 100;
        let mut entries = vec![message(
            if t == 1 { "insert" } else { "update" },
            0,
            t as u32,
            lsn,
            0,
        )];
        entries.push(message("insert", 1000 + t as u32, 0, lsn, 2));
        if t > 1 {
            entries.push(message("delete", 1000 + t as u32 - 1, 0, lsn, 4));
        }
        for (i, bytes) in entries.iter().enumerate() {
            appender
                .append(
                    Offset::At {
                        tx: lsn,
                        op: i as u64 * 2,
                    },
                    bytes,
                )
                .unwrap();
        }
        appender.commit(&log, Lsn(lsn), Lsn(lsn + 10)).unwrap();
    }
    let before = offsets(&log);
    let held: Vec<(Offset, Rows)> = before
        .iter()
        .map(|o| {
            let mut rows = Rows::new();
            for (_, bytes) in entries_upto(&log, *o) {
                apply(&mut rows, &bytes);
            }
            (*o, rows)
        })
        .collect();
    let mut expected = Rows::new();
    read_from(&log, Offset::BeforeAll, &mut expected);

    // One merge window: a row inserted and deleted in it leaves no message for new readers.
    let prepared = super::prepare_in_windows(&log, POLICY, 1 << 20);
    let (stats, _) = install(&log, prepared.unwrap().expect("due")).unwrap();
    assert_eq!(stats.windows, 1);

    // A new reader: a clean history, with none of the rows that lived and died in the
    // compacted range.
    let messages = messages_from(&log, Offset::BeforeAll);
    let mut rows = Rows::new();
    for m in &messages {
        let key = m["key"].as_str().unwrap().to_owned();
        let present = rows.contains_key(&key);
        match m["headers"]["operation"].as_str().unwrap() {
            "insert" => assert!(!present, "insert of a held row: {m}"),
            "delete" => assert!(present, "delete of a row never sent: {m}"),
            _ => assert!(present, "update of a row never sent: {m}"),
        }
        apply(&mut rows, serde_json::to_vec(m).unwrap().as_slice());
    }
    assert_eq!(rows, expected);
    let tail_keys = messages.iter().filter(|m| m["key"] != "k0").count();
    assert!(
        tail_keys <= 8,
        "only the kept tail's short-lived rows: {tail_keys} messages of {}",
        messages.len()
    );
    // Readers that held a short-lived row before the compaction see it go, also paging a
    // few entries at a time (RxDB, WatermelonDB).
    let from_start = (Offset::SNAPSHOT_END, Rows::new());
    for (offset, mut rows) in std::iter::once(from_start).chain(held) {
        let mut paged = rows.clone();
        read_from(&log, offset, &mut rows);
        assert_eq!(rows, expected, "resuming from {offset}");
        let mut at = Position::After(offset);
        loop {
            let page = log.entries_from(at, 2).unwrap();
            for entry in &page.entries {
                apply(&mut paged, &entry.payload);
            }
            assert!(page.at_end || page.next != at, "paging from {at:?} goes on");
            at = page.next;
            if page.at_end {
                break;
            }
        }
        assert_eq!(paged, expected, "paging from {offset}");
    }
    let reopened = ShapeLog::open(&dir, 1500).unwrap();
    assert_eq!(reopened.index().index, log.index().index);
    assert_eq!(reopened.rows(), expected.len() as u64);
    // Compacted again with more history, the retractions merge with it.
    let mut appender = LogAppender::open(&log).unwrap();
    write_history(&log, &mut appender, 81, 60);
    let mut expected = Rows::new();
    read_from(&log, Offset::BeforeAll, &mut expected);
    install(&log, prepare(&log, POLICY).unwrap().expect("due")).unwrap();
    let mut rows = Rows::new();
    read_from(&log, Offset::BeforeAll, &mut rows);
    assert_eq!(rows, expected);
}

#[test]
fn a_log_of_inserts_is_never_due_one_of_updates_is_and_reopening_counts_the_same() {
    let (_tmp, dir, log, mut appender) = setup(1500);
    for t in 1..=200u64 {
        let lsn = t * 100;
        let bytes = message("insert", 100 + t as u32, 0, lsn, 0);
        appender
            .append(Offset::At { tx: lsn, op: 0 }, &bytes)
            .unwrap();
        let entries = appender.commit(&log, Lsn(lsn), Lsn(lsn + 10)).unwrap();
        let mut changes = TxnChanges::default();
        changes.add(Operation::Insert);
        log.note_txn(changes, entries);
    }
    let inserts = History {
        entries: 200,
        superseding: 0,
    };
    assert_eq!(log.history(), inserts);
    assert!(log.bytes() > 10 * POLICY.compact_after);
    assert!(!super::due(&log, POLICY), "nothing to merge");
    drop(appender);
    let reopened = ShapeLog::open(&dir, 1500).unwrap();
    assert_eq!(reopened.history(), inserts, "counted from the file");
    assert!(!super::due(&reopened, POLICY));

    let mut appender = LogAppender::open(&reopened).unwrap();
    write_history(&reopened, &mut appender, 201, 100);
    drop(appender);
    let reopened = ShapeLog::open(&dir, 1500).unwrap();
    let history = reopened.history();
    assert_eq!(history.entries, 400);
    assert!(history.superseding >= 150, "{history:?}");
    assert!(super::due(&reopened, POLICY));
    install(&reopened, prepare(&reopened, POLICY).unwrap().expect("due")).unwrap();
    assert_eq!(
        reopened.history(),
        History::default(),
        "a new file's history"
    );
}
