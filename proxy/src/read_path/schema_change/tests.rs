use std::collections::BTreeMap;

use shapes::definition::{LogMode, ReplicaMode};
use shapes::schema::QualifiedName;

use super::*;
use crate::replication::event::ReplicaIdentity;

/// (name, type oid, type name, type modifier)
type Col<'a> = (&'a str, u32, &'a str, i32);

const INT4: u32 = 23;
const INT8: u32 = 20;
const TEXT: u32 = 25;
const VARCHAR: u32 = 1043;

fn table(columns: &[Col<'_>]) -> TableSchema {
    TableSchema {
        name: QualifiedName::new("public", "items"),
        oid: 7,
        columns: columns
            .iter()
            .map(|&(name, oid, ty, type_mod)| Column {
                name: name.into(),
                ty: PgType {
                    oid,
                    name: ty.into(),
                    kind: TypeKind::Base,
                },
                type_mod,
                dims: 0,
                not_null: name == "id",
                pk_index: (name == "id").then_some(0),
                generated: false,
            })
            .collect(),
    }
}

fn relation(columns: &[Col<'_>]) -> Relation {
    Relation {
        oid: 7,
        name: QualifiedName::new("public", "items"),
        replica_identity: ReplicaIdentity::Full,
        columns: columns
            .iter()
            .map(|&(name, type_oid, _, type_mod)| RelationColumn {
                name: name.into(),
                type_oid,
                type_mod,
                is_key: true,
            })
            .collect(),
    }
}

fn request(where_: Option<&str>, columns: Option<&str>) -> ShapeRequest {
    ShapeRequest {
        table: QualifiedName::new("public", "items"),
        where_: where_.map(str::to_owned),
        params: BTreeMap::new(),
        columns: columns.map(str::to_owned),
        replica: ReplicaMode::Default,
        log: LogMode::Full,
        moves: Default::default(),
        filter: None,
        inner_filters: Vec::new(),
    }
}

fn compile(request: &ShapeRequest, table: &TableSchema) -> Result<ShapeDefinition, String> {
    crate::read_path::compile_definition(request, table).map_err(|e| e.to_string())
}

const ID: Col<'static> = ("id", INT4, "int4", -1);
const NOTES: Col<'static> = ("notes", TEXT, "text", -1);
const TITLE: Col<'static> = ("title", VARCHAR, "varchar", 104);
const PRIORITY: Col<'static> = ("priority", INT4, "int4", -1);
const BEFORE: [Col<'static>; 4] = [ID, NOTES, TITLE, PRIORITY];

/// Fits a shape made against [`BEFORE`] to rows arriving in `after`.
fn fit_after(where_: Option<&str>, columns: Option<&str>, after: &[Col<'_>]) -> Fit {
    let made = table(&BEFORE);
    let request = request(where_, columns);
    let definition = compile(&request, &made).unwrap();
    fit(
        &made,
        &definition,
        None,
        &request,
        &relation(after),
        compile,
    )
}

#[test]
fn the_same_columns_need_nothing() {
    assert!(matches!(
        fit_after(Some("priority > 2"), Some("id,title"), &BEFORE),
        Fit::Same
    ));
    assert!(matches!(fit_after(None, None, &BEFORE), Fit::Same));
}

#[test]
fn a_shape_with_columns_is_kept_through_changes_of_columns_it_does_not_read() {
    let cases: [(&str, Vec<Col<'_>>); 5] = [
        (
            "added",
            vec![ID, NOTES, TITLE, PRIORITY, ("extra", TEXT, "text", -1)],
        ),
        ("dropped", vec![ID, TITLE, PRIORITY]),
        (
            "renamed",
            vec![ID, ("memo", TEXT, "text", -1), TITLE, PRIORITY],
        ),
        (
            "retyped",
            vec![ID, ("notes", VARCHAR, "varchar", 54), TITLE, PRIORITY],
        ),
        (
            "dropped then added",
            vec![ID, TITLE, PRIORITY, ("notes", INT8, "int8", -1)],
        ),
    ];
    for (what, after) in cases {
        let Fit::Rebase(rebased) = fit_after(Some("priority > 2"), Some("id,title"), &after) else {
            panic!("{what}: not kept");
        };
        let names: Vec<&str> = rebased
            .table
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let expected: Vec<&str> = after.iter().map(|c| c.0).collect();
        assert_eq!(names, expected, "{what}");
        // The columns it reads are found where the new rows have them.
        let selected: Vec<&str> = rebased
            .definition
            .selected_columns()
            .iter()
            .map(|&i| names[i])
            .collect();
        assert_eq!(selected, ["id", "title"], "{what}");
        let values = |priority: &str| -> Vec<Option<String>> {
            after
                .iter()
                .map(|c| match c.0 {
                    "priority" => Some(priority.to_owned()),
                    "id" => Some("1".into()),
                    other => Some(format!("{other}-value")),
                })
                .collect()
        };
        let clause = rebased.definition.where_clause().unwrap();
        assert!(clause.matches(&values("3")), "{what}");
        assert!(!clause.matches(&values("2")), "{what}");
        assert_eq!(rebased.table.primary_key(), [0], "{what}");
    }
}

#[test]
fn a_shape_rotates_when_a_column_it_reads_changes() {
    let cases: [(&str, Vec<Col<'_>>, &str); 4] = [
        (
            "selected column retyped",
            vec![ID, NOTES, ("title", TEXT, "text", -1), PRIORITY],
            "the type of column title it reads changed",
        ),
        (
            "where column retyped",
            vec![ID, NOTES, TITLE, ("priority", INT8, "int8", -1)],
            "the type of column priority it reads changed",
        ),
        (
            "where column dropped",
            vec![ID, NOTES, TITLE],
            "column priority it reads was dropped or renamed",
        ),
        (
            "selected column renamed",
            vec![ID, NOTES, ("name", VARCHAR, "varchar", 104), PRIORITY],
            "column title it reads was dropped or renamed",
        ),
    ];
    for (what, after, why) in cases {
        match fit_after(Some("priority > 2"), Some("id,title"), &after) {
            Fit::Rotate(reason) => assert_eq!(reason, why, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn a_shape_selecting_every_column_rotates_on_any_change_of_them() {
    let added = [ID, NOTES, TITLE, PRIORITY, ("extra", TEXT, "text", -1)];
    let Fit::Rotate(why) = fit_after(None, None, &added) else {
        panic!("kept");
    };
    assert!(why.contains("no `columns` list"), "{why}");
    assert!(matches!(
        fit_after(Some("id > 0"), None, &[ID, TITLE, PRIORITY]),
        Fit::Rotate(_)
    ));
}

#[test]
fn the_tombstone_column_is_read_and_followed_to_its_new_place() {
    let made = table(&[ID, NOTES, ("deleted_at", INT8, "int8", -1), TITLE]);
    let request = request(None, Some("id,title"));
    let definition = compile(&request, &made).unwrap();
    let after = relation(&[ID, ("deleted_at", INT8, "int8", -1), TITLE]);
    let Fit::Rebase(rebased) = fit(&made, &definition, Some(2), &request, &after, compile) else {
        panic!("not kept");
    };
    assert_eq!(rebased.tombstone, Some(1));
    let retyped = relation(&[ID, NOTES, ("deleted_at", TEXT, "text", -1), TITLE]);
    assert!(matches!(
        fit(&made, &definition, Some(2), &request, &retyped, compile),
        Fit::Rotate(_)
    ));
}

#[test]
fn recorded_read_columns_name_what_changed_while_the_proxy_was_down() {
    let made = table(&BEFORE);
    let definition = compile(&request(Some("priority > 2"), Some("id,title")), &made).unwrap();
    let read = read_columns(&made, &definition, None);
    let names: Vec<&str> = read.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "title", "priority"]);
    assert_eq!(
        changed_read_column(&table(&[ID, TITLE, PRIORITY]), &read),
        None
    );
    assert_eq!(
        changed_read_column(&table(&[ID, NOTES, TITLE]), &read).as_deref(),
        Some("column priority is gone")
    );
    assert_eq!(
        changed_read_column(
            &table(&[ID, NOTES, ("title", VARCHAR, "varchar", 204), PRIORITY]),
            &read
        )
        .as_deref(),
        Some("the type of column title changed")
    );
}

fn catalog_change(made: &TableSchema, selected: &[usize], now: &TableSchema) -> Option<String> {
    CatalogChanges::between(made, now).for_shape(selected)
}

#[test]
fn the_catalog_tells_key_and_not_null_changes_of_selected_columns() {
    let made = table(&BEFORE);
    let selected = [0, 2];
    assert_eq!(catalog_change(&made, &selected, &made), None);

    let mut not_null_title = made.clone();
    not_null_title.columns[2].not_null = true;
    assert_eq!(
        catalog_change(&made, &selected, &not_null_title).as_deref(),
        Some("NOT NULL of column title it selects changed")
    );
    let mut not_null_notes = made.clone();
    not_null_notes.columns[1].not_null = true;
    assert_eq!(catalog_change(&made, &selected, &not_null_notes), None);

    let mut other_key = made.clone();
    other_key.columns[0].pk_index = None;
    other_key.columns[3].pk_index = Some(0);
    assert_eq!(
        catalog_change(&made, &selected, &other_key).as_deref(),
        Some("its table's primary key changed")
    );
    // A retyped column is the stream's to tell (it knows where the change falls).
    let mut retyped = made.clone();
    retyped.columns[2].ty.oid = TEXT;
    retyped.columns[2].not_null = true;
    assert_eq!(catalog_change(&made, &selected, &retyped), None);
}

#[test]
fn a_relation_lines_up_with_a_layout_by_name_type_and_modifier() {
    assert!(same_layout(&table(&BEFORE), &relation(&BEFORE)));
    assert!(!same_layout(
        &table(&BEFORE),
        &relation(&[ID, NOTES, ("title", VARCHAR, "varchar", 54), PRIORITY])
    ));
}
