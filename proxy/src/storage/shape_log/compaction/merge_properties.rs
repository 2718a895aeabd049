//! Property: for random histories of inserts, updates, deletes and key changes over a few
//! keys, cut into random merge windows (and merged again in wider windows, as a second
//! compaction does), a client resuming from ANY offset of the original history, holding the
//! rows it had there, ends with the rows the whole history gives; and a client reading the
//! compacted log from `-1` or from the end of a window gets a clean history (no delete of a
//! row it does not hold, no insert of one it holds) and holds exactly the history's rows at
//! every window end.
//!
//! proptest prints the smallest failing history; `PROPTEST_CASES` runs more, and failures
//! are replayed from `proptest-regressions/`.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use shapes::lsn::Lsn;
use shapes::offset::Offset;
use shapes::schema::QualifiedName;
use shapes::wire::{ChangeMessage, LogPosition, Operation};

use super::super::build::successor;
use super::super::message;
use super::{MergedEntry, Origin, Window};

type Row = BTreeMap<String, Option<String>>;
type Rows = HashMap<String, Row>;

/// One step the generator asks for; the model turns it into a valid change.
#[derive(Debug, Clone)]
struct Step {
    kind: u8,
    key: u8,
    other: u8,
    columns: u8,
    a: u8,
    b: u8,
    commit: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..4,
        0u8..4,
        0u8..4,
        1u8..4,
        0u8..5,
        0u8..5,
        any::<bool>(),
    )
        .prop_map(|(kind, key, other, columns, a, b, commit)| Step {
            kind,
            key,
            other,
            columns,
            a,
            b,
            commit,
        })
}

struct History {
    full: bool,
    table: QualifiedName,
    rows: HashMap<u8, (String, String)>,
    lsn: u64,
    op: u64,
    log: Vec<(Offset, Vec<u8>)>,
}

impl History {
    fn key(&self, id: u8) -> String {
        format!("\"public\".\"t\"/\"{id}\"")
    }

    fn write(
        &mut self,
        id: u8,
        operation: Operation,
        op: u64,
        value: &[(&str, Option<String>)],
        old: Option<&[(&str, Option<String>)]>,
    ) {
        let key = self.key(id);
        let message = ChangeMessage {
            key: &key,
            operation,
            relation: &self.table,
            log: Some(LogPosition {
                txid: self.lsn,
                lsn: Lsn(self.lsn),
                op_position: op,
                last: false,
            }),
            key_change: None,
            snapshot_mark: None,
        };
        let mut bytes = Vec::new();
        let pairs = value.iter().map(|(n, v)| (*n, v.as_deref()));
        match old {
            Some(old) => {
                let mut old = old.iter().map(|(n, v)| (*n, v.as_deref()));
                message.write(&mut bytes, pairs, Some(&mut old));
            }
            None => message.write(&mut bytes, pairs, None),
        }
        self.log.push((Offset::At { tx: self.lsn, op }, bytes));
    }

    fn full_row(id: u8, a: &str, b: &str) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("id", Some(id.to_string())),
            ("a", Some(a.to_owned())),
            ("b", Some(b.to_owned())),
        ]
    }

    fn apply(&mut self, s: &Step) {
        let op = self.op;
        self.op += 2;
        let (a, b) = (format!("a{}", s.a), format!("b{}", s.b));
        match (s.kind, self.rows.get(&s.key).cloned()) {
            (_, None) => {
                self.write(
                    s.key,
                    Operation::Insert,
                    op,
                    &Self::full_row(s.key, &a, &b),
                    None,
                );
                self.rows.insert(s.key, (a, b));
            }
            (0, Some(old)) => {
                let delete = if self.full {
                    Self::full_row(s.key, &old.0, &old.1)
                } else {
                    vec![("id", Some(s.key.to_string()))]
                };
                self.write(s.key, Operation::Delete, op, &delete, None);
                self.rows.remove(&s.key);
            }
            (1, Some(old)) if !self.rows.contains_key(&s.other) => {
                // A key change: delete of the old key at n, insert of the new one at n + 1.
                let delete = if self.full {
                    Self::full_row(s.key, &old.0, &old.1)
                } else {
                    vec![("id", Some(s.key.to_string()))]
                };
                self.write(s.key, Operation::Delete, op, &delete, None);
                self.rows.remove(&s.key);
                self.write(
                    s.other,
                    Operation::Insert,
                    op + 1,
                    &Self::full_row(s.other, &a, &b),
                    None,
                );
                self.rows.insert(s.other, (a, b));
            }
            (_, Some(old)) => {
                let new_a = if s.columns & 1 != 0 { a } else { old.0.clone() };
                let new_b = if s.columns & 2 != 0 { b } else { old.1.clone() };
                let mut changed = Vec::new();
                let mut old_values = Vec::new();
                if new_a != old.0 {
                    changed.push(("a", Some(new_a.clone())));
                    old_values.push(("a", Some(old.0.clone())));
                }
                if new_b != old.1 {
                    changed.push(("b", Some(new_b.clone())));
                    old_values.push(("b", Some(old.1.clone())));
                }
                if changed.is_empty() {
                    return;
                }
                if self.full {
                    let row = Self::full_row(s.key, &new_a, &new_b);
                    self.write(s.key, Operation::Update, op, &row, Some(&old_values));
                } else {
                    let mut value = vec![("id", Some(s.key.to_string()))];
                    value.extend(changed);
                    self.write(s.key, Operation::Update, op, &value, None);
                }
                self.rows.insert(s.key, (new_a, new_b));
            }
        }
        if s.commit {
            self.lsn += 100;
            self.op = 0;
        }
    }
}

fn history(full: bool, steps: &[Step]) -> Vec<(Offset, Vec<u8>)> {
    let mut h = History {
        full,
        table: QualifiedName::new("public", "t"),
        rows: HashMap::new(),
        lsn: 1000,
        op: 0,
        log: Vec::new(),
    };
    for s in steps {
        h.apply(s);
    }
    h.log
}

/// How a client applies messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// As Electric's client and ours: an insert replaces, a delete of an absent row is a no-op.
    Lenient,
    /// As a clean history reads: an insert of a held row or a delete of an absent one is an
    /// error.
    Strict,
}

/// What a client does with a message; `Err` for an update of a row it does not hold (and
/// for what a strict client refuses).
fn apply(rows: &mut Rows, payload: &[u8], client: Client) -> Result<(), String> {
    let change = message::parse(payload).map_err(|e| e.to_string())?;
    let value: Row = change.value.0.into_iter().collect();
    match change.operation {
        Operation::Insert => {
            if rows.insert(change.key.clone(), value).is_some() && client == Client::Strict {
                return Err(format!("insert of held row {}", change.key));
            }
        }
        Operation::Update => match rows.get_mut(&change.key) {
            Some(row) => row.extend(value),
            None => return Err(format!("update of absent row {}", change.key)),
        },
        Operation::Delete => {
            if rows.remove(&change.key).is_none() && client == Client::Strict {
                return Err(format!("delete of absent row {}", change.key));
            }
        }
    }
    Ok(())
}

fn replay<'a>(
    rows: &mut Rows,
    log: impl IntoIterator<Item = &'a (Offset, Vec<u8>)>,
) -> Result<(), String> {
    for (_, payload) in log {
        apply(rows, payload, Client::Strict)?;
    }
    Ok(())
}

type Compacted = Vec<(Offset, MergedEntry)>;

/// The messages of `compacted` a reader resuming after `point` gets, as the log's scanner
/// serves them.
fn served(compacted: &Compacted, point: Offset) -> impl Iterator<Item = (Offset, &[u8])> {
    compacted
        .iter()
        .filter(move |(o, _)| *o > point)
        .filter_map(move |(o, entry)| match entry {
            MergedEntry::Change(payload) => Some((*o, payload.as_slice())),
            MergedEntry::Retraction { held_from, message } => {
                (*held_from <= point).then_some((*o, message.as_slice()))
            }
        })
}

/// Merges `log` in windows ending after the entries at `ends` (indices; the last window ends
/// at the end); returns the compacted log and the offsets where its windows end.
fn compact(log: &[(Offset, Vec<u8>)], ends: &[usize]) -> (Compacted, Vec<Offset>) {
    let entries: Compacted = log
        .iter()
        .map(|(o, p)| (*o, MergedEntry::Change(p.clone())))
        .collect();
    compact_entries(&entries, ends, None)
}

/// [`compact`] of entries; `windows`: the window ends of the compaction that wrote them (the
/// entries are then a compacted range).
fn compact_entries(
    log: &Compacted,
    ends: &[usize],
    windows: Option<&[Offset]>,
) -> (Compacted, Vec<Offset>) {
    let mut out = Vec::new();
    let mut window_ends = Vec::new();
    let mut window = Window::default();
    let mut previous_end = Offset::SNAPSHOT_END;
    for (i, (offset, entry)) in log.iter().enumerate() {
        let origin = match windows {
            None => Origin::Logged,
            Some(_) => Origin::Merged {
                window_from: successor(previous_end),
                fresh_inserts: true,
            },
        };
        match entry {
            MergedEntry::Change(payload) => window.push(*offset, payload, origin),
            MergedEntry::Retraction { held_from, message } => {
                window.push_retraction(*offset, *held_from, message)
            }
        }
        .expect("a valid history merges");
        if windows.is_some_and(|w| w.contains(offset)) {
            previous_end = *offset;
        }
        if ends.contains(&i) || i + 1 == log.len() {
            out.extend(window.take().expect("merges"));
            window_ends.push(*offset);
        }
    }
    (out, window_ends)
}

fn check_resumes(original: &[(Offset, Vec<u8>)], compacted: &Compacted) {
    let mut expected = Rows::new();
    replay(&mut expected, original).unwrap();
    let points = std::iter::once(Offset::BeforeAll).chain(original.iter().map(|(o, _)| *o));
    for point in points {
        let mut rows = Rows::new();
        replay(&mut rows, original.iter().filter(|(o, _)| *o <= point)).unwrap();
        let result: Result<(), String> = served(compacted, point)
            .try_for_each(|(_, payload)| apply(&mut rows, payload, Client::Lenient));
        assert_eq!(result, Ok(()), "resuming from {point}");
        assert_eq!(rows, expected, "resuming from {point}");
    }
}

/// From `-1` and from every window end, the compacted log reads as a clean history and gives
/// the history's rows at every later window end.
fn check_window_ends(original: &[(Offset, Vec<u8>)], compacted: &Compacted, ends: &[Offset]) {
    let starts = std::iter::once(Offset::BeforeAll).chain(ends.iter().copied());
    for start in starts {
        let mut rows = Rows::new();
        replay(&mut rows, original.iter().filter(|(o, _)| *o <= start)).unwrap();
        for end in ends.iter().filter(|end| **end > start) {
            let mut history_rows = Rows::new();
            replay(&mut history_rows, original.iter().filter(|(o, _)| o <= end)).unwrap();
            let mut compacted_rows = rows.clone();
            let result: Result<(), String> = served(compacted, start)
                .filter(|(o, _)| o <= end)
                .try_for_each(|(_, payload)| apply(&mut compacted_rows, payload, Client::Strict));
            assert_eq!(
                result,
                Ok(()),
                "reading the compacted log from {start} to {end}"
            );
            assert_eq!(
                compacted_rows, history_rows,
                "reading the compacted log from {start} to {end}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn resuming_anywhere_after_compaction_ends_with_the_historys_rows(
        full in any::<bool>(),
        steps in prop::collection::vec(step(), 1..60),
        cuts in prop::collection::vec(0usize..80, 0..4),
    ) {
        let original = history(full, &steps);
        prop_assume!(!original.is_empty());
        let (compacted, ends) = compact(&original, &cuts);
        prop_assert!(compacted.len() <= original.len());
        prop_assert!(compacted.windows(2).all(|w| w[0].0 < w[1].0), "offsets increase");
        prop_assert!(compacted.iter().all(|(o, _)| original.iter().any(|(p, _)| p == o)));
        check_resumes(&original, &compacted);
        check_window_ends(&original, &compacted, &ends);

        // A second compaction merges the first one's output in windows made of whole windows
        // of it (every other window end kept).
        let kept: Vec<usize> = ends
            .iter()
            .step_by(2)
            .filter_map(|end| compacted.iter().position(|(o, _)| o == end))
            .collect();
        let (again, again_ends) = compact_entries(&compacted, &kept, Some(&ends));
        check_resumes(&original, &again);
        check_window_ends(&original, &again, &again_ends);
    }
}

fn step_of(kind: u8, key: u8, columns: u8, a: u8, commit: bool) -> Step {
    Step {
        kind,
        key,
        other: key,
        columns,
        a,
        b: 0,
        commit,
    }
}

#[test]
fn a_row_inserted_updated_and_deleted_in_a_window_is_retracted_for_readers_that_hold_it() {
    let steps = [
        step_of(2, 1, 3, 0, true),
        step_of(2, 1, 1, 1, true),
        step_of(0, 1, 1, 1, true),
    ];
    let original = history(false, &steps);
    let (compacted, _) = compact(&original, &[]);
    let insert = original[0].0;
    assert_eq!(
        compacted,
        vec![(
            original[2].0,
            MergedEntry::Retraction {
                held_from: insert,
                message: original[2].1.clone(),
            }
        )]
    );
    assert_eq!(
        served(&compacted, Offset::BeforeAll).count(),
        0,
        "nothing from -1"
    );
    assert_eq!(
        served(&compacted, insert).count(),
        1,
        "the delete after the insert"
    );
    assert_eq!(served(&compacted, original[1].0).count(), 1);
    check_resumes(&original, &compacted);
}

#[test]
fn a_row_deleted_and_inserted_again_is_its_delete_and_its_new_row() {
    // Insert (window 1), then update, delete and insert again (window 2): a reader from the
    // end of window 1 holds the row, so window 2 is a delete and an insert.
    let steps = [
        step_of(2, 1, 3, 0, true),
        step_of(2, 1, 1, 1, true),
        step_of(0, 1, 1, 1, true),
        step_of(2, 1, 3, 2, true),
        step_of(2, 1, 1, 3, true),
    ];
    let original = history(true, &steps);
    let (compacted, ends) = compact(&original, &[0]);
    let operations: Vec<_> = compacted
        .iter()
        .map(|(o, e)| match e {
            MergedEntry::Change(p) => (*o, message::parse(p).unwrap().operation),
            MergedEntry::Retraction { .. } => panic!("no retraction: {e:?}"),
        })
        .collect();
    assert_eq!(
        operations,
        vec![
            (original[0].0, Operation::Insert),
            (original[2].0, Operation::Delete),
            (original[4].0, Operation::Insert),
        ]
    );
    check_resumes(&original, &compacted);
    check_window_ends(&original, &compacted, &ends);
    // Merged again as one window: the row was new there, so it is one insert.
    let (again, _) = compact_entries(&compacted, &[], Some(&ends));
    assert_eq!(again.len(), 1);
    check_resumes(&original, &again);
}

#[test]
fn a_second_compaction_retracts_a_row_an_earlier_window_inserted() {
    let steps = [
        step_of(2, 1, 3, 0, true),
        step_of(2, 1, 1, 1, true),
        step_of(2, 2, 3, 0, true),
        step_of(0, 1, 1, 1, true),
    ];
    let original = history(false, &steps);
    let (compacted, ends) = compact(&original, &[2]);
    let (again, again_ends) = compact_entries(&compacted, &[], Some(&ends));
    let retraction = again
        .iter()
        .find(|(_, e)| matches!(e, MergedEntry::Retraction { .. }))
        .expect("the row of key 1 is retracted");
    // Served to every reader inside the first window (it began after the snapshot) and after.
    assert!(
        matches!(retraction.1, MergedEntry::Retraction { held_from, .. } if held_from == successor(Offset::SNAPSHOT_END)),
        "{retraction:?}"
    );
    check_resumes(&original, &again);
    check_window_ends(&original, &again, &again_ends);
}

#[test]
fn an_insert_and_updates_become_one_insert_of_the_final_row() {
    let steps = [
        Step {
            kind: 2,
            key: 1,
            other: 1,
            columns: 3,
            a: 0,
            b: 0,
            commit: true,
        },
        Step {
            kind: 2,
            key: 1,
            other: 1,
            columns: 1,
            a: 1,
            b: 0,
            commit: false,
        },
        Step {
            kind: 2,
            key: 1,
            other: 1,
            columns: 2,
            a: 1,
            b: 3,
            commit: true,
        },
    ];
    let original = history(true, &steps);
    let (compacted, _) = compact(&original, &[]);
    assert_eq!(compacted.len(), 1);
    assert_eq!(compacted[0].0, original[2].0, "the last change's offset");
    let MergedEntry::Change(payload) = &compacted[0].1 else {
        panic!("a change: {:?}", compacted[0]);
    };
    let change = message::parse(payload).unwrap();
    assert_eq!(change.operation, Operation::Insert);
    assert_eq!(change.old_value, None);
    let row: Row = change.value.0.into_iter().collect();
    assert_eq!(row["a"].as_deref(), Some("a1"));
    assert_eq!(row["b"].as_deref(), Some("b3"));
}

#[test]
fn an_update_after_a_delete_is_refused() {
    let mut window = Window::default();
    let delete = br#"{"key":"k","value":{"id":"1"},"headers":{"operation":"delete"}}"#;
    let update = br#"{"key":"k","value":{"id":"1","a":"x"},"headers":{"operation":"update"}}"#;
    window
        .push(Offset::At { tx: 1, op: 0 }, delete, Origin::Logged)
        .unwrap();
    assert!(
        window
            .push(Offset::At { tx: 1, op: 2 }, update, Origin::Logged)
            .is_err()
    );
}
