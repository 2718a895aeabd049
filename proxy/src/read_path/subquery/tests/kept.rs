//! Property: a level's packed rows ([`KeptRows`]) hold what a map of key → kept row holds,
//! through random inserts, replacements, removals by key and by predicate, and shrinks (which
//! rewrite the buffer), with NULLs, empty, long and non-ASCII values.
//!
//! proptest prints the smallest failing sequence; `PROPTEST_CASES` runs more, and failures
//! are replayed from `proptest-regressions/`.

use std::collections::HashMap;

use proptest::prelude::*;
use shapes::schema::Row;

use crate::read_path::subquery::kept::{KeptRows, key_hash};

/// Rows of 4 columns keyed by (2, 0), in that order; 3 is kept too, 1 is not.
const WIDTH: usize = 4;
const KEY: [usize; 2] = [2, 0];
const KEPT: [usize; 1] = [3];

#[derive(Debug, Clone)]
enum Op {
    Insert(Row),
    Remove(Row),
    /// Removes the rows whose column 3 is this value.
    RemoveIf(Option<String>),
    Shrink,
}

fn value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        (0u8..6).prop_map(|n| Some(n.to_string())),
        (0u8..3).prop_map(|n| Some(format!("é{n}"))),
        // Past one byte of length.
        (0u8..2).prop_map(|n| Some(n.to_string().repeat(200))),
    ]
}

fn row() -> impl Strategy<Value = Row> {
    prop::collection::vec(value(), WIDTH)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => row().prop_map(Op::Insert),
        2 => row().prop_map(Op::Remove),
        1 => value().prop_map(Op::RemoveIf),
        1 => Just(Op::Shrink),
    ]
}

fn key(row: &Row) -> Vec<Option<String>> {
    KEY.iter().map(|&c| row[c].clone()).collect()
}

/// The row as kept: the key and kept columns, the others NULL.
fn kept(row: &Row) -> Row {
    (0..WIDTH)
        .map(|c| {
            if KEY.contains(&c) || KEPT.contains(&c) {
                row[c].clone()
            } else {
                None
            }
        })
        .collect()
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn packed_rows_hold_what_a_map_of_keys_to_kept_rows_holds(
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut rows = KeptRows::new(WIDTH, &KEY, &KEPT);
        let mut model: HashMap<Vec<Option<String>>, Row> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(row) => {
                    rows.insert(&row);
                    model.insert(key(&row), kept(&row));
                }
                Op::Remove(row) => {
                    prop_assert_eq!(rows.remove(&row), model.remove(&key(&row)));
                }
                Op::RemoveIf(v) => {
                    let left = rows.remove_if(|r| r[3] == v);
                    let mut expected = Vec::new();
                    model.retain(|_, r| {
                        let leaves = r[3] == v;
                        if leaves {
                            expected.push(r.clone());
                        }
                        !leaves
                    });
                    prop_assert_eq!(sorted(left), sorted(expected));
                }
                Op::Shrink => rows.shrink_to_fit(),
            }
            prop_assert_eq!(rows.len(), model.len());
            prop_assert_eq!(sorted(rows.rows().collect()), sorted(model.values().cloned().collect()));
            for (k, r) in &model {
                prop_assert!(rows.contains(r), "{k:?} is kept");
            }
            let mut hashes: Vec<u64> = rows.hashes().collect();
            hashes.sort_unstable();
            let mut expected: Vec<u64> = model
                .keys()
                .map(|k| key_hash(k.iter().map(Option::as_deref)))
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(hashes, expected);
        }
        let mut copy = KeptRows::new(WIDTH, &KEY, &KEPT);
        for r in model.values() {
            copy.insert(r);
        }
        prop_assert!(copy == rows, "equal whatever order the rows came in");
    }
}
