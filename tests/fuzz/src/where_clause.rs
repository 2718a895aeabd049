//! The `where` language: parser, type check, evaluator, SQL and canonical rebuild.
//!
//! Input: UTF-8 text split at NUL bytes. The first part is the `where`; part `n` (from 1) is
//! both the parameter `$n` and the value of column `n - 1` of the evaluated row (the byte
//! `0x01` alone, or a missing part, is NULL). Properties beyond "no panic": the canonical form
//! reads back (without parameters) as the same condition, with the same value on the row and
//! the same SQL.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
use shapes::where_clause::WhereClause;

const NULL: &str = "\u{1}";

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let clause = parts.next().unwrap_or_default();
    let values: Vec<&str> = parts.collect();
    let table = table();
    let params: BTreeMap<usize, String> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != NULL)
        .map(|(i, v)| (i + 1, (*v).to_owned()))
        .collect();
    let row: Vec<Option<String>> = (0..table.columns.len())
        .map(|i| {
            values
                .get(i)
                .filter(|v| **v != NULL)
                .map(|v| (*v).to_owned())
        })
        .collect();
    let Ok(first) = WhereClause::parse(clause, &params, table) else {
        return;
    };
    let value = first.evaluate(&row);
    assert_eq!(first.matches(&row), value == Some(true));
    let sql = first.to_sql();
    let _ = first.to_sql_with_offset(3);
    let used: Vec<usize> = first.columns_used().collect();
    assert!(used.iter().all(|&c| c < table.columns.len()));
    let _ = first.and(&first).evaluate(&row);

    let canonical = first.canonical();
    let second = WhereClause::parse(&canonical, &BTreeMap::new(), table)
        .unwrap_or_else(|e| panic!("{clause:?} → canonical {canonical:?} is refused: {e}"));
    assert_eq!(second.canonical(), canonical, "{clause:?}");
    assert_eq!(
        second.evaluate(&row),
        value,
        "{clause:?} → {canonical:?} on {row:?}"
    );
    assert_eq!(second.to_sql(), sql, "{clause:?} → {canonical:?}");
}

fn base(name: &str) -> PgType {
    PgType {
        oid: 0,
        name: name.into(),
        kind: TypeKind::Base,
    }
}

fn array_of(element: PgType) -> PgType {
    PgType {
        oid: 0,
        name: element.name.clone(),
        kind: TypeKind::Array {
            element: Box::new(element),
        },
    }
}

/// A column of every kind the language knows (the table of `shapes/tests/common`), so
/// that the column values of the input reach every type's parser.
pub const COLUMNS: &[&str] = &[
    "id",
    "i2",
    "i4",
    "i8",
    "n",
    "f4",
    "f8",
    "b",
    "t",
    "vc",
    "c",
    "u",
    "d",
    "tm",
    "ts",
    "tz",
    "iv",
    "j",
    "jb",
    "e",
    "ai",
    "at",
    "Mixed Case",
    "p",
    "dom",
];

pub fn table() -> &'static TableSchema {
    static TABLE: OnceLock<TableSchema> = OnceLock::new();
    TABLE.get_or_init(|| {
        let types = [
            base("int8"),
            base("int2"),
            base("int4"),
            base("int8"),
            base("numeric"),
            base("float4"),
            base("float8"),
            base("bool"),
            base("text"),
            base("varchar"),
            base("bpchar"),
            base("uuid"),
            base("date"),
            base("time"),
            base("timestamp"),
            base("timestamptz"),
            base("interval"),
            base("json"),
            base("jsonb"),
            PgType {
                oid: 0,
                name: "mood".into(),
                kind: TypeKind::Enum {
                    labels: vec!["sad".into(), "ok".into(), "happy".into()],
                },
            },
            array_of(base("int4")),
            array_of(base("text")),
            base("text"),
            PgType {
                oid: 600,
                name: "point".into(),
                kind: TypeKind::Base,
            },
            PgType {
                oid: 0,
                name: "posint".into(),
                kind: TypeKind::Domain {
                    base: Box::new(base("int4")),
                },
            },
        ];
        let columns = COLUMNS
            .iter()
            .zip(types)
            .enumerate()
            .map(|(i, (name, ty))| Column {
                name: (*name).into(),
                ty,
                type_mod: -1,
                dims: 0,
                not_null: i == 0,
                pk_index: (i == 0).then_some(0),
                generated: false,
            })
            .collect();
        TableSchema {
            name: QualifiedName::new("public", "things"),
            oid: 1,
            columns,
        }
    })
}
