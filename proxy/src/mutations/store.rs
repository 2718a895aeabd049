//! Reading and writing one table's rows and registers inside the write transaction.
//!
//! Rows and registers are locked (`FOR UPDATE`, in key order, so concurrent batches do not
//! deadlock each other) before planning. Writes are set-based: one statement per kind (update,
//! delete, insert per column set) and round, a *group*, for the whole batch.
//!
//! A transaction first runs every group as a plain statement: a batch that breaks no
//! constraint takes no savepoint at all, however many groups it has. If Postgres refuses a
//! group for one row's data (a constraint, a too-long value, a trigger), the transaction is
//! aborted; it is rolled back and run again with the groups from that one on each in a
//! savepoint ([`Savepoints`]; groups before it succeeded and run plain again). A refused group
//! is then rolled back to its savepoint, split in halves and retried, down to the single
//! mutation that fails (which is rejected).
//!
//! Savepoints that succeed each hold a subtransaction id until the commit, and more than 64
//! per transaction overflow Postgres' subtransaction cache, which slows every snapshot in the
//! database; so at most [`SAVEPOINT_BUDGET`] are kept per transaction, and mutations still
//! undecided past that are answered `aborted` (not recorded: a retry applies them). Savepoints
//! rolled back free their id. An atomic batch never commits with such an `aborted` result.

use std::collections::{BTreeMap, HashMap};

use shapes::where_clause::WhereClause;
use tokio_postgres::types::ToSql;

use super::clock::Clock;
use super::error::MutationError;
use super::guard::check_failed;
use super::lww::{Plan, RowClocks, RowWrite, StoredRow, TombstoneChange};
use super::pool::PooledConnection;
use super::refusal::refusal_for;
use super::sql;
use super::table::WritableTable;
use super::wire::{Refusal, RefusalCode};

/// Savepoints kept (holding a subtransaction id) per transaction, well under Postgres' cache
/// of 64.
pub const SAVEPOINT_BUDGET: u32 = 40;

/// Which groups of a transaction run in savepoints, and how many savepoints are left.
#[derive(Debug)]
pub struct Savepoints {
    /// Groups are numbered in the order they are written; those from this one on run in
    /// savepoints (`None`: none do).
    guarded_from: Option<usize>,
    next_group: usize,
    budget: u32,
}

impl Savepoints {
    pub fn new(guarded_from: Option<usize>) -> Self {
        Self {
            guarded_from,
            next_group: 0,
            budget: SAVEPOINT_BUDGET,
        }
    }

    /// Numbers the next group; whether it runs in savepoints.
    fn next(&mut self) -> (usize, bool) {
        let group = self.next_group;
        self.next_group += 1;
        (group, self.guarded_from.is_some_and(|from| group >= from))
    }
}

/// The identity of a row in maps and in `shapesync.row_clocks.key`: its key texts as a JSON
/// array.
pub fn key_id(key: &[String]) -> String {
    serde_json::to_string(key).unwrap_or_default()
}

/// A row's state during the transaction.
#[derive(Debug, Clone, Default)]
pub struct KeyState {
    pub row: Option<StoredRow>,
    pub clocks: Option<RowClocks>,
    /// Version of the register row as read (0: none).
    pub version: i64,
    /// Registers changed and must be written.
    pub dirty: bool,
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The key arrays (one `text[]` per key column) of `keys`.
fn key_params(table: &WritableTable, keys: &[&[String]]) -> Params {
    (0..table.key.len())
        .map(|p| {
            let column: Vec<String> = keys.iter().map(|k| k[p].clone()).collect();
            Box::new(column) as Box<dyn ToSql + Sync + Send>
        })
        .collect()
}

fn stored_row(
    table: &WritableTable,
    row: &tokio_postgres::Row,
) -> Result<(String, StoredRow), MutationError> {
    let values: Vec<Option<String>> = row.try_get(0)?;
    let lww_micros: Option<i64> = row.try_get(1)?;
    let key: Option<Vec<String>> = table
        .key
        .iter()
        .map(|&i| values.get(i).cloned().flatten())
        .collect();
    let key =
        key.ok_or_else(|| MutationError::Internal("a row came back without its key".into()))?;
    let row = StoredRow {
        values,
        lww_micros,
        plain_writes: BTreeMap::new(),
    };
    Ok((key_id(&key), row))
}

/// Locks the rows and registers of `keys` and reads them.
pub async fn lock(
    conn: &mut PooledConnection<'_>,
    table: &WritableTable,
    keys: &BTreeMap<String, Vec<String>>,
) -> Result<HashMap<String, KeyState>, MutationError> {
    let ids: Vec<&str> = keys.keys().map(String::as_str).collect();
    let key_lists: Vec<&[String]> = keys.values().map(Vec::as_slice).collect();
    let params = key_params(table, &key_lists);
    let lock_clocks = conn.prepare(sql::LOCK_CLOCKS).await?;
    let lock_rows = conn.prepare(&sql::lock_rows(table)).await?;
    let take_plain = conn.prepare(sql::TAKE_PLAIN_WRITES).await?;
    // Registers first, then rows (the order every writer uses), then the plain writes the
    // trigger recorded while holding a row (taken under its lock), pipelined.
    let client = conn.client();
    let clock_params: [&(dyn ToSql + Sync); 2] = [&table.schema.oid, &ids];
    let row_params = refs(&params);
    let (clock_rows, data_rows, plain_rows) = tokio::try_join!(
        client.query(&lock_clocks, &clock_params),
        client.query(&lock_rows, &row_params),
        client.query(&take_plain, &clock_params),
    )?;
    let mut states: HashMap<String, KeyState> = keys
        .keys()
        .map(|id| (id.clone(), KeyState::default()))
        .collect();
    for row in clock_rows {
        let id: String = row.try_get(0)?;
        let live: bool = row.try_get(1)?;
        let micros: i64 = row.try_get(2)?;
        let client: String = row.try_get(3)?;
        let columns: String = row.try_get(4)?;
        let columns: BTreeMap<String, Clock> = serde_json::from_str(&columns)
            .map_err(|e| MutationError::Internal(format!("unreadable row_clocks.columns: {e}")))?;
        let state = states.entry(id).or_default();
        state.clocks = Some(RowClocks {
            existence: Some((live, Clock::new(micros, client))),
            columns,
            lww_written: row.try_get(5)?,
        });
        state.version = row.try_get(6)?;
    }
    for row in data_rows {
        let (id, stored) = stored_row(table, &row)?;
        states.entry(id).or_default().row = Some(stored);
    }
    // Only for rows still there: a vanished row counts as deleted, whatever it was before.
    for row in plain_rows {
        let id: String = row.try_get(0)?;
        let column: String = row.try_get(1)?;
        let micros: i64 = row.try_get(2)?;
        if let Some(stored) = states.get_mut(&id).and_then(|s| s.row.as_mut()) {
            stored.plain_writes.insert(column, micros);
        }
    }
    Ok(states)
}

/// Writes the changed registers; fails with `ConcurrentCreate` if one was created meanwhile.
pub async fn write_clocks(
    conn: &mut PooledConnection<'_>,
    table: &WritableTable,
    states: &HashMap<String, KeyState>,
) -> Result<(), MutationError> {
    let mut ids = Vec::new();
    let (mut live, mut micros, mut clients, mut columns, mut lww, mut versions) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (id, state) in states {
        let Some(clocks) = state.clocks.as_ref().filter(|_| state.dirty) else {
            continue;
        };
        let Some((is_live, clock)) = &clocks.existence else {
            continue;
        };
        ids.push(id.as_str());
        live.push(*is_live);
        micros.push(clock.micros);
        clients.push(clock.client.as_str());
        columns.push(
            serde_json::to_string(&clocks.columns)
                .map_err(|e| MutationError::Internal(e.to_string()))?,
        );
        lww.push(clocks.lww_written);
        versions.push(state.version + 1);
    }
    if ids.is_empty() {
        return Ok(());
    }
    let written = conn
        .query(
            sql::WRITE_CLOCKS,
            &[
                &table.schema.oid,
                &ids,
                &live,
                &micros,
                &clients,
                &columns,
                &lww,
                &versions,
            ],
        )
        .await?;
    if written.len() != ids.len() {
        return Err(MutationError::ConcurrentCreate);
    }
    Ok(())
}

/// A planned write of one mutation on one row.
#[derive(Debug, Clone)]
pub struct Planned {
    pub slot: usize,
    pub key: Vec<String>,
    pub key_id: String,
    pub plan: Plan,
}

impl Planned {
    fn columns(&self) -> Vec<usize> {
        match &self.plan.write {
            RowWrite::Insert { columns, .. } | RowWrite::Update { columns, .. } => {
                columns.iter().map(|(i, _)| *i).collect()
            }
            RowWrite::Nothing | RowWrite::Delete => Vec::new(),
        }
    }
}

/// What happened to one planned write.
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// Written; the row as it is now (`None` after a real delete).
    Written(Option<StoredRow>),
    Rejected(Refusal),
    /// Not attempted: the savepoint budget ran out.
    Aborted,
}

/// The statements that write a group of planned rows: all updates, all deletes, or the
/// inserts of one column set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum WriteKind {
    Update,
    Delete,
    Insert(Vec<usize>),
}

impl WriteKind {
    pub fn of(plan: &Plan) -> Option<Self> {
        match &plan.write {
            RowWrite::Nothing => None,
            RowWrite::Update { .. } => Some(Self::Update),
            RowWrite::Delete => Some(Self::Delete),
            RowWrite::Insert { columns, .. } => {
                Some(Self::Insert(columns.iter().map(|(i, _)| *i).collect()))
            }
        }
    }
}

/// Writes a group, in savepoints split on data errors if [`Savepoints`] says so (see the
/// module doc); otherwise a data error is [`MutationError::NeedsSavepoints`]. With a `check`,
/// every row the statement leaves must satisfy it: the rows that do not are rejected
/// (`forbidden`), the savepoint rolled back, and the others written again without them.
pub async fn write_group(
    conn: &mut PooledConnection<'_>,
    table: &WritableTable,
    kind: &WriteKind,
    items: &[Planned],
    check: Option<&WhereClause>,
    savepoints: &mut Savepoints,
) -> Result<Vec<WriteOutcome>, MutationError> {
    let (group, guarded) = savepoints.next();
    if !guarded {
        let all: Vec<&Planned> = items.iter().collect();
        return match run_write(conn, table, kind, &all, false).await {
            Ok(rows) => {
                if refused_rows(conn, table, check, &all, &rows)
                    .await?
                    .is_empty()
                {
                    written(kind, &all, &rows)
                } else {
                    Err(MutationError::NeedsSavepoints { group })
                }
            }
            Err(err) => {
                let columns = items.first().map(|p| p.columns()).unwrap_or_default();
                match refusal_for(&err, table, &columns) {
                    Some(_) => Err(MutationError::NeedsSavepoints { group }),
                    None => Err(err.into()),
                }
            }
        };
    }
    let mut outcomes = vec![WriteOutcome::Aborted; items.len()];
    let mut todo: Vec<Vec<usize>> = vec![(0..items.len()).collect()];
    while let Some(indices) = todo.pop() {
        if indices.is_empty() || savepoints.budget == 0 {
            continue;
        }
        let group: Vec<&Planned> = indices.iter().map(|&i| &items[i]).collect();
        match run_write(conn, table, kind, &group, true).await {
            Ok(rows) => {
                let refused = refused_rows(conn, table, check, &group, &rows).await?;
                if !refused.is_empty() {
                    conn.execute(
                        "ROLLBACK TO SAVEPOINT shapesync_write; RELEASE SAVEPOINT shapesync_write",
                    )
                    .await?;
                    let mut rest = Vec::with_capacity(indices.len());
                    for (position, &index) in indices.iter().enumerate() {
                        if refused.contains(&position) {
                            outcomes[index] = WriteOutcome::Rejected(Refusal {
                                code: RefusalCode::Forbidden,
                                column: None,
                                message: check_failed(table, true),
                            });
                        } else {
                            rest.push(index);
                        }
                    }
                    todo.push(rest);
                    continue;
                }
                // Left unreleased: releasing costs a round trip and frees no subtransaction
                // id (a released one stays in the cache until commit); COMMIT releases it.
                savepoints.budget -= 1;
                for (&index, outcome) in indices.iter().zip(written(kind, &group, &rows)?) {
                    outcomes[index] = outcome;
                }
            }
            Err(err) => {
                let columns = group.first().map(|p| p.columns()).unwrap_or_default();
                let Some(refusal) = refusal_for(&err, table, &columns) else {
                    return Err(err.into());
                };
                conn.execute(
                    "ROLLBACK TO SAVEPOINT shapesync_write; RELEASE SAVEPOINT shapesync_write",
                )
                .await?;
                if let [index] = indices[..] {
                    outcomes[index] = WriteOutcome::Rejected(refusal);
                } else {
                    // Popped from the end: the first half runs first.
                    let (first, second) = indices.split_at(indices.len() / 2);
                    todo.push(second.to_vec());
                    todo.push(first.to_vec());
                }
            }
        }
    }
    Ok(outcomes)
}

/// The outcomes of a statement that wrote `group`, from the rows it returned.
fn written(
    kind: &WriteKind,
    group: &[&Planned],
    rows: &HashMap<String, StoredRow>,
) -> Result<Vec<WriteOutcome>, MutationError> {
    if matches!(kind, WriteKind::Delete) {
        if rows.len() != group.len() {
            return Err(MutationError::Internal("a locked row vanished".into()));
        }
        return Ok(vec![WriteOutcome::Written(None); group.len()]);
    }
    group
        .iter()
        .map(|item| {
            rows.get(&item.key_id)
                .cloned()
                .map(|row| WriteOutcome::Written(Some(row)))
                .ok_or(MutationError::ConcurrentCreate)
        })
        .collect()
}

/// Positions in `group` of the rows written that fail `check` (a delete leaves no row).
async fn refused_rows(
    conn: &mut PooledConnection<'_>,
    table: &WritableTable,
    check: Option<&WhereClause>,
    group: &[&Planned],
    rows: &HashMap<String, StoredRow>,
) -> Result<Vec<usize>, tokio_postgres::Error> {
    let Some(check) = check else {
        return Ok(Vec::new());
    };
    let written: Vec<(usize, &[Option<String>])> = group
        .iter()
        .enumerate()
        .filter_map(|(position, item)| {
            rows.get(&item.key_id)
                .map(|row| (position, row.values.as_slice()))
        })
        .collect();
    let values: Vec<&[Option<String>]> = written.iter().map(|(_, v)| *v).collect();
    let passing = super::check_sql::passing(conn, table, check, &values).await?;
    Ok(written
        .iter()
        .enumerate()
        .filter(|(i, _)| !passing.contains(i))
        .map(|(_, (position, _))| *position)
        .collect())
}

/// One statement over `group`, in a new savepoint (pipelined with it) if `savepoint`; the
/// returned rows by key id.
async fn run_write(
    conn: &mut PooledConnection<'_>,
    table: &WritableTable,
    kind: &WriteKind,
    group: &[&Planned],
    savepoint: bool,
) -> Result<HashMap<String, StoredRow>, tokio_postgres::Error> {
    let keys: Vec<&[String]> = group.iter().map(|p| p.key.as_slice()).collect();
    let mut params = key_params(table, &keys);
    let statement = match kind {
        WriteKind::Update => {
            params.extend(update_params(table, group));
            sql::update_rows(table)
        }
        WriteKind::Delete => sql::delete_rows(table),
        WriteKind::Insert(columns) => {
            params.extend(insert_params(columns, group));
            sql::insert_rows(table, columns)
        }
    };
    let statement = conn.prepare(&statement).await?;
    let client = conn.client();
    let params = refs(&params);
    let rows = if savepoint {
        let (_, rows) = tokio::try_join!(
            client.batch_execute("SAVEPOINT shapesync_write"),
            client.query(&statement, &params),
        )?;
        rows
    } else {
        client.query(&statement, &params).await?
    };
    let mut by_key = HashMap::with_capacity(rows.len());
    for row in &rows {
        // A row without its key cannot be matched; it is reported missing by the caller.
        if let Ok((id, stored)) = stored_row(table, row) {
            by_key.insert(id, stored);
        }
    }
    Ok(by_key)
}

fn update_params(table: &WritableTable, group: &[&Planned]) -> Params {
    let columns = sql::data_columns(table);
    let mut sets = vec![Vec::with_capacity(group.len()); columns.len()];
    let mut values: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(group.len()); columns.len()];
    let (mut lww, mut top, mut tus) = (Vec::new(), Vec::new(), Vec::new());
    for item in group {
        let RowWrite::Update {
            columns: written,
            lww: row_lww,
            tombstone,
        } = &item.plan.write
        else {
            continue;
        };
        for (j, column) in columns.iter().enumerate() {
            let value = written.iter().find(|(i, _)| i == column);
            sets[j].push(value.is_some());
            values[j].push(value.and_then(|(_, v)| v.clone()));
        }
        lww.push(*row_lww);
        let (op, at) = match tombstone {
            TombstoneChange::Keep => (0_i32, None),
            TombstoneChange::Set(at) => (1, Some(*at)),
            TombstoneChange::Clear => (2, None),
        };
        top.push(op);
        tus.push(at);
    }
    let mut params: Params = Vec::new();
    for (set, value) in sets.into_iter().zip(values) {
        params.push(Box::new(set));
        params.push(Box::new(value));
    }
    params.push(Box::new(lww));
    params.push(Box::new(top));
    params.push(Box::new(tus));
    params
}

fn insert_params(columns: &[usize], group: &[&Planned]) -> Params {
    let mut values: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(group.len()); columns.len()];
    let mut lww = Vec::with_capacity(group.len());
    let mut tombstones = Vec::with_capacity(group.len());
    for item in group {
        let RowWrite::Insert {
            columns: written,
            lww: row_lww,
            tombstone,
        } = &item.plan.write
        else {
            continue;
        };
        for (j, column) in columns.iter().enumerate() {
            let value = written.iter().find(|(i, _)| i == column);
            values[j].push(value.and_then(|(_, v)| v.clone()));
        }
        lww.push(*row_lww);
        tombstones.push(*tombstone);
    }
    let mut params: Params = values
        .into_iter()
        .map(|v| Box::new(v) as Box<dyn ToSql + Sync + Send>)
        .collect();
    params.push(Box::new(lww));
    params.push(Box::new(tombstones));
    params
}
