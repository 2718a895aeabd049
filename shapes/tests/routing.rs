//! The routing index: moves in and out of shapes, IN lists, fallback shapes, add/remove.

mod common;

use std::collections::BTreeMap;

use common::{row, table};
use shapes::routing::{RowChange, ShapeId, ShapeIndex};
use shapes::schema::{QualifiedName, TableSchema};
use shapes::testing::{base, column};
use shapes::where_clause::WhereClause;

fn w(text: &str) -> WhereClause {
    WhereClause::parse(text, &BTreeMap::new(), &table()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn route(
    index: &ShapeIndex,
    old: Option<&[(&str, &str)]>,
    new: Option<&[(&str, &str)]>,
) -> Vec<(ShapeId, RowChange)> {
    let old = old.map(row);
    let new = new.map(row);
    let mut out = Vec::new();
    if let Some(slot) = index.slot(&table().name) {
        index.route(slot, old.as_deref(), new.as_deref(), &mut out);
    }
    out
}

fn index_with(shapes: &[(u64, Option<&str>)]) -> ShapeIndex {
    let t = table();
    let mut index = ShapeIndex::default();
    for (id, text) in shapes {
        let clause = text.map(w);
        index.insert(ShapeId(*id), &t, clause.as_ref());
    }
    index
}

use RowChange::{Delete, Insert, Update};

#[test]
fn insert_matching_row_is_an_insert_and_others_are_ignored() {
    let index = index_with(&[(1, Some("i4 = 1")), (2, Some("i4 = 2"))]);
    assert_eq!(
        route(&index, None, Some(&[("i4", "1")])),
        [(ShapeId(1), Insert)]
    );
    assert_eq!(route(&index, None, Some(&[("i4", "3")])), []);
    assert_eq!(route(&index, None, Some(&[])), []);
}

#[test]
fn delete_of_matching_row_is_a_delete() {
    let index = index_with(&[(1, Some("i4 = 1"))]);
    assert_eq!(
        route(&index, Some(&[("i4", "1")]), None),
        [(ShapeId(1), Delete)]
    );
}

#[test]
fn update_moving_row_out_of_shape_emits_delete_and_into_other_shape_emits_insert() {
    let index = index_with(&[(1, Some("i4 = 1")), (2, Some("i4 = 2"))]);
    let out = route(&index, Some(&[("i4", "1")]), Some(&[("i4", "2")]));
    assert_eq!(out, [(ShapeId(1), Delete), (ShapeId(2), Insert)]);
}

#[test]
fn update_staying_in_shape_is_an_update() {
    let index = index_with(&[(1, Some("i4 = 1 AND t LIKE 'a%'"))]);
    let out = route(
        &index,
        Some(&[("i4", "1"), ("t", "ab")]),
        Some(&[("i4", "1"), ("t", "ac")]),
    );
    assert_eq!(out, [(ShapeId(1), Update)]);
    let out = route(
        &index,
        Some(&[("i4", "1"), ("t", "ab")]),
        Some(&[("i4", "1"), ("t", "b")]),
    );
    assert_eq!(out, [(ShapeId(1), Delete)]);
    let out = route(
        &index,
        Some(&[("i4", "1"), ("t", "b")]),
        Some(&[("i4", "1"), ("t", "b")]),
    );
    assert_eq!(out, []);
}

#[test]
fn in_lists_are_indexed_under_every_value() {
    let index = index_with(&[(1, Some("t IN ('a', 'b', NULL)")), (2, Some("t = 'b'"))]);
    assert_eq!(
        route(&index, None, Some(&[("t", "a")])),
        [(ShapeId(1), Insert)]
    );
    assert_eq!(
        route(&index, None, Some(&[("t", "b")])),
        [(ShapeId(1), Insert), (ShapeId(2), Insert)]
    );
    assert_eq!(route(&index, None, Some(&[("t", "c")])), []);
    assert_eq!(route(&index, None, Some(&[])), []);
}

#[test]
fn fallback_shapes_are_evaluated_on_every_change() {
    let index = index_with(&[
        (1, None),
        (2, Some("i4 > 5")),
        (3, Some("i4 = 1 OR i4 = 9")),
    ]);
    assert_eq!(
        route(&index, None, Some(&[("i4", "9")])),
        [
            (ShapeId(1), Insert),
            (ShapeId(2), Insert),
            (ShapeId(3), Insert)
        ]
    );
    assert_eq!(
        route(&index, None, Some(&[("i4", "1")])),
        [(ShapeId(1), Insert), (ShapeId(3), Insert)]
    );
    assert_eq!(
        route(&index, Some(&[("i4", "9")]), Some(&[("i4", "2")])),
        [
            (ShapeId(1), Update),
            (ShapeId(2), Delete),
            (ShapeId(3), Delete)
        ]
    );
}

#[test]
fn keys_are_normalised_through_the_column_type() {
    let uuid = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
    let index = index_with(&[
        (1, Some("i8 = '007'")),
        (2, Some("u = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'")),
        (3, Some("n = 1.50")),
        (4, Some("c = 'ab'")),
        (5, Some("i4 = 3000000000 OR i4 = 1")),
        (6, Some("e = 'ok'")),
        (7, Some("f8 = 0")),
    ]);
    assert_eq!(
        route(&index, None, Some(&[("i8", "7")])),
        [(ShapeId(1), Insert)]
    );
    assert_eq!(
        route(&index, None, Some(&[("u", uuid)])),
        [(ShapeId(2), Insert)]
    );
    assert_eq!(
        route(&index, None, Some(&[("n", "1.5")])),
        [(ShapeId(3), Insert)]
    );
    assert_eq!(
        route(&index, None, Some(&[("n", "1.500")])),
        [(ShapeId(3), Insert)]
    );
    assert_eq!(
        route(&index, None, Some(&[("c", "ab  ")])),
        [(ShapeId(4), Insert)]
    );
    assert_eq!(
        route(&index, None, Some(&[("i4", "1")])),
        [(ShapeId(5), Insert)]
    );
    assert_eq!(
        route(&index, None, Some(&[("e", "ok")])),
        [(ShapeId(6), Insert)]
    );
    assert_eq!(
        route(&index, None, Some(&[("f8", "-0")])),
        [(ShapeId(7), Insert)]
    );
}

#[test]
fn wider_integer_constants_still_use_the_index() {
    let index = index_with(&[(1, Some("i2 = 3000000000")), (2, Some("i2 = 7"))]);
    assert_eq!(
        route(&index, None, Some(&[("i2", "7")])),
        [(ShapeId(2), Insert)]
    );
}

#[test]
fn removing_a_shape_stops_routing_to_it() {
    let mut index = index_with(&[
        (1, Some("i4 = 1")),
        (2, Some("i4 = 1")),
        (3, None),
        (4, Some("t IN ('x','y')")),
    ]);
    assert!(index.remove(ShapeId(1)));
    assert!(!index.remove(ShapeId(1)));
    assert!(index.remove(ShapeId(3)));
    assert!(index.remove(ShapeId(4)));
    assert_eq!(
        route(&index, None, Some(&[("i4", "1"), ("t", "x")])),
        [(ShapeId(2), Insert)]
    );
    assert!(index.remove(ShapeId(2)));
    assert!(index.is_empty());
    assert_eq!(route(&index, None, Some(&[("i4", "1")])), []);
}

#[test]
fn reinserting_an_id_replaces_its_where() {
    let t = table();
    let mut index = index_with(&[(1, Some("i4 = 1"))]);
    index.insert(ShapeId(1), &t, Some(&w("i4 = 2")));
    assert_eq!(index.len(), 1);
    assert_eq!(route(&index, None, Some(&[("i4", "1")])), []);
    assert_eq!(
        route(&index, None, Some(&[("i4", "2")])),
        [(ShapeId(1), Insert)]
    );
}

#[test]
fn shapes_are_kept_per_table() {
    let other = TableSchema {
        name: QualifiedName::new("public", "other"),
        oid: 2,
        columns: vec![column("i4", base("int4")).pk(0).not_null()],
    };
    let mut index = index_with(&[(1, Some("i4 = 1"))]);
    let clause = WhereClause::parse("i4 = 1", &BTreeMap::new(), &other).unwrap();
    let other_slot = index.insert(ShapeId(2), &other, Some(&clause));
    assert_ne!(index.slot(&table().name), Some(other_slot));
    assert_eq!(
        route(&index, None, Some(&[("i4", "1")])),
        [(ShapeId(1), Insert)]
    );
    let mut out = Vec::new();
    index.route(other_slot, None, Some(&[Some("1".to_string())]), &mut out);
    assert_eq!(out, [(ShapeId(2), Insert)]);
    assert_eq!(index.slot(&QualifiedName::new("public", "nope")), None);
}

#[test]
fn a_table_keeps_its_slot_when_its_shapes_go_and_come_back() {
    let other = TableSchema {
        name: QualifiedName::new("public", "other"),
        oid: 2,
        columns: vec![column("i4", base("int4")).pk(0).not_null()],
    };
    let mut index = index_with(&[(1, None)]);
    let slot = index.slot(&table().name).expect("table has a shape");
    assert!(index.remove(ShapeId(1)));
    assert_eq!(index.slot(&table().name), Some(slot), "kept while empty");
    assert_eq!(route(&index, None, Some(&[("i4", "1")])), []);
    // another table does not take the freed place: a slot kept by a caller stays its table's
    let other_slot = index.insert(ShapeId(2), &other, None);
    assert_ne!(other_slot, slot);
    let mut out = Vec::new();
    index.route(slot, None, Some(&[Some("1".to_string())]), &mut out);
    assert_eq!(out, []);
    assert_eq!(index.insert(ShapeId(3), &table(), None), slot);
    assert_eq!(
        route(&index, None, Some(&[("i4", "1")])),
        [(ShapeId(3), Insert)]
    );
}

#[test]
fn many_indexed_shapes_route_to_exactly_the_matching_ones() {
    let t = table();
    let mut index = ShapeIndex::default();
    for i in 0..2000u64 {
        let clause = w(&format!("i8 = {} AND b", i % 500));
        index.insert(ShapeId(i), &t, Some(&clause));
    }
    let out = route(
        &index,
        Some(&[("i8", "7"), ("b", "t")]),
        Some(&[("i8", "8"), ("b", "t")]),
    );
    let deletes: Vec<u64> = out
        .iter()
        .filter(|(_, c)| *c == Delete)
        .map(|(id, _)| id.0)
        .collect();
    let inserts: Vec<u64> = out
        .iter()
        .filter(|(_, c)| *c == Insert)
        .map(|(id, _)| id.0)
        .collect();
    assert_eq!(deletes, [7, 507, 1007, 1507]);
    assert_eq!(inserts, [8, 508, 1008, 1508]);
}

mod differential {
    //! The index against the definition: for any set of shapes (filed under a key with or
    //! without a residual condition, on the fallback list, sharing conditions or not, some
    //! removed and inserted again) and any change, routing reports exactly what evaluating
    //! every shape's whole `where` on the old and new rows says.

    use proptest::prelude::*;

    use super::*;

    const TEMPLATES: &[&str] = &[
        "i4 = {a}",
        "i4 = {a} AND i8 > {b}",
        "i8 > {b} AND i4 = {a}",
        "i4 IN ({a}, {c}) AND t = '{s}'",
        "t = '{s}' AND i4 = {a} AND i8 > {b}",
        "t = '{s}'",
        "i8 > {b}",
        "i4 = {a} AND (i8 > {b} OR t = '{s}')",
        "i4 = {a} AND i8 IS NULL",
    ];

    fn where_text() -> impl Strategy<Value = Option<String>> {
        let filled = (0..TEMPLATES.len(), 0..4i32, 0..4i32, 0..4i32, 0..2usize).prop_map(
            |(t, a, b, c, s)| {
                TEMPLATES[t]
                    .replace("{a}", &a.to_string())
                    .replace("{b}", &b.to_string())
                    .replace("{c}", &c.to_string())
                    .replace("{s}", ["x", "y"][s])
            },
        );
        prop_oneof![1 => Just(None), 8 => filled.prop_map(Some)]
    }

    fn value(values: &'static [&'static str]) -> impl Strategy<Value = Option<&'static str>> {
        prop_oneof![1 => Just(None), 6 => proptest::sample::select(values).prop_map(Some)]
    }

    fn a_row() -> impl Strategy<Value = Vec<Option<String>>> {
        (
            value(&["0", "1", "2", "3"]),
            value(&["0", "1", "2", "3", "4"]),
            value(&["x", "y"]),
        )
            .prop_map(|(i4, i8, t)| {
                let values: Vec<(&str, &str)> = [("i4", i4), ("i8", i8), ("t", t)]
                    .into_iter()
                    .filter_map(|(name, v)| v.map(|v| (name, v)))
                    .collect();
                row(&values)
            })
    }

    fn expected(
        shapes: &BTreeMap<u64, Option<WhereClause>>,
        old: Option<&[Option<String>]>,
        new: Option<&[Option<String>]>,
    ) -> Vec<(ShapeId, RowChange)> {
        let matches = |w: &Option<WhereClause>, row: Option<&[Option<String>]>| {
            row.is_some_and(|r| w.as_ref().is_none_or(|w| w.matches(r)))
        };
        shapes
            .iter()
            .filter_map(|(id, w)| {
                let change = match (matches(w, old), matches(w, new)) {
                    (false, true) => Insert,
                    (true, true) => Update,
                    (true, false) => Delete,
                    (false, false) => return None,
                };
                Some((ShapeId(*id), change))
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn routing_reports_what_every_where_says(
            inserted in proptest::collection::vec((0..40u64, where_text()), 1..60),
            removed in proptest::collection::vec(0..40u64, 0..10),
            changes in proptest::collection::vec(
                (proptest::option::of(a_row()), proptest::option::of(a_row())),
                1..20,
            ),
        ) {
            let t = table();
            let mut index = ShapeIndex::default();
            let mut shapes = BTreeMap::new();
            for (id, text) in &inserted {
                let clause = text.as_deref().map(w);
                index.insert(ShapeId(*id), &t, clause.as_ref());
                shapes.insert(*id, clause);
            }
            for id in &removed {
                index.remove(ShapeId(*id));
                shapes.remove(id);
            }
            let slot = index.slot(&t.name).unwrap();
            for (old, new) in &changes {
                let mut out = Vec::new();
                index.route(slot, old.as_deref(), new.as_deref(), &mut out);
                prop_assert_eq!(
                    &out,
                    &expected(&shapes, old.as_deref(), new.as_deref()),
                    "old {:?} new {:?}", old, new
                );
            }
        }
    }
}
