//! Last-write-wins planning, as pure code: given a locked row, its registers and one mutation,
//! what to write.
//!
//! Every plain column of a row is a register whose clock is the (timestamp, client id) of the
//! write that last set it; the row's existence is one more register (insert/update/upsert =
//! live, delete = gone). A write sets a register only when its clock is at least the register's
//! ([`Clock::overwrites`]), so the registers, and therefore the row, end the same whatever order
//! the mutations arrive in. Yjs columns are not registers: their merges always apply.
//!
//! **Column registers are independent of existence.** A write that loses existence to a newer
//! delete still sets the columns it wins in the (hidden) tombstoned row — inserting one if the
//! row was never there — so a later resurrection shows the same values whatever the order. On
//! hard-delete tables the values are gone with the row: the delete counts as a write of every
//! column at its clock, so older writes can neither resurrect the row nor refill a column
//! after a newer write resurrected it. Order independence is complete on tombstoned tables
//! only: on hard-delete tables a delete that wins existence forgets values that a
//! concurrent, newer resurrection would otherwise have kept.
//!
//! **The LWW column** (`updated_at`) is set to the newest clock among the row's registers
//! whenever the row is written: "the time of the newest write visible in this row", a
//! deterministic value. When only some columns win, it is therefore the newer of the winning
//! clock and the clocks that beat the others. The sidecar remembers the value it last wrote
//! (`lww_written`).
//!
//! **Plain SQL writes** are seen through that column: a provided trigger sets it to `now()` on
//! every UPDATE that changes something without setting it (and the column's default covers
//! INSERT). If the row's value differs from `lww_written` (or the row has no registers), a plain
//! write happened at that time. The trigger also records, for rows that have registers, which
//! columns the UPDATE changed and when (`shapesync.plain_writes`, taken with the row as
//! [`StoredRow::plain_writes`]): then only those registers get the plain write's clock
//! (existence only when the tombstone column changed), so a device's edit of another column
//! still wins. Without that record (a trigger that only dates the row, a row without
//! registers, an INSERT) the plain write counts as a write of every column and of the row's
//! existence: each register's clock becomes max(its clock, (updated_at, "")). The row's
//! physical state (present, tombstoned) is authoritative. A row that vanished while its
//! existence register said live was deleted with plain SQL: that counts as a delete at the
//! moment it is noticed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::clock::Clock;
use super::table::WritableTable;
use super::wire::Op;

/// The registers of one row, as the sidecar table `shapesync.row_clocks` keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowClocks {
    /// Row existence: (live, clock); `None` before any write is known.
    pub existence: Option<(bool, Clock)>,
    /// Plain columns by name.
    pub columns: BTreeMap<String, Clock>,
    /// The LWW column value (µs) this proxy last wrote, to notice plain SQL writes.
    pub lww_written: Option<i64>,
}

impl RowClocks {
    fn existence_clock(&self) -> Option<&Clock> {
        self.existence.as_ref().map(|(_, clock)| clock)
    }

    fn is_live(&self) -> bool {
        self.existence.as_ref().is_some_and(|(live, _)| *live)
    }

    /// The newest clock among the registers (µs): what the LWW column is set to.
    pub fn newest_micros(&self) -> i64 {
        self.columns
            .values()
            .chain(self.existence_clock())
            .map(|clock| clock.micros)
            .max()
            .unwrap_or(0)
    }
}

/// A locked data row: every column as Postgres text output, and the LWW column in µs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub values: Vec<Option<String>>,
    pub lww_micros: Option<i64>,
    /// Columns plain SQL UPDATEs changed since the last mutation, with the time (µs) of the
    /// last such change, as the trigger recorded them (empty when it recorded none).
    pub plain_writes: BTreeMap<String, i64>,
}

impl StoredRow {
    pub fn is_tombstoned(&self, table: &WritableTable) -> bool {
        table
            .tombstone
            .is_some_and(|i| self.values.get(i).is_some_and(Option::is_some))
    }
}

/// What a mutation asks, once its Yjs merges are computed.
#[derive(Debug, Clone, Copy)]
pub struct Intent<'a> {
    pub op: Op,
    pub clock: &'a Clock,
    pub values: &'a [(usize, Option<String>)],
    /// Merged Yjs documents as bytea text (`\x…`).
    pub merged: &'a [(usize, String)],
}

/// What to do to the data row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowWrite {
    Nothing,
    /// Insert with these columns (plus the key and the LWW column); others take defaults.
    /// `tombstone` is set for a hidden row that keeps the values of writes older than the
    /// delete that decided the row's existence.
    Insert {
        columns: Vec<(usize, Option<String>)>,
        lww: Option<i64>,
        tombstone: Option<i64>,
    },
    Update {
        columns: Vec<(usize, Option<String>)>,
        lww: Option<i64>,
        tombstone: TombstoneChange,
    },
    /// A real delete (tables without tombstones).
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TombstoneChange {
    Keep,
    /// Set the tombstone to this time (µs).
    Set(i64),
    /// Resurrect.
    Clear,
}

/// The planned outcome of one mutation on one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub write: RowWrite,
    /// The registers after the write.
    pub clocks: RowClocks,
    /// Columns a newer write kept; empty when everything was written.
    pub lost: Vec<String>,
    /// Whether the mutation lost in a way the client must undo (lost columns, lost existence).
    pub conflict: bool,
    /// Whether the row is visible in shapes afterwards.
    pub live_after: bool,
}

/// The registers as they stand once plain SQL writes since the last mutation are counted.
/// `now` (µs, server time) dates a plain SQL delete.
pub fn effective_clocks(
    table: &WritableTable,
    row: Option<&StoredRow>,
    stored: Option<&RowClocks>,
    now: i64,
) -> RowClocks {
    let mut clocks = stored.cloned().unwrap_or_default();
    let Some(row) = row else {
        if clocks.is_live() {
            let deleted = clocks
                .existence_clock()
                .cloned()
                .map_or_else(|| Clock::plain_sql(now), |c| c.max(Clock::plain_sql(now)));
            erase_columns(table, &mut clocks, &deleted);
            clocks.existence = Some((false, deleted));
            clocks.lww_written = None;
        }
        return clocks;
    };
    let live = !row.is_tombstoned(table);
    let moved = match row.lww_micros {
        Some(micros) => stored.is_none() || clocks.lww_written != Some(micros),
        None => false,
    };
    if stored.is_some() && !row.plain_writes.is_empty() {
        // The trigger said which columns changed: only those were written.
        let tombstone = table.tombstone.map(|i| table.column_name(i));
        for (name, &micros) in &row.plain_writes {
            let plain = Clock::plain_sql(micros);
            if Some(name.as_str()) == tombstone {
                let existence = clocks.existence_clock().filter(|c| **c > plain);
                clocks.existence = Some((live, existence.cloned().unwrap_or(plain)));
            } else if table.lww_columns().any(|i| table.column_name(i) == name) {
                let clock = clocks.columns.get(name).filter(|c| **c > plain);
                let clock = clock.cloned().unwrap_or(plain);
                clocks.columns.insert(name.clone(), clock);
            }
        }
        if moved {
            clocks.lww_written = row.lww_micros;
        }
    } else if let Some(micros) = row.lww_micros.filter(|_| moved) {
        let plain = Clock::plain_sql(micros);
        for index in table.lww_columns() {
            let name = table.column_name(index);
            let clock = clocks.columns.get(name).filter(|c| **c > plain);
            let clock = clock.cloned().unwrap_or_else(|| plain.clone());
            clocks.columns.insert(name.to_owned(), clock);
        }
        let existence = clocks.existence_clock().filter(|c| **c > plain);
        clocks.existence = Some((live, existence.cloned().unwrap_or(plain)));
        clocks.lww_written = row.lww_micros;
    }
    // The physical state is the truth about existence; only its clock comes from the registers.
    clocks.existence = match clocks.existence.take() {
        None => Some((live, Clock::plain_sql(row.lww_micros.unwrap_or(0)))),
        Some((_, clock)) => Some((live, clock)),
    };
    clocks
}

/// A real delete wrote every column (its value is gone) at `clock`.
fn erase_columns(table: &WritableTable, clocks: &mut RowClocks, clock: &Clock) {
    for index in table.lww_columns() {
        clocks
            .columns
            .insert(table.column_name(index).to_owned(), clock.clone());
    }
}

/// Plans `intent` on a row (`None`: no such row) whose registers are `stored`.
pub fn plan(
    table: &WritableTable,
    row: Option<&StoredRow>,
    stored: Option<&RowClocks>,
    intent: &Intent<'_>,
    now: i64,
) -> Plan {
    let clocks = effective_clocks(table, row, stored, now);
    match intent.op {
        Op::Delete => plan_delete(table, row, clocks, intent.clock),
        Op::Insert | Op::Update | Op::Upsert => plan_write(table, row, clocks, intent),
    }
}

fn plan_delete(
    table: &WritableTable,
    row: Option<&StoredRow>,
    mut clocks: RowClocks,
    clock: &Clock,
) -> Plan {
    if !clock.overwrites(clocks.existence_clock()) {
        // A newer write decided existence: a conflict if it said live, else already deleted.
        let live = clocks.is_live();
        return Plan {
            write: RowWrite::Nothing,
            clocks,
            lost: Vec::new(),
            conflict: live,
            live_after: live,
        };
    }
    clocks.existence = Some((false, clock.clone()));
    if table.tombstone.is_none() {
        erase_columns(table, &mut clocks, clock);
    }
    let write = match row {
        None => RowWrite::Nothing,
        Some(_) if table.tombstone.is_some() => {
            let lww = table.lww.map(|_| clocks.newest_micros());
            clocks.lww_written = lww.or(clocks.lww_written);
            RowWrite::Update {
                columns: Vec::new(),
                lww,
                tombstone: TombstoneChange::Set(clock.micros),
            }
        }
        Some(_) => {
            clocks.lww_written = None;
            RowWrite::Delete
        }
    };
    Plan {
        write,
        clocks,
        lost: Vec::new(),
        conflict: false,
        live_after: false,
    }
}

fn plan_write(
    table: &WritableTable,
    row: Option<&StoredRow>,
    mut clocks: RowClocks,
    intent: &Intent<'_>,
) -> Plan {
    let clock = intent.clock;
    let exists_wins = clock.overwrites(clocks.existence_clock());
    let live_after = exists_wins || clocks.is_live();
    if exists_wins {
        clocks.existence = Some((true, clock.clone()));
    }
    // Values are kept in the row, live or tombstoned; on a tombstoned table a hidden row is
    // inserted to keep values older than the delete of a row that was never there.
    let storable = row.is_some() || exists_wins || table.tombstone.is_some();
    let mut columns = Vec::new();
    let mut lost = Vec::new();
    for (index, value) in intent.values {
        let name = table.column_name(*index);
        if storable && clock.overwrites(clocks.columns.get(name)) {
            clocks.columns.insert(name.to_owned(), clock.clone());
            columns.push((*index, value.clone()));
        } else {
            lost.push(name.to_owned());
        }
    }
    for (index, document) in intent.merged {
        if storable {
            columns.push((*index, Some(document.clone())));
        } else {
            lost.push(table.column_name(*index).to_owned());
        }
    }
    if !live_after {
        // The row stays deleted: from the client's view every column it wrote is lost.
        lost = intent
            .values
            .iter()
            .map(|(i, _)| i)
            .chain(intent.merged.iter().map(|(i, _)| i))
            .map(|&i| table.column_name(i).to_owned())
            .collect();
    }
    let lww = table.lww.map(|_| clocks.newest_micros());
    let write = match row {
        None if exists_wins => RowWrite::Insert {
            columns,
            lww,
            tombstone: None,
        },
        None if storable && !columns.is_empty() => RowWrite::Insert {
            columns,
            lww,
            tombstone: clocks.existence_clock().map(|c| c.micros),
        },
        None => RowWrite::Nothing,
        Some(row) => {
            let tombstone = if exists_wins && row.is_tombstoned(table) {
                TombstoneChange::Clear
            } else {
                TombstoneChange::Keep
            };
            let lww_moves = lww.is_some() && lww != row.lww_micros;
            if columns.is_empty() && tombstone == TombstoneChange::Keep && !lww_moves {
                RowWrite::Nothing
            } else {
                RowWrite::Update {
                    columns,
                    lww,
                    tombstone,
                }
            }
        }
    };
    if write != RowWrite::Nothing && lww.is_some() {
        clocks.lww_written = lww;
    }
    Plan {
        write,
        clocks,
        conflict: !live_after || !lost.is_empty(),
        lost,
        live_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutations::validate::tests::notes;

    const TITLE: usize = 1;
    const BODY: usize = 2;
    const UPDATED_AT: usize = 4;
    const DELETED_AT: usize = 5;

    fn row(title: &str, lww: i64, deleted: bool) -> StoredRow {
        let mut values = vec![Some("k".to_owned()), Some(title.to_owned()), None, None];
        values.push(Some("ts".to_owned()));
        values.push(deleted.then(|| "ts".to_owned()));
        StoredRow {
            values,
            lww_micros: Some(lww),
            plain_writes: BTreeMap::new(),
        }
    }

    fn set_title<'a>(
        op: Op,
        clock: &'a Clock,
        values: &'a [(usize, Option<String>)],
    ) -> Intent<'a> {
        Intent {
            op,
            clock,
            values,
            merged: &[],
        }
    }

    /// Registers as a previous mutation at `at` would have left them.
    fn written(at: i64, client: &str, live: bool) -> RowClocks {
        let clock = Clock::new(at, client);
        RowClocks {
            existence: Some((live, clock.clone())),
            columns: [("title".to_owned(), clock)].into(),
            lww_written: Some(at),
        }
    }

    fn title(value: &str) -> Vec<(usize, Option<String>)> {
        vec![(TITLE, Some(value.to_owned()))]
    }

    #[test]
    fn an_insert_of_a_new_row_writes_every_column_at_its_clock() {
        let table = notes();
        let clock = Clock::new(10, "a");
        let values = title("x");
        let plan = plan(
            &table,
            None,
            None,
            &set_title(Op::Insert, &clock, &values),
            0,
        );
        assert_eq!(
            plan.write,
            RowWrite::Insert {
                columns: values.clone(),
                lww: Some(10),
                tombstone: None
            }
        );
        assert!(!plan.conflict && plan.live_after);
        assert_eq!(plan.clocks.existence, Some((true, clock.clone())));
        assert_eq!(plan.clocks.columns["title"], clock);
        assert_eq!(plan.clocks.lww_written, Some(10));
    }

    #[test]
    fn a_stale_update_loses_its_columns_and_writes_nothing() {
        let table = notes();
        let stored = written(20, "b", true);
        let clock = Clock::new(10, "a");
        let values = title("old");
        let current = row("new", 20, false);
        let plan = plan(
            &table,
            Some(&current),
            Some(&stored),
            &set_title(Op::Update, &clock, &values),
            0,
        );
        assert_eq!(plan.write, RowWrite::Nothing);
        assert_eq!(plan.lost, ["title"]);
        assert!(plan.conflict && plan.live_after);
        assert_eq!(plan.clocks, stored, "registers unchanged");
    }

    #[test]
    fn an_older_write_still_wins_columns_nobody_wrote_later() {
        let table = notes();
        let mut stored = written(20, "b", true);
        stored.columns.clear();
        stored.columns.insert("title".into(), Clock::new(5, "b"));
        let clock = Clock::new(10, "a");
        let values = title("mine");
        let current = row("theirs", 20, false);
        let plan = plan(
            &table,
            Some(&current),
            Some(&stored),
            &set_title(Op::Update, &clock, &values),
            0,
        );
        assert!(!plan.conflict);
        assert_eq!(
            plan.write,
            RowWrite::Update {
                columns: values,
                lww: Some(20),
                tombstone: TombstoneChange::Keep
            },
            "updated_at stays at the newest register (the existence write at 20)"
        );
    }

    #[test]
    fn a_delete_on_a_tombstoned_table_sets_the_tombstone_and_older_writes_stay_deleted() {
        let table = notes();
        let stored = written(10, "a", true);
        let current = row("x", 10, false);
        let delete = Clock::new(30, "b");
        let deleted = plan(
            &table,
            Some(&current),
            Some(&stored),
            &set_title(Op::Delete, &delete, &[]),
            0,
        );
        assert_eq!(
            deleted.write,
            RowWrite::Update {
                columns: vec![],
                lww: Some(30),
                tombstone: TombstoneChange::Set(30)
            }
        );
        assert!(!deleted.live_after && !deleted.conflict);

        let tombstoned = row("x", 30, true);
        let older = Clock::new(20, "c");
        let values = title("late");
        let late = plan(
            &table,
            Some(&tombstoned),
            Some(&deleted.clocks),
            &set_title(Op::Update, &older, &values),
            0,
        );
        assert!(late.conflict && !late.live_after);
        assert_eq!(late.lost, ["title"]);
        assert_eq!(
            late.write,
            RowWrite::Update {
                columns: values,
                lww: Some(30),
                tombstone: TombstoneChange::Keep
            },
            "the hidden row keeps the newer column value, so order does not matter"
        );
    }

    #[test]
    fn a_newer_write_resurrects_a_tombstoned_row() {
        let table = notes();
        let mut stored = written(10, "a", false);
        stored.existence = Some((false, Clock::new(30, "b")));
        stored.lww_written = Some(30);
        let tombstoned = row("x", 30, true);
        let clock = Clock::new(40, "c");
        let values = title("back");
        let plan = plan(
            &table,
            Some(&tombstoned),
            Some(&stored),
            &set_title(Op::Update, &clock, &values),
            0,
        );
        assert!(!plan.conflict && plan.live_after);
        assert_eq!(
            plan.write,
            RowWrite::Update {
                columns: values,
                lww: Some(40),
                tombstone: TombstoneChange::Clear
            }
        );
    }

    #[test]
    fn a_plain_sql_write_counts_as_a_write_of_every_column_at_updated_at() {
        let table = notes();
        let stored = written(10, "a", true);
        // updated_at moved to 25 without shapesync: a plain SQL write.
        let current = row("sql", 25, false);
        let clock = Clock::new(20, "b");
        let values = title("device");
        let plan = plan(
            &table,
            Some(&current),
            Some(&stored),
            &set_title(Op::Update, &clock, &values),
            0,
        );
        assert_eq!(plan.lost, ["title"]);
        assert_eq!(plan.clocks.columns["title"], Clock::plain_sql(25));
        // A row nobody wrote through shapesync: its updated_at dates every column.
        let plan = plan_fresh(&table, &current, 30);
        assert!(!plan.conflict, "30 is newer than the row's 25");
    }

    fn plan_fresh(table: &WritableTable, current: &StoredRow, at: i64) -> Plan {
        let clock = Clock::new(at, "b");
        let values = title("device");
        plan(
            table,
            Some(current),
            None,
            &set_title(Op::Update, &clock, &values),
            0,
        )
    }

    #[test]
    fn a_row_deleted_with_plain_sql_counts_as_deleted_when_noticed() {
        let table = notes();
        let stored = written(10, "a", true);
        let clock = Clock::new(50, "b");
        let values = title("x");
        let plan = plan(
            &table,
            None,
            Some(&stored),
            &set_title(Op::Update, &clock, &values),
            100,
        );
        assert!(plan.conflict && !plan.live_after);
        assert_eq!(plan.write, RowWrite::Nothing);
        assert_eq!(plan.clocks.existence, Some((false, Clock::plain_sql(100))));
    }

    #[test]
    fn a_write_older_than_the_delete_of_a_missing_row_is_kept_in_a_hidden_row() {
        let table = notes();
        let stored = RowClocks {
            existence: Some((false, Clock::new(30, "c"))),
            ..RowClocks::default()
        };
        let clock = Clock::new(20, "b");
        let values = title("two");
        let plan = plan(
            &table,
            None,
            Some(&stored),
            &set_title(Op::Update, &clock, &values),
            0,
        );
        assert!(plan.conflict && !plan.live_after);
        assert_eq!(
            plan.write,
            RowWrite::Insert {
                columns: values,
                lww: Some(30),
                tombstone: Some(30)
            }
        );
    }

    #[test]
    fn a_delete_older_than_the_last_write_is_a_conflict_keeping_the_row() {
        let table = notes();
        let stored = written(20, "a", true);
        let current = row("x", 20, false);
        let clock = Clock::new(10, "b");
        let plan = plan(
            &table,
            Some(&current),
            Some(&stored),
            &set_title(Op::Delete, &clock, &[]),
            0,
        );
        assert_eq!(plan.write, RowWrite::Nothing);
        assert!(plan.conflict && plan.live_after && plan.lost.is_empty());
    }

    #[test]
    fn yjs_merges_apply_whatever_the_clock() {
        let table = notes();
        let stored = written(20, "a", true);
        let current = row("x", 20, false);
        let clock = Clock::new(10, "b");
        let merged = vec![(BODY, "\\x00".to_owned())];
        let intent = Intent {
            op: Op::Update,
            clock: &clock,
            values: &[],
            merged: &merged,
        };
        let plan = plan(&table, Some(&current), Some(&stored), &intent, 0);
        assert!(!plan.conflict);
        assert_eq!(
            plan.write,
            RowWrite::Update {
                columns: vec![(BODY, Some("\\x00".into()))],
                lww: Some(20),
                tombstone: TombstoneChange::Keep
            }
        );
        let _ = (UPDATED_AT, DELETED_AT);
    }

    type Write<'a> = (i64, &'a str, Op, Option<&'a str>);

    /// A tiny model of the table: applies plans to an in-memory row.
    fn replay(table: &WritableTable, order: &[Write<'_>]) -> (Option<StoredRow>, RowClocks) {
        let mut current: Option<StoredRow> = None;
        let mut clocks: Option<RowClocks> = None;
        for (at, client, op, value) in order {
            let clock = Clock::new(*at, *client);
            let values: Vec<_> = value.iter().map(|v| (TITLE, Some(v.to_string()))).collect();
            let p = plan(
                table,
                current.as_ref(),
                clocks.as_ref(),
                &set_title(*op, &clock, &values),
                0,
            );
            current = apply(table, current, &p.write, "k");
            clocks = Some(p.clocks);
        }
        (current, clocks.unwrap_or_default())
    }

    fn apply(
        table: &WritableTable,
        current: Option<StoredRow>,
        write: &RowWrite,
        key: &str,
    ) -> Option<StoredRow> {
        let set = |mut row: StoredRow, columns: &[(usize, Option<String>)], lww: Option<i64>| {
            for (i, v) in columns {
                row.values[*i] = v.clone();
            }
            row.lww_micros = lww.or(row.lww_micros);
            row
        };
        match (current, write) {
            (current, RowWrite::Nothing) => current,
            (_, RowWrite::Delete) => None,
            (
                _,
                RowWrite::Insert {
                    columns,
                    lww,
                    tombstone,
                },
            ) => {
                let mut empty = vec![None; table.schema.columns.len()];
                empty[0] = Some(key.to_owned());
                empty[DELETED_AT] = tombstone.map(|t| t.to_string());
                let fresh = StoredRow {
                    values: empty,
                    lww_micros: None,
                    plain_writes: BTreeMap::new(),
                };
                Some(set(fresh, columns, *lww))
            }
            (
                Some(row),
                RowWrite::Update {
                    columns,
                    lww,
                    tombstone,
                },
            ) => {
                let mut row = set(row, columns, *lww);
                match tombstone {
                    TombstoneChange::Keep => {}
                    TombstoneChange::Set(t) => row.values[DELETED_AT] = Some(t.to_string()),
                    TombstoneChange::Clear => row.values[DELETED_AT] = None,
                }
                Some(row)
            }
            (None, RowWrite::Update { .. }) => panic!("update of a missing row"),
        }
    }

    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![Vec::new()];
        }
        let mut out = Vec::new();
        for smaller in permutations(n - 1) {
            for at in 0..=smaller.len() {
                let mut p = smaller.clone();
                p.insert(at, n - 1);
                out.push(p);
            }
        }
        out
    }

    fn assert_order_independent(table: &WritableTable, writes: &[Write<'_>]) -> Option<String> {
        let expected = replay(table, writes);
        for order in permutations(writes.len()) {
            let shuffled: Vec<_> = order.iter().map(|&i| writes[i]).collect();
            assert_eq!(replay(table, &shuffled), expected, "order {order:?}");
        }
        expected.0.and_then(|row| row.values[TITLE].clone())
    }

    const WRITES: [Write<'static>; 6] = [
        (10, "a", Op::Insert, Some("one")),
        (20, "b", Op::Update, Some("two")),
        (30, "c", Op::Delete, None),
        (25, "d", Op::Update, Some("late")),
        (40, "e", Op::Upsert, None),
        (15, "f", Op::Update, Some("old")),
    ];

    #[test]
    fn every_arrival_order_ends_with_the_same_row_on_a_tombstoned_table() {
        let title = assert_order_independent(&notes(), &WRITES);
        assert_eq!(
            title.as_deref(),
            Some("late"),
            "resurrected by the upsert at 40, with the newest title (25)"
        );
    }

    #[test]
    fn on_a_hard_delete_table_older_writes_do_not_refill_an_erased_column() {
        let mut table = (*notes()).clone();
        table.tombstone = None;
        // update(20) → delete(30) → upsert(40) in either order of the first and the last.
        let writes = [
            (20, "b", Op::Update, Some("two")),
            (30, "c", Op::Delete, None),
            (40, "e", Op::Upsert, None),
        ];
        let forward = replay(&table, &writes);
        let backward = replay(&table, &[writes[1], writes[2], writes[0]]);
        assert_eq!(forward.0, backward.0);
        assert_eq!(forward.0.and_then(|row| row.values[TITLE].clone()), None);
    }

    const SLUG: usize = 3;

    /// `notes` with `slug` a plain column (a second register besides `title`).
    fn notes_with_slug() -> WritableTable {
        let mut table = (*notes()).clone();
        table.schema.columns[SLUG].generated = false;
        assert_eq!(table.lww_columns().count(), 2);
        table
    }

    #[test]
    fn a_plain_sql_update_dates_only_the_columns_it_changed() {
        let table = notes_with_slug();
        let mut stored = written(10, "a", true);
        stored
            .columns
            .insert("slug".to_owned(), Clock::new(10, "a"));
        // The trigger recorded that a plain UPDATE at 25 changed the title only.
        let mut current = row("sql", 25, false);
        current.plain_writes.insert("title".to_owned(), 25);
        let clock = Clock::new(20, "b");
        let values = vec![
            (TITLE, Some("device".to_owned())),
            (SLUG, Some("device-slug".to_owned())),
        ];
        let plan = plan(
            &table,
            Some(&current),
            Some(&stored),
            &set_title(Op::Update, &clock, &values),
            0,
        );
        assert_eq!(plan.lost, ["title"]);
        assert!(plan.conflict && plan.live_after);
        assert_eq!(plan.clocks.columns["title"], Clock::plain_sql(25));
        assert_eq!(plan.clocks.columns["slug"], clock);
        assert_eq!(
            plan.clocks.existence,
            Some((true, clock.clone())),
            "a plain UPDATE of other columns does not write existence (else 25 would win)"
        );
        assert_eq!(
            plan.write,
            RowWrite::Update {
                columns: vec![(SLUG, Some("device-slug".to_owned()))],
                lww: Some(25),
                tombstone: TombstoneChange::Keep
            }
        );
        assert_eq!(plan.clocks.lww_written, Some(25));
    }

    #[test]
    fn a_plain_sql_update_of_the_tombstone_column_writes_existence() {
        let table = notes();
        let stored = written(10, "a", true);
        let mut current = row("x", 25, true);
        current.plain_writes.insert("deleted_at".to_owned(), 25);
        let clock = Clock::new(20, "b");
        let values = title("device");
        let plan = plan(
            &table,
            Some(&current),
            Some(&stored),
            &set_title(Op::Update, &clock, &values),
            0,
        );
        assert!(
            plan.conflict && !plan.live_after,
            "the soft delete at 25 wins"
        );
        assert_eq!(plan.clocks.existence, Some((false, Clock::plain_sql(25))));
        assert_eq!(
            plan.clocks.columns["title"], clock,
            "the title is still kept"
        );
    }

    /// A write in a run with plain SQL writers.
    #[derive(Debug, Clone, Copy)]
    enum Event<'a> {
        /// (µs, client, op, title, slug).
        Mutation(i64, &'a str, Op, Option<&'a str>, Option<&'a str>),
        /// A plain `UPDATE … SET column = value` at µs, with the trigger of the README.
        Sql(i64, usize, &'a str),
    }

    /// Like [`replay`], with plain SQL writers: an UPDATE changes the stored row whatever the
    /// clocks, moves the LWW column and, when the row has registers and the value changes,
    /// records the column as the trigger does; the next mutation takes the record.
    fn replay_events(table: &WritableTable, order: &[Event<'_>]) -> (Option<StoredRow>, RowClocks) {
        let mut current: Option<StoredRow> = None;
        let mut clocks: Option<RowClocks> = None;
        for event in order {
            match *event {
                Event::Mutation(at, client, op, title, slug) => {
                    let clock = Clock::new(at, client);
                    let values: Vec<_> = [(TITLE, title), (SLUG, slug)]
                        .into_iter()
                        .filter_map(|(i, v)| v.map(|v| (i, Some(v.to_owned()))))
                        .collect();
                    let p = plan(
                        table,
                        current.as_ref(),
                        clocks.as_ref(),
                        &set_title(op, &clock, &values),
                        0,
                    );
                    current = apply(table, current, &p.write, "k").map(|mut row| {
                        row.plain_writes.clear();
                        row
                    });
                    clocks = Some(p.clocks);
                }
                Event::Sql(at, column, value) => {
                    let Some(row) = current.as_mut() else {
                        continue;
                    };
                    if row.values[column].as_deref() == Some(value) {
                        continue;
                    }
                    row.values[column] = Some(value.to_owned());
                    row.lww_micros = Some(at);
                    if clocks.is_some() {
                        let name = table.column_name(column).to_owned();
                        let recorded = row.plain_writes.entry(name).or_insert(at);
                        *recorded = (*recorded).max(at);
                    }
                }
            }
        }
        (current, clocks.unwrap_or_default())
    }

    /// What must not depend on the order: every value but the LWW column (a plain UPDATE
    /// dates it `now()`, whatever newer clocks the row holds), and the registers.
    fn outcome(
        (row, clocks): (Option<StoredRow>, RowClocks),
    ) -> (Option<Vec<Option<String>>>, RowClocks) {
        let values = row.map(|mut row| {
            row.values[UPDATED_AT] = None;
            row.values
        });
        let clocks = RowClocks {
            lww_written: None,
            ..clocks
        };
        (values, clocks)
    }

    /// Orders a run can take: plain SQL writes happen at their time, in time order, and a
    /// mutation arrives after its own clock, so after every SQL write older than it.
    fn possible(order: &[Event<'_>]) -> bool {
        let mut last_sql = i64::MIN;
        for (i, event) in order.iter().enumerate() {
            match *event {
                Event::Sql(at, ..) if at < last_sql => return false,
                Event::Sql(at, ..) => last_sql = at,
                Event::Mutation(at, ..) => {
                    let later_sql_first = order[i..]
                        .iter()
                        .any(|e| matches!(e, Event::Sql(sql_at, ..) if *sql_at < at));
                    if later_sql_first {
                        return false;
                    }
                }
            }
        }
        true
    }

    #[test]
    fn every_possible_order_with_plain_sql_writers_ends_with_the_same_row() {
        let table = notes_with_slug();
        // The row exists (written through shapesync) before anything else.
        let insert = Event::Mutation(10, "a", Op::Insert, Some("one"), Some("s1"));
        let events = [
            Event::Mutation(20, "b", Op::Update, Some("two"), None),
            Event::Mutation(30, "c", Op::Delete, None, None),
            Event::Mutation(25, "d", Op::Update, Some("late"), Some("s-late")),
            Event::Mutation(40, "e", Op::Upsert, None, None),
            Event::Mutation(15, "f", Op::Update, None, Some("s-old")),
            Event::Sql(22, TITLE, "sql-22"),
            Event::Sql(27, SLUG, "sql-27"),
            Event::Sql(35, TITLE, "sql-35"),
        ];
        let mut expected = None;
        let mut orders = 0;
        for order in permutations(events.len()) {
            let run: Vec<_> = std::iter::once(insert)
                .chain(order.iter().map(|&i| events[i]))
                .collect();
            if !possible(&run) {
                continue;
            }
            orders += 1;
            let got = outcome(replay_events(&table, &run));
            match &expected {
                None => expected = Some(got),
                Some(first) => assert_eq!(&got, first, "order {order:?}"),
            }
        }
        assert!(orders > 500, "{orders} orders");
        let (values, clocks) = expected.expect("some order");
        let values = values.expect("the row");
        // Per column, the newest write, whether a mutation or plain SQL.
        assert_eq!(values[TITLE].as_deref(), Some("sql-35"));
        assert_eq!(values[SLUG].as_deref(), Some("sql-27"));
        assert_eq!(values[DELETED_AT], None, "resurrected by the upsert at 40");
        assert_eq!(clocks.columns["title"], Clock::plain_sql(35));
        assert_eq!(clocks.columns["slug"], Clock::plain_sql(27));
    }
}
