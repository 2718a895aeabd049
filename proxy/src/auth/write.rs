//! Writing with a token: the rules of each table as the write path's [`WriteGuard`].
//!
//! A mutation needs a table with rules and its op in the table's `write` list (an upsert
//! needs insert and update), both decided before anything about the table is looked up; and
//! every column it sets or merges in `writable_columns` (the key only names the row), decided
//! before the mutation is validated, so a hidden column and one the table lacks get the same
//! answer. The table's `check`, claims bound, is the row check the write path evaluates inside its
//! transaction on the row before (a row of someone else cannot be touched) and after the
//! write (a row cannot be handed to someone else).

use shapes::schema::{QualifiedName, quote_identifier};
use shapes::where_clause::{WhereClause, WhereError};

use super::TokenAccess;
use super::rules::TableRule;
use crate::mutations::guard::WriteGuard;
use crate::mutations::table::WritableTable;
use crate::mutations::wire::{Mutation, Op};

impl TokenAccess {
    /// The same answer for a table without rules and one that does not exist.
    fn write_rule(&self, table: &QualifiedName) -> Result<&TableRule, String> {
        self.rules.table(table).ok_or_else(|| {
            format!(
                "table {table} has no rules, so tokens cannot write it (a token writes only \
                 tables whose section in the proxy's rules file has `write`)"
            )
        })
    }
}

impl WriteGuard for TokenAccess {
    fn admit_op(&self, table: &QualifiedName, op: Op) -> Result<(), String> {
        self.write_rule(table)?.allows(op)
    }

    fn admit_columns(&self, table: &WritableTable, mutation: &Mutation) -> Result<(), String> {
        let rule = self.write_rule(table.name())?;
        let is_key = |name: &str| table.key.iter().any(|&i| table.column_name(i) == name);
        let refused: Vec<String> = mutation
            .values
            .keys()
            .chain(mutation.merge.keys())
            .filter(|name| !rule.writable(name) && !is_key(name))
            .map(|name| quote_identifier(name))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        let writable: Vec<String> = table
            .schema
            .columns
            .iter()
            .filter(|c| rule.writable(&c.name) && !is_key(&c.name))
            .map(|c| quote_identifier(&c.name))
            .collect();
        Err(format!(
            "the rules of {} do not allow writing column{} {}; a token may write: {}",
            table.name(),
            if refused.len() == 1 { "" } else { "s" },
            refused.join(", "),
            if writable.is_empty() {
                "no column".to_owned()
            } else {
                writable.join(", ")
            }
        ))
    }

    fn shows_column(&self, table: &QualifiedName, column: &str) -> bool {
        self.rules.table(table).is_some_and(|rule| {
            (rule.read.is_some() && rule.readable(column))
                || (!rule.write.is_empty() && rule.writable(column))
        })
    }

    fn check_tables(&self, table: &QualifiedName) -> Vec<QualifiedName> {
        let Some(check) = self
            .rules
            .table(table)
            .and_then(|rule| rule.check.as_ref())
            .filter(|c| !c.is_true())
        else {
            return Vec::new();
        };
        let bound = check.bind(&self.claims);
        if !bound.text.contains('(') {
            return Vec::new();
        }
        WhereClause::tables_named(&bound.text).unwrap_or_default()
    }

    fn row_check(
        &self,
        table: &WritableTable,
        others: &dyn Fn(&QualifiedName) -> Option<std::sync::Arc<shapes::schema::TableSchema>>,
    ) -> Result<Option<WhereClause>, String> {
        let rule = self.write_rule(table.name())?;
        let Some(check) = rule.check.as_ref().filter(|c| !c.is_true()) else {
            return Ok(None);
        };
        let bound = check.bind(&self.claims);
        match WhereClause::parse_with_tables(&bound.text, &bound.params, &table.schema, others) {
            Ok(clause) => Ok(Some(clause)),
            Err(WhereError::Param { index, message }) => Err(format!(
                "the token's {} does not fit the rules of {}: {message}",
                bound.claim_of(index),
                table.name()
            )),
            Err(e) => {
                tracing::error!(table = %table.name(), check = check.source(), error = %e,
                    "the write check of the rules does not apply to the table");
                Err(format!(
                    "the write check of the rules of {} does not apply to it; see the proxy's log",
                    table.name()
                ))
            }
        }
    }
}
