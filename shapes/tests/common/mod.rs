//! A table with a column of every supported type, and rows built by column name.

#![allow(dead_code)]

use std::collections::BTreeMap;

use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
use shapes::where_clause::{WhereClause, WhereError};

pub fn base(name: &str) -> PgType {
    PgType {
        oid: 0,
        name: name.into(),
        kind: TypeKind::Base,
    }
}

pub fn column(name: &str, ty: PgType, pk: Option<usize>) -> Column {
    Column {
        name: name.into(),
        ty,
        type_mod: -1,
        dims: 0,
        not_null: pk.is_some(),
        pk_index: pk,
        generated: false,
    }
}

pub fn mood() -> PgType {
    PgType {
        oid: 0,
        name: "mood".into(),
        kind: TypeKind::Enum {
            labels: vec!["sad".into(), "ok".into(), "happy".into()],
        },
    }
}

pub fn array_of(elem: PgType) -> PgType {
    PgType {
        oid: 0,
        name: elem.name.clone(),
        kind: TypeKind::Array {
            element: Box::new(elem),
        },
    }
}

/// `public.things`: one column per supported type (and a couple that are not).
pub fn table() -> TableSchema {
    let cols = vec![
        column("id", base("int8"), Some(0)),
        column("i2", base("int2"), None),
        column("i4", base("int4"), None),
        column("i8", base("int8"), None),
        column("n", base("numeric"), None),
        column("f4", base("float4"), None),
        column("f8", base("float8"), None),
        column("b", base("bool"), None),
        column("t", base("text"), None),
        column("vc", base("varchar"), None),
        column("c", base("bpchar"), None),
        column("u", base("uuid"), None),
        column("d", base("date"), None),
        column("tm", base("time"), None),
        column("ts", base("timestamp"), None),
        column("tz", base("timestamptz"), None),
        column("iv", base("interval"), None),
        column("j", base("json"), None),
        column("jb", base("jsonb"), None),
        column("e", mood(), None),
        column("ai", array_of(base("int4")), None),
        column("at", array_of(base("text")), None),
        column("Mixed Case", base("text"), None),
        column(
            "p",
            PgType {
                oid: 600,
                name: "point".into(),
                kind: TypeKind::Base,
            },
            None,
        ),
        column(
            "dom",
            PgType {
                oid: 0,
                name: "posint".into(),
                kind: TypeKind::Domain {
                    base: Box::new(base("int4")),
                },
            },
            None,
        ),
    ];
    TableSchema {
        name: QualifiedName::new("public", "things"),
        oid: 1,
        columns: cols,
    }
}

/// A row with the given columns set (by name) and every other column NULL.
pub fn row(values: &[(&str, &str)]) -> Vec<Option<String>> {
    let t = table();
    let mut row = vec![None; t.columns.len()];
    for (name, v) in values {
        let i = t
            .column_index(name)
            .unwrap_or_else(|| panic!("no column {name}"));
        row[i] = Some((*v).to_string());
    }
    row
}

pub fn parse(text: &str) -> Result<WhereClause, WhereError> {
    WhereClause::parse(text, &BTreeMap::new(), &table())
}

pub fn parse_with(text: &str, params: &[(usize, &str)]) -> Result<WhereClause, WhereError> {
    let params: BTreeMap<usize, String> =
        params.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
    WhereClause::parse(text, &params, &table())
}
