//! Property: a view's packed value counts ([`ValueCounts`]) hold what a map of value → count
//! holds, through random additions, removals (of values offered or not) and shrinks, with
//! values of two parts (an integer and a text that may be empty, long or non-ASCII).
//!
//! proptest prints the smallest failing sequence; `PROPTEST_CASES` runs more, and failures
//! are replayed from `proptest-regressions/`.

use std::collections::HashMap;

use proptest::prelude::*;
use shapes::where_clause::ValueKey;

use super::{row, shape_of};
use crate::read_path::subquery::counts::{ValueCounts, value_hash};

#[derive(Debug, Clone)]
enum Op {
    Add(u8, String),
    Remove(u8, String),
    Shrink,
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (0u8..4).prop_map(|n| format!("u{n}")),
        (0u8..2).prop_map(|n| format!("ü{n}")),
        (0u8..2).prop_map(|n| n.to_string().repeat(300)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, text()).prop_map(|(p, t)| Op::Add(p, t)),
        3 => (0u8..4, text()).prop_map(|(p, t)| Op::Remove(p, t)),
        1 => Just(Op::Shrink),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn packed_counts_hold_what_a_map_of_values_to_counts_holds(
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let levels = shape_of("(project_id, title) IN (SELECT project_id, user_id FROM members)");
        let subquery = levels.root.children[0].subquery.clone();
        let key = |project: u8, user: &str| -> ValueKey {
            subquery
                .key_of_inner(&row(&[Some(&project.to_string()), Some(user)]))
                .expect("no NULLs")
        };
        let mut counts = ValueCounts::new(2);
        let mut model: HashMap<ValueKey, u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Add(p, t) => {
                    let k = key(p, &t);
                    let expected = {
                        let n = model.entry(k.clone()).or_insert(0);
                        *n += 1;
                        *n
                    };
                    prop_assert_eq!(counts.add(&k), expected);
                }
                Op::Remove(p, t) => {
                    let k = key(p, &t);
                    let expected = model.get_mut(&k).map(|n| {
                        *n -= 1;
                        *n
                    });
                    if expected == Some(0) {
                        model.remove(&k);
                    }
                    prop_assert_eq!(counts.remove(&k), expected);
                }
                Op::Shrink => counts.shrink_to_fit(),
            }
            prop_assert_eq!(counts.len(), model.len());
            prop_assert_eq!(counts.is_empty(), model.is_empty());
            for p in 0..4 {
                for t in ["", "u0", "u1", "u2", "u3", "ü0", "ü1"] {
                    let k = key(p, t);
                    prop_assert_eq!(counts.contains(&k), model.contains_key(&k), "{:?}", k);
                }
            }
            let mut hashes: Vec<u64> = counts.hashes().collect();
            hashes.sort_unstable();
            let mut expected: Vec<u64> = model.keys().map(value_hash).collect();
            expected.sort_unstable();
            prop_assert_eq!(hashes, expected);
        }
    }
}
