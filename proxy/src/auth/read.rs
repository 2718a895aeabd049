//! Reading with a token: a shape request narrowed to what the rules of its table allow.
//!
//! - a table without rules (or whose rules allow no reads) is 403, before anything about the
//!   table is looked up;
//! - requested `columns` must all be readable (403 naming the others); no `columns` means the
//!   readable ones;
//! - the client's `where` may use readable columns only: the first other column it names is
//!   a 403 naming it, whether the table has such a column or not (so a token cannot tell a
//!   hidden column from a missing one by the answer); it is type-checked against the readable
//!   columns alone, so its errors never describe others;
//! - a subset snapshot's `where` and `order_by` obey the same rule, and are checked against
//!   the readable columns alone ([`TokenAccess::scope_subset`]);
//! - the rule's row filter, claims bound as parameters, becomes the request's `filter`, which
//!   the read path ANDs into the `where` and puts into the shape's identity.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use shapes::definition::DefinitionError;
use shapes::request::{RowFilter, ShapeRequest};
use shapes::schema::{QualifiedName, TableSchema, quote_identifier};
use shapes::table_name::parse_column_list;
use shapes::where_clause::{WhereClause, WhereError};

use super::AuthError;
use super::TokenAccess;
use super::claims::ClaimTemplate;
use super::rules::TableRule;

/// How a request was narrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadScope {
    /// The rows depend on the token's claims: responses are `cache-control: private`.
    pub private: bool,
}

impl TokenAccess {
    /// The rule of `name` when it lets tokens read (403 otherwise, before anything about the
    /// table is looked up).
    fn read_rule(&self, name: &QualifiedName) -> Result<(&TableRule, &ClaimTemplate), AuthError> {
        let rule = self.rules.table(name).ok_or_else(|| {
            AuthError::Forbidden(format!(
                "table {name} has no rules, so tokens cannot read it"
            ))
        })?;
        match &rule.read {
            Some(read) => Ok((rule, read)),
            None => Err(AuthError::Forbidden(format!(
                "the rules of {name} allow no reads with a token"
            ))),
        }
    }

    /// Narrows `request` to what this token may read of its table. `load_table` looks a
    /// table up (the read path's catalog cache), only once the rules allow reading it.
    ///
    /// A subquery of the client's `where` may read another table only if the token may read
    /// all of it (a rule without a `columns` list); that table's row filter then narrows the
    /// subquery (`request.inner_filters`), so a subquery never sees a row the token could not
    /// read itself. A table without read rules is a 403, never a way to probe it.
    pub async fn scope_shape<E, F, Fut>(
        &self,
        request: &mut ShapeRequest,
        load_table: F,
    ) -> Result<ReadScope, E>
    where
        E: From<AuthError>,
        F: Fn(QualifiedName) -> Fut,
        Fut: Future<Output = Result<Arc<TableSchema>, E>>,
    {
        let name = request.table.clone();
        let (rule, read) = self.read_rule(&name)?;
        let table = load_table(name.clone()).await?;
        scope_columns(rule, &table, request)?;
        let mut others: BTreeMap<QualifiedName, Arc<TableSchema>> = BTreeMap::new();
        let mut private = false;
        request.inner_filters.clear();
        for inner in tables_of(request.where_.as_deref()).map_err(AuthError::from)? {
            let (inner_rule, inner_read) = self.read_rule(&inner).map_err(|_| {
                AuthError::Forbidden(format!(
                    "the where clause (`where`) has a subquery reading table {inner}, which \
                     this token may not read"
                ))
            })?;
            if inner_rule.columns.is_some() {
                return Err(AuthError::Forbidden(format!(
                    "the where clause (`where`) has a subquery reading table {inner}, whose \
                     rules hide some of its columns: subqueries may read only tables the token \
                     may read whole"
                ))
                .into());
            }
            others.insert(inner.clone(), load_table(inner.clone()).await?);
            if !inner_read.is_true() {
                let bound = inner_read.bind(&self.claims);
                private |= inner_read.uses_claims();
                request.inner_filters.push((
                    inner,
                    RowFilter {
                        where_: bound.text,
                        params: bound.params,
                    },
                ));
            }
        }
        check_where_columns(rule, &table, request, &others)?;
        if read.is_true() {
            return Ok(ReadScope { private });
        }
        let bound = read.bind(&self.claims);
        // The rule's own subqueries read what the rules' author chose: no token check.
        for inner in tables_of(Some(&bound.text)).map_err(AuthError::from)? {
            if !others.contains_key(&inner) {
                others.insert(inner.clone(), load_table(inner).await?);
            }
        }
        let lookup = |n: &QualifiedName| others.get(n).cloned();
        match WhereClause::parse_with_tables(&bound.text, &bound.params, &table, &lookup) {
            Ok(_) => {}
            Err(WhereError::Param { index, message }) => {
                return Err(AuthError::Forbidden(format!(
                    "the token's {} does not fit the rules of {name}: {message}",
                    bound.claim_of(index)
                ))
                .into());
            }
            Err(e) => {
                return Err(AuthError::Internal(format!(
                    "the read rule of {name} ({:?}) does not apply: {e}",
                    read.source()
                ))
                .into());
            }
        }
        request.filter = Some(RowFilter {
            where_: bound.text,
            params: bound.params,
        });
        Ok(ReadScope {
            private: private || read.uses_claims(),
        })
    }

    /// The columns a subset snapshot of a shape of `table` may use: 403 when its `where`
    /// (with `params`) or its `order_by` columns use others. Otherwise the table as this
    /// token sees it (readable columns only), for the subset to be checked against, so that
    /// its errors describe no other column.
    pub fn scope_subset(
        &self,
        table: &TableSchema,
        where_: Option<&str>,
        params: &BTreeMap<usize, String>,
        order_by: &[String],
    ) -> Result<TableSchema, AuthError> {
        let (rule, _) = self.read_rule(&table.name)?;
        if rule.columns.is_none() {
            return Ok(table.clone());
        }
        if let Some(text) = where_.filter(|w| !w.trim().is_empty())
            && let Err(WhereProblem::Hidden(hidden)) =
                check_readable_where(rule, table, text, params, &BTreeMap::new())
        {
            // Other mistakes are found (and described) by the subset's own checks.
            return Err(hidden_columns(
                "the subset's where (`subset__where`, or `where` in the body)",
                &hidden,
                rule,
                table,
            ));
        }
        // Columns the table lacks get the same 403 as hidden ones, as in `where`.
        let hidden: Vec<String> = order_by
            .iter()
            .filter(|n| !rule.readable(n))
            .map(|n| quote_identifier(n))
            .collect();
        if !hidden.is_empty() {
            return Err(hidden_columns(
                "the subset's order_by (`subset__order_by`, or `order_by` in the body)",
                &hidden,
                rule,
                table,
            ));
        }
        Ok(readable_view(rule, table))
    }
}

/// The tables the subqueries of a `where` text read.
fn tables_of(text: Option<&str>) -> Result<Vec<QualifiedName>, WhereError> {
    match text.filter(|t| t.contains('(')) {
        Some(text) => WhereClause::tables_named(text),
        None => Ok(Vec::new()),
    }
}

impl From<WhereError> for AuthError {
    fn from(e: WhereError) -> Self {
        AuthError::Invalid {
            param: "where",
            message: e.to_string(),
        }
    }
}

/// `table` with only the columns `rule` allows reading.
fn readable_view(rule: &TableRule, table: &TableSchema) -> TableSchema {
    let mut visible = table.clone();
    visible.columns.retain(|c| rule.readable(&c.name));
    visible
}

/// 403 for a request part (`what`) that uses columns the rules hide (`hidden`, quoted); it
/// names them and the columns that may be used instead.
fn hidden_columns(
    what: &str,
    hidden: &[String],
    rule: &TableRule,
    table: &TableSchema,
) -> AuthError {
    AuthError::Forbidden(format!(
        "{what} uses column{} {}, which {} not readable in {} (hidden by the rules, or not \
         there at all); use only readable columns: {}",
        if hidden.len() == 1 { "" } else { "s" },
        hidden.join(", "),
        if hidden.len() == 1 { "is" } else { "are" },
        table.name,
        readable_names(rule, table).join(", ")
    ))
}

/// The readable columns of `table`, quoted, in table order.
fn readable_names(rule: &TableRule, table: &TableSchema) -> Vec<String> {
    table
        .columns
        .iter()
        .filter(|c| rule.readable(&c.name))
        .map(|c| quote_identifier(&c.name))
        .collect()
}

/// Requested columns must be readable; none requested means the readable ones.
fn scope_columns(
    rule: &TableRule,
    table: &Arc<TableSchema>,
    request: &mut ShapeRequest,
) -> Result<(), AuthError> {
    match &request.columns {
        Some(list) => {
            let names = parse_column_list(list).map_err(|e| AuthError::Invalid {
                param: "columns",
                message: format!("invalid column list: {e}"),
            })?;
            let refused: Vec<String> = names
                .into_iter()
                .filter(|n| !rule.readable(n))
                .map(|n| quote_identifier(&n))
                .collect();
            if !refused.is_empty() {
                return Err(hidden_columns("`columns`", &refused, rule, table));
            }
        }
        None if rule.columns.is_some() => {
            request.columns = Some(readable_names(rule, table).join(","));
        }
        None => {}
    }
    Ok(())
}

/// What is wrong with a `where` a token sent.
enum WhereProblem {
    /// It uses these columns (quoted), which the rules do not allow reading.
    Hidden(Vec<String>),
    /// Another mistake, described in terms of the readable columns alone.
    Invalid(WhereError),
}

/// Checks a token's `where` against the readable columns of `table`. The first column it
/// names outside them is refused as not readable, whether the table has it or not: hidden
/// and missing columns get the same answer, so the answer tells nothing about the table
/// (and a hidden column is never described, not even by a type error).
fn check_readable_where(
    rule: &TableRule,
    table: &TableSchema,
    text: &str,
    params: &BTreeMap<usize, String>,
    others: &BTreeMap<QualifiedName, Arc<TableSchema>>,
) -> Result<(), WhereProblem> {
    let probe = readable_view(rule, table);
    let lookup = |n: &QualifiedName| others.get(n).cloned();
    match WhereClause::parse_with_tables(text, params, &probe, &lookup) {
        Ok(_) => Ok(()),
        Err(e) => match e.unknown_column() {
            Some(name) => Err(WhereProblem::Hidden(vec![quote_identifier(name)])),
            None => Err(WhereProblem::Invalid(e)),
        },
    }
}

/// The client's `where` may read readable columns only.
fn check_where_columns(
    rule: &TableRule,
    table: &TableSchema,
    request: &ShapeRequest,
    others: &BTreeMap<QualifiedName, Arc<TableSchema>>,
) -> Result<(), AuthError> {
    let Some(text) = request.where_.as_deref().filter(|w| !w.trim().is_empty()) else {
        return Ok(());
    };
    if rule.columns.is_none() {
        return Ok(());
    }
    match check_readable_where(rule, table, text, &request.params, others) {
        Ok(()) => Ok(()),
        Err(WhereProblem::Hidden(hidden)) => Err(hidden_columns(
            "the where clause (`where`)",
            &hidden,
            rule,
            table,
        )),
        Err(WhereProblem::Invalid(e)) => {
            let error = match e {
                e @ (WhereError::Param { .. } | WhereError::MissingParam(_)) => {
                    DefinitionError::Params(e)
                }
                e => DefinitionError::Where(e),
            };
            Err(AuthError::Invalid {
                param: error.param(),
                message: error.message(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rules::Rules;
    use shapes::testing::{base, column};

    /// `todos(id int4, title text, position float8, deleted_at timestamptz)`, with
    /// `position` and `deleted_at` hidden by the rules.
    fn todos() -> (TableRule, TableSchema) {
        let table = TableSchema {
            name: QualifiedName::new("public", "todos"),
            oid: 1,
            columns: vec![
                column("id", base("int4")).pk(0),
                column("title", base("text")),
                column("position", base("float8")),
                column("deleted_at", base("timestamptz")),
            ],
        };
        let rules =
            Rules::parse("[tables.todos]\nread = \"true\"\ncolumns = [\"id\", \"title\"]\n")
                .unwrap();
        let rule = rules.table(&table.name).unwrap().clone();
        (rule, table)
    }

    fn check(text: &str) -> Result<(), WhereProblem> {
        let (rule, table) = todos();
        check_readable_where(&rule, &table, text, &BTreeMap::new(), &BTreeMap::new())
    }

    fn hidden(text: &str) -> Vec<String> {
        match check(text) {
            Err(WhereProblem::Hidden(names)) => names,
            Err(WhereProblem::Invalid(e)) => panic!("{text}: not refused as hidden: {e}"),
            Ok(()) => panic!("{text}: accepted"),
        }
    }

    #[test]
    fn readable_columns_pass() {
        assert!(check("title <> '' AND id > 3").is_ok());
    }

    #[test]
    fn hidden_columns_are_named_even_where_they_would_not_type_check() {
        assert_eq!(hidden("position > 4"), ["\"position\""]);
        assert_eq!(hidden("position::text = '4242.125'"), ["\"position\""]);
        assert_eq!(hidden("position = 'x'"), ["\"position\""]);
        assert_eq!(
            hidden("deleted_at IS NULL OR position::text = '1'"),
            ["\"deleted_at\""]
        );
        assert_eq!(hidden("title = 'a' OR Position > 1"), ["\"position\""]);
    }

    #[test]
    fn a_missing_column_is_answered_as_a_hidden_one() {
        assert_eq!(hidden("colour = 'red'"), ["\"colour\""]);
        assert_eq!(hidden("colour::text = 'x'"), ["\"colour\""]);
        assert_eq!(
            hidden("position = 'x' OR colour = 1"),
            ["\"position\""],
            "the first column named, hidden or missing, and nothing after it"
        );
    }

    #[test]
    fn other_mistakes_describe_only_readable_columns() {
        let Err(WhereProblem::Invalid(e)) = check("title = 1 +") else {
            panic!("a syntax error is a mistake, not a hidden column");
        };
        let message = e.to_string();
        assert!(
            !message.contains("position") && !message.contains("deleted_at"),
            "{message}"
        );
        let Err(WhereProblem::Invalid(e)) = check("title > 3") else {
            panic!("a type error on a readable column is a mistake");
        };
        assert!(!e.to_string().contains("position"), "{e}");
        assert!(matches!(check("title ="), Err(WhereProblem::Invalid(_))));
    }
}
