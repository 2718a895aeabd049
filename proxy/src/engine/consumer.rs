//! The consumer task: owns the [`ChangeWriter`], applies the replication stream's events to
//! it in order, and the engine's commands between transactions.
//!
//! When a shape log cannot be written (disk full, I/O error) the open transaction is dropped
//! from every log, the stream is asked to reconnect from the last flushed position, and the
//! events already queued are discarded until the new session starts: Postgres sends the
//! transaction again, and no log ever holds part of it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shapes::lsn::Lsn;
use shapes::schema::QualifiedName;
use tokio::sync::{Notify, mpsc};

use super::{Engine, WriterCommand};
use crate::change_writer::ChangeWriter;
use crate::durability::Written;
use crate::monitoring;
use crate::replication::event::{Relation, ReplicationEvent, WalChange};

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
            changes: metrics::counter!(monitoring::CHANGES),
            transactions: metrics::counter!(monitoring::TRANSACTIONS),
            lag_seconds: metrics::gauge!(monitoring::LAG_SECONDS),
        }
    }
}

/// Whether a relation's columns are the ones its shapes were built for, cached per `Arc`.
#[derive(Default)]
struct RelationCheck {
    by_oid: HashMap<u32, (Arc<Relation>, bool)>,
}

/// Runs until the event and command channels close.
pub async fn run_consumer(engine: Arc<Engine>, start: Lsn, mut io: ConsumerChannels) {
    let mut writer = ChangeWriter::new(start);
    let mut relations = RelationCheck::default();
    let counters = Counters::new();
    let identity_file = engine.store.root().join("database.json");
    let mut discarding = false;
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
        match apply_event(
            &engine,
            &mut writer,
            &mut relations,
            &identity_file,
            event,
            &io.written,
            &counters,
        ) {
            Ok(()) => {}
            Err(err) => {
                tracing::error!(error = %err, "cannot write shape logs; dropping the transaction and reconnecting to replay it");
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
    engine: &Engine,
    writer: &mut ChangeWriter,
    relations: &mut RelationCheck,
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
            rotate_table(engine, writer, &relation.name, "its columns changed");
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
    engine: &Engine,
    writer: &mut ChangeWriter,
    relations: &mut RelationCheck,
    change: WalChange,
) -> std::io::Result<()> {
    let (relation, old, new) = match &change {
        WalChange::Insert { relation, new } => (relation, None, Some(new)),
        WalChange::Update {
            relation,
            old,
            new,
            unfilled_toast,
        } => {
            if !unfilled_toast.is_empty() && !engine.store.on_table(&relation.name).is_empty() {
                tracing::error!(table = %relation.name, "an update lacks unchanged TOAST values (the table lost REPLICA IDENTITY FULL); its shapes are rotated");
                rotate_table(
                    engine,
                    writer,
                    &relation.name,
                    "replica identity is not FULL",
                );
                return Ok(());
            }
            (relation, old.as_ref(), Some(new))
        }
        WalChange::Delete { relation, old } => (relation, Some(old), None),
        WalChange::Truncate {
            relations: tables, ..
        } => {
            for relation in tables {
                rotate_table(engine, writer, &relation.name, "it was truncated");
            }
            return Ok(());
        }
    };
    if !relations.matches(engine, relation) {
        rotate_table(engine, writer, &relation.name, "its columns changed");
        return Ok(());
    }
    writer.change(&relation.name, old, new)
}

impl RelationCheck {
    /// Whether rows of `relation` line up with the table its shapes were built for.
    fn matches(&mut self, engine: &Engine, relation: &Arc<Relation>) -> bool {
        if let Some((known, ok)) = self.by_oid.get(&relation.oid)
            && Arc::ptr_eq(known, relation)
        {
            return *ok;
        }
        let ok = engine.store.on_table(&relation.name).iter().all(|shape| {
            shape.table.columns.len() == relation.columns.len()
                && shape
                    .table
                    .columns
                    .iter()
                    .zip(&relation.columns)
                    .all(|(a, b)| a.name == b.name && a.ty.oid == b.type_oid)
        });
        self.by_oid.insert(relation.oid, (relation.clone(), ok));
        ok
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
