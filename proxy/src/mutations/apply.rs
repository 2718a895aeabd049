//! The write transaction of one batch.
//!
//! 1. `BEGIN`; the transaction's xid (32-bit, as pgoutput's Begin carries it) and server time;
//!    `shapesync.lww_write = on` for the trigger that keeps the LWW column current for plain SQL.
//! 2. Idempotency: an advisory lock on the client id serializes its requests, then the mutation
//!    ids it already sent are looked up; those return their recorded result and change nothing.
//! 3. Per table (in name order): rows and registers locked, the batch's precondition (if
//!    any: `precondition`) judged on them, then *rounds*: round r holds the
//!    r-th mutation of every key, so each statement touches a row at most once and later
//!    mutations of a row are planned on what the earlier ones left. Each round is planned in
//!    pure code (`lww`) and written set-based (`store`), without savepoints unless a run of
//!    the transaction before found a group that needs them.
//! 4. Registers written, results recorded under their ids, `COMMIT` — or, for an atomic batch
//!    with a rejection, `ROLLBACK` and every other result `aborted`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde_json::{Map, Value};
use shapes::lsn::Xid32;
use shapes::schema::QualifiedName;
use shapes::where_clause::WhereClause;
use tokio_postgres::types::ToSql;

use super::batch::{Batch, Slot};
use super::check_sql;
use super::clock::format_micros;
use super::error::MutationError;
use super::guard;
use super::lww::{self, Intent, Plan, RowWrite, StoredRow};
use super::pool::PooledConnection;
use super::precondition::LockedRow;
use super::store::{self, KeyState, Planned, WriteKind, WriteOutcome};
use super::table::WritableTable;
use super::validate::ValidMutation;
use super::wire::{Outcome, RefusalCode};
use super::yjs;

/// First statement: the xid as pgoutput sends it, server time in µs, and the marker the
/// LWW trigger reads.
const HEAD: &str = "SELECT (txid_current() % 4294967296)::int8, \
     (extract(epoch FROM now()) * 1000000)::int8, \
     set_config('shapesync.lww_write', 'on', true)";

/// Advisory lock class of client ids ("shap"); the two-key form has its own key space.
const CLIENT_LOCK: &str = "SELECT pg_advisory_xact_lock(1936220528, hashtext($1))";

const RECORDED: &str = "SELECT mutation_id, result::text FROM shapesync.mutation_ids \
     WHERE client_id = $1 AND mutation_id = ANY($2::text[])";

const RECORD: &str = "INSERT INTO shapesync.mutation_ids (client_id, mutation_id, result) \
     SELECT $1, id, result::jsonb FROM unnest($2::text[], $3::text[]) AS r(id, result) \
     ON CONFLICT DO NOTHING";

/// What a committed (or rolled back) transaction produced.
#[derive(Debug)]
pub struct Applied {
    /// `None` when nothing was committed (atomic batch rolled back).
    pub txid: Option<Xid32>,
    /// Whether some data row changed (only then can the commit show in shapes).
    pub wrote_rows: bool,
    pub outcomes: Vec<Outcome>,
}

/// Runs the transaction, with savepoints for the groups of writes from `guarded_from` on
/// (see `store`). On error the caller rolls back.
pub async fn run(
    conn: &mut PooledConnection<'_>,
    batch: &Batch,
    guarded_from: Option<usize>,
) -> Result<Applied, MutationError> {
    let (xid, now, recorded) = begin(conn, batch).await?;
    let mut outcomes: Vec<Option<Outcome>> = batch
        .slots
        .iter()
        .map(|slot| match slot {
            Slot::Done(outcome) => Some(outcome.clone()),
            Slot::Pending(_) => None,
        })
        .collect();
    let replayed = replay_recorded(batch, &recorded, &mut outcomes)?;

    let mut by_table: BTreeMap<QualifiedName, Vec<usize>> = BTreeMap::new();
    for (index, mutation) in batch.pending() {
        if !replayed[index] {
            by_table
                .entry(mutation.table.name().clone())
                .or_default()
                .push(index);
        }
    }
    let mut savepoints = store::Savepoints::new(guarded_from);
    let mut wrote_rows = false;
    let mut stale = Vec::new();
    for indices in by_table.values() {
        wrote_rows |= apply_table(
            conn,
            batch,
            indices,
            now,
            &mut outcomes,
            &mut savepoints,
            &mut stale,
        )
        .await?;
    }
    if !stale.is_empty() && batch.precondition.as_ref().is_some_and(|p| p.aborts()) {
        stale.sort_unstable();
        return Err(MutationError::Stale { slots: stale });
    }
    let outcomes: Vec<Outcome> = (0..outcomes.len())
        .map(|i| {
            let source = batch.repeat_of[i].unwrap_or(i);
            outcomes[source].clone().unwrap_or(Outcome::Aborted)
        })
        .collect();
    finish(conn, batch, outcomes, &replayed, xid, wrote_rows).await
}

/// Opens the transaction: its xid, server time (µs), and the rows of ids recorded before.
async fn begin(
    conn: &mut PooledConnection<'_>,
    batch: &Batch,
) -> Result<(Xid32, i64, Vec<tokio_postgres::Row>), MutationError> {
    conn.in_transaction = true;
    let (head, lock, recorded) = (
        conn.prepare(HEAD).await?,
        conn.prepare(CLIENT_LOCK).await?,
        conn.prepare(RECORDED).await?,
    );
    // Pipelined: one round trip.
    let client = conn.client();
    let lock_params: [&(dyn ToSql + Sync); 1] = [&batch.client_id];
    let recorded_params: [&(dyn ToSql + Sync); 2] = [&batch.client_id, &batch.ids];
    let (_, head, _, recorded) = tokio::try_join!(
        client.batch_execute("BEGIN"),
        client.query(&head, &[]),
        client.query(&lock, &lock_params),
        client.query(&recorded, &recorded_params),
    )?;
    let head = head
        .first()
        .ok_or_else(|| MutationError::Internal("no xid".into()))?;
    let xid = Xid32(u32::try_from(head.try_get::<_, i64>(0)?).unwrap_or_default());
    let now: i64 = head.try_get(1)?;
    Ok((xid, now, recorded))
}

/// Commits (recording the results), or rolls back an atomic batch with a rejection.
/// An atomic batch left with undecided (`aborted`) mutations and no rejection fails with
/// [`MutationError::OutOfSavepoints`]: it must not commit in part.
async fn finish(
    conn: &mut PooledConnection<'_>,
    batch: &Batch,
    outcomes: Vec<Outcome>,
    replayed: &[bool],
    xid: Xid32,
    wrote_rows: bool,
) -> Result<Applied, MutationError> {
    if batch.atomic && outcomes.iter().any(Outcome::is_rejected) {
        conn.execute("ROLLBACK").await?;
        conn.in_transaction = false;
        let outcomes = outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                if o.is_rejected() || replayed[i] {
                    o
                } else {
                    Outcome::Aborted
                }
            })
            .collect();
        return Ok(Applied {
            txid: None,
            wrote_rows: false,
            outcomes,
        });
    }
    if batch.atomic && outcomes.contains(&Outcome::Aborted) {
        return Err(MutationError::OutOfSavepoints);
    }
    // A batch with a precondition comes with one-off ids (the sync protocols' pushes, which
    // recognise a retry by their precondition): recording them would only fill the table.
    if batch.precondition.is_none() {
        record(conn, batch, &outcomes, replayed).await?;
    }
    conn.execute("COMMIT").await?;
    conn.in_transaction = false;
    Ok(Applied {
        txid: Some(xid),
        wrote_rows,
        outcomes,
    })
}

/// Fills the results of ids seen before; returns which slots were replayed.
fn replay_recorded(
    batch: &Batch,
    rows: &[tokio_postgres::Row],
    outcomes: &mut [Option<Outcome>],
) -> Result<Vec<bool>, MutationError> {
    let mut replayed = vec![false; batch.ids.len()];
    if rows.is_empty() {
        return Ok(replayed);
    }
    let mut results = HashMap::new();
    for row in rows {
        let id: String = row.try_get(0)?;
        let text: String = row.try_get(1)?;
        let outcome: Outcome = serde_json::from_str(&text)
            .map_err(|e| MutationError::Internal(format!("unreadable recorded result: {e}")))?;
        results.insert(id, outcome);
    }
    for (i, id) in batch.ids.iter().enumerate() {
        if let (Some(outcome), None) = (results.get(id), batch.repeat_of[i]) {
            outcomes[i] = Some(outcome.clone());
            replayed[i] = true;
        }
    }
    Ok(replayed)
}

/// Records the first result of every new mutation id (not `aborted` ones: they may be sent
/// again and must then apply).
async fn record(
    conn: &mut PooledConnection<'_>,
    batch: &Batch,
    outcomes: &[Outcome],
    replayed: &[bool],
) -> Result<(), MutationError> {
    let mut ids = Vec::new();
    let mut results = Vec::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        if replayed[i] || batch.repeat_of[i].is_some() || *outcome == Outcome::Aborted {
            continue;
        }
        ids.push(batch.ids[i].as_str());
        results.push(
            serde_json::to_string(outcome).map_err(|e| MutationError::Internal(e.to_string()))?,
        );
    }
    if !ids.is_empty() {
        conn.query(RECORD, &[&batch.client_id, &ids, &results])
            .await?;
    }
    Ok(())
}

fn mutation(batch: &Batch, index: usize) -> Result<&ValidMutation, MutationError> {
    match &batch.slots[index] {
        Slot::Pending(m) => Ok(m),
        Slot::Done(_) => Err(MutationError::Internal(
            "a decided mutation was planned".into(),
        )),
    }
}

/// Applies the mutations `indices` (all on one table); returns whether a data row changed.
async fn apply_table(
    conn: &mut PooledConnection<'_>,
    batch: &Batch,
    indices: &[usize],
    now: i64,
    outcomes: &mut [Option<Outcome>],
    savepoints: &mut store::Savepoints,
    stale: &mut Vec<usize>,
) -> Result<bool, MutationError> {
    let table = mutation(batch, indices[0])?.table.clone();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut queues: BTreeMap<String, VecDeque<usize>> = BTreeMap::new();
    for &index in indices {
        let m = mutation(batch, index)?;
        let id = store::key_id(&m.key);
        keys.entry(id.clone()).or_insert_with(|| m.key.clone());
        queues.entry(id).or_default().push_back(index);
    }
    let mut states = store::lock(conn, &table, &keys).await?;
    let check = batch.check_of(table.name());
    let failing = failing_check(conn, &table, check, &states, queues.keys()).await?;
    check_precondition(
        batch,
        &table,
        &states,
        &failing,
        &mut queues,
        outcomes,
        stale,
    )
    .await?;
    let mut wrote_rows = false;
    loop {
        let round: Vec<(String, usize)> = queues
            .iter_mut()
            .filter_map(|(id, queue)| queue.pop_front().map(|i| (id.clone(), i)))
            .collect();
        if round.is_empty() {
            break;
        }
        // Rows an earlier round wrote are checked as they are now.
        let failing =
            failing_check(conn, &table, check, &states, round.iter().map(|(id, _)| id)).await?;
        let groups = plan_round(&table, batch, round, &mut states, &failing, now, outcomes)?;
        for (kind, items) in groups {
            let check = batch.check_of(table.name());
            let results =
                store::write_group(conn, &table, &kind, &items, check, savepoints).await?;
            for (item, result) in items.into_iter().zip(results) {
                wrote_rows |= matches!(result, WriteOutcome::Written(_));
                let slot = item.slot;
                outcomes[slot] = Some(settle(&table, batch, item, result, &mut states)?);
            }
        }
    }
    store::write_clocks(conn, &table, &states).await?;
    Ok(wrote_rows)
}

/// The keys (of `ids`) whose current row fails the write check of the token's rules (a key
/// without a row passes: there is nothing to guard yet).
async fn failing_check<'a>(
    conn: &mut PooledConnection<'_>,
    table: &WritableTable,
    check: Option<&WhereClause>,
    states: &HashMap<String, KeyState>,
    ids: impl Iterator<Item = &'a String>,
) -> Result<HashSet<String>, MutationError> {
    let Some(check) = check else {
        return Ok(HashSet::new());
    };
    let rows: Vec<(&String, &[Option<String>])> = ids
        .filter_map(|id| {
            let row = states.get(id)?.row.as_ref()?;
            Some((id, row.values.as_slice()))
        })
        .collect();
    let values: Vec<&[Option<String>]> = rows.iter().map(|(_, v)| *v).collect();
    let passing = check_sql::passing(conn, table, check, &values).await?;
    Ok(rows
        .iter()
        .enumerate()
        .filter(|(i, _)| !passing.contains(i))
        .map(|(_, (id, _))| (*id).clone())
        .collect())
}

/// Answers the mutations whose rows fail the batch's precondition `conflict` (current row, no
/// `lost` columns), drops them from `queues` and adds them to `stale`.
async fn check_precondition(
    batch: &Batch,
    table: &WritableTable,
    states: &HashMap<String, KeyState>,
    failing: &HashSet<String>,
    queues: &mut BTreeMap<String, VecDeque<usize>>,
    outcomes: &mut [Option<Outcome>],
    stale: &mut Vec<usize>,
) -> Result<(), MutationError> {
    let Some(precondition) = &batch.precondition else {
        return Ok(());
    };
    // Rows the request's guard refuses are left to it (answered `forbidden`): a conflict
    // would show them.
    let guarded = |id: &String| !failing.contains(id);
    let locked: Vec<(&String, LockedRow)> = queues
        .iter()
        .filter(|(id, _)| guarded(id))
        .map(|(id, queue)| {
            let row = states
                .get(id)
                .and_then(|s| s.row.as_ref())
                .map(|row| row_json(table, row));
            let slots = queue.iter().copied().collect();
            (id, LockedRow { slots, row })
        })
        .collect();
    let (ids, locked): (Vec<&String>, Vec<LockedRow>) = locked.into_iter().unzip();
    let failed = precondition.stale(table.name(), &locked).await?;
    if failed.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = ids.into_iter().cloned().collect();
    for (id, locked) in ids.iter().zip(&locked) {
        let Some(queue) = queues.get_mut(id) else {
            continue;
        };
        queue.retain(|slot| {
            if !failed.contains(slot) {
                return true;
            }
            stale.push(*slot);
            outcomes[*slot] = Some(Outcome::Conflict {
                lost: Vec::new(),
                row: locked.row.clone(),
                clamped_to: None,
            });
            false
        });
    }
    Ok(())
}

/// Plans one round (one mutation per key); decides those that write nothing and groups the
/// others by statement.
#[allow(clippy::too_many_arguments)]
fn plan_round(
    table: &WritableTable,
    batch: &Batch,
    round: Vec<(String, usize)>,
    states: &mut HashMap<String, KeyState>,
    failing: &HashSet<String>,
    now: i64,
    outcomes: &mut [Option<Outcome>],
) -> Result<BTreeMap<WriteKind, Vec<Planned>>, MutationError> {
    let mut groups: BTreeMap<WriteKind, Vec<Planned>> = BTreeMap::new();
    for (id, index) in round {
        let m = mutation(batch, index)?;
        let state = states.entry(id.clone()).or_default();
        if failing.contains(&id) {
            outcomes[index] = Some(guard::forbidden(guard::check_failed(table, false)));
            continue;
        }
        let plan = match plan_one(table, m, state, now) {
            Ok(plan) => plan,
            Err(outcome) => {
                outcomes[index] = Some(outcome);
                continue;
            }
        };
        match WriteKind::of(&plan) {
            None => {
                state.dirty |= state.clocks.as_ref() != Some(&plan.clocks);
                outcomes[index] = Some(outcome_of(table, &plan, state.row.as_ref(), m));
                state.clocks = Some(plan.clocks);
            }
            Some(kind) => groups.entry(kind).or_default().push(Planned {
                slot: index,
                key: m.key.clone(),
                key_id: id,
                plan,
            }),
        }
    }
    Ok(groups)
}

/// The result of a written (or refused) row, and the row's new state.
fn settle(
    table: &WritableTable,
    batch: &Batch,
    item: Planned,
    result: WriteOutcome,
    states: &mut HashMap<String, KeyState>,
) -> Result<Outcome, MutationError> {
    Ok(match result {
        WriteOutcome::Written(row) => {
            let state = states.entry(item.key_id).or_default();
            state.row = row;
            state.dirty = true;
            let outcome = outcome_of(
                table,
                &item.plan,
                state.row.as_ref(),
                mutation(batch, item.slot)?,
            );
            state.clocks = Some(item.plan.clocks);
            outcome
        }
        WriteOutcome::Rejected(error) => Outcome::Rejected { error },
        WriteOutcome::Aborted => Outcome::Aborted,
    })
}

/// Merges the mutation's Yjs updates into the row's documents and plans it.
fn plan_one(
    table: &WritableTable,
    m: &ValidMutation,
    state: &KeyState,
    now: i64,
) -> Result<Plan, Outcome> {
    let mut merged = Vec::with_capacity(m.merges.len());
    for (column, update) in &m.merges {
        let stored = state
            .row
            .as_ref()
            .and_then(|r| r.values[*column].as_deref());
        let document = yjs::merge(stored, update).map_err(|message| {
            Outcome::rejected(
                RefusalCode::InvalidValue,
                Some(table.column_name(*column)),
                message,
            )
        })?;
        merged.push((*column, document));
    }
    let intent = Intent {
        op: m.op,
        clock: &m.clock,
        values: &m.values,
        merged: &merged,
    };
    let plan = lww::plan(
        table,
        state.row.as_ref(),
        state.clocks.as_ref(),
        &intent,
        now,
    );
    debug_assert!(!matches!(plan.write, RowWrite::Update { .. }) || state.row.is_some());
    Ok(plan)
}

/// The result of a planned mutation, given the row as it is after it.
fn outcome_of(
    table: &WritableTable,
    plan: &Plan,
    row: Option<&StoredRow>,
    m: &ValidMutation,
) -> Outcome {
    let row = row
        .filter(|_| plan.live_after)
        .map(|row| row_json(table, row));
    let clamped_to = m.clamped_to.map(format_micros);
    if plan.conflict {
        Outcome::Conflict {
            lost: plan.lost.clone(),
            row,
            clamped_to,
        }
    } else {
        Outcome::Applied { row, clamped_to }
    }
}

/// A row as shapes send it: column → text or null.
pub fn row_json(table: &WritableTable, row: &StoredRow) -> Map<String, Value> {
    table
        .schema
        .columns
        .iter()
        .zip(&row.values)
        .map(|(column, value)| {
            let value = value.clone().map_or(Value::Null, Value::String);
            (column.name.clone(), value)
        })
        .collect()
}
