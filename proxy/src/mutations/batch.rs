//! A request turned into a batch: each mutation either decided already (rejected by
//! validation) or pending, checked against its table.

use std::collections::HashMap;
use std::sync::Arc;

use shapes::schema::QualifiedName;
use shapes::where_clause::WhereClause;

use super::config::WriteConfig;
use super::error::MutationError;
use super::guard::{self, WriteGuard};
use super::pool::PooledConnection;
use super::table::{TableCache, parse_table_name};
use super::validate::{ValidMutation, validate};
use super::wire::{MutationRequest, Outcome, RefusalCode};
use crate::config::TombstoneSpec;

/// One mutation of the batch.
#[derive(Debug, Clone)]
pub enum Slot {
    Done(Outcome),
    Pending(ValidMutation),
}

#[derive(Debug)]
pub struct Batch {
    pub client_id: String,
    pub atomic: bool,
    pub ids: Vec<String>,
    pub slots: Vec<Slot>,
    /// For a mutation id repeated within the batch, the index of its first occurrence.
    pub repeat_of: Vec<Option<usize>>,
    /// Per table, the condition the [`WriteGuard`] puts on rows before and after a write.
    pub checks: HashMap<QualifiedName, Arc<WhereClause>>,
}

impl Batch {
    pub fn pending(&self) -> impl Iterator<Item = (usize, &ValidMutation)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            Slot::Pending(m) => Some((i, m)),
            Slot::Done(_) => None,
        })
    }

    pub fn reject(&mut self, index: usize, outcome: Outcome) {
        self.slots[index] = Slot::Done(outcome);
    }

    /// The row check of `table`, if the request has one.
    pub fn check_of(&self, table: &QualifiedName) -> Option<&WhereClause> {
        self.checks.get(table).map(|c| c.as_ref())
    }
}

/// Validates every mutation; `server_now` (µs) bounds timestamps; `guard` (auth rules)
/// admits each mutation and gives each table's row check.
#[allow(clippy::too_many_arguments)]
pub async fn prepare(
    request: MutationRequest,
    conn: &mut PooledConnection<'_>,
    tables: &TableCache,
    config: &WriteConfig,
    tombstones: &[TombstoneSpec],
    server_now: i64,
    guard: Option<&dyn WriteGuard>,
) -> Result<Batch, MutationError> {
    let mut checks: HashMap<QualifiedName, Result<Option<Arc<WhereClause>>, String>> =
        HashMap::new();
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    let mut repeat_of = Vec::with_capacity(request.mutations.len());
    let mut slots = Vec::with_capacity(request.mutations.len());
    for (index, mutation) in request.mutations.iter().enumerate() {
        let first = *first_index.entry(mutation.id.as_str()).or_insert(index);
        repeat_of.push((first != index).then_some(first));
        if first != index {
            slots.push(Slot::Done(Outcome::Aborted));
            continue;
        }
        let Some(name) = parse_table_name(&mutation.table) else {
            slots.push(Slot::Done(Outcome::rejected(
                RefusalCode::UnknownTable,
                None,
                format!(
                    "`{}` is not a table name: use `table`, `schema.table` or quoted parts",
                    mutation.table
                ),
            )));
            continue;
        };
        let table = match tables.get(conn.client(), &name, config, tombstones).await? {
            Ok(table) => table,
            Err((code, message)) => {
                slots.push(Slot::Done(Outcome::rejected(code, None, message)));
                continue;
            }
        };
        if !config.is_writable(&name) {
            slots.push(Slot::Done(Outcome::rejected(
                RefusalCode::NotWritable,
                None,
                format!("table {name} does not accept writes (see --writable)"),
            )));
            continue;
        }
        let slot = match validate(
            mutation,
            &table,
            &request.client_id,
            server_now,
            config.max_clock_skew,
        ) {
            Ok(valid) => match guard {
                None => Slot::Pending(valid),
                Some(guard) => {
                    let check = checks
                        .entry(name)
                        .or_insert_with(|| guard.row_check(&table).map(|c| c.map(Arc::new)));
                    match check.clone().and_then(|_| guard.admit(&table, &valid)) {
                        Ok(()) => Slot::Pending(valid),
                        Err(reason) => Slot::Done(guard::forbidden(reason)),
                    }
                }
            },
            Err(error) => Slot::Done(Outcome::Rejected { error }),
        };
        slots.push(slot);
    }
    Ok(Batch {
        ids: request.mutations.into_iter().map(|m| m.id).collect(),
        client_id: request.client_id,
        atomic: request.atomic,
        slots,
        repeat_of,
        checks: checks
            .into_iter()
            .filter_map(|(name, check)| Some((name, check.ok()??)))
            .collect(),
    })
}
