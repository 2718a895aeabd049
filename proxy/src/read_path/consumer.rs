//! The consumer task: owns the [`Router`], applies the replication stream's events to it in
//! order, and the [`Command`]s of other tasks between transactions.
//!
//! It is the one place a shape is removed. It decides rotations itself (a truncate, a change of
//! columns a shape reads or of its key, see [`super::schema_change`]; a change without its
//! whole old row, another database, a lost slot), and everyone else asks it: `DELETE
//! /v1/shape`, eviction and a failed creation ([`Command::Remove`]), the catalog watch for a
//! dropped or renamed table ([`Command::Rotate`]), the durability task for a log whose fsync
//! failed ([`Command::DropLostLogs`]). Removing stops the router feeding the shape and takes it out
//! of [`Shapes`]; nothing is sent back to the consumer.
//!
//! When a shape log cannot be written (disk full, I/O error) the open transaction is dropped
//! from every log, the stream is asked to reconnect from the last flushed position, and the
//! events already queued are discarded until the new session starts: Postgres sends the
//! transaction again, and no log ever holds part of it.
//!
//! Shapes need whole old rows (REPLICA IDENTITY FULL) to see a row leave them. Each change
//! carries its relation and what its old row holds, so a table that lost FULL is noticed on
//! its first change: FULL is set again, and the shapes a change without the whole old row
//! could have left stale are rotated. A change made on a partition also goes to the shapes of
//! the partitioned tables above it ([`partitions`]).

use foldhash::HashMap;
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shapes::handle::Handle;
use shapes::lsn::{Lsn, Xid32};
use shapes::routing::{ShapeId, TableSlot};
use shapes::schema::{QualifiedName, TableSchema};
use tokio::sync::{Notify, mpsc, oneshot};

use super::activity::{self, AppliedCommit};
use super::reshape::{check_catalog, fit_shapes, key_dropped};
use super::retire::{
    remove_shape, rotate_all, rotate_shape, rotate_subquery_readers, rotate_table,
};
use super::schema_change;
use super::tables::TableError;
use super::{ShapeError, Shapes, partitions, subquery};
use crate::observability::prometheus;
use crate::read_path::durability::Written;
use crate::read_path::router::{Router, SnapshotHolds};
use crate::replication::event::{Relation, ReplicaIdentity, ReplicationEvent, WalChange};
use crate::replication::row_pool::{RowPool, RowSink};
use crate::storage::shape_dir::ShapeDir;
use crate::storage::shape_log::LogFile;
use crate::storage::shape_log::compaction::{self, CompactionError, Prepared, Retired, Stats};
use crate::storage::shape_store::{Shape, ShapeState};

/// What other tasks ask of the consumer; applied between transactions.
#[derive(Debug)]
pub enum Command {
    /// Start routing to a shape: with `capturing`, into its capture file until its snapshot
    /// is finished; otherwise (restored after a restart) straight into its log. Replies with
    /// the LSN the shape starts after.
    Register {
        shape: Arc<Shape>,
        capturing: bool,
        reply: oneshot::Sender<io::Result<Lsn>>,
    },
    FinishSnapshot {
        id: ShapeId,
        holds: SnapshotHolds,
        reply: oneshot::Sender<io::Result<FinishedSnapshot>>,
    },
    /// Remove a shape (and its directory); replies with it, `None` if it was already gone.
    Remove {
        handle: Handle,
        reply: oneshot::Sender<Option<Arc<Shape>>>,
    },
    /// Rotate shapes for a reason found outside the stream (their table was dropped or
    /// renamed); replies once they are out.
    Rotate {
        handles: Vec<Handle>,
        why: String,
        reply: oneshot::Sender<()>,
    },
    /// Remove the shapes whose logs are in `dirs` (their fsync failed), leaving the
    /// directories to the asker, which removes them durably; replies once they are out.
    DropLostLogs {
        dirs: Vec<ShapeDir>,
        reply: oneshot::Sender<()>,
    },
    /// Take the snapshot of a shape with subqueries and read its levels (the consumer does
    /// it, between two transactions), then route to it. Replies with its row count, the
    /// snapshot, and the LSN through which it has decided every transaction.
    CreateSubquery {
        shape: Arc<Shape>,
        reply: oneshot::Sender<Result<(u64, SnapshotHolds, Lsn), ShapeError>>,
    },
    /// Bring back a stored subquery shape (a restart): read its levels again and append what
    /// changed since its log's end (the consumer does it, before the stream starts). Replies
    /// with how many changes that took.
    ResyncSubquery {
        shape: Arc<Shape>,
        reply: oneshot::Sender<Result<usize, ShapeError>>,
    },
    /// Put a compacted log in place of a shape's `changes.log` (between two transactions, so
    /// no append is in flight); the shape's appender reopens on the new file.
    Compact {
        handle: Handle,
        prepared: Box<Prepared>,
        reply: oneshot::Sender<Result<(Stats, Retired), CompactionError>>,
    },
}

/// The answer to [`Command::FinishSnapshot`].
#[derive(Debug)]
pub struct FinishedSnapshot {
    /// The LSN through which the shape has decided every transaction.
    pub decided: Lsn,
    /// The shape's log, when captured transactions moved into it: confirmed to Postgres
    /// while captured, they must be fsynced before the shape is recorded complete.
    pub to_sync: Option<LogFile>,
}

/// What the consumer needs besides [`Shapes`].
pub struct ConsumerChannels {
    pub events: mpsc::Receiver<ReplicationEvent>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub written: mpsc::UnboundedSender<Written>,
    /// Asks the replication stream to reconnect from the flushed position.
    pub restart_stream: Arc<Notify>,
    /// The pool the replication task fills rows from: applied changes' rows go back to it.
    pub rows: Arc<RowPool>,
}

/// Metric handles, looked up once (a lookup per change costs more than the count).
struct Counters {
    changes: metrics::Counter,
    transactions: metrics::Counter,
    lag_seconds: metrics::Gauge,
}

impl Counters {
    fn new() -> Self {
        Self {
            changes: metrics::counter!(prometheus::CHANGES),
            transactions: metrics::counter!(prometheus::TRANSACTIONS),
            lag_seconds: metrics::gauge!(prometheus::LAG_SECONDS),
        }
    }
}

/// What the consumer knows of each relation, per `Arc` (a new Relation message is a new `Arc`).
#[derive(Default)]
struct Relations {
    by_oid: HashMap<u32, KnownRelation>,
    /// Where the rows of applied changes go back to the replication task.
    rows: RowSink,
    /// What the catalog says now of the table of the Relation message being applied, when
    /// shapes are on it.
    catalog: Option<Catalog>,
}

enum Catalog {
    Now(Arc<TableSchema>),
    /// The table has no primary key any more.
    NoKey,
}

struct KnownRelation {
    relation: Arc<Relation>,
    /// Partitioned tables above it, nearest first (see [`partitions`]).
    ancestors: Vec<QualifiedName>,
    /// Its name or columns differ from the previous Relation message for the oid (or there
    /// was none known).
    reshaped: bool,
    /// The table's name in the previous Relation message for the oid, when it differs.
    renamed_from: Option<QualifiedName>,
    /// Whether its own table's shapes were fitted to its columns ([`fit_shapes`]) since the
    /// router's shapes last came or went.
    own_fitted: bool,
    /// How its rows map onto each ancestor's columns, by position in `ancestors`.
    layouts: Vec<Option<Layout>>,
    /// REPLICA IDENTITY FULL was found missing and its restoration asked for.
    identity_restore_asked: bool,
    /// Which of its tables the router has shapes on.
    routed: Routed,
}

/// Which of a relation's tables (its own, then its ancestors) the router has shapes on, and
/// their slots to route by, as of a router generation: asked again only when shapes came or
/// went, not per change, so a change is routed without looking its table up by name.
struct Routed {
    generation: Option<u64>,
    own: Option<TableSlot>,
    /// By position in `ancestors`.
    ancestors: Vec<Option<TableSlot>>,
}

enum Layout {
    Same,
    Rearranged(Vec<usize>),
    /// A column of the ancestor is missing or of another type.
    Mismatch,
}

/// Runs until the event and command channels close.
pub async fn run_consumer(shapes: Arc<Shapes>, resume: Lsn, mut io: ConsumerChannels) {
    let mut router = Router::new(resume);
    let mut relations = Relations {
        rows: RowSink::new(io.rows.clone()),
        ..Relations::default()
    };
    let counters = Counters::new();
    let identity_file = shapes.identity_file();
    let mut discarding = false;
    // The transaction being applied, whose catalog changes lookups must see.
    let mut open_xid = None;
    // When it committed (from its Begin), noted once it is applied.
    let mut open_commit_time = None;
    // Events are taken from the channel in batches (one wake-up for many); commands still go
    // first whenever no transaction is open, as if each event were received on its own.
    let mut pending = VecDeque::new();
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    loop {
        if router.has_resyncs() && !router.in_transaction() {
            resync_dropped(&shapes, &mut router).await;
            fence_for_resyncs(&shapes, &router);
        }
        if !router.in_transaction() {
            match io.commands.try_recv() {
                Ok(command) => {
                    run_command(&shapes, &mut router, command).await;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
        }
        let event = match pending.pop_front() {
            Some(event) => event,
            None => tokio::select! {
                biased;
                command = io.commands.recv(), if !router.in_transaction() => match command {
                    Some(command) => { run_command(&shapes, &mut router, command).await; continue; }
                    None => break,
                },
                received = io.events.recv_many(&mut batch, EVENT_BATCH) => {
                    if received == 0 {
                        break;
                    }
                    pending.extend(batch.drain(..));
                    continue;
                }
            },
        };
        if discarding {
            if !matches!(event, ReplicationEvent::Connected { .. }) {
                continue;
            }
            discarding = false;
        }
        match &event {
            ReplicationEvent::Begin {
                xid,
                commit_time_micros,
                ..
            } => {
                open_xid = Some(*xid);
                open_commit_time = Some(activity::from_pg_micros(*commit_time_micros));
            }
            ReplicationEvent::Commit { .. }
            | ReplicationEvent::Connected { .. }
            | ReplicationEvent::Disconnected { .. } => open_xid = None,
            _ => {}
        }
        let commit_lsn = match &event {
            ReplicationEvent::Commit { commit_lsn, .. } => Some(*commit_lsn),
            _ => None,
        };
        let settled = match &event {
            // Rows of subquery shapes move before the transaction that moved them commits.
            ReplicationEvent::Commit { .. } => {
                subquery::initial::settle_open_transaction(&shapes, &mut router)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
            }
            _ => Ok(()),
        };
        let applied = match settled.and(relations.learn(&shapes, &event, open_xid).await) {
            Ok(()) => apply_event(
                &shapes,
                &mut router,
                &mut relations,
                &identity_file,
                event,
                &io.written,
                &counters,
            ),
            Err(err) => Err(err),
        };
        match applied {
            Ok(()) => {
                if let (Some(lsn), Some(committed_at)) = (commit_lsn, open_commit_time) {
                    shapes.activity().note_commit(AppliedCommit {
                        lsn,
                        committed_at,
                        applied_at: SystemTime::now(),
                    });
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot apply a transaction to the shape logs (a write or a catalog lookup failed); dropping it and reconnecting to replay it");
                router.abort();
                discarding = true;
                io.restart_stream.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Events taken from the channel at most at once.
const EVENT_BATCH: usize = 256;

/// Runs a command of the shape registry (between two transactions).
async fn run_command(shapes: &Arc<Shapes>, router: &mut Router, command: Command) {
    match command {
        Command::CreateSubquery { shape, reply } => {
            let created = subquery::initial::create(shapes, router, &shape).await;
            let _ = reply.send(created.map(|(rows, holds)| (rows, holds, router.last_commit())));
        }
        Command::ResyncSubquery { shape, reply } => {
            let _ = reply.send(subquery::initial::resync(shapes, router, &shape).await);
            fence_for_resyncs(shapes, router);
        }
        command => apply_command(shapes, router, command),
    }
}

/// A resync becomes visible with the first transaction past its snapshot: one is written
/// now (a fence), so it does not wait for the next write to the database.
fn fence_for_resyncs(shapes: &Arc<Shapes>, router: &Router) {
    if !router.resync_waiting() {
        return;
    }
    let shapes = shapes.clone();
    tokio::spawn(async move {
        if let Err(err) = shapes.emit_fence().await {
            tracing::warn!(error = %err, "cannot write a fence after a subquery resync; it becomes visible with the next transaction");
        }
    });
}

/// Reads again the subquery shapes a dropped transaction had changed (see
/// [`Router::abort`]); those that cannot be read now are tried again a second later.
async fn resync_dropped(shapes: &Shapes, router: &mut Router) {
    let mut failed = Vec::new();
    for shape in router.take_resyncs() {
        if shape.state() == crate::storage::shape_store::ShapeState::Gone {
            continue;
        }
        match subquery::initial::resync(shapes, router, &shape).await {
            Ok(changes) => {
                tracing::info!(handle = %shape.handle, changes, "subquery shape read again after a dropped transaction");
            }
            Err(err) => {
                tracing::warn!(handle = %shape.handle, error = %err, "cannot read a subquery shape again yet; retrying");
                failed.push(shape);
            }
        }
    }
    if !failed.is_empty() {
        router.retry_resyncs(failed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn apply_command(shapes: &Shapes, router: &mut Router, command: Command) {
    match command {
        Command::Register {
            shape,
            capturing,
            reply,
        } => {
            // Removed while it waited for its turn (its table was rotated): never routed to.
            let registered = if shape.state() == ShapeState::Gone {
                Err(io::Error::other(
                    "the shape was removed before it was registered",
                ))
            } else {
                router.register(shape, capturing)
            };
            let _ = reply.send(registered);
        }
        Command::FinishSnapshot { id, holds, reply } => {
            let result = router
                .finish_snapshot(id, holds)
                .map(|to_sync| FinishedSnapshot {
                    decided: router.last_commit(),
                    to_sync,
                });
            let _ = reply.send(result);
        }
        Command::Remove { handle, reply } => {
            let removed = shapes
                .by_handle(&handle)
                .and_then(|shape| remove_shape(shapes, router, &shape, true));
            let _ = reply.send(removed);
        }
        Command::Rotate {
            handles,
            why,
            reply,
        } => {
            for shape in handles.iter().filter_map(|h| shapes.by_handle(h)) {
                rotate_shape(shapes, router, &shape, &why);
            }
            let _ = reply.send(());
        }
        Command::DropLostLogs { dirs, reply } => {
            for shape in shapes.all() {
                if dirs.iter().any(|dir| dir == shape.log.dir())
                    && remove_shape(shapes, router, &shape, false).is_some()
                {
                    shapes.note_rotation(&shape);
                    tracing::error!(handle = %shape.handle, table = %shape.definition.table(), "rotating shape: its log's fsync failed");
                }
            }
            let _ = reply.send(());
        }
        Command::CreateSubquery { reply, .. } => {
            // Handled by the consumer loop, which may wait.
            let _ = reply.send(Err(ShapeError::unavailable("retry")));
        }
        Command::ResyncSubquery { reply, .. } => {
            let _ = reply.send(Err(ShapeError::unavailable("retry")));
        }
        Command::Compact {
            handle,
            prepared,
            reply,
        } => {
            let result = match shapes.by_handle(&handle) {
                Some(shape) if shape.state() == ShapeState::Ready => {
                    let installed = compaction::install(&shape.log, *prepared);
                    router.close_appender(shape.id);
                    installed
                }
                _ => {
                    prepared.discard();
                    Err(CompactionError::Stale)
                }
            };
            let _ = reply.send(result);
        }
    }
}

fn apply_event(
    shapes: &Arc<Shapes>,
    router: &mut Router,
    relations: &mut Relations,
    identity_file: &PathBuf,
    event: ReplicationEvent,
    written: &mpsc::UnboundedSender<Written>,
    counters: &Counters,
) -> std::io::Result<()> {
    match event {
        ReplicationEvent::Connected {
            system_id,
            timeline,
            ..
        } => {
            router.abort();
            if database_changed(identity_file, system_id, timeline) {
                tracing::warn!(
                    system_id,
                    timeline,
                    "connected to a different database (restore, failover or upgrade): every shape is rotated"
                );
                rotate_all(shapes, router, "the database changed");
                router.forget_position();
            }
        }
        ReplicationEvent::Begin {
            xid,
            commit_lsn,
            commit_time_micros,
        } => {
            router.begin(xid, commit_lsn);
            counters
                .lag_seconds
                .set(seconds_since_pg_epoch(commit_time_micros));
        }
        ReplicationEvent::Change(change) => {
            counters.changes.increment(1);
            let applied = apply_change(shapes, router, relations, &change);
            relations.spend(change);
            applied?;
        }
        ReplicationEvent::Commit {
            xid,
            commit_lsn,
            end_lsn,
        } => {
            let report = router.commit(commit_lsn, end_lsn)?;
            let _ = written.send(Written {
                end_lsn,
                logs: report.to_sync,
            });
            shapes.note_commit(xid, commit_lsn);
            counters.transactions.increment(1);
        }
        ReplicationEvent::RelationChanged { relation } => {
            // A change of REPLICA IDENTITY alone is not a new table: the changes that follow
            // say whether they still carry whole old rows.
            if let Some(known) = relations.get(&relation)
                && known.reshaped
            {
                if let Some(previous) = &known.renamed_from {
                    rotate_table(shapes, router, previous, "the table was renamed");
                }
                // Shapes of a partitioned table above it assume one layout for all of them.
                for ancestor in &known.ancestors {
                    rotate_table(
                        shapes,
                        router,
                        ancestor,
                        "the columns of a partition changed",
                    );
                }
                shapes.table_changed(&relation.name);
                rotate_subquery_readers(
                    shapes,
                    router,
                    &relation.name,
                    "the columns of a table its subqueries read changed",
                );
                fit_shapes(shapes, router, &relation);
            }
            apply_catalog(shapes, router, relations, &relation);
        }
        ReplicationEvent::RelationSent { relation } => {
            apply_catalog(shapes, router, relations, &relation);
        }
        ReplicationEvent::LogicalMessage { .. } => {}
        ReplicationEvent::Disconnected { reason, .. } => {
            tracing::debug!(
                reason,
                "replication disconnected; the open transaction will be sent again"
            );
            router.abort();
        }
        ReplicationEvent::SlotLost { slot, reason, .. } => {
            tracing::error!(
                slot,
                reason,
                "the replication slot was lost; every shape is rotated and clients refetch"
            );
            router.abort();
            rotate_all(shapes, router, "the replication slot was lost");
        }
    }
    Ok(())
}

fn apply_change(
    shapes: &Arc<Shapes>,
    router: &mut Router,
    relations: &mut Relations,
    change: &WalChange,
) -> std::io::Result<()> {
    let (relation, old, new) = match change {
        WalChange::Insert { relation, new } => (relation, None, Some(new)),
        WalChange::Update {
            relation, old, new, ..
        } => (relation, old.as_ref(), Some(new)),
        WalChange::Delete { relation, old, .. } => (relation, Some(old), None),
        WalChange::Truncate {
            relations: tables, ..
        } => {
            for relation in tables {
                let tables = relations
                    .get(relation)
                    .map_or_else(|| vec![relation.name.clone()], KnownRelation::tables);
                for table in tables {
                    rotate_table(shapes, router, &table, "it was truncated");
                }
            }
            return Ok(());
        }
    };
    let Some(known) = relations.get_mut(relation) else {
        return Err(std::io::Error::other(format!(
            "relation {} was not looked up before its change",
            relation.name
        )));
    };
    known.note_routes(router);
    if known.routed.any() {
        watch_identity(shapes, router, known, change);
    }
    // Every change takes its op, whether or not a shape wants it: offsets stay a function
    // of the WAL. The table's shapes are routed by the change's columns first: those that
    // read a column that is not there any more are rotated (see [`schema_change`]).
    if known.routed.own.is_some() && !known.own_fitted {
        // Nearly always one layout, the relation's: nothing to fit.
        let fitted = router
            .layouts_of(&known.relation.name)
            .all(|layout| schema_change::same_layout(layout, &known.relation));
        if !fitted {
            fit_shapes(shapes, router, &known.relation);
            known.note_routes(router);
        }
        known.own_fitted = true;
    }
    match known.routed.own {
        // No shape to find: the router need not look at the change.
        None => router.pass_over()?,
        Some(slot) => router.change(slot, old, new)?,
    }
    for i in 0..known.ancestors.len() {
        let Some(slot) = known.routed.ancestors[i] else {
            continue;
        };
        known.learn_layout(shapes, i);
        let ancestor = &known.ancestors[i];
        match &known.layouts[i] {
            Some(Layout::Same) => router.same_change_on(slot, old, new)?,
            Some(Layout::Rearranged(map)) => {
                let old = old.map(|row| partitions::rearrange(row, map));
                let new = new.map(|row| partitions::rearrange(row, map));
                router.same_change_on(slot, old.as_ref(), new.as_ref())?;
            }
            Some(Layout::Mismatch) | None => rotate_table(
                shapes,
                router,
                ancestor,
                "the columns of one of its partitions differ from its own",
            ),
        }
    }
    Ok(())
}

/// A table whose shapes need whole old rows (REPLICA IDENTITY FULL) turned out not to have
/// them: REPLICA IDENTITY FULL is restored (once per Relation message), and when this very
/// change lacks the whole old row, the shapes that would miss a move or a delete are rotated.
/// Never a silent gap.
fn watch_identity(
    shapes: &Arc<Shapes>,
    router: &mut Router,
    known: &mut KnownRelation,
    change: &WalChange,
) {
    let restore =
        known.relation.replica_identity != ReplicaIdentity::Full && !known.identity_restore_asked;
    let lacks_old_row = change.lacks_old_row();
    if !restore && !lacks_old_row {
        return;
    }
    let shaped = known.routed_tables();
    let relation = &known.relation;
    if restore {
        tracing::error!(
            table = %relation.name,
            identity = ?relation.replica_identity,
            "REPLICA IDENTITY of {} is no longer FULL (someone changed it): its updates and \
             deletes lose the old row its shapes need; setting it back to FULL",
            relation.name
        );
        for table in &shaped {
            shapes.restore_identity(table.clone());
        }
        known.identity_restore_asked = true;
    }
    if lacks_old_row {
        tracing::error!(
            table = %relation.name,
            "a change of {} arrived without its whole old row (REPLICA IDENTITY is not FULL): \
             shapes cannot tell whether the row was in them; rotating the shapes of {}",
            relation.name,
            shaped
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        for table in &shaped {
            rotate_table(shapes, router, table, "replica identity is not FULL");
        }
    }
}

impl Relations {
    /// Gives the rows of an applied change back to the replication task.
    fn spend(&mut self, change: WalChange) {
        match change {
            WalChange::Insert { new, .. } => self.rows.spent(new),
            WalChange::Update { old, new, .. } => {
                self.rows.spent(new);
                if let Some(old) = old {
                    self.rows.spent(old);
                }
            }
            WalChange::Delete { old, .. } => self.rows.spent(old),
            WalChange::Truncate { .. } => {}
        }
    }

    /// Looks up what each relation `event` names that was not seen yet: the partitioned
    /// tables above it. Runs before the event is applied (the lookup needs the database).
    async fn learn(
        &mut self,
        shapes: &Shapes,
        event: &ReplicationEvent,
        xid: Option<Xid32>,
    ) -> std::io::Result<()> {
        let named: Vec<&Arc<Relation>> = match event {
            ReplicationEvent::Change(WalChange::Truncate { relations, .. }) => {
                relations.iter().collect()
            }
            ReplicationEvent::Change(change) => change.relation().into_iter().collect(),
            ReplicationEvent::RelationChanged { relation }
            | ReplicationEvent::RelationSent { relation } => vec![relation],
            _ => Vec::new(),
        };
        self.catalog = None;
        if let ReplicationEvent::RelationChanged { relation }
        | ReplicationEvent::RelationSent { relation } = event
            && !shapes.on_table(&relation.name).is_empty()
        {
            shapes.table_changed(&relation.name);
            self.catalog = match shapes.table(&relation.name).await {
                Ok(table) => Some(Catalog::Now(table)),
                Err(TableError::NoPrimaryKey(_)) => Some(Catalog::NoKey),
                Err(err) => {
                    tracing::warn!(table = %relation.name, error = %err, "cannot read the catalog of a table whose Relation message came again; its constraints are checked at the next one");
                    None
                }
            };
        }
        for relation in named {
            if self.get(relation).is_some() {
                continue;
            }
            let ancestors = shapes.partitioned_ancestors(relation.oid, xid).await?;
            let renamed_from = self
                .by_oid
                .get(&relation.oid)
                .map(|previous| &previous.relation.name)
                .filter(|previous| **previous != relation.name)
                .cloned();
            let reshaped = self.by_oid.get(&relation.oid).is_none_or(|previous| {
                let columns = |r: &Relation| {
                    r.columns
                        .iter()
                        .map(|c| (c.name.clone(), c.type_oid, c.type_mod))
                        .collect::<Vec<_>>()
                };
                previous.relation.name != relation.name
                    || columns(&previous.relation) != columns(relation)
            });
            self.by_oid.insert(
                relation.oid,
                KnownRelation {
                    relation: relation.clone(),
                    reshaped,
                    renamed_from,
                    own_fitted: false,
                    layouts: ancestors.iter().map(|_| None).collect(),
                    identity_restore_asked: false,
                    routed: Routed {
                        generation: None,
                        own: None,
                        ancestors: Vec::with_capacity(ancestors.len()),
                    },
                    ancestors,
                },
            );
        }
        Ok(())
    }

    fn get(&self, relation: &Arc<Relation>) -> Option<&KnownRelation> {
        self.by_oid
            .get(&relation.oid)
            .filter(|known| Arc::ptr_eq(&known.relation, relation))
    }

    fn get_mut(&mut self, relation: &Arc<Relation>) -> Option<&mut KnownRelation> {
        self.by_oid
            .get_mut(&relation.oid)
            .filter(|known| Arc::ptr_eq(&known.relation, relation))
    }
}

impl KnownRelation {
    /// The tables whose shapes a change of this relation belongs to: its own, then its
    /// partitioned ancestors.
    fn tables(&self) -> Vec<QualifiedName> {
        std::iter::once(self.relation.name.clone())
            .chain(self.ancestors.iter().cloned())
            .collect()
    }

    /// Brings [`Routed`] up to date, if shapes came or went since it was asked.
    fn note_routes(&mut self, router: &Router) {
        if self.routed.generation == Some(router.generation()) {
            return;
        }
        self.routed.generation = Some(router.generation());
        self.own_fitted = false;
        self.routed.own = router.slot(&self.relation.name);
        self.routed.ancestors.clear();
        self.routed
            .ancestors
            .extend(self.ancestors.iter().map(|table| router.slot(table)));
    }

    /// Its tables that the router has shapes on (as of [`KnownRelation::note_routes`]).
    fn routed_tables(&self) -> Vec<QualifiedName> {
        let own = self.routed.own.map(|_| self.relation.name.clone());
        let ancestors = self
            .ancestors
            .iter()
            .zip(&self.routed.ancestors)
            .filter(|(_, routed)| routed.is_some())
            .map(|(table, _)| table.clone());
        own.into_iter().chain(ancestors).collect()
    }

    /// Works out, once, how this partition's rows map onto the columns of its `i`th
    /// ancestor (as that table's shapes have them).
    fn learn_layout(&mut self, shapes: &Shapes, i: usize) {
        if self.layouts[i].is_some() {
            return;
        }
        let relation = &self.relation;
        let layout =
            match shapes.on_table(&self.ancestors[i]).into_iter().next() {
                None => Layout::Mismatch,
                Some(shape) => {
                    let names: Vec<&str> = shape
                        .table
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                    match partitions::column_map(relation, &names) {
                        None => Layout::Mismatch,
                        Some(map) => {
                            let same_types =
                                shape.table.columns.iter().zip(&map).all(|(column, &i)| {
                                    column.ty.oid == relation.columns[i].type_oid
                                });
                            if !same_types {
                                Layout::Mismatch
                            } else if map.len() == relation.columns.len()
                                && map.iter().enumerate().all(|(i, &j)| i == j)
                            {
                                Layout::Same
                            } else {
                                Layout::Rearranged(map)
                            }
                        }
                    }
                }
            };
        self.layouts[i] = Some(layout);
    }
}

impl Routed {
    fn any(&self) -> bool {
        self.own.is_some() || self.ancestors.iter().any(Option::is_some)
    }
}

/// Checks the shapes of a table whose Relation message came (again) against what the catalog
/// said of it then ([`Relations::learn`]).
fn apply_catalog(
    shapes: &Shapes,
    router: &mut Router,
    relations: &mut Relations,
    relation: &Relation,
) {
    match relations.catalog.take() {
        Some(Catalog::Now(table)) if table.oid == relation.oid => {
            check_catalog(shapes, router, &table);
        }
        Some(Catalog::NoKey) => key_dropped(shapes, router, relation),
        _ => {}
    }
}

/// How long ago a commit happened; its time is in microseconds since 2000-01-01 UTC.
fn seconds_since_pg_epoch(commit_micros: i64) -> f64 {
    const PG_EPOCH_UNIX_SECS: f64 = 946_684_800.0;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    (now - PG_EPOCH_UNIX_SECS - commit_micros as f64 / 1e6).max(0.0)
}

/// Compares (and records) the database's identity; true when it differs from the last one.
fn database_changed(file: &PathBuf, system_id: u64, timeline: u32) -> bool {
    let current = serde_json::json!({ "system_id": system_id.to_string(), "timeline": timeline });
    let previous: Option<serde_json::Value> = std::fs::read(file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    if previous.as_ref() == Some(&current) {
        return false;
    }
    if let Err(err) = std::fs::write(file, current.to_string()) {
        tracing::warn!(error = %err, "cannot record the database identity");
    }
    previous.is_some()
}
