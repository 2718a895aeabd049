//! Writing with a token: the rules of each table as the write path's [`WriteGuard`].
//!
//! A mutation needs its op in the table's `write` list (an upsert needs insert and update),
//! and every column it sets or merges in `writable_columns` (the key only names the row).
//! The table's `check`, claims bound, is the row check the write path evaluates inside its
//! transaction on the row before (a row of someone else cannot be touched) and after the
//! write (a row cannot be handed to someone else).

use shapes::where_clause::{WhereClause, WhereError};

use super::TokenAccess;
use super::rules::TableRule;
use crate::mutations::guard::WriteGuard;
use crate::mutations::table::WritableTable;
use crate::mutations::validate::ValidMutation;

impl TokenAccess {
    fn write_rule(&self, table: &WritableTable) -> Result<&TableRule, String> {
        self.rules.table(table.name()).ok_or_else(|| {
            format!(
                "table {} has no rules, so tokens cannot write it",
                table.name()
            )
        })
    }
}

impl WriteGuard for TokenAccess {
    fn admit(&self, table: &WritableTable, mutation: &ValidMutation) -> Result<(), String> {
        let rule = self.write_rule(table)?;
        rule.allows(mutation.op)?;
        let refused: Vec<&str> = mutation
            .values
            .iter()
            .map(|(index, _)| *index)
            .chain(mutation.merges.iter().map(|(index, _)| *index))
            .map(|index| table.column_name(index))
            .filter(|name| !rule.writable(name))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(format!(
            "the rules of {} do not allow writing column{} {}",
            table.name(),
            if refused.len() == 1 { "" } else { "s" },
            refused.join(", ")
        ))
    }

    fn row_check(&self, table: &WritableTable) -> Result<Option<WhereClause>, String> {
        let rule = self.write_rule(table)?;
        let Some(check) = rule.check.as_ref().filter(|c| !c.is_true()) else {
            return Ok(None);
        };
        let bound = check.bind(&self.claims);
        match WhereClause::parse(&bound.text, &bound.params, &table.schema) {
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
