//! STAND-IN until the `where` language lands (issue 3): every `where` is refused.

use std::collections::BTreeMap;

use crate::schema::TableSchema;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WhereError {
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct WhereClause {
    _private: (),
}

impl WhereClause {
    pub fn parse(
        _text: &str,
        _params: &BTreeMap<usize, String>,
        _table: &TableSchema,
    ) -> Result<WhereClause, WhereError> {
        Err(WhereError {
            message: "where clauses are not supported yet".to_owned(),
        })
    }

    pub fn matches(&self, _row: &[Option<String>]) -> bool {
        true
    }

    pub fn to_sql_with_offset(&self, _first_param: usize) -> (String, Vec<String>) {
        ("true".to_owned(), Vec::new())
    }
}
