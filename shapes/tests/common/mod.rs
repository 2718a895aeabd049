//! The table with a column of every supported type (`shapes::testing::every_type_table`), and
//! rows built by column name.

#![allow(dead_code)]

use std::collections::BTreeMap;

use shapes::schema::TableSchema;
use shapes::where_clause::{WhereClause, WhereError};

/// `public.things`: one column per supported type (and a couple that are not).
pub fn table() -> TableSchema {
    shapes::testing::every_type_table()
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

pub mod subqueries;
