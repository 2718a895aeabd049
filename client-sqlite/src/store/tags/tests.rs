//! Message sequences on one shape, and the rows each leaves in it.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use super::*;

/// Row states in a map; a pattern is looked up by reading every row.
#[derive(Debug, Default)]
struct MemoryRows {
    rows: BTreeMap<String, RowTags>,
}

impl TagRows for MemoryRows {
    type Error = Infallible;

    fn row(&mut self, key: &str) -> Result<Option<RowTags>, Infallible> {
        Ok(self.rows.get(key).cloned())
    }

    fn store(&mut self, key: &str, _: Option<&RowTags>, row: &RowTags) -> Result<(), Infallible> {
        self.rows.insert(key.to_owned(), row.clone());
        Ok(())
    }

    fn forget(&mut self, key: &str, _: &RowTags) -> Result<(), Infallible> {
        self.rows.remove(key);
        Ok(())
    }

    fn matching(&mut self, pattern: &MovePattern) -> Result<Vec<String>, Infallible> {
        Ok(self
            .rows
            .iter()
            .filter(|(_, row)| row.matches(pattern))
            .map(|(key, _)| key.clone())
            .collect())
    }
}

/// A message of the shape's log.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A row message: operation, key, tags, removed tags, active conditions.
    Row(
        Operation,
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        &'static [bool],
    ),
    /// A delete without tag headers.
    Delete(&'static str),
    Out(&'static [(usize, &'static str)]),
    In(&'static [(usize, &'static str)]),
    MustRefetch,
}

fn insert(key: &'static str, tags: &'static [&'static str], active: &'static [bool]) -> Step {
    Step::Row(Operation::Insert, key, tags, &[], active)
}

fn update(
    key: &'static str,
    tags: &'static [&'static str],
    removed: &'static [&'static str],
    active: &'static [bool],
) -> Step {
    Step::Row(Operation::Update, key, tags, removed, active)
}

fn event(kind: MoveKind, patterns: &[(usize, &str)]) -> Move {
    Move {
        kind,
        patterns: patterns
            .iter()
            .map(|&(pos, value)| MovePattern {
                pos,
                value: value.to_owned(),
            })
            .collect(),
        txid: None,
    }
}

/// The shape as a client following the steps holds it: the rows present, and the rows each
/// move-out took out (per move-out, in order).
#[derive(Debug, Default)]
struct Follower {
    tags: MemoryRows,
    present: BTreeSet<String>,
    gone: Vec<Vec<String>>,
}

impl Follower {
    fn follow(steps: &[Step]) -> Self {
        let mut shape = Self::default();
        for &step in steps {
            shape.step(step);
        }
        shape
    }

    fn step(&mut self, step: Step) {
        let Ok(()) = self.try_step(step);
    }

    fn try_step(&mut self, step: Step) -> Result<(), Infallible> {
        match step {
            Step::Row(op, key, tags, removed, active) => {
                let headers = TagHeaders {
                    tags: tags.iter().map(|t| t.to_string()).collect(),
                    removed_tags: removed.iter().map(|t| t.to_string()).collect(),
                    active_conditions: active.to_vec(),
                };
                on_change(&mut self.tags, key, op, Some(&headers))?;
                if op == Operation::Delete {
                    self.present.remove(key);
                } else {
                    self.present.insert(key.to_owned());
                }
            }
            Step::Delete(key) => {
                on_change(&mut self.tags, key, Operation::Delete, None)?;
                self.present.remove(key);
            }
            Step::Out(patterns) => {
                let gone = on_move(&mut self.tags, &event(MoveKind::Out, patterns))?;
                for key in &gone {
                    self.present.remove(key);
                }
                self.gone.push(gone);
            }
            Step::In(patterns) => {
                let gone = on_move(&mut self.tags, &event(MoveKind::In, patterns))?;
                assert!(gone.is_empty(), "a move-in takes no row out: {gone:?}");
            }
            Step::MustRefetch => {
                self.tags.rows.clear();
                self.present.clear();
            }
        }
        Ok(())
    }

    fn present(&self) -> Vec<&str> {
        self.present.iter().map(String::as_str).collect()
    }

    fn gone(&self) -> Vec<Vec<&str>> {
        self.gone
            .iter()
            .map(|keys| keys.iter().map(String::as_str).collect())
            .collect()
    }
}

#[rstest::rstest]
// `project_id IN (SELECT …)`: one disjunct, one position.
#[case::single_in_takes_out_the_rows_of_the_value(
    &[insert("a", &["h1"], &[true]), insert("b", &["h2"], &[true]),
      insert("c", &["h1"], &[true]), Step::Out(&[(0, "h1")])],
    &["b"], &[&["a", "c"][..]]
)]
// `x IN sq OR done`: a done row stays, an undone one leaves.
#[case::or_with_a_true_plain_disjunct_keeps_the_row(
    &[insert("done", &["h1/", "/1"], &[true, true]),
      insert("open", &["h1/", "/1"], &[true, false]), Step::Out(&[(0, "h1")])],
    &["done"], &[&["open"][..]]
)]
// The row kept by its plain disjunct: its value comes back, then `done` turns false (an
// update with new active conditions), and the next move-out of its value takes it.
#[case::a_row_kept_by_its_plain_disjunct_leaves_once_that_is_false(
    &[insert("a", &["h1/", "/1"], &[true, true]), Step::Out(&[(0, "h1")]),
      Step::In(&[(0, "h1")]), update("a", &["h1/", "/1"], &[], &[true, false]),
      Step::Out(&[(0, "h1")])],
    &[], &[&[][..], &["a"]]
)]
// `x IN sq1 OR y IN sq2`: the move-in of h2 makes position 1 true again on `a`, so losing h1
// keeps it; `c`, whose h3 never came back, leaves.
#[case::a_move_in_makes_a_position_true_again(
    &[insert("a", &["h1/", "/h2"], &[true, true]), insert("c", &["h1/", "/h3"], &[true, true]),
      Step::Out(&[(1, "h2")]), Step::Out(&[(1, "h3")]), Step::In(&[(1, "h2")]),
      Step::Out(&[(0, "h1")])],
    &["a"], &[&[][..], &[], &["c"]]
)]
// `x IN sq1 AND y IN sq2`: one false position is enough.
#[case::and_of_two_subqueries_leaves_on_either(
    &[insert("a", &["h1/h2"], &[true, true]), insert("b", &["h1/h3"], &[true, true]),
      Step::Out(&[(1, "h2")])],
    &["b"], &[&["a"][..]]
)]
// The row moved to another project: the old value's move-out no longer concerns it.
#[case::removed_tags_on_an_update_leave_the_row(
    &[insert("a", &["h1"], &[true]), update("a", &["h2"], &["h1"], &[true]),
      Step::Out(&[(0, "h1")]), Step::Out(&[(0, "h2")])],
    &[], &[&[][..], &["a"]]
)]
// An update without tag changes keeps the row's tags.
#[case::an_update_without_tags_keeps_them(
    &[insert("a", &["h1"], &[true]), update("a", &[], &[], &[]), Step::Out(&[(0, "h1")])],
    &[], &[&["a"][..]]
)]
// A delete ends the row's state: a later move-out of its old value does not report it, and the
// row inserted again under another value is not touched by it.
#[case::a_delete_clears_the_row(
    &[insert("a", &["h1"], &[true]), Step::Delete("a"), Step::Out(&[(0, "h1")]),
      insert("a", &["h2"], &[true]), Step::Out(&[(0, "h1")])],
    &["a"], &[&[][..], &[]]
)]
#[case::a_delete_with_tags_clears_the_row(
    &[insert("a", &["h1"], &[true]), Step::Row(Operation::Delete, "a", &["h1"], &[], &[true]),
      Step::Out(&[(0, "h1")])],
    &[], &[&[][..]]
)]
#[case::must_refetch_clears_every_row(
    &[insert("a", &["h1"], &[true]), Step::MustRefetch, insert("b", &["h2"], &[true]),
      Step::Out(&[(0, "h1")])],
    &["b"], &[&[][..]]
)]
// An insert of a key already there (a move-in's rows) is an upsert: tags join, the active
// conditions are replaced.
#[case::an_insert_of_a_present_key_is_an_upsert(
    &[insert("a", &["h1/", "/1"], &[false, true]), insert("a", &["h1/", "/1"], &[true, true]),
      update("a", &["h1/", "/1"], &[], &[true, false]), Step::Out(&[(0, "h1")])],
    &[], &[&["a"][..]]
)]
// Patterns naming NULL, a value no row has, a position past the tags, or coming before any
// tagged row change nothing.
#[case::null_and_unknown_patterns_change_nothing(
    &[Step::Out(&[(0, "h1")]), insert("a", &["h1/", "/1"], &[true, false]),
      Step::Out(&[(0, "NULL")]), Step::Out(&[(0, "ffff")]), Step::Out(&[(5, "h1")]),
      Step::Out(&[(1, "h1")]), Step::In(&[(0, "zz")])],
    &["a"], &[&[][..], &[], &[], &[], &[]]
)]
#[case::several_patterns_in_one_move_out(
    &[insert("a", &["h1"], &[true]), insert("b", &["h2"], &[true]), insert("c", &["h3"], &[true]),
      Step::Out(&[(0, "h1"), (0, "h2")])],
    &["c"], &[&["a", "b"][..]]
)]
// Tags without active conditions (Electric before DNF): a move-out removes the matching tags,
// and a row with none left is gone.
#[case::without_active_conditions_a_row_leaves_with_its_last_tag(
    &[insert("a", &["h1", "h2"], &[]), insert("b", &["h1"], &[]),
      Step::Out(&[(0, "h1")]), Step::Out(&[(0, "h2")])],
    &[], &[&["b"][..], &["a"]]
)]
fn message_sequences_leave_these_rows(
    #[case] steps: &[Step],
    #[case] present: &[&str],
    #[case] gone: &[&[&str]],
) {
    let shape = Follower::follow(steps);
    assert_eq!(shape.present(), present, "rows present");
    assert_eq!(shape.gone(), gone, "rows each move-out took out");
}

#[test]
fn disjuncts_are_the_non_empty_slots_of_each_tag() {
    let row = RowTags {
        tags: ["h/", "/1", "a//b"].map(String::from).into(),
        active: None,
    };
    // A set: in the order of the tags' text.
    assert_eq!(row.disjuncts(), vec![vec![1], vec![0, 2], vec![0]]);
    assert_eq!(
        row.all_slots(),
        [(0, "a"), (0, "h"), (1, "1"), (2, "b")]
            .map(|(p, v)| (p, v.to_owned()))
            .into()
    );
}

#[test]
fn a_position_never_sent_counts_as_false() {
    let mut row = RowTags::default();
    row.apply(&TagHeaders {
        tags: vec!["h1/h2".into()],
        removed_tags: vec![],
        active_conditions: vec![true],
    });
    assert!(!row.satisfies_a_disjunct());
    row.move_in(&MovePattern {
        pos: 1,
        value: "h2".into(),
    });
    assert_eq!(row.active, Some(vec![true, true]));
    assert!(row.satisfies_a_disjunct());
}

#[test]
fn state_round_trips_through_json() {
    let row = RowTags {
        tags: ["h1/", "/1"].map(String::from).into(),
        active: Some(vec![true, false]),
    };
    let text = serde_json::to_string(&row).unwrap();
    assert_eq!(serde_json::from_str::<RowTags>(&text).unwrap(), row);
}
