//! TEMPORARY STUB (replaced by the subquery-where branch).
#![allow(unused_variables, dead_code)]
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{WhereClause, WhereError};
use super::types::SqlType;
use crate::schema::{QualifiedName, TableSchema};

pub struct Subquery {
    pub table: QualifiedName,
    pub schema: Arc<TableSchema>,
    pub columns: Vec<usize>,
    pub types: Vec<SqlType>,
    pub where_clause: Option<WhereClause>,
}
impl std::fmt::Debug for Subquery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("Subquery") }
}
impl PartialEq for Subquery {
    fn eq(&self, o: &Self) -> bool { self.table == o.table }
}
impl Subquery {
    pub fn key_of_inner(&self, row: &[Option<String>]) -> Option<ValueKey> { todo!() }
}
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ValueKey(pub Box<[Box<str>]>);
impl ValueKey {
    pub fn parts(&self) -> impl Iterator<Item = &str> { self.0.iter().map(|s| &**s) }
}
pub trait SubqueryValues {
    fn contains(&self, subquery: usize, key: &ValueKey) -> bool;
    fn has_null(&self, subquery: usize) -> bool;
}
impl WhereClause {
    pub fn tables_named(text: &str) -> Result<Vec<QualifiedName>, WhereError> { todo!() }
    pub fn parse_with_tables(text: &str, params: &BTreeMap<usize, String>, table: &TableSchema,
        others: &dyn Fn(&QualifiedName) -> Option<Arc<TableSchema>>) -> Result<WhereClause, WhereError> { todo!() }
    pub fn subqueries(&self) -> &[Arc<Subquery>] { todo!() }
    pub fn has_subqueries(&self) -> bool { false }
    pub fn matches_with(&self, row: &[Option<String>], values: &dyn SubqueryValues) -> bool { todo!() }
    pub fn evaluate_with(&self, row: &[Option<String>], values: &dyn SubqueryValues) -> Option<bool> { todo!() }
    pub fn outer_key(&self, subquery: usize, row: &[Option<String>]) -> Option<ValueKey> { todo!() }
}
impl WhereClause {
    pub fn outer_columns(&self, subquery: usize) -> Option<Vec<usize>> { todo!() }
}
