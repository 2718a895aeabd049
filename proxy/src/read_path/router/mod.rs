//! The single writer of every shape log: routes each change of the replication stream to the
//! shapes it affects, encodes their messages and appends them, one Postgres transaction at a
//! time.
//!
//! Driven by the consumer task, one call per stream event: [`Router::begin`],
//! [`Router::change`]…, [`Router::commit`] (or [`Router::abort`] when the
//! connection drops mid-transaction). Shapes are registered and finished only between
//! transactions, so a shape never sees half of one.
//!
//! - **Op positions** count the changes of the whole Postgres transaction in steps of 2 (a
//!   key-changing update uses `n` and `n + 1`), so every shape of a transaction shares them.
//! - **`last: true`** marks a shape's last message of a transaction: each shape holds back its
//!   latest message until the next one (or the commit) arrives.
//! - **Re-sent transactions** (Postgres re-sends from our flushed position after a restart)
//!   are skipped per shape by commit LSN: a shape has decided everything at or below
//!   `max(start_lsn, last commit in its log)`. Within one run the router skips them whole: a
//!   transaction that commits at or before one it already applied is a re-send after a
//!   reconnect (the logs, and captures replayed into them, may hold more than was flushed).
//!   A restarted router has decided only the commits that start *before* `resume.lsn`: that
//!   is an end LSN, and the next commit record may start exactly there ([`Router::new`]).
//! - **Transactions a snapshot holds** are skipped by xid, in the capture and also after it:
//!   replication may deliver a transaction the snapshot saw only after the snapshot finished
//!   (the stream lags behind the database), so each shape keeps [`SnapshotHolds`] until the
//!   stream passes the WAL position read right after its snapshot.
//! - **Tombstones**: on tombstoned tables a row whose tombstone is set does not exist for
//!   routing, so setting it is a delete and clearing it an insert.

mod capture;
pub mod encode;

use foldhash::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, OnceLock};

use shapes::definition::ShapeDefinition;
use shapes::lsn::{Lsn, Xid, Xid32};
use shapes::offset::Offset;
use shapes::routing::{RowChange, ShapeId, ShapeIndex, TableSlot};
use shapes::schema::{QualifiedName, Row, TableSchema};
use shapes::wire::{Operation, SnapshotInfo};

use crate::storage::shape_log::capture_file::CaptureFile;
use crate::storage::shape_log::{LogAppender, LogFile, ShapeLog, TxnChanges};
use crate::storage::shape_store::Shape;
use encode::{Encoded, Messages, ShapeEncoding, Templates, TxContext};

use crate::read_path::subquery::SubqueryShape;
use crate::read_path::subquery::moves::Moved;
use crate::read_path::subquery::routes::SubqueryRoutes;
use crate::read_path::subquery::tags::{self, Tagger};
use shapes::definition::MoveMode;

/// Appenders kept open at most (each holds a file descriptor): a quarter of the process's
/// descriptor limit (the rest is for clients' sockets, readers and Postgres), within
/// [`MIN_OPEN_APPENDERS`] and [`MAX_OPEN_APPENDERS`]. A shape written after its appender was
/// closed opens its log again (a path lookup, an open, a stat and later a close: ~12% of the
/// proxy's CPU writing to 10,000 shapes in turn with 1,024 kept open).
fn open_appenders_cap() -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    *CAP.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct we pass.
        let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
        let quarter = if known {
            usize::try_from(limit.rlim_cur / 4).unwrap_or(usize::MAX)
        } else {
            MIN_OPEN_APPENDERS
        };
        quarter.clamp(MIN_OPEN_APPENDERS, MAX_OPEN_APPENDERS)
    })
}
const MIN_OPEN_APPENDERS: usize = 256;
const MAX_OPEN_APPENDERS: usize = 65_536;

#[derive(Debug)]
struct RoutedShape {
    shape: Arc<Shape>,
    /// The columns its rows arrive in (the table's as the shape was made, until a change of
    /// columns it does not read moves them: [`Router::rebase`]) and its definition against
    /// them, and its tombstone column.
    encoding: ShapeEncoding,
    tombstone: Option<usize>,
    appender: Option<LogAppender>,
    /// The shape's latest message of the open transaction, held back for `last`.
    held: Option<(Offset, Vec<u8>)>,
    /// Present while the snapshot runs.
    capture: Option<Box<CaptureFile>>,
    skip_through: Lsn,
    /// Present from the end of the snapshot until the stream passes it.
    snapshot_holds: Option<Box<SnapshotHolds>>,
    /// What the open transaction writes to the shape's log (rows it adds, updates and
    /// deletes), told to the log at the commit. Not counted while capturing: the replay counts
    /// what it keeps.
    txn_changes: TxnChanges,
    /// The levels of a shape with subqueries ([`SubqueryShape`]), decided here instead of by
    /// the routing index.
    subquery: Option<Box<SubqueryShape>>,
    /// The subquery headers of its messages (subquery shapes only).
    tagger: Option<Box<Tagger>>,
    /// A resync written but not yet visible ([`Router::append_resync`]).
    after_resync: Option<AfterResync>,
}

impl RoutedShape {
    /// Where an entry of a transaction committed at `commit_lsn`, at `op` of it, goes in the
    /// log: there, or after an unseen resync it committed below ([`AfterResync`]).
    fn place(&mut self, commit_lsn: Lsn, op: u64) -> (Lsn, u64) {
        match self.after_resync.as_mut() {
            Some(after) if commit_lsn <= after.lsn => {
                let op = after.next_op;
                // A key change takes two ops.
                after.next_op += 2;
                (after.lsn, op)
            }
            _ => (commit_lsn, op),
        }
    }

    /// Commits what the log's appender holds at `commit_lsn` (visible from now on; the log
    /// is to be fsynced) and tells the log the rows it added.
    fn commit_log(
        &mut self,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        report: &mut CommitReport,
    ) -> io::Result<()> {
        let appender = open_appender(&mut self.appender, &self.shape.log)?;
        let entries = appender.commit(&self.shape.log, commit_lsn, end_lsn)?;
        report.to_sync.push(appender.log_file().clone());
        self.shape
            .log
            .note_txn(std::mem::take(&mut self.txn_changes), entries);
        Ok(())
    }
}

/// A resync was written at `lsn`, just below its snapshot's WAL position. A transaction the
/// stream delivers later with a commit LSN at or below it (one the snapshot did not see) goes
/// after it, at `(lsn, next_op)` on, so the log's offsets keep growing. None of it is visible
/// until the stream passes `lsn`: a request may not start past `global_last_seen_lsn`.
#[derive(Debug, Clone, Copy)]
struct AfterResync {
    lsn: Lsn,
    next_op: u64,
}

/// Which transactions a shape's snapshot already holds: those whose xid it sees. Every one of
/// them committed below `below`, the WAL insert position read right after the snapshot was
/// taken, so past it there is nothing left to skip (and no xid to misjudge after wraparound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHolds {
    pub snapshot: SnapshotInfo,
    pub below: Lsn,
}

impl SnapshotHolds {
    pub fn holds(&self, xid: Xid32, commit_lsn: Lsn) -> bool {
        commit_lsn < self.below && self.snapshot.sees(Xid::widen(xid, self.snapshot.xmax))
    }
}

#[derive(Debug)]
struct OpenTxn {
    xid: Xid32,
    commit_lsn: Lsn,
    next_op: u64,
    touched: Vec<ShapeId>,
    /// Committed at or before a transaction this router already applied: Postgres sends it
    /// again (it resumes from the flushed position, and the logs may hold more), and every
    /// shape has already decided it.
    resent: bool,
    /// Subquery shapes whose subqueries changed: rows move at the commit.
    unsettled: Vec<ShapeId>,
    /// Subquery shapes whose levels this transaction changed.
    leveled: Vec<ShapeId>,
}

/// What a commit wrote, for the durability task.
#[derive(Debug, Default)]
pub struct CommitReport {
    /// Shape logs that need an fsync.
    pub to_sync: Vec<LogFile>,
    /// Shapes that got messages.
    pub shapes_written: usize,
}

/// The layouts a table's shapes are routed by, each with how many shapes use it: shapes made
/// against one catalog entry share its `Arc`.
#[derive(Debug, Default)]
struct TableLayouts(Vec<(Arc<TableSchema>, usize)>);

impl TableLayouts {
    fn add(&mut self, layout: &Arc<TableSchema>) {
        match self
            .0
            .iter_mut()
            .find(|(l, _)| Arc::ptr_eq(l, layout) || **l == **layout)
        {
            Some((_, uses)) => *uses += 1,
            None => self.0.push((layout.clone(), 1)),
        }
    }

    /// One use fewer; `true` when the table has no shape left.
    fn remove(&mut self, layout: &Arc<TableSchema>) -> bool {
        if let Some(at) = self
            .0
            .iter()
            .position(|(l, _)| Arc::ptr_eq(l, layout) || **l == **layout)
        {
            self.0[at].1 -= 1;
            if self.0[at].1 == 0 {
                self.0.swap_remove(at);
            }
        }
        self.0.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct Router {
    index: ShapeIndex,
    shapes: HashMap<ShapeId, RoutedShape>,
    /// The layouts the shapes of each table are routed by.
    tables: HashMap<QualifiedName, TableLayouts>,
    /// Their message templates.
    templates: Templates,
    /// Bumped whenever a shape comes or goes, so callers can cache what they asked.
    generation: u64,
    /// Tombstone column by [`TableSlot::index`].
    tombstones: Vec<Option<usize>>,
    txn: Option<OpenTxn>,
    /// Every transaction committed at or below it has been decided: the commit LSN of the last
    /// one applied (just below the resume position until one is).
    last_commit: Lsn,
    routed: Vec<(ShapeId, RowChange)>,
    messages: Messages,
    /// Shapes whose appender may be open (written since the last sweep).
    recently_written: HashSet<ShapeId>,
    /// Which subquery shapes a change of a table may concern.
    subquery_routes: SubqueryRoutes,
    /// The shapes found for the change being routed.
    subquery_candidates: Vec<ShapeId>,
    /// The xid of the last transaction applied.
    last_xid: Option<Xid32>,
    /// Subquery shapes to read again ([`Router::abort`]).
    resyncs: Vec<Arc<Shape>>,
    /// Shapes whose resync waits for the stream to pass it ([`Router::append_resync`]).
    resyncs_waiting: Vec<ShapeId>,
}

impl Router {
    /// A router resuming at `resume`: the end LSN of the last transaction made durable
    /// (`resume.lsn`; `Lsn::ZERO` for a first start). Every transaction that committed before
    /// it was decided, and none at it: the commit record right after that transaction's
    /// starts exactly at its end (a transaction that wrote its rows earlier and committed next),
    /// and Postgres sends it, because it skips only commits that start before the position
    /// asked for.
    pub fn new(resume: Lsn) -> Self {
        Self {
            last_commit: Lsn(resume.as_u64().saturating_sub(1)),
            ..Self::default()
        }
    }

    /// Every transaction committed at or below it has been decided: the commit LSN of the
    /// last one processed, or just below the resume position before any.
    pub fn last_commit(&self) -> Lsn {
        self.last_commit
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Changes whenever a shape is registered or removed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether any shape is registered on `table`.
    pub fn routes_to(&self, table: &QualifiedName) -> bool {
        self.tables.contains_key(table)
    }

    /// The slot to route `table`'s changes by, if any shape is registered on it. Worth
    /// keeping until [`Router::generation`] changes (a slot stays its table's for the
    /// router's life, so a kept one is never another table's).
    pub fn slot(&self, table: &QualifiedName) -> Option<TableSlot> {
        if self.tables.contains_key(table) {
            self.index.slot(table)
        } else {
            None
        }
    }

    /// Starts routing changes to `shape`. With `capturing`, changes go to a capture file until
    /// [`finish_snapshot`](Self::finish_snapshot); otherwise (a shape restored after a restart)
    /// straight to its log. Returns the LSN the shape starts after.
    pub fn register(&mut self, shape: Arc<Shape>, capturing: bool) -> io::Result<Lsn> {
        self.remove(shape.id);
        let capture = if capturing {
            Some(Box::new(CaptureFile::create(shape.log.dir())?))
        } else {
            None
        };
        let start = if capturing {
            self.last_commit
        } else {
            shape.meta.start_lsn.max(shape.log.last_commit())
        };
        // A restored shape may still meet transactions its snapshot holds, re-sent after the
        // restart.
        let snapshot_holds = match (&shape.meta.snapshot, shape.meta.snapshot_lsn) {
            (Some(snapshot), Some(below)) if !capturing && below > start => {
                Some(Box::new(SnapshotHolds {
                    snapshot: snapshot.clone(),
                    below,
                }))
            }
            _ => None,
        };
        let table = shape.definition.table().clone();
        let layout = shape.table.clone();
        self.tables.entry(table).or_default().add(&layout);
        let definition = shape.definition.clone();
        let tombstone = shape.tombstone;
        let encoding = self.file(shape.id, layout, definition, tombstone);
        self.shapes.insert(
            shape.id,
            RoutedShape {
                shape,
                tombstone,
                encoding,
                appender: None,
                held: None,
                capture,
                skip_through: start,
                snapshot_holds,
                txn_changes: TxnChanges::default(),
                subquery: None,
                tagger: None,
                after_resync: None,
            },
        );
        Ok(start)
    }

    /// Starts routing to a shape with subqueries whose snapshot (and every level's rows) was
    /// read at `holds` by the consumer, between two transactions: nothing to capture.
    /// Returns the LSN the shape starts after.
    pub fn register_subquery(
        &mut self,
        shape: Arc<Shape>,
        mut levels: Box<SubqueryShape>,
        holds: &SnapshotHolds,
    ) -> Lsn {
        self.remove(shape.id);
        let id = shape.id;
        let start = self.last_commit;
        levels.hold_all(holds);
        levels.shrink_to_fit();
        for layout in levels.layouts() {
            self.tables
                .entry(layout.name.clone())
                .or_default()
                .add(&layout);
        }
        let index = &mut self.index;
        levels.assign_slots(&mut |table| index.table_slot(table));
        self.subquery_routes.add(id, &mut levels);
        self.generation += 1;
        let encoding = self
            .templates
            .encoding(shape.table.clone(), shape.definition.clone());
        let tombstone = shape.tombstone;
        let tagger =
            Tagger::new(shape.definition.where_clause(), &shape.handle.to_string()).map(Box::new);
        self.shapes.insert(
            id,
            RoutedShape {
                shape,
                tombstone,
                encoding,
                appender: None,
                held: None,
                capture: None,
                skip_through: start,
                snapshot_holds: None,
                txn_changes: TxnChanges::default(),
                subquery: Some(levels),
                tagger,
                after_resync: None,
            },
        );
        start
    }

    /// The subquery shapes that read `table` at some level.
    pub fn subquery_readers(&self, table: &QualifiedName) -> Vec<ShapeId> {
        self.index
            .slot(table)
            .map(|slot| self.subquery_routes.readers(slot).to_vec())
            .unwrap_or_default()
    }

    /// Appends one transaction of `changes` to a subquery shape's log, between two
    /// transactions of the stream (a restart's resync): after everything its log holds and
    /// every transaction decided, before any to come. Returns the log to fsync.
    /// Its messages name `txid` (a transaction the shape's first snapshot cannot hold).
    ///
    /// They go at `below - 1`, `below` being the WAL position read with the resync's
    /// snapshot: past every `global_last_seen_lsn` sent before (an SSE client continues from
    /// `<global_last_seen_lsn>_0`, and a restart resumes the stream below what it had sent).
    /// Transactions the stream delivers afterwards that committed below it and that the
    /// snapshot did not see go after the resync. All of it becomes visible with the first
    /// transaction past it ([`AfterResync`]); returns whether it waits for one (the caller
    /// makes sure one comes: a fence).
    pub fn append_resync(
        &mut self,
        id: ShapeId,
        changes: Vec<(RowChange, Option<Row>, Option<Row>)>,
        txid: u64,
        below: Lsn,
    ) -> io::Result<bool> {
        // Past the snapshot's `0_…` offsets even when nothing was applied since the start.
        let floor = self
            .last_commit
            .max(Lsn(below.as_u64().saturating_sub(1)))
            .max(Lsn(1));
        let Some(ws) = self.shapes.get_mut(&id) else {
            return Ok(false);
        };
        if changes.is_empty() {
            return Ok(false);
        }
        let (lsn, mut op) = match ws.shape.log.last_offset() {
            Some(Offset::At { tx, op }) if tx >= floor.as_u64() && op != Offset::INF => {
                (Lsn(tx), (op + 2) & !1)
            }
            _ => (floor, 0),
        };
        let mut encoded = Messages::default();
        let mut rows = TxnChanges::default();
        for (change, old, new) in &changes {
            let ctx = TxContext { txid, lsn, op };
            let first = encoded.encoded.len();
            ws.encoding
                .encode(*change, old.as_ref(), new.as_ref(), ctx, &mut encoded);
            if let (Some(tagger), Some(levels)) = (&ws.tagger, &ws.subquery) {
                let (old, new) = (old.as_ref(), new.as_ref());
                tag(
                    tagger,
                    levels,
                    *change,
                    old,
                    new,
                    None,
                    &mut encoded.encoded[first..],
                );
            }
            rows.add(change.operation());
            op += 2;
        }
        let mut messages = encoded.encoded;
        if let Some(last) = messages.last_mut() {
            encode::mark_last(&mut last.bytes);
        }
        let appender = open_appender(&mut ws.appender, &ws.shape.log)?;
        for message in &messages {
            appender.append(Offset::log(lsn, message.op), &message.bytes)?;
        }
        ws.txn_changes.absorb(rows);
        // Not `skip_through`: a transaction below `lsn` that the snapshot did not see must
        // still be applied (the levels skip those it saw).
        ws.after_resync = Some(AfterResync { lsn, next_op: op });
        self.resyncs_waiting.push(id);
        Ok(true)
    }

    /// Whether a resync waits for the stream to pass it ([`Router::append_resync`]).
    pub fn resync_waiting(&self) -> bool {
        !self.resyncs_waiting.is_empty()
    }

    /// Makes visible the resyncs (and the transactions after them) the stream passed with a
    /// commit at `commit_lsn`, the shapes of which the transaction did not touch.
    fn show_resyncs(&mut self, commit_lsn: Lsn, report: &mut CommitReport) -> io::Result<()> {
        let mut i = 0;
        while i < self.resyncs_waiting.len() {
            let id = self.resyncs_waiting[i];
            let Some(ws) = self.shapes.get_mut(&id) else {
                self.resyncs_waiting.swap_remove(i);
                continue;
            };
            match ws.after_resync {
                Some(after) if commit_lsn <= after.lsn => i += 1,
                Some(after) => {
                    ws.commit_log(after.lsn, Lsn(after.lsn.as_u64() + 1), report)?;
                    ws.after_resync = None;
                    self.recently_written.insert(id);
                    self.resyncs_waiting.swap_remove(i);
                }
                None => {
                    self.resyncs_waiting.swap_remove(i);
                }
            }
        }
        Ok(())
    }

    /// The xid of the last transaction applied.
    pub fn last_xid(&self) -> Option<Xid32> {
        self.last_xid
    }

    /// The open transaction's xid.
    pub fn open_xid(&self) -> Option<Xid32> {
        self.txn.as_ref().map(|t| t.xid)
    }

    /// Subquery shapes of the open transaction whose rows must move before its commit.
    pub fn unsettled(&self) -> Vec<ShapeId> {
        self.txn
            .as_ref()
            .map(|t| t.unsettled.clone())
            .unwrap_or_default()
    }

    /// The levels of a subquery shape.
    pub fn subquery_mut(&mut self, id: ShapeId) -> Option<&mut SubqueryShape> {
        self.shapes.get_mut(&id)?.subquery.as_deref_mut()
    }

    /// Appends a subquery shape's moves to the open transaction: deletes of the rows that
    /// left, inserts of those that came in, each at the next op.
    pub fn emit_moves(&mut self, id: ShapeId, moved: Moved) -> io::Result<()> {
        let txn = open_txn(&mut self.txn)?;
        txn.unsettled.retain(|u| *u != id);
        let Some(ws) = self.shapes.get_mut(&id) else {
            return Ok(());
        };
        if let Some(levels) = ws.subquery.as_mut() {
            self.subquery_routes.follow_traces(id, levels);
        }
        if ws.encoding.definition.moves() == MoveMode::Events && ws.tagger.is_some() {
            return emit_move_events(ws, txn, id, moved, &mut self.messages);
        }
        let out = moved
            .out
            .iter()
            .map(|row| (RowChange::Delete, Some(row), None));
        let came = moved
            .r#in
            .iter()
            .map(|row| (RowChange::Insert, None, Some(row)));
        for (change, old, new) in out.chain(came) {
            let op = txn.next_op;
            txn.next_op += 2;
            emit(ws, txn, id, change, old, new, op, &mut self.messages)?;
        }
        Ok(())
    }

    /// The snapshot of `id` is complete: keep the captured transactions it does not contain,
    /// and skip those it holds that the stream has yet to deliver. Returns the shape's log
    /// when transactions moved into it: they were confirmed to Postgres while captured (a
    /// capture needs no fsync, as a shape whose snapshot never completed is dropped at a
    /// restart), so the log must be fsynced before the shape is recorded complete. The
    /// caller does it, off the consumer task.
    pub fn finish_snapshot(
        &mut self,
        id: ShapeId,
        holds: SnapshotHolds,
    ) -> io::Result<Option<LogFile>> {
        let Some(ws) = self.shapes.get_mut(&id) else {
            return Ok(None);
        };
        let Some(capture) = ws.capture.take() else {
            return Ok(None);
        };
        let appender = open_appender(&mut ws.appender, &ws.shape.log)?;
        let (kept, dropped) =
            capture::replay_into(*capture, &holds.snapshot, &ws.shape.log, appender)?;
        let to_sync = (kept > 0).then(|| appender.log_file().clone());
        tracing::debug!(handle = %ws.shape.handle, kept, dropped, "captured transactions replayed");
        ws.snapshot_holds = (holds.below > self.last_commit).then(|| Box::new(holds));
        // An appender holds a file descriptor: a shape whose capture was empty (nearly every
        // one) closes it now; otherwise it is swept with the others written lately. Left
        // open, 100,000 shapes would hold 100,000 descriptors.
        if kept == 0 {
            ws.appender = None;
        } else {
            self.recently_written.insert(id);
        }
        Ok(to_sync)
    }

    /// The columns a shape's rows are routed in, its definition against them and the
    /// position of its tombstone column; `None` when it is not routed.
    pub fn layout(
        &self,
        id: ShapeId,
    ) -> Option<(&Arc<TableSchema>, &ShapeDefinition, Option<usize>)> {
        self.shapes
            .get(&id)
            .map(|ws| (&ws.encoding.layout, &ws.encoding.definition, ws.tombstone))
    }

    /// The distinct layouts the shapes of `table` are routed by (one, nearly always).
    pub fn layouts_of(&self, table: &QualifiedName) -> impl Iterator<Item = &TableSchema> {
        self.tables
            .get(table)
            .into_iter()
            .flat_map(|layouts| layouts.0.iter().map(|(layout, _)| &**layout))
    }

    /// Routes a shape's rows by another layout of its table (a column it does not read was
    /// added, dropped or changed): same handle, same log, same messages.
    pub fn rebase(
        &mut self,
        id: ShapeId,
        layout: Arc<TableSchema>,
        definition: ShapeDefinition,
        tombstone: Option<usize>,
    ) {
        if !self.shapes.contains_key(&id) {
            return;
        }
        let encoding = self.file(id, layout, definition, tombstone);
        self.generation += 1;
        if let Some(ws) = self.shapes.get_mut(&id) {
            if let Some(layouts) = self.tables.get_mut(ws.encoding.table()) {
                layouts.remove(&ws.encoding.layout);
                layouts.add(&encoding.layout);
            }
            ws.tombstone = tombstone;
            ws.encoding = encoding;
        }
    }

    /// Files a shape in the routing index by its `where` against `layout`; returns how its
    /// messages are encoded from rows in that layout.
    fn file(
        &mut self,
        id: ShapeId,
        layout: Arc<TableSchema>,
        definition: ShapeDefinition,
        tombstone: Option<usize>,
    ) -> ShapeEncoding {
        let slot = self.index.insert(id, &layout, definition.where_clause());
        self.generation += 1;
        if self.tombstones.len() <= slot.index() {
            self.tombstones.resize(slot.index() + 1, None);
        }
        if let Some(column) = tombstone {
            self.tombstones[slot.index()] = Some(column);
        }
        self.templates.encoding(layout, definition)
    }

    /// Closes a shape's appender (its log file was replaced): the next write reopens it.
    pub fn close_appender(&mut self, id: ShapeId) {
        if let Some(ws) = self.shapes.get_mut(&id) {
            ws.appender = None;
        }
    }

    /// Stops routing to a shape (deleted, rotated or failed).
    pub fn remove(&mut self, id: ShapeId) {
        self.index.remove(id);
        let Some(mut removed) = self.shapes.remove(&id) else {
            return;
        };
        self.generation += 1;
        let layouts = match &mut removed.subquery {
            Some(levels) => {
                self.subquery_routes.remove(id, levels);
                levels.layouts()
            }
            None => vec![removed.encoding.layout.clone()],
        };
        for layout in layouts {
            if let Some(uses) = self.tables.get_mut(&layout.name)
                && uses.remove(&layout)
            {
                self.tables.remove(&layout.name);
            }
        }
    }

    pub fn begin(&mut self, xid: Xid32, commit_lsn: Lsn) {
        self.txn = Some(OpenTxn {
            xid,
            commit_lsn,
            next_op: 0,
            touched: Vec::new(),
            resent: commit_lsn <= self.last_commit,
            unsettled: Vec::new(),
            leveled: Vec::new(),
        });
    }

    /// Forgets the position of the transactions applied so far: the stream now comes from
    /// another database or slot (every shape was rotated), whose LSNs say nothing about them.
    pub fn forget_position(&mut self) {
        self.last_commit = Lsn::ZERO;
    }

    /// One row change of the open transaction on the table in `slot` (from
    /// [`Router::slot`]; `old` for updates and deletes, `new` for inserts and updates).
    pub fn change(
        &mut self,
        slot: TableSlot,
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> io::Result<()> {
        // Takes the next op, then routes at it.
        self.pass_over()?;
        self.same_change_on(slot, old, new)
    }

    /// A change that no shape of its own table may see (its rows do not fit their columns):
    /// it takes its op all the same, so later offsets do not depend on it being routed.
    pub fn pass_over(&mut self) -> io::Result<()> {
        let txn = open_txn(&mut self.txn)?;
        txn.next_op += 2;
        Ok(())
    }

    /// The change just given to [`Router::change`], for the shapes of another table it
    /// belongs to (a partitioned table whose partition it was made on; rows in that table's
    /// column order). It takes the same log position: one change of the WAL, one op.
    pub fn same_change_on(
        &mut self,
        slot: TableSlot,
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> io::Result<()> {
        let txn = open_txn(&mut self.txn)?;
        let op = txn.next_op.saturating_sub(2);
        self.route_change(slot, old, new, op)
    }

    fn route_change(
        &mut self,
        slot: TableSlot,
        old: Option<&Row>,
        new: Option<&Row>,
        op: u64,
    ) -> io::Result<()> {
        let txn = open_txn(&mut self.txn)?;
        if txn.resent {
            return Ok(());
        }
        let (raw_old, raw_new) = (old, new);
        let tombstone = self.tombstones.get(slot.index()).copied().flatten();
        let (old, new) = (existing(old, tombstone), existing(new, tombstone));
        self.routed.clear();
        self.index.route(
            slot,
            old.map(Vec::as_slice),
            new.map(Vec::as_slice),
            &mut self.routed,
        );
        for &(id, change) in &self.routed {
            let Some(ws) = self.shapes.get_mut(&id) else {
                continue;
            };
            if txn.commit_lsn <= ws.skip_through {
                continue;
            }
            if let Some(holds) = &ws.snapshot_holds {
                if txn.commit_lsn >= holds.below {
                    ws.snapshot_holds = None;
                } else if holds.holds(txn.xid, txn.commit_lsn) {
                    continue;
                }
            }
            emit(ws, txn, id, change, old, new, op, &mut self.messages)?;
        }
        // A subquery shape applies the tombstone of its own table only.
        self.route_subqueries(slot, raw_old, raw_new, op)
    }

    /// The change for the subquery shapes that read the table in `slot`.
    fn route_subqueries(
        &mut self,
        slot: TableSlot,
        old: Option<&Row>,
        new: Option<&Row>,
        op: u64,
    ) -> io::Result<()> {
        let mut ids = std::mem::take(&mut self.subquery_candidates);
        self.subquery_routes.candidates(slot, old, new, &mut ids);
        let routed = self.route_to_candidates(&ids, slot, old, new, op);
        self.subquery_candidates = ids;
        routed
    }

    fn route_to_candidates(
        &mut self,
        ids: &[ShapeId],
        slot: TableSlot,
        old: Option<&Row>,
        new: Option<&Row>,
        op: u64,
    ) -> io::Result<()> {
        let txn = open_txn(&mut self.txn)?;
        for &id in ids {
            let Some(ws) = self.shapes.get_mut(&id) else {
                continue;
            };
            if txn.commit_lsn <= ws.skip_through {
                continue;
            }
            let Some(levels) = ws.subquery.as_mut() else {
                continue;
            };
            if !txn.leveled.contains(&id) {
                // The index finds a superset: the shapes this change concerns are noted (to
                // be read again if the transaction is dropped).
                if !levels.would_change(slot, txn.xid, txn.commit_lsn, old, new) {
                    continue;
                }
                txn.leveled.push(id);
            }
            let outcome = levels.change(slot, txn.xid, txn.commit_lsn, old, new);
            self.subquery_routes.follow_traces(id, levels);
            if levels.unsettled() && !txn.unsettled.contains(&id) {
                txn.unsettled.push(id);
            }
            let Some(outcome) = outcome else {
                continue;
            };
            let Some(change) = outcome.change else {
                continue;
            };
            // The row as the log last showed it stands in for an old row the stream lacks.
            let kept = outcome.left.as_ref();
            let old = old.or(kept);
            emit_kept(ws, txn, id, change, old, new, kept, op, &mut self.messages)?;
        }
        Ok(())
    }

    /// Closes the open transaction: its messages become visible.
    pub fn commit(&mut self, commit_lsn: Lsn, end_lsn: Lsn) -> io::Result<CommitReport> {
        let Some(txn) = self.txn.take() else {
            return Ok(CommitReport::default());
        };
        let mut report = CommitReport::default();
        for id in &txn.touched {
            let Some(ws) = self.shapes.get_mut(id) else {
                continue;
            };
            if let Some((offset, mut bytes)) = ws.held.take() {
                // Only a change is marked (a move's event or snapshot-end may end a
                // transaction).
                if bytes.starts_with(b"{\"key\":") {
                    encode::mark_last(&mut bytes);
                }
                write_entry(ws, offset, &bytes)?;
            }
            if let Some(capture) = ws.capture.as_mut() {
                capture.commit(txn.xid, commit_lsn, end_lsn)?;
            } else {
                match ws.after_resync {
                    // Written after the resync, shown with it.
                    Some(after) if commit_lsn <= after.lsn => {}
                    _ => {
                        ws.after_resync = None;
                        ws.commit_log(commit_lsn, end_lsn, &mut report)?;
                    }
                }
            }
            report.shapes_written += 1;
        }
        if !self.resyncs_waiting.is_empty() {
            self.show_resyncs(commit_lsn, &mut report)?;
        }
        self.last_commit = self.last_commit.max(commit_lsn);
        self.last_xid = Some(txn.xid);
        self.close_idle_appenders(&txn.touched);
        Ok(report)
    }

    /// Drops the open transaction (the stream broke; Postgres will send it again). Subquery
    /// shapes whose levels it changed stop being routed to: their levels are read again at a
    /// new snapshot ([`Router::take_resyncs`]), as after a restart. (Keeping a copy of the
    /// levels of every shape a transaction touches, to put back, cost more than everything
    /// else the transaction did.)
    pub fn abort(&mut self) {
        let Some(txn) = self.txn.take() else {
            return;
        };
        let mut reread = txn.leveled;
        for id in &txn.touched {
            if let Some(ws) = self.shapes.get_mut(id) {
                ws.held = None;
                ws.txn_changes = TxnChanges::default();
                // The roll-back takes its unseen resync with it: read it again.
                if ws.after_resync.is_some() && !reread.contains(id) {
                    reread.push(*id);
                }
                let result = match (ws.capture.as_mut(), ws.appender.as_mut()) {
                    (Some(capture), _) => capture.abandon(),
                    (None, Some(appender)) => appender.abandon(&ws.shape.log),
                    (None, None) => Ok(()),
                };
                if let Err(err) = result {
                    tracing::error!(handle = %ws.shape.handle, error = %err, "cannot roll back a shape log");
                }
            }
        }
        for id in reread {
            if let Some(ws) = self.shapes.get(&id) {
                self.resyncs.push(ws.shape.clone());
                self.remove(id);
            }
        }
    }

    /// Subquery shapes to read again (a transaction that changed their levels was dropped):
    /// each goes through [`crate::read_path::subquery::initial::resync`], which routes to it
    /// again.
    pub fn take_resyncs(&mut self) -> Vec<Arc<Shape>> {
        std::mem::take(&mut self.resyncs)
    }

    /// Whether some subquery shape waits to be read again.
    pub fn has_resyncs(&self) -> bool {
        !self.resyncs.is_empty()
    }

    /// Puts back shapes whose reading failed, to try again.
    pub fn retry_resyncs(&mut self, shapes: Vec<Arc<Shape>>) {
        self.resyncs.extend(shapes);
    }

    /// Keeps at most about [`open_appenders_cap`] files open: when more shapes have been
    /// written since the last sweep, those not in this transaction close theirs.
    fn close_idle_appenders(&mut self, touched: &[ShapeId]) {
        self.recently_written.extend(touched.iter().copied());
        if self.recently_written.len() <= open_appenders_cap() {
            return;
        }
        for id in self.recently_written.drain() {
            // One with an unseen resync keeps its appender: the resync is in it.
            if !touched.contains(&id)
                && let Some(ws) = self.shapes.get_mut(&id)
                && ws.after_resync.is_none()
            {
                ws.appender = None;
            }
        }
        self.recently_written.extend(touched.iter().copied());
    }
}

/// Encodes one change of a shape and appends it, holding back its latest message for `last`.
#[allow(clippy::too_many_arguments)]
fn emit(
    ws: &mut RoutedShape,
    txn: &mut OpenTxn,
    id: ShapeId,
    change: RowChange,
    old: Option<&Row>,
    new: Option<&Row>,
    op: u64,
    messages: &mut Messages,
) -> io::Result<()> {
    emit_kept(ws, txn, id, change, old, new, None, op, messages)
}

/// [`emit`], with the row as the shape's log last showed it (`kept`: what a subquery shape's
/// tags of a delete or an update's removed tags are computed from).
#[allow(clippy::too_many_arguments)]
fn emit_kept(
    ws: &mut RoutedShape,
    txn: &mut OpenTxn,
    id: ShapeId,
    change: RowChange,
    old: Option<&Row>,
    new: Option<&Row>,
    kept: Option<&Row>,
    op: u64,
    messages: &mut Messages,
) -> io::Result<()> {
    if ws.capture.is_none() {
        ws.txn_changes.add(change.operation());
    }
    // After an unseen resync, the messages' `lsn` and `op_position` say where they are.
    let (lsn, op) = ws.place(txn.commit_lsn, op);
    let ctx = TxContext {
        txid: u64::from(txn.xid.0),
        lsn,
        op,
    };
    messages.encoded.clear();
    ws.encoding.encode(change, old, new, ctx, messages);
    if let (Some(tagger), Some(levels)) = (&ws.tagger, &ws.subquery) {
        tag(
            tagger,
            levels,
            change,
            old,
            new,
            kept,
            &mut messages.encoded,
        );
    }
    // Taken out for the loop: written messages' buffers go back to `messages`.
    let mut encoded = std::mem::take(&mut messages.encoded);
    for message in encoded.drain(..) {
        let offset = Offset::log(lsn, message.op);
        if let Some(written) = emit_entry_at(ws, txn, id, offset, message.bytes)? {
            messages.recycle(written);
        }
    }
    messages.encoded = encoded;
    Ok(())
}

/// A subquery shape's moves as Electric sends them (`moves=events`): a `move-out` event for
/// the values that left (no deletes: clients drop the rows tagged with them), then a
/// `move-in` event for the values that came, the rows that came in as inserts marked
/// `is_move_in`, and the `snapshot-end` of the snapshot they were read at. A row that left
/// for another reason than a value named by the event (none should) gets a delete.
fn emit_move_events(
    ws: &mut RoutedShape,
    txn: &mut OpenTxn,
    id: ShapeId,
    moved: Moved,
    messages: &mut Messages,
) -> io::Result<()> {
    let (Some(tagger), Some(levels)) = (ws.tagger.as_deref(), ws.subquery.as_deref()) else {
        return Ok(());
    };
    let txid = u64::from(txn.xid.0);
    let out_event =
        (!moved.values.left.is_empty()).then(|| tagger.event("move-out", &moved.values.left, txid));
    let in_event =
        (!moved.values.came.is_empty()).then(|| tagger.event("move-in", &moved.values.came, txid));
    let where_clause = levels.root.where_clause.as_ref();
    let named = |row: &Row| {
        moved.values.left.iter().any(|(i, key)| {
            where_clause.is_some_and(|w| w.outer_key(*i, row).as_ref() == Some(key))
        })
    };
    let (dropped, unexplained): (Vec<&Row>, Vec<&Row>) = moved.out.iter().partition(|r| named(r));
    for row in unexplained {
        let op = next_op(txn);
        emit(
            ws,
            txn,
            id,
            RowChange::Delete,
            Some(row),
            None,
            op,
            messages,
        )?;
    }
    if ws.capture.is_none() {
        ws.txn_changes.add_many(Operation::Delete, dropped.len());
    }
    for event in [out_event, in_event].into_iter().flatten() {
        let op = next_op(txn);
        emit_entry(ws, txn, id, op, event)?;
    }
    for row in &moved.r#in {
        let op = next_op(txn);
        emit(
            ws,
            txn,
            id,
            RowChange::Insert,
            None,
            Some(row),
            op,
            messages,
        )?;
        if let Some((_, bytes)) = ws.held.as_mut() {
            tags::splice_headers(bytes, ",\"is_move_in\":true");
        }
    }
    if let (false, Some(snapshot)) = (moved.r#in.is_empty(), &moved.snapshot) {
        let op = next_op(txn);
        emit_entry(
            ws,
            txn,
            id,
            op,
            snapshot.snapshot_end_message().into_bytes(),
        )?;
    }
    Ok(())
}

fn next_op(txn: &mut OpenTxn) -> u64 {
    let op = txn.next_op;
    txn.next_op += 2;
    op
}

/// Appends one message to a shape's open transaction (held back until the next, so the last
/// change can be marked `last`).
fn emit_entry(
    ws: &mut RoutedShape,
    txn: &mut OpenTxn,
    id: ShapeId,
    op: u64,
    bytes: Vec<u8>,
) -> io::Result<()> {
    let (lsn, op) = ws.place(txn.commit_lsn, op);
    emit_entry_at(ws, txn, id, Offset::log(lsn, op), bytes).map(drop)
}

/// [`emit_entry`] at `offset`. Returns the buffer of the message it wrote out (the one held
/// back until now), for reuse.
fn emit_entry_at(
    ws: &mut RoutedShape,
    txn: &mut OpenTxn,
    id: ShapeId,
    offset: Offset,
    bytes: Vec<u8>,
) -> io::Result<Option<Vec<u8>>> {
    if let Some((held_offset, held)) = ws.held.replace((offset, bytes)) {
        write_entry(ws, held_offset, &held)?;
        Ok(Some(held))
    } else {
        txn.touched.push(id);
        Ok(None)
    }
}

/// Adds a subquery shape's headers to the messages of one change.
fn tag(
    tagger: &Tagger,
    levels: &SubqueryShape,
    change: RowChange,
    old: Option<&Row>,
    new: Option<&Row>,
    kept: Option<&Row>,
    encoded: &mut [Encoded],
) {
    let before = kept.or(old);
    let first_op = encoded.first().map(|m| m.op);
    let key_change = encoded.len() == 2;
    for message in encoded.iter_mut() {
        // A key change is a delete of the old row and an insert of the new one.
        let (kind, row, prior) = match change {
            RowChange::Update if key_change && Some(message.op) == first_op => {
                (RowChange::Delete, before, None)
            }
            RowChange::Update if key_change => (RowChange::Insert, new, None),
            RowChange::Update => (RowChange::Update, new, before),
            RowChange::Insert => (RowChange::Insert, new, None),
            RowChange::Delete => (RowChange::Delete, before, None),
        };
        if let Some(row) = row {
            let headers = tagger.headers(kind, row, prior, &levels.values());
            tags::splice_headers(&mut message.bytes, &headers);
        }
    }
}

fn open_txn(txn: &mut Option<OpenTxn>) -> io::Result<&mut OpenTxn> {
    txn.as_mut()
        .ok_or_else(|| io::Error::other("change outside a transaction"))
}

fn open_appender<'a>(
    slot: &'a mut Option<LogAppender>,
    log: &ShapeLog,
) -> io::Result<&'a mut LogAppender> {
    if slot.is_none() {
        *slot = Some(LogAppender::open(log)?);
    }
    Ok(slot.as_mut().expect("just opened"))
}

/// The row as routing sees it: absent when its tombstone is set.
fn existing(row: Option<&Row>, tombstone: Option<usize>) -> Option<&Row> {
    row.filter(|r| tombstone.is_none_or(|c| r.get(c).is_none_or(|v| v.is_none())))
}

fn write_entry(ws: &mut RoutedShape, offset: Offset, bytes: &[u8]) -> io::Result<()> {
    if let Some(capture) = ws.capture.as_mut() {
        return capture.append(offset, bytes);
    }
    open_appender(&mut ws.appender, &ws.shape.log)?.append(offset, bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use shapes::definition::{LogMode, ReplicaMode, ShapeDefinition};
    use shapes::schema::{Column, PgType, TableSchema, TypeKind};

    use super::*;
    use crate::storage::shape_dir::ShapeDir;
    use crate::storage::shape_store::ShapeState;
    use crate::storage::shape_store::meta::{FORMAT_VERSION, ShapeMeta, StoredRequest};

    /// A ready shape of every row of `public.<table>` (one `int8` key column), its log under
    /// `root`.
    fn shape(root: &Path, id: u64, table: &str) -> Arc<Shape> {
        let schema = Arc::new(TableSchema {
            name: QualifiedName::new("public", table),
            oid: 1,
            columns: vec![Column {
                name: "id".into(),
                ty: PgType {
                    oid: 20,
                    name: "int8".into(),
                    kind: TypeKind::Base,
                },
                type_mod: -1,
                dims: 0,
                not_null: true,
                pk_index: Some(0),
                generated: false,
            }],
        });
        let definition = ShapeDefinition::new(
            &schema,
            None,
            &BTreeMap::new(),
            None,
            ReplicaMode::Default,
            LogMode::Full,
        )
        .unwrap();
        let log = ShapeLog::create(&ShapeDir::at(root.join(id.to_string())), 1 << 20).unwrap();
        let meta = ShapeMeta {
            format: FORMAT_VERSION,
            handle: String::new(),
            request: StoredRequest {
                schema: "public".into(),
                table: table.into(),
                where_: None,
                params: BTreeMap::new(),
                columns: None,
                replica_full: false,
                changes_only: false,
                move_events: false,
                filter: None,
                inner_filters: Vec::new(),
            },
            created_micros: id,
            start_lsn: Lsn(0),
            chunk_bytes: 1 << 20,
            schema_header: String::new(),
            snapshot: None,
            snapshot_lsn: None,
            table_oid: None,
            read_columns: None,
        };
        Arc::new(Shape::new(
            ShapeId(id),
            definition,
            schema,
            log,
            None,
            meta,
            ShapeState::Ready,
        ))
    }

    #[test]
    fn the_router_knows_the_tables_it_routes_to_and_says_when_shapes_come_or_go() {
        let root = tempfile::tempdir().unwrap();
        let (t, u) = (
            QualifiedName::new("public", "t"),
            QualifiedName::new("public", "u"),
        );
        let mut router = Router::new(Lsn::ZERO);
        assert!(!router.routes_to(&t));
        assert_eq!(router.slot(&t), None);

        let before = router.generation();
        router.register(shape(root.path(), 1, "t"), false).unwrap();
        assert_ne!(router.generation(), before, "a shape came");
        router.register(shape(root.path(), 2, "t"), false).unwrap();
        let u_shape = shape(root.path(), 3, "u");
        router.register(u_shape.clone(), false).unwrap();
        // Registered again (the same id): still one shape of `u`.
        router.register(u_shape, false).unwrap();
        assert!(router.routes_to(&t) && router.routes_to(&u));
        let t_slot = router.slot(&t).expect("t has shapes");
        assert_ne!(router.slot(&u), Some(t_slot), "each table its own slot");

        let before = router.generation();
        router.remove(ShapeId(1));
        assert_ne!(router.generation(), before, "a shape went");
        assert!(router.routes_to(&t), "the second shape of t remains");
        router.remove(ShapeId(2));
        assert!(!router.routes_to(&t));
        assert_eq!(router.slot(&t), None, "no shape of t to route to");
        router.remove(ShapeId(3));
        assert!(
            !router.routes_to(&u),
            "u's one shape, registered twice, is gone"
        );

        let before = router.generation();
        router.remove(ShapeId(2));
        assert_eq!(
            router.generation(),
            before,
            "removing an unknown shape changes nothing"
        );

        // A table that comes back gets its old slot: one a caller kept stays the table's.
        router.register(shape(root.path(), 4, "t"), false).unwrap();
        assert_eq!(router.slot(&t), Some(t_slot));
    }

    /// After a restart the router resumes at `resume.lsn`, the *end* LSN of the last
    /// transaction made durable. Postgres sends every transaction whose commit record starts
    /// at or after that position, and the next commit record can start exactly there (a
    /// transaction that wrote its rows earlier and committed right after another one): it is
    /// new, not a re-send. Skipping it lost it from every shape while the position moved past
    /// it. The transaction that ended there, if sent again, is still skipped.
    #[test]
    fn after_a_restart_a_commit_starting_at_the_resume_position_is_applied() {
        let root = tempfile::tempdir().unwrap();
        let t = QualifiedName::new("public", "t");
        let shape = shape(root.path(), 1, "t");
        // The last durable transaction committed at 152 and ended at 200.
        let mut router = Router::new(Lsn(200));
        router.register(shape.clone(), false).unwrap();
        let slot = router.slot(&t).expect("t has a shape");
        let row = |id: &str| vec![Some(id.to_owned())];

        router.begin(Xid32(6), Lsn(152));
        router.change(slot, None, Some(&row("1"))).unwrap();
        let resent = router.commit(Lsn(152), Lsn(200)).unwrap();
        assert_eq!(
            resent.shapes_written, 0,
            "the durable transaction, sent again"
        );

        router.begin(Xid32(7), Lsn(200));
        router.change(slot, None, Some(&row("2"))).unwrap();
        let report = router.commit(Lsn(200), Lsn(248)).unwrap();
        assert_eq!(report.shapes_written, 1, "the transaction committed at 200");
        assert_eq!(
            report.to_sync.len(),
            1,
            "its log is fsynced before 248 is confirmed"
        );
        assert_eq!(shape.log.last_commit(), Lsn(200));
        assert_eq!(shape.log.last_offset(), Some(Offset::log(Lsn(200), 0)));
        assert_eq!(router.last_commit(), Lsn(200));
    }

    /// A resync goes just below its snapshot's WAL position, past every
    /// `global_last_seen_lsn` sent before the restart (an SSE client continues from
    /// `<global_last_seen_lsn>_0`: a resync at the resume position was skipped by it). A
    /// transaction the stream brings afterwards that committed below that position, and that
    /// the snapshot did not see, goes after the resync. None of it is visible until the
    /// stream passes the position (no request may start past `global_last_seen_lsn`); a
    /// transaction past it keeps its own offsets.
    #[test]
    fn a_resync_goes_past_what_clients_saw_and_shows_once_the_stream_passes_it() {
        let root = tempfile::tempdir().unwrap();
        let t = QualifiedName::new("public", "t");
        let row = |id: &str| vec![Some(id.to_owned())];
        for touched_past_it in [true, false] {
            let shape = shape(root.path(), u64::from(touched_past_it), "t");
            // Resumed at 200; before the restart clients were told up to 400.
            let mut router = Router::new(Lsn(200));
            router.register(shape.clone(), false).unwrap();
            let slot = router.slot(&t).expect("t has a shape");

            let resync = vec![(RowChange::Insert, None, Some(row("1")))];
            let waits = router
                .append_resync(shape.id, resync, 90, Lsn(1000))
                .unwrap();
            assert!(waits && router.resync_waiting());
            assert_eq!(shape.log.last_offset(), None, "not visible yet");

            // Committed at 500, below the snapshot's position, not seen by it.
            router.begin(Xid32(95), Lsn(500));
            router.change(slot, None, Some(&row("2"))).unwrap();
            router.change(slot, None, Some(&row("3"))).unwrap();
            let report = router.commit(Lsn(500), Lsn(548)).unwrap();
            assert!(report.to_sync.is_empty());
            assert_eq!(shape.log.last_offset(), None, "not visible yet");

            router.begin(Xid32(96), Lsn(1200));
            if touched_past_it {
                router.change(slot, None, Some(&row("4"))).unwrap();
            }
            let report = router.commit(Lsn(1200), Lsn(1248)).unwrap();
            assert_eq!(report.to_sync.len(), 1, "fsynced before 1248 is confirmed");
            assert!(!router.resync_waiting());
            let after = |offset: Offset| {
                let Some(plan) = shape.log.plan_read(offset).unwrap() else {
                    return Vec::new();
                };
                let mut ids = Vec::new();
                shape
                    .log
                    .read(&plan, &mut Vec::new(), |_, m| {
                        let m: serde_json::Value = serde_json::from_slice(m).unwrap();
                        let id = m["value"]["id"].as_str().unwrap().to_owned();
                        // The headers say where the message is.
                        let at = (&m["headers"]["lsn"], &m["headers"]["op_position"]);
                        let expected = match id.as_str() {
                            "4" => ("1200", 0),
                            "2" => ("999", 2),
                            "3" => ("999", 4),
                            _ => ("999", 0),
                        };
                        assert_eq!(at, (&expected.0.into(), &expected.1.into()), "{m}");
                        ids.push(id);
                    })
                    .unwrap();
                ids
            };
            let all = if touched_past_it {
                vec!["1", "2", "3", "4"]
            } else {
                vec!["1", "2", "3"]
            };
            assert_eq!(
                after(Offset::log(Lsn(400), 0)),
                all,
                "resync first, in order"
            );
            assert_eq!(after(Offset::log(Lsn(999), 0)), all[1..]);
            assert_eq!(after(Offset::log(Lsn(999), 4)), all[3..]);
            let last = if touched_past_it { 1200 } else { 999 };
            assert_eq!(shape.log.last_commit(), Lsn(last));
            assert_eq!(shape.log.rows(), if touched_past_it { 4 } else { 3 });
        }
    }

    #[test]
    fn a_snapshot_holds_the_transactions_it_sees_below_its_wal_position() {
        let holds = SnapshotHolds {
            snapshot: SnapshotInfo::parse("100:105:102").unwrap(),
            below: Lsn(1000),
        };
        assert!(
            holds.holds(Xid32(99), Lsn(500)),
            "committed before the snapshot"
        );
        assert!(
            holds.holds(Xid32(103), Lsn(900)),
            "finished before the snapshot"
        );
        assert!(
            !holds.holds(Xid32(102), Lsn(900)),
            "in progress at the snapshot"
        );
        assert!(
            !holds.holds(Xid32(105), Lsn(990)),
            "started after the snapshot"
        );
        assert!(
            !holds.holds(Xid32(99), Lsn(1000)),
            "past the snapshot's WAL position"
        );
    }
}
