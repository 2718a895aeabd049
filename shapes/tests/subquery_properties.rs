//! Property: evaluating a `where` with subqueries against an oracle built the way the proxy
//! builds it (the keys, by `Subquery::key_of_inner`, of the inner rows matching the inner
//! `where`) gives what a straightforward reading of SQL gives, computed here by hand from the
//! rows themselves, for random inner and outer rows. Failing cases are printed (shrunk) and
//! persisted by proptest (`subquery_properties.proptest-regressions`), which replays them first.

mod common;

use std::collections::HashMap;

use common::subqueries::{Current, Db, Row, issues, members, parse_sub, projects};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Issue {
    project_id: Option<i64>,
    owner: Option<&'static str>,
    amount: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Project {
    org: Option<&'static str>,
    archived: Option<bool>,
    budget: Option<&'static str>,
    code: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Member {
    org: Option<&'static str>,
    user_id: Option<i64>,
    role: Option<&'static str>,
}

const TEXTS: &[&str] = &["a", "b", "a "];
const NUMBERS: &[&str] = &["1", "1.0", "2.5", "2.50", "3"];

fn maybe<T: Clone + std::fmt::Debug + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![1 => Just(None), 3 => s.prop_map(Some)]
}

fn text() -> impl Strategy<Value = Option<&'static str>> {
    maybe(proptest::sample::select(TEXTS))
}

fn number() -> impl Strategy<Value = Option<&'static str>> {
    maybe(proptest::sample::select(NUMBERS))
}

fn small_int() -> impl Strategy<Value = Option<i64>> {
    maybe(1i64..=4)
}

fn issue() -> impl Strategy<Value = Issue> {
    (small_int(), text(), number()).prop_map(|(project_id, owner, amount)| Issue {
        project_id,
        owner,
        amount,
    })
}

fn project() -> impl Strategy<Value = Project> {
    (text(), maybe(any::<bool>()), number(), text()).prop_map(|(org, archived, budget, code)| {
        Project {
            org,
            archived,
            budget,
            code,
        }
    })
}

fn member() -> impl Strategy<Value = Member> {
    (
        text(),
        small_int(),
        maybe(proptest::sample::select(&["admin", "user"][..])),
    )
        .prop_map(|(org, user_id, role)| Member { org, user_id, role })
}

// SQL's three-valued logic, by hand.

fn not(a: Option<bool>) -> Option<bool> {
    a.map(|b| !b)
}

fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

fn eq<T: PartialEq>(a: Option<T>, b: Option<T>) -> Option<bool> {
    Some(a? == b?)
}

fn num(s: Option<&str>) -> Option<f64> {
    s.map(|v| v.parse().unwrap())
}

/// `x IN (values)`: the OR of `x = v` (false for no values).
fn sql_in<T: PartialEq + Copy>(
    x: Option<T>,
    values: impl IntoIterator<Item = Option<T>>,
) -> Option<bool> {
    // not a try_fold: a NULL comparison must not end the OR (a later true wins)
    let mut result = Some(false);
    for v in values {
        result = or(result, eq(x, v));
    }
    result
}

/// `(a, b) IN (rows)` as the language defines row values: a NULL on either side makes the
/// comparison unknown as a whole.
fn row_in<A: PartialEq + Copy, B: PartialEq + Copy>(
    x: (Option<A>, Option<B>),
    rows: &[(Option<A>, Option<B>)],
) -> Option<bool> {
    let whole = |r: &(Option<A>, Option<B>)| r.0.is_some() && r.1.is_some();
    if whole(&x) && rows.iter().any(|r| whole(r) && r.0 == x.0 && r.1 == x.1) {
        Some(true)
    } else if rows.is_empty() {
        Some(false)
    } else if !whole(&x) || rows.iter().any(|r| !whole(r)) {
        None
    } else {
        Some(false)
    }
}

struct World {
    projects: Vec<Project>,
    members: Vec<Member>,
}

impl World {
    /// Project ids are their positions from 1; member ids too.
    fn projects(&self) -> impl Iterator<Item = (i64, &Project)> {
        self.projects
            .iter()
            .enumerate()
            .map(|(i, p)| (i as i64 + 1, p))
    }

    fn db(&self) -> Db {
        let (p, m) = (projects(), members());
        let project_rows: Vec<Row> = self
            .projects()
            .map(|(id, r)| {
                vec![
                    Some(id.to_string()),
                    r.org.map(Into::into),
                    r.archived.map(|b| b.to_string()),
                    r.budget.map(Into::into),
                    r.code.map(Into::into),
                ]
            })
            .collect();
        let member_rows: Vec<Row> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, r)| {
                vec![
                    Some((i + 1).to_string()),
                    r.org.map(Into::into),
                    r.user_id.map(|u| u.to_string()),
                    r.role.map(Into::into),
                    None,
                ]
            })
            .collect();
        HashMap::from([(p.name, project_rows), (m.name, member_rows)])
    }
}

fn issue_row(i: &Issue) -> Row {
    let t = issues();
    let mut row = vec![None; t.columns.len()];
    row[0] = Some("1".into());
    row[t.column_index("project_id").unwrap()] = i.project_id.map(|v| v.to_string());
    row[t.column_index("owner").unwrap()] = i.owner.map(Into::into);
    row[t.column_index("amount").unwrap()] = i.amount.map(Into::into);
    row
}

type Reference = fn(&Issue, &World) -> Option<bool>;

/// Each `where` with its meaning spelled out over the rows.
const CASES: &[(&str, Reference)] = &[
    (
        "project_id IN (SELECT id FROM projects WHERE archived)",
        |i, w| {
            sql_in(
                i.project_id,
                w.projects()
                    .filter(|(_, p)| p.archived == Some(true))
                    .map(|(id, _)| Some(id)),
            )
        },
    ),
    (
        "amount NOT IN (SELECT budget FROM projects WHERE org = 'a')",
        |i, w| {
            not(sql_in(
                num(i.amount),
                w.projects()
                    .filter(|(_, p)| p.org == Some("a"))
                    .map(|(_, p)| num(p.budget)),
            ))
        },
    ),
    ("NOT (owner IN (SELECT code FROM projects))", |i, w| {
        not(sql_in(i.owner, w.projects().map(|(_, p)| p.code)))
    }),
    (
        "EXISTS (SELECT 1 FROM members m WHERE m.user_id = issues.project_id AND m.role = 'admin')",
        |i, w| {
            Some(
                w.members
                    .iter()
                    .any(|m| m.role == Some("admin") && eq(m.user_id, i.project_id) == Some(true)),
            )
        },
    ),
    (
        "NOT EXISTS (SELECT 1 FROM members WHERE org = issues.owner)",
        |i, w| Some(!w.members.iter().any(|m| eq(m.org, i.owner) == Some(true))),
    ),
    (
        "(project_id, owner) IN (SELECT user_id, org FROM members)",
        |i, w| {
            let rows: Vec<_> = w.members.iter().map(|m| (m.user_id, m.org)).collect();
            row_in((i.project_id, i.owner), &rows)
        },
    ),
    (
        "(project_id, amount) NOT IN (SELECT id, budget FROM projects WHERE NOT archived)",
        |i, w| {
            let rows: Vec<_> = w
                .projects()
                .filter(|(_, p)| p.archived == Some(false))
                .map(|(id, p)| (Some(id as f64), num(p.budget)))
                .collect();
            not(row_in(
                (i.project_id.map(|v| v as f64), num(i.amount)),
                &rows,
            ))
        },
    ),
    (
        "project_id IN (SELECT id FROM projects WHERE org IN (SELECT org FROM members WHERE user_id = 2))",
        |i, w| {
            let orgs: Vec<_> = w
                .members
                .iter()
                .filter(|m| m.user_id == Some(2))
                .map(|m| m.org)
                .collect();
            sql_in(
                i.project_id,
                w.projects()
                    .filter(|(_, p)| sql_in(p.org, orgs.iter().copied()) == Some(true))
                    .map(|(id, _)| Some(id)),
            )
        },
    ),
    (
        "owner IN (SELECT org FROM members WHERE role = 'admin') OR amount NOT IN \
         (SELECT budget FROM projects WHERE id IN (SELECT user_id FROM members))",
        |i, w| {
            let admins = sql_in(
                i.owner,
                w.members
                    .iter()
                    .filter(|m| m.role == Some("admin"))
                    .map(|m| m.org),
            );
            let user_ids: Vec<_> = w.members.iter().map(|m| m.user_id).collect();
            let budgets = sql_in(
                num(i.amount),
                w.projects()
                    .filter(|(id, _)| sql_in(Some(*id), user_ids.iter().copied()) == Some(true))
                    .map(|(_, p)| num(p.budget)),
            );
            or(admins, not(budgets))
        },
    ),
    (
        "NOT EXISTS (SELECT 1 FROM projects p WHERE p.id = issues.project_id AND \
         p.budget NOT IN (SELECT budget FROM projects WHERE archived))",
        |i, w| {
            let archived: Vec<_> = w
                .projects()
                .filter(|(_, p)| p.archived == Some(true))
                .map(|(_, p)| num(p.budget))
                .collect();
            Some(!w.projects().any(|(id, p)| {
                eq(Some(id), i.project_id) == Some(true)
                    && not(sql_in(num(p.budget), archived.iter().copied())) == Some(true)
            }))
        },
    ),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn subquery_evaluation_agrees_with_sql_read_by_hand(
        projects in proptest::collection::vec(project(), 0..6),
        members in proptest::collection::vec(member(), 0..6),
        outer in proptest::collection::vec(issue(), 1..6),
    ) {
        let world = World { projects, members };
        let db = world.db();
        for (text, reference) in CASES {
            let w = parse_sub(text, &[]).unwrap_or_else(|e| panic!("{text}: {e}"));
            let current = Current::of(&w, &db);
            for i in &outer {
                prop_assert_eq!(
                    w.evaluate_with(&issue_row(i), &current),
                    reference(i, &world),
                    "{} on {:?}", text, i
                );
            }
        }
    }
}
