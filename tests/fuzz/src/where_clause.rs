//! The `where` language: parser, type check, evaluator, SQL and canonical rebuild.
//!
//! Input: UTF-8 text split at NUL bytes. The first part is the `where`; part `n` (from 1) is
//! both the parameter `$n` and the value of column `n - 1` of the evaluated row (the byte
//! `0x01` alone, or a missing part, is NULL). Properties beyond "no panic": the canonical form
//! reads back (without parameters) as the same condition, with the same value on the row and
//! the same SQL.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use shapes::schema::TableSchema;
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

/// The every-type table of the `where` tests (`shapes::testing::every_type_table`), so that
/// the column values of the input reach every type's parser.
pub fn table() -> &'static TableSchema {
    static TABLE: OnceLock<TableSchema> = OnceLock::new();
    TABLE.get_or_init(shapes::testing::every_type_table)
}
