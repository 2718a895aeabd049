//! Properties of Electric's subquery tags (`TagPlan`) on random `where` clauses (random
//! `AND`/`OR`/`NOT` trees over plain tests, subquery tests of every form, and subqueries hidden
//! in non-connective expressions) and random rows of every table:
//!
//! - the active conditions say what the evaluator says: when every subquery position is
//!   positive, a row is `included` exactly when it matches; otherwise a matching row is still
//!   included (a negated position is true more often than SQL's `NOT IN`, never less);
//! - the tags have one string per disjunct, each of `position_count` slots, filled exactly at
//!   the disjunct's own positions (a hash at a subquery position, `1` elsewhere);
//! - the move patterns for the row's own value of a subquery name every position of that
//!   subquery, with the hash the row's tag holds there.
//!
//! Failing cases are printed (shrunk) and persisted by proptest
//! (`tag_properties.proptest-regressions`), which replays them first.

mod common;

use std::collections::HashMap;

use common::subqueries::{Current, Db, Row, issues, members, parse_sub, projects, row_of};
use proptest::prelude::*;
use shapes::where_clause::{Condition, MAX_DISJUNCTS, TagPlan};

const SALT: &str = "salt-1";

/// Leaves over `issues`, with the subqueries weighted up: most tests are positive subqueries.
const LEAVES: &[&str] = &[
    "owner = 'a'",
    "owner IS NULL",
    "project_id > 2",
    "amount = 2.5",
    "title LIKE 'a%'",
    "project_id IS DISTINCT FROM 3",
    "project_id IN (SELECT id FROM projects WHERE archived)",
    "project_id IN (SELECT id FROM projects WHERE archived)",
    "owner IN (SELECT org FROM members WHERE role = 'admin')",
    "owner IN (SELECT org FROM members WHERE role = 'admin')",
    "amount IN (SELECT budget FROM projects)",
    "title IN (SELECT code FROM projects)",
    "EXISTS (SELECT 1 FROM members m WHERE m.user_id = issues.project_id)",
    "(project_id, owner) IN (SELECT user_id, org FROM members)",
    "project_id IN (SELECT id FROM projects WHERE org IN (SELECT org FROM members WHERE user_id = 2))",
    "project_id NOT IN (SELECT user_id FROM members)",
    "NOT EXISTS (SELECT 1 FROM members WHERE org = issues.owner)",
    "amount NOT IN (SELECT budget FROM projects WHERE org = 'a')",
    "coalesce(owner IN (SELECT org FROM members), false)",
    "(project_id IN (SELECT id FROM projects WHERE archived)) IS NOT TRUE",
];

fn clause() -> impl Strategy<Value = String> {
    let leaf = proptest::sample::select(LEAVES).prop_map(String::from);
    leaf.prop_recursive(3, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 2..4)
                .prop_map(|v| format!("({})", v.join(" AND "))),
            proptest::collection::vec(inner.clone(), 2..4)
                .prop_map(|v| format!("({})", v.join(" OR "))),
            inner.prop_map(|c| format!("NOT ({c})")),
        ]
    })
}

fn maybe(values: &'static [&'static str]) -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![1 => Just(None), 3 => proptest::sample::select(values).prop_map(Some)]
}

const TEXTS: &[&str] = &["a", "b", "a "];
const NUMBERS: &[&str] = &["1", "1.0", "2.5", "3"];
const IDS: &[&str] = &["1", "2", "3", "4"];
const BOOLS: &[&str] = &["true", "false"];
const ROLES: &[&str] = &["admin", "user"];

type Columns = Vec<(&'static str, Option<&'static str>)>;

/// A row of named columns, NULLs included (`id` is added by [`rows_of`]).
fn row(columns: Vec<(&'static str, &'static [&'static str])>) -> impl Strategy<Value = Columns> {
    columns
        .into_iter()
        .map(|(name, values)| maybe(values).prop_map(move |v| (name, v)))
        .collect::<Vec<_>>()
}

fn project() -> impl Strategy<Value = Columns> {
    row(vec![
        ("org", TEXTS),
        ("archived", BOOLS),
        ("budget", NUMBERS),
        ("code", TEXTS),
    ])
}

fn member() -> impl Strategy<Value = Columns> {
    row(vec![("org", TEXTS), ("user_id", IDS), ("role", ROLES)])
}

fn issue() -> impl Strategy<Value = Columns> {
    row(vec![
        ("project_id", IDS),
        ("owner", TEXTS),
        ("title", TEXTS),
        ("amount", NUMBERS),
    ])
}

/// Rows of `t` with ids from 1, the given columns set, the others NULL.
fn rows_of(t: &shapes::schema::TableSchema, rows: &[Columns]) -> Vec<Row> {
    rows.iter()
        .enumerate()
        .map(|(i, columns)| {
            let id = (i + 1).to_string();
            let mut values: Vec<(&str, &str)> = vec![("id", id.as_str())];
            values.extend(columns.iter().filter_map(|(n, v)| Some((*n, (*v)?))));
            row_of(t, &values)
        })
        .collect()
}

/// The hex digest of a subquery slot.
fn is_hash(slot: &str) -> bool {
    slot.len() == 32 && slot.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn tags_agree_with_the_evaluator(
        text in clause(),
        project_rows in proptest::collection::vec(project(), 0..5),
        member_rows in proptest::collection::vec(member(), 0..5),
        issue_rows in proptest::collection::vec(issue(), 1..5),
    ) {
        let w = parse_sub(&text, &[]).unwrap_or_else(|e| panic!("{text}: {e}"));
        let plan = match TagPlan::of(&w) {
            Ok(plan) => plan,
            Err(e) => {
                prop_assert!(e.to_string().contains(&format!("at most {MAX_DISJUNCTS}")), "{}", e);
                return Ok(());
            }
        };
        let (p, m) = (projects(), members());
        let db: Db = HashMap::from([
            (p.name.clone(), rows_of(&p, &project_rows)),
            (m.name.clone(), rows_of(&m, &member_rows)),
        ]);
        let current = Current::of(&w, &db);
        let conditions: Vec<Condition> = plan.conditions().collect();
        for row in rows_of(&issues(), &issue_rows) {
            // active conditions
            let active = plan.active_conditions(&row, &current);
            prop_assert_eq!(active.len(), plan.position_count());
            let matches = w.matches_with(&row, &current);
            if plan.all_positive() {
                prop_assert_eq!(plan.included(&active), matches, "{} on {:?}: {:?}", text, row, active);
            } else if matches {
                prop_assert!(plan.included(&active), "{} on {:?}: {:?}", text, row, active);
            }

            // tags
            let tags = plan.tags(&row, SALT);
            prop_assert_eq!(tags.len(), plan.disjuncts().len());
            let mut slots_of: Vec<Vec<&str>> = Vec::new();
            for (tag, own) in tags.iter().zip(plan.disjuncts()) {
                let slots: Vec<&str> = tag.split('/').collect();
                prop_assert_eq!(slots.len(), plan.position_count().max(1), "{}", tag);
                for (pos, slot) in slots.iter().enumerate().take(plan.position_count()) {
                    let expected_kind = match (own.contains(&pos), conditions[pos]) {
                        (false, _) => slot.is_empty(),
                        (true, Condition::Subquery { .. }) => is_hash(slot),
                        (true, _) => *slot == "1",
                    };
                    prop_assert!(expected_kind, "{}: slot {} of {}", text, pos, tag);
                }
                slots_of.push(slots);
            }

            // move patterns for the row's own values
            for (i, _) in w.subqueries().iter().enumerate() {
                let Some(key) = w.outer_key(i, &row) else { continue };
                let patterns = plan.patterns(i, &key, SALT);
                let positions: Vec<usize> = (0..plan.position_count())
                    .filter(|&pos| matches!(conditions[pos], Condition::Subquery { subquery, .. } if subquery == i))
                    .collect();
                prop_assert_eq!(patterns.iter().map(|(pos, _)| *pos).collect::<Vec<_>>(), positions);
                for (pos, hash) in &patterns {
                    let d = plan.disjuncts().iter().position(|r| r.contains(pos)).unwrap();
                    prop_assert_eq!(slots_of[d][*pos], hash.as_str(), "{} position {}", text, pos);
                }
            }
        }
    }
}
