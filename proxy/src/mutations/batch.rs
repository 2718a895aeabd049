//! A request turned into a batch: each mutation either decided already (rejected by
//! validation) or pending, checked against its table.

use std::collections::HashMap;
use std::sync::Arc;

use shapes::schema::QualifiedName;
use shapes::table_name::{parse_table_name, reserved_table};
use shapes::where_clause::WhereClause;

use super::config::WriteConfig;
use super::error::MutationError;
use super::guard::{self, WriteGuard};
use super::pool::PooledConnection;
use super::precondition::Precondition;
use super::table::TableCache;
use super::validate::{ValidMutation, validate};
use super::wire::{Mutation, MutationRequest, Outcome, RefusalCode};
use crate::tombstones::TombstoneSpec;

/// One mutation of the batch.
#[derive(Debug, Clone)]
pub enum Slot {
    Done(Outcome),
    Pending(ValidMutation),
}

pub struct Batch {
    pub client_id: String,
    pub atomic: bool,
    pub ids: Vec<String>,
    pub slots: Vec<Slot>,
    /// For a mutation id repeated within the batch, the index of its first occurrence.
    pub repeat_of: Vec<Option<usize>>,
    /// Per table, the condition the [`WriteGuard`] puts on rows before and after a write.
    pub checks: HashMap<QualifiedName, Arc<WhereClause>>,
    /// What the locked rows must meet before they are written (none for `/v1/mutations`).
    pub precondition: Option<Arc<dyn Precondition>>,
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

/// What deciding each mutation of a request needs.
pub struct Preparation<'a> {
    pub tables: &'a TableCache,
    pub config: &'a WriteConfig,
    pub tombstones: &'a [TombstoneSpec],
    /// Bounds timestamps (µs).
    pub server_now: i64,
    /// The auth rules of the request: admit each mutation and give each table's row check.
    pub guard: Option<&'a dyn WriteGuard>,
}

/// Per table, its row check, or why the guard refuses the table.
type Checks = HashMap<QualifiedName, Result<Option<Arc<WhereClause>>, String>>;

impl Preparation<'_> {
    /// Validates every mutation of `request`.
    pub async fn prepare(
        &self,
        request: MutationRequest,
        conn: &mut PooledConnection<'_>,
    ) -> Result<Batch, MutationError> {
        let mut checks = Checks::new();
        let mut first_index: HashMap<&str, usize> = HashMap::new();
        let mut repeat_of = Vec::with_capacity(request.mutations.len());
        let mut slots = Vec::with_capacity(request.mutations.len());
        for (index, mutation) in request.mutations.iter().enumerate() {
            let first = *first_index.entry(mutation.id.as_str()).or_insert(index);
            repeat_of.push((first != index).then_some(first));
            let slot = if first == index {
                self.slot(mutation, &request.client_id, conn, &mut checks)
                    .await?
            } else {
                Slot::Done(Outcome::Aborted)
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
            precondition: None,
        })
    }

    /// Decides one mutation, or leaves it pending. With a guard, its checks come first (the
    /// table and op before the table is looked up, the columns before validation), so
    /// nothing the guard hides shapes an answer.
    async fn slot(
        &self,
        mutation: &Mutation,
        client_id: &str,
        conn: &mut PooledConnection<'_>,
        checks: &mut Checks,
    ) -> Result<Slot, MutationError> {
        let name = match parse_table_name(&mutation.table) {
            Ok(name) => name,
            Err(err) => {
                return Ok(Slot::Done(Outcome::rejected(
                    RefusalCode::UnknownTable,
                    None,
                    format!(
                        "`{}` is not a table name ({err}): use `table`, `schema.table` or \
                         quoted parts",
                        mutation.table
                    ),
                )));
            }
        };
        if let Some(Err(reason)) = self.guard.map(|g| g.admit_op(&name, mutation.op)) {
            return Ok(Slot::Done(guard::forbidden(reason)));
        }
        // Before any SQL: not even the catalog is read for these.
        if let Some(reserved) = reserved_table(&name) {
            return Ok(Slot::Done(Outcome::rejected(
                RefusalCode::NotWritable,
                None,
                reserved.to_string(),
            )));
        }
        let loaded = self
            .tables
            .get(conn.client(), &name, self.config, self.tombstones)
            .await?;
        let table = match loaded {
            Ok(table) => table,
            Err((code, message)) => return Ok(Slot::Done(Outcome::rejected(code, None, message))),
        };
        if !self.config.is_writable(&name) {
            return Ok(Slot::Done(Outcome::rejected(
                RefusalCode::NotWritable,
                None,
                not_writable(&name, self.guard.is_some()),
            )));
        }
        if let Some(guard) = self.guard {
            if !checks.contains_key(&name) {
                // A check with subqueries reads other tables: their schemas, to parse it.
                let mut others = HashMap::new();
                for inner in guard.check_tables(&name) {
                    match crate::postgres::catalog::load_table(conn.client(), &inner).await {
                        Ok(schema) => {
                            others.insert(inner, Arc::new(schema));
                        }
                        Err(crate::postgres::catalog::CatalogError::Query(e)) => {
                            return Err(e.into());
                        }
                        Err(_) => {}
                    }
                }
                let lookup = |n: &QualifiedName| others.get(n).cloned();
                let check = guard.row_check(&table, &lookup).map(|c| c.map(Arc::new));
                checks.insert(name.clone(), check);
            }
            let check = checks.get(&name).expect("just inserted");
            let admitted = check
                .clone()
                .and_then(|_| guard.admit_columns(&table, mutation));
            if let Err(reason) = admitted {
                return Ok(Slot::Done(guard::forbidden(reason)));
            }
        }
        let shown = |column: &str| self.guard.is_none_or(|g| g.shows_column(&name, column));
        Ok(
            match validate(
                mutation,
                &table,
                client_id,
                self.server_now,
                self.config.max_clock_skew,
                &shown,
            ) {
                Ok(valid) => Slot::Pending(valid),
                Err(error) => Slot::Done(Outcome::Rejected { error }),
            },
        )
    }
}

/// Why a table outside `--writable` refuses a mutation; for a `guarded` request (a token),
/// also that its rules are not what refuses it.
fn not_writable(name: &QualifiedName, guarded: bool) -> String {
    if guarded {
        format!(
            "table {name} does not accept writes: the rules allow this one, but the proxy's \
             --writable does not list {name} (both must allow a write; add it to --writable)"
        )
    } else {
        format!("table {name} does not accept writes: add it to the proxy's --writable")
    }
}
