//! The consumer task: owns the [`ChangeWriter`], applies the replication stream's events to
//! it in order, and the engine's commands between transactions.
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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shapes::lsn::{Lsn, Xid32};
use shapes::schema::QualifiedName;
use tokio::sync::{Notify, mpsc};

use super::{Engine, WriterCommand, partitions};
use crate::observability::prometheus;
use crate::read_path::durability::Written;
use crate::read_path::router::ChangeWriter;
use crate::replication::event::{Relation, ReplicaIdentity, ReplicationEvent, WalChange};

/// What the consumer needs besides the engine.
pub struct ConsumerChannels {
    pub events: mpsc::Receiver<ReplicationEvent>,
    pub commands: mpsc::UnboundedReceiver<WriterCommand>,
    pub written: mpsc::UnboundedSender<Written>,
    /// Asks the replication stream to reconnect from the flushed position.
    pub restart_stream: Arc<Notify>,
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
}

struct KnownRelation {
    relation: Arc<Relation>,
    /// Partitioned tables above it, nearest first (see [`partitions`]).
    ancestors: Vec<QualifiedName>,
    /// Its name or columns differ from the previous Relation message for the oid (or there
    /// was none known): its shapes were built for another table.
    reshaped: bool,
    /// Whether its rows line up with the table its own shapes were built for.
    own_columns_ok: Option<bool>,
    /// How its rows map onto each ancestor's columns.
    layouts: HashMap<QualifiedName, Layout>,
    /// REPLICA IDENTITY FULL was found missing and its restoration asked for.
    identity_restore_asked: bool,
}

enum Layout {
    Same,
    Rearranged(Vec<usize>),
    /// A column of the ancestor is missing or of another type.
    Mismatch,
}

/// Runs until the event and command channels close.
pub async fn run_consumer(engine: Arc<Engine>, start: Lsn, mut io: ConsumerChannels) {
    let mut writer = ChangeWriter::new(start);
    let mut relations = Relations::default();
    let counters = Counters::new();
    let identity_file = engine.store.root().join("database.json");
    let mut discarding = false;
    // The transaction being applied, whose catalog changes lookups must see.
    let mut open_xid = None;
    loop {
        let event = tokio::select! {
            biased;
            command = io.commands.recv(), if !writer.in_transaction() => match command {
                Some(command) => { apply_command(&mut writer, command); continue; }
                None => break,
            },
            event = io.events.recv() => match event {
                Some(event) => event,
                None => break,
            },
        };
        if discarding {
            if !matches!(event, ReplicationEvent::Connected { .. }) {
                continue;
            }
            discarding = false;
        }
        match &event {
            ReplicationEvent::Begin { xid, .. } => open_xid = Some(*xid),
            ReplicationEvent::Commit { .. }
            | ReplicationEvent::Connected { .. }
            | ReplicationEvent::Disconnected { .. } => open_xid = None,
            _ => {}
        }
        let applied = match relations.learn(&engine, &event, open_xid).await {
            Ok(()) => apply_event(
                &engine,
                &mut writer,
                &mut relations,
                &identity_file,
                event,
                &io.written,
                &counters,
            ),
            Err(err) => Err(err),
        };
        match applied {
            Ok(()) => {}
            Err(err) => {
                tracing::error!(error = %err, "cannot apply a transaction to the shape logs (a write or a catalog lookup failed); dropping it and reconnecting to replay it");
                writer.abort();
                discarding = true;
                io.restart_stream.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn apply_command(writer: &mut ChangeWriter, command: WriterCommand) {
    match command {
        WriterCommand::Register {
            shape,
            capturing,
            reply,
        } => {
            let _ = reply.send(writer.register(shape, capturing));
        }
        WriterCommand::FinishSnapshot { id, holds, reply } => {
            let result = writer
                .finish_snapshot(id, holds)
                .map(|()| writer.last_commit());
            let _ = reply.send(result);
        }
        WriterCommand::Remove { id } => writer.remove(id),
    }
}

fn apply_event(
    engine: &Arc<Engine>,
    writer: &mut ChangeWriter,
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
            writer.abort();
            if database_changed(identity_file, system_id, timeline) {
                tracing::warn!(
                    system_id,
                    timeline,
                    "connected to a different database (restore, failover or upgrade): every shape is rotated"
                );
                rotate_all(engine, writer, "the database changed");
                writer.forget_position();
            }
        }
        ReplicationEvent::Begin {
            xid,
            commit_lsn,
            commit_time_micros,
        } => {
            writer.begin(xid, commit_lsn);
            counters
                .lag_seconds
                .set(seconds_since_pg_epoch(commit_time_micros));
        }
        ReplicationEvent::Change(change) => {
            counters.changes.increment(1);
            apply_change(engine, writer, relations, change)?;
        }
        ReplicationEvent::Commit {
            xid,
            commit_lsn,
            end_lsn,
        } => {
            let report = writer.commit(commit_lsn, end_lsn)?;
            let _ = written.send(Written {
                end_lsn,
                dirs: report.to_sync,
            });
            engine.commits.record(xid, commit_lsn);
            engine.note_last_seen(commit_lsn);
            counters.transactions.increment(1);
        }
        ReplicationEvent::RelationChanged { relation } => {
            // A change of REPLICA IDENTITY alone is not a new table: the changes that follow
            // say whether they still carry whole old rows.
            if let Some(known) = relations.get(&relation)
                && known.reshaped
            {
                for table in known.tables() {
                    rotate_table(engine, writer, &table, "its columns changed");
                }
            }
        }
        ReplicationEvent::LogicalMessage { .. } => {}
        ReplicationEvent::Disconnected { reason, .. } => {
            tracing::debug!(
                reason,
                "replication disconnected; the open transaction will be sent again"
            );
            writer.abort();
        }
        ReplicationEvent::SlotLost { slot, reason, .. } => {
            tracing::error!(
                slot,
                reason,
                "the replication slot was lost; every shape is rotated and clients refetch"
            );
            writer.abort();
            rotate_all(engine, writer, "the replication slot was lost");
        }
    }
    Ok(())
}

fn apply_change(
    engine: &Arc<Engine>,
    writer: &mut ChangeWriter,
    relations: &mut Relations,
    change: WalChange,
) -> std::io::Result<()> {
    let (relation, old, new) = match &change {
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
                    rotate_table(engine, writer, &table, "it was truncated");
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
    let shaped: Vec<QualifiedName> = known
        .tables()
        .into_iter()
        .filter(|table| !engine.store.on_table(table).is_empty())
        .collect();
    if !shaped.is_empty() {
        watch_identity(engine, writer, known, &change, &shaped);
    }
    // Every change takes its op, whether or not a shape wants it: offsets stay a function
    // of the WAL. A change whose columns are not those the table's shapes were built for
    // rotates them and reaches none of them (its row does not fit their layout).
    if known.own_columns_ok(engine) {
        writer.change(&relation.name, old, new)?;
    } else {
        rotate_table(engine, writer, &relation.name, "its columns changed");
        writer.pass_over()?;
    }
    for ancestor in known.ancestors.clone() {
        let ancestor = &ancestor;
        if !shaped.contains(ancestor) {
            continue;
        }
        match known.layout(engine, ancestor) {
            Layout::Same => writer.same_change_on(ancestor, old, new)?,
            Layout::Rearranged(map) => {
                let old = old.map(|row| partitions::rearrange(row, map));
                let new = new.map(|row| partitions::rearrange(row, map));
                writer.same_change_on(ancestor, old.as_ref(), new.as_ref())?;
            }
            Layout::Mismatch => rotate_table(
                engine,
                writer,
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
    engine: &Arc<Engine>,
    writer: &mut ChangeWriter,
    known: &mut KnownRelation,
    change: &WalChange,
    shaped: &[QualifiedName],
) {
    let relation = &known.relation;
    if relation.replica_identity != ReplicaIdentity::Full && !known.identity_restore_asked {
        known.identity_restore_asked = true;
        tracing::error!(
            table = %relation.name,
            identity = ?relation.replica_identity,
            "REPLICA IDENTITY of {} is no longer FULL (someone changed it): its updates and \
             deletes lose the old row its shapes need; setting it back to FULL",
            relation.name
        );
        for table in shaped {
            engine.restore_identity(table.clone());
        }
    }
    if change.lacks_old_row() {
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
        for table in shaped {
            rotate_table(engine, writer, table, "replica identity is not FULL");
        }
    }
}

impl Relations {
    /// Looks up what each relation `event` names that was not seen yet: the partitioned
    /// tables above it. Runs before the event is applied (the lookup needs the database).
    async fn learn(
        &mut self,
        engine: &Engine,
        event: &ReplicationEvent,
        xid: Option<Xid32>,
    ) -> std::io::Result<()> {
        let named: Vec<&Arc<Relation>> = match event {
            ReplicationEvent::Change(WalChange::Truncate { relations, .. }) => {
                relations.iter().collect()
            }
            ReplicationEvent::Change(change) => change.relation().into_iter().collect(),
            ReplicationEvent::RelationChanged { relation } => vec![relation],
            _ => Vec::new(),
        };
        for relation in named {
            if self.get(relation).is_some() {
                continue;
            }
            let ancestors = partitions::ancestors(&engine.metadata, relation.oid, xid).await?;
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
                    ancestors,
                    reshaped,
                    own_columns_ok: None,
                    layouts: HashMap::new(),
                    identity_restore_asked: false,
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

    /// Whether its rows line up with the table its shapes were built for.
    fn own_columns_ok(&mut self, engine: &Engine) -> bool {
        if let Some(ok) = self.own_columns_ok {
            return ok;
        }
        let relation = &self.relation;
        let ok = engine.store.on_table(&relation.name).iter().all(|shape| {
            shape.table.columns.len() == relation.columns.len()
                && shape
                    .table
                    .columns
                    .iter()
                    .zip(&relation.columns)
                    .all(|(a, b)| a.name == b.name && a.ty.oid == b.type_oid)
        });
        self.own_columns_ok = Some(ok);
        ok
    }

    /// How this partition's rows map onto `ancestor`'s columns (as its shapes have them).
    fn layout(&mut self, engine: &Engine, ancestor: &QualifiedName) -> &Layout {
        let relation = &self.relation;
        self.layouts.entry(ancestor.clone()).or_insert_with(|| {
            let Some(shape) = engine.store.on_table(ancestor).into_iter().next() else {
                return Layout::Mismatch;
            };
            let names: Vec<&str> = shape
                .table
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            let Some(map) = partitions::column_map(relation, &names) else {
                return Layout::Mismatch;
            };
            let same_types = shape
                .table
                .columns
                .iter()
                .zip(&map)
                .all(|(column, &i)| column.ty.oid == relation.columns[i].type_oid);
            if !same_types {
                Layout::Mismatch
            } else if map.len() == relation.columns.len()
                && map.iter().enumerate().all(|(i, &j)| i == j)
            {
                Layout::Same
            } else {
                Layout::Rearranged(map)
            }
        })
    }
}

fn rotate_table(engine: &Engine, writer: &mut ChangeWriter, table: &QualifiedName, why: &str) {
    for shape in engine.store.on_table(table) {
        writer.remove(shape.id);
    }
    engine.rotate_table(table, why);
}

fn rotate_all(engine: &Engine, writer: &mut ChangeWriter, why: &str) {
    for shape in engine.store.all() {
        writer.remove(shape.id);
    }
    engine.rotate_all(why);
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
