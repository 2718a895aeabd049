//! The levels of a subquery shape, without a database: changes decided against the kept rows,
//! values counted, moves found, and a restart's difference.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use shapes::definition::{LogMode, ReplicaMode, ShapeDefinition};
use shapes::lsn::{Lsn, Xid32};
use shapes::routing::{RowChange, ShapeIndex, TableSlot};
use shapes::schema::{QualifiedName, Row, TableSchema};
use shapes::testing::{base, column};

use super::SubqueryShape;
use super::resync::changes_to;

mod counts;
mod kept;
mod routes;

fn todos() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        name: QualifiedName::new("public", "todos"),
        oid: 1,
        columns: vec![
            column("id", base("int4")).pk(0).not_null(),
            column("project_id", base("int4")),
            column("title", base("text")),
        ],
    })
}

fn members() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        name: QualifiedName::new("public", "members"),
        oid: 2,
        columns: vec![
            column("project_id", base("int4")).pk(0).not_null(),
            column("user_id", base("text")).pk(1).not_null(),
        ],
    })
}

fn row(values: &[Option<&str>]) -> Row {
    values.iter().map(|v| v.map(str::to_owned)).collect()
}

/// `project_id [NOT] IN (SELECT project_id FROM members WHERE user_id = 'u1')`, its slots:
/// todos 0, members 1.
fn shape(negated: bool) -> SubqueryShape {
    let text = format!(
        "project_id {}IN (SELECT project_id FROM members WHERE user_id = 'u1')",
        if negated { "NOT " } else { "" }
    );
    shape_of(&text)
}

fn shape_of(text: &str) -> SubqueryShape {
    let (todos, members) = (todos(), members());
    let others = move |n: &QualifiedName| (n.name == "members").then(|| members.clone());
    let definition = ShapeDefinition::new_with_tables(
        &todos,
        Some(text),
        &BTreeMap::new(),
        None,
        ReplicaMode::Default,
        LogMode::Full,
        &others,
    )
    .unwrap();
    let mut levels = SubqueryShape::new(todos, &definition, None);
    let mut index = ShapeIndex::default();
    levels.assign_slots(&mut |t| index.table_slot(t));
    levels
}

/// The slots `shape` gave: the order its levels were met (deepest first).
fn slots() -> (TableSlot, TableSlot) {
    let mut index = ShapeIndex::default();
    let members = index.table_slot(&QualifiedName::new("public", "members"));
    let todos = index.table_slot(&QualifiedName::new("public", "todos"));
    (todos, members)
}

const XID: Xid32 = Xid32(700);

fn change(
    levels: &mut SubqueryShape,
    slot: TableSlot,
    old: Option<Row>,
    new: Option<Row>,
) -> Option<RowChange> {
    levels
        .change(slot, XID, Lsn(1000), old.as_ref(), new.as_ref())
        .and_then(|o| o.change)
}

#[test]
fn outer_changes_are_decided_by_the_subquerys_current_values() {
    let mut levels = shape(false);
    let (todos_slot, members_slot) = slots();
    let todo = |p: &str| row(&[Some("1"), Some(p), Some("t")]);
    assert_eq!(change(&mut levels, todos_slot, None, Some(todo("5"))), None);
    change(
        &mut levels,
        members_slot,
        None,
        Some(row(&[Some("5"), Some("u1")])),
    );
    assert!(levels.unsettled(), "a new value must move rows");
    // The next todo of project 5 is in; its move to 6 takes it out.
    let second = row(&[Some("2"), Some("5"), Some("t")]);
    assert_eq!(
        change(&mut levels, todos_slot, None, Some(second.clone())),
        Some(RowChange::Insert)
    );
    let moved = row(&[Some("2"), Some("6"), Some("t")]);
    assert_eq!(
        change(&mut levels, todos_slot, Some(second), Some(moved.clone())),
        Some(RowChange::Delete)
    );
    // A delete of a row the shape does not hold is nothing.
    assert_eq!(change(&mut levels, todos_slot, Some(moved), None), None);
}

#[test]
fn rows_move_out_when_their_value_leaves_and_not_while_another_row_offers_it() {
    let mut levels = shape(false);
    let (todos_slot, members_slot) = slots();
    let grant = |user: &str| row(&[Some("5"), Some(user)]);
    change(&mut levels, members_slot, None, Some(grant("u1")));
    levels.settle();
    change(
        &mut levels,
        todos_slot,
        None,
        Some(row(&[Some("1"), Some("5"), Some("a")])),
    );
    // u2's membership is filtered out by the subquery's own where: nothing changes.
    change(&mut levels, members_slot, None, Some(grant("u2")));
    assert!(!levels.unsettled());
    change(&mut levels, members_slot, Some(grant("u1")), None);
    assert!(levels.unsettled());
    let out = levels.root.move_out();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0][0].as_deref(), Some("1"));
    assert!(levels.root.present.is_empty());
}

#[test]
fn not_in_moves_every_row_when_the_subquery_becomes_empty_or_offers_null() {
    let mut levels = shape(true);
    let (todos_slot, members_slot) = slots();
    // Empty subquery: NOT IN holds for every row, NULL project included.
    let null_todo = row(&[Some("1"), None, Some("a")]);
    assert_eq!(
        change(&mut levels, todos_slot, None, Some(null_todo.clone())),
        Some(RowChange::Insert)
    );
    // Now non-empty: a NULL project is NOT IN nothing known, so it is NULL: out.
    change(
        &mut levels,
        members_slot,
        None,
        Some(row(&[Some("5"), Some("u1")])),
    );
    assert!(levels.unsettled());
    assert_eq!(
        levels.root.move_in_candidates().map(|c| c.len()),
        None,
        "every row must be read again"
    );
    let out = levels.root.move_out();
    assert_eq!(out, vec![row(&[Some("1"), None, None])]);
}

#[test]
fn a_restart_sends_only_what_differs_from_the_log() {
    let table = todos();
    let sent = |id: &str, project: &str, title: &str| -> Map<String, Value> {
        json!({"id": id, "project_id": project, "title": title})
            .as_object()
            .unwrap()
            .clone()
    };
    let held: HashMap<String, Map<String, Value>> = HashMap::from([
        ("k1".into(), sent("1", "5", "same")),
        ("k2".into(), sent("2", "5", "old title")),
        ("k3".into(), sent("3", "5", "gone")),
    ]);
    let fresh = vec![
        ("k1".into(), row(&[Some("1"), Some("5"), Some("same")])),
        ("k2".into(), row(&[Some("2"), Some("5"), Some("new title")])),
        ("k4".into(), row(&[Some("4"), Some("6"), Some("came")])),
    ];
    let changes = changes_to(&table, &[0, 1, 2], held, fresh);
    let kinds: Vec<(RowChange, Option<String>)> = changes
        .iter()
        .map(|(c, old, new)| {
            let row = new.as_ref().or(old.as_ref()).unwrap();
            (*c, row[0].clone())
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (RowChange::Update, Some("2".into())),
            (RowChange::Insert, Some("4".into())),
            (RowChange::Delete, Some("3".into())),
        ]
    );
}
