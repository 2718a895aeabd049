//! Reading with a token: a shape request narrowed to what the rules of its table allow.
//!
//! - a table without rules (or whose rules allow no reads) is 403, before anything about the
//!   table is looked up;
//! - requested `columns` must all be readable (403 naming the others); no `columns` means the
//!   readable ones;
//! - the client's `where` may use readable columns only (403 naming the others); it is
//!   type-checked against the readable columns alone, so its errors never describe others;
//! - the rule's row filter, claims bound as parameters, becomes the request's `filter`, which
//!   the engine ANDs into the `where` and puts into the shape's identity.

use std::sync::Arc;

use shapes::definition::DefinitionError;
use shapes::schema::{QualifiedName, TableSchema, quote_identifier};
use shapes::table_name::parse_column_list;
use shapes::where_clause::{WhereClause, WhereError};

use super::TokenAccess;
use super::rules::TableRule;
use crate::engine::{Engine, ShapeError};
use crate::http::error::ApiError;
use crate::shape_store::meta::{RowFilter, ShapeRequest};

/// How a request was narrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadScope {
    /// The rows depend on the token's claims: responses are `cache-control: private`.
    pub private: bool,
}

impl TokenAccess {
    /// Narrows `request` to what this token may read of its table.
    pub async fn scope_shape(
        &self,
        engine: &Engine,
        request: &mut ShapeRequest,
    ) -> Result<ReadScope, ApiError> {
        let name = QualifiedName::new(request.schema.clone(), request.table.clone());
        let rule = self.rules.table(&name).ok_or_else(|| {
            ApiError::Forbidden(format!(
                "table {name} has no rules, so tokens cannot read it"
            ))
        })?;
        let Some(read) = &rule.read else {
            return Err(ApiError::Forbidden(format!(
                "the rules of {name} allow no reads with a token"
            )));
        };
        let table = engine
            .tables
            .get(&engine.metadata, &name)
            .await
            .map_err(|e| ApiError::from(ShapeError::from(e)))?;
        scope_columns(rule, &table, request)?;
        check_where_columns(rule, &table, request)?;
        if read.is_true() {
            return Ok(ReadScope { private: false });
        }
        let bound = read.bind(&self.claims);
        match WhereClause::parse(&bound.text, &bound.params, &table) {
            Ok(_) => {}
            Err(WhereError::Param { index, message }) => {
                return Err(ApiError::Forbidden(format!(
                    "the token's {} does not fit the rules of {name}: {message}",
                    bound.claim_of(index)
                )));
            }
            Err(e) => {
                return Err(ApiError::Internal(format!(
                    "the read rule of {name} ({:?}) does not apply: {e}",
                    read.source()
                )));
            }
        }
        request.filter = Some(RowFilter {
            where_: bound.text,
            params: bound.params,
        });
        Ok(ReadScope {
            private: read.uses_claims(),
        })
    }
}

/// Requested columns must be readable; none requested means the readable ones.
fn scope_columns(
    rule: &TableRule,
    table: &Arc<TableSchema>,
    request: &mut ShapeRequest,
) -> Result<(), ApiError> {
    match &request.columns {
        Some(list) => {
            let names = parse_column_list(list)
                .map_err(|e| ApiError::invalid("columns", format!("invalid column list: {e}")))?;
            let refused: Vec<String> = names
                .into_iter()
                .filter(|n| !rule.readable(n))
                .map(|n| quote_identifier(&n))
                .collect();
            if !refused.is_empty() {
                return Err(ApiError::Forbidden(format!(
                    "the rules of {} do not allow reading column{} {}",
                    table.name,
                    if refused.len() == 1 { "" } else { "s" },
                    refused.join(", ")
                )));
            }
        }
        None if rule.columns.is_some() => {
            let readable: Vec<String> = table
                .columns
                .iter()
                .filter(|c| rule.readable(&c.name))
                .map(|c| quote_identifier(&c.name))
                .collect();
            request.columns = Some(readable.join(","));
        }
        None => {}
    }
    Ok(())
}

/// The client's `where` may read readable columns only.
fn check_where_columns(
    rule: &TableRule,
    table: &TableSchema,
    request: &ShapeRequest,
) -> Result<(), ApiError> {
    let Some(text) = request.where_.as_deref().filter(|w| !w.trim().is_empty()) else {
        return Ok(());
    };
    if rule.columns.is_none() {
        return Ok(());
    }
    let mut visible = table.clone();
    visible.columns.retain(|c| rule.readable(&c.name));
    let Err(visible_error) = WhereClause::parse(text, &request.params, &visible) else {
        return Ok(());
    };
    // Fails on the readable columns: either a plain mistake (answered as such, naming only
    // readable columns), or a use of columns that are not readable.
    let refused: Vec<String> = match WhereClause::parse(text, &request.params, table) {
        Ok(full) => full
            .columns_used()
            .map(|i| &table.columns[i].name)
            .filter(|n| !rule.readable(n))
            .map(|n| quote_identifier(n))
            .collect(),
        Err(_) => Vec::new(),
    };
    if refused.is_empty() {
        let error = match visible_error {
            e @ (WhereError::Param { .. } | WhereError::MissingParam(_)) => {
                DefinitionError::Params(e)
            }
            e => DefinitionError::Where(e),
        };
        return Err(ShapeError::from(error).into());
    }
    Err(ApiError::Forbidden(format!(
        "the where clause uses column{} {} of {}, which the rules do not allow reading",
        if refused.len() == 1 { "" } else { "s" },
        refused.join(", "),
        table.name
    )))
}
