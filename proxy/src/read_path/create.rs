//! Making a new shape: prepare its table, register it with the router (capturing), take the
//! snapshot, then let the router keep the captured transactions the snapshot lacks.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shapes::definition::ShapeDefinition;
use shapes::handle::Handle;
use shapes::lsn::Lsn;
use shapes::request::ShapeRequest;
use shapes::schema::QualifiedName;
use shapes::wire;
use tokio::sync::oneshot;

use super::{Command, ShapeError, Shapes, schema_change, subquery};
use crate::read_path::creation_sync::NewShapeFiles;
use crate::read_path::router::SnapshotHolds;
use crate::read_path::snapshot;
use crate::read_path::snapshot_clients::SnapshotClient;
use crate::replication::SetupError;
use crate::replication::setup::TablePrepared;
use crate::storage::shape_log::ShapeLog;
use crate::storage::shape_store::meta::{FORMAT_VERSION, ShapeMeta};
use crate::storage::shape_store::{Shape, ShapeState};

/// New shapes beyond this many per snapshot slot are refused with 503 until the queue drains.
const SNAPSHOT_QUEUE_FACTOR: usize = 16;

/// What a client is told when its table cannot be prepared for replication.
fn preparation_error(table: &QualifiedName, err: SetupError) -> ShapeError {
    if err.is_transient() {
        // A lock not taken within --lock-timeout, or the connection broke.
        return ShapeError::Unavailable {
            message: err.to_string(),
            retry_after: 2,
        };
    }
    match err {
        SetupError::UnknownTable(_) | SetupError::NotATable(_) => ShapeError::Invalid {
            param: "table",
            message: err.to_string(),
        },
        SetupError::MissingPrivilege { .. } => {
            tracing::error!(table = %table, error = %err, "cannot prepare a table for replication");
            ShapeError::MissingPrivilege(err.to_string())
        }
        other => {
            tracing::error!(table = %table, error = %other, "cannot prepare a table for replication");
            ShapeError::Internal(other.to_string())
        }
    }
}

/// One shape counted in [`Shapes`]'s `creating` until dropped.
pub(super) struct CreationTicket(Arc<Shapes>);

impl Drop for CreationTicket {
    fn drop(&mut self) {
        self.0.creating.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The one request making a shape of a definition, until dropped (see [`Shapes::create`]).
struct Making {
    shapes: Arc<Shapes>,
    canonical: String,
}

impl Drop for Making {
    fn drop(&mut self) {
        let mut being_made = self
            .shapes
            .being_made
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(waiting) = being_made.remove(&self.canonical) {
            waiting.notify_waiters();
        }
    }
}

impl Shapes {
    /// Makes the shape of `definition`, or returns the one another request made meanwhile.
    /// Requests for one definition make it one at a time: two made at once would each evict a
    /// shape at `--max-shapes`, where one eviction makes room.
    pub(super) async fn create(
        self: &Arc<Self>,
        request: &ShapeRequest,
        definition: ShapeDefinition,
    ) -> Result<Arc<Shape>, ShapeError> {
        let canonical = definition.canonical().to_owned();
        let _making = loop {
            let waiting = {
                let mut being_made = self.being_made.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(shape) = self.store.get_by_definition(&canonical) {
                    return Ok(shape);
                }
                match being_made.get(&canonical) {
                    Some(waiting) => waiting.clone(),
                    None => {
                        being_made.insert(canonical.clone(), Arc::default());
                        break Making {
                            shapes: self.clone(),
                            canonical: canonical.clone(),
                        };
                    }
                }
            };
            let notified = waiting.notified();
            tokio::pin!(notified);
            // Registered before the map is looked at again, so a wake-up in between is kept.
            notified.as_mut().enable();
            if self
                .being_made
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&canonical)
                .is_some_and(|w| Arc::ptr_eq(w, &waiting))
            {
                notified.await;
            }
        };
        self.make(request, definition).await
    }

    async fn make(
        self: &Arc<Self>,
        request: &ShapeRequest,
        definition: ShapeDefinition,
    ) -> Result<Arc<Shape>, ShapeError> {
        let name = definition.table().clone();
        let ticket = self.take_creation_ticket()?;
        let table = self.tables.get(&self.metadata, &name).await?;
        self.ensure_prepared(&name).await?;
        if let Some(w) = definition.where_clause() {
            for inner in subquery::tables_read(w) {
                self.ensure_prepared(&inner).await?;
            }
        }
        self.evict_if_full().await?;

        let (id, created_micros) = self.store.allocate();
        let handle = Handle::new(definition.identity_hash(), created_micros);
        let dir = self.store.dir_for(&handle);
        let io_err = |e: std::io::Error| ShapeError::unavailable(format!("storage: {e}"));
        let log = ShapeLog::create(&dir, self.config.chunk_bytes).map_err(io_err)?;
        let schema_header = wire::schema_header(&table, definition.selected_columns());
        let tombstone = self.tombstone_position_for(&table);
        let meta = ShapeMeta {
            format: FORMAT_VERSION,
            handle: handle.to_string(),
            request: request.into(),
            created_micros,
            start_lsn: Lsn::ZERO,
            chunk_bytes: self.config.chunk_bytes,
            schema_header,
            snapshot: None,
            snapshot_lsn: None,
            table_oid: Some(table.oid),
            read_columns: Some(schema_change::read_columns(&table, &definition, tombstone)),
        };
        let shape = Arc::new(Shape::new(
            id,
            definition,
            table,
            log,
            tombstone,
            meta,
            ShapeState::Creating,
        ));
        let (shape, is_new) = self.store.insert(shape);
        if !is_new {
            // Another request created the same shape meanwhile; share its snapshot.
            let _ = dir.remove();
            return Ok(shape);
        }
        tracing::info!(handle = %shape.handle, table = %name, "creating shape");
        let shapes = self.clone();
        let building = shape.clone();
        tokio::spawn(async move { shapes.build(building, ticket).await });
        Ok(shape)
    }

    /// A place among the shapes being created, taken before any work is done for the new
    /// shape and held until its snapshot is done: the check and the count are one atomic step,
    /// so a burst of requests cannot all pass the check before any of them is counted.
    fn take_creation_ticket(self: &Arc<Self>) -> Result<CreationTicket, ShapeError> {
        let snapshots = self.config.max_concurrent_snapshots.max(1);
        let limit = snapshots * SNAPSHOT_QUEUE_FACTOR;
        self.creating
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|queued| ShapeError::LimitReached {
                message: format!(
                    "concurrent shape creation limit exceeded ({queued} shapes are being \
                     created; limit: {limit}, {SNAPSHOT_QUEUE_FACTOR} per snapshot connection \
                     of --max-concurrent-snapshots {snapshots}); retry shortly"
                ),
                retry_after: 2,
            })?;
        Ok(CreationTicket(self.clone()))
    }

    pub(super) fn tombstone_position_for(
        &self,
        table: &shapes::schema::TableSchema,
    ) -> Option<usize> {
        let column = self.config.tombstone_column(&table.name)?;
        let position = table.column_index(column);
        if position.is_none() {
            tracing::warn!(table = %table.name, column, "tombstone column not found; rows are served without tombstone handling");
        }
        position
    }

    async fn build(self: Arc<Self>, shape: Arc<Shape>, ticket: CreationTicket) {
        let outcome = self.register_and_snapshot(&shape).await;
        drop(ticket);
        match outcome {
            Ok(rows) => {
                tracing::info!(handle = %shape.handle, rows, "shape ready");
                shape.set_state(ShapeState::Ready);
            }
            Err(err) => {
                tracing::warn!(handle = %shape.handle, error = %err, "shape creation failed");
                shape.set_state(ShapeState::Failed(err.to_string().into()));
                if let Err(err) = self.remove(&shape.handle).await {
                    tracing::warn!(handle = %shape.handle, error = %err, "cannot remove a failed shape");
                }
            }
        }
    }

    async fn register_and_snapshot(&self, shape: &Arc<Shape>) -> Result<u64, ShapeError> {
        if subquery::has_subqueries(&shape.definition) {
            return self.snapshot_subquery_shape(shape).await;
        }
        let start_lsn = self
            .ask(|reply| Command::Register {
                shape: shape.clone(),
                capturing: true,
                reply,
            })
            .await?
            .map_err(storage_error)?;
        let _permit = self
            .snapshot_permits
            .acquire()
            .await
            .map_err(|_| ShapeError::unavailable("shutting down"))?;
        let mut client = self.snapshot_client().await?;
        let taken = snapshot::take(&mut client, shape, self.config.chunk_bytes)
            .await
            .map_err(|e| {
                if e.is_transient() {
                    ShapeError::unavailable(e.to_string())
                } else {
                    ShapeError::Internal(e.to_string())
                }
            })?;
        client.reuse();
        let finished = self
            .ask(|reply| Command::FinishSnapshot {
                id: shape.id,
                holds: SnapshotHolds {
                    snapshot: taken.info.clone(),
                    below: taken.wal_lsn,
                },
                reply,
            })
            .await?
            .map_err(storage_error)?;
        let mut meta = shape.meta.clone();
        meta.start_lsn = finished.decided.max(start_lsn);
        meta.snapshot = Some(taken.info);
        meta.snapshot_lsn = Some(taken.wal_lsn);
        // Postgres will not send the captured transactions again: a crash must not take them,
        // nor the snapshot, from a shape that shape.json says is complete. So both are durable
        // before shape.json is written (the first time: a shape without one is dropped at a
        // restart). A failed fsync fails the creation (the shape is removed; an fsync error is
        // final).
        let files = NewShapeFiles {
            snapshot: taken.file,
            captured: finished.to_sync,
        };
        self.creation_sync
            .sync(files)
            .await
            .map_err(storage_error)?;
        meta.save_unsynced(shape.log.dir()).map_err(storage_error)?;
        Ok(taken.rows)
    }

    /// A shape with subqueries: the consumer takes its snapshot and reads its levels, between
    /// two transactions of the stream.
    async fn snapshot_subquery_shape(&self, shape: &Arc<Shape>) -> Result<u64, ShapeError> {
        let _permit = self
            .snapshot_permits
            .acquire()
            .await
            .map_err(|_| ShapeError::unavailable("shutting down"))?;
        let (rows, holds, decided) = self
            .ask(|reply| Command::CreateSubquery {
                shape: shape.clone(),
                reply,
            })
            .await??;
        let mut meta = shape.meta.clone();
        meta.start_lsn = decided;
        meta.snapshot = Some(holds.snapshot);
        meta.snapshot_lsn = Some(holds.below);
        meta.save(shape.log.dir())
            .map_err(|e| ShapeError::unavailable(format!("storage: {e}")))?;
        Ok(rows)
    }

    /// Sends the consumer task a command and waits for its answer.
    pub(super) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ShapeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .map_err(|_| ShapeError::unavailable("the change writer is not running"))?;
        answer
            .await
            .map_err(|_| ShapeError::unavailable("the change writer stopped"))
    }

    /// A connection for a snapshot (see [`super::snapshot_clients`]); hand it back with
    /// [`SnapshotClient::reuse`] once its transaction has ended cleanly.
    pub async fn snapshot_client(&self) -> Result<SnapshotClient<'_>, ShapeError> {
        self.snapshot_clients.get().await
    }

    /// Closes the connections kept for snapshots (replication closed for idleness).
    pub fn close_snapshot_clients(&self) {
        self.snapshot_clients.close_idle();
    }

    /// Adds the table to the publication with `REPLICA IDENTITY FULL`, once per table.
    async fn ensure_prepared(&self, table: &QualifiedName) -> Result<(), ShapeError> {
        if self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(table)
        {
            return Ok(());
        }
        self.prepare(table).await.map(|_| ())
    }

    /// Adds `table` to the publication and gives it (and each of its partitions) REPLICA
    /// IDENTITY FULL, whatever is missing, under the lock timeout.
    async fn prepare(&self, table: &QualifiedName) -> Result<TablePrepared, ShapeError> {
        let mut client = crate::postgres::connect(&self.config.database_url)
            .await
            .map_err(|e| ShapeError::unavailable(e.to_string()))?;
        let prepared = crate::replication::setup::prepare_table(
            &mut client,
            &self.config.publication,
            table,
            self.config.lock_timeout,
        )
        .await
        .map_err(|e| preparation_error(table, e))?;
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(table.clone());
        Ok(prepared)
    }

    /// Sets REPLICA IDENTITY FULL again on a table that has shapes (someone changed it, or a
    /// partition without it was attached), in the background. The consumer rotates the shapes
    /// of every change that arrives without its whole old row meanwhile, so waiting for a lock
    /// here costs refetches, never a gap.
    pub(crate) fn restore_identity(self: &Arc<Self>, table: QualifiedName) {
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&table);
        let shapes = self.clone();
        tokio::spawn(async move {
            match shapes.prepare(&table).await {
                Ok(prepared) if prepared.replica_identity_set => {
                    tracing::error!(table = %table, "REPLICA IDENTITY FULL was missing on the table or one of its partitions, and is set again");
                }
                Ok(_) => {}
                Err(err) => tracing::error!(
                    table = %table,
                    error = %err,
                    "cannot set REPLICA IDENTITY FULL again; the table's shapes are rotated at \
                     every update or delete that lacks the whole old row until it is set \
                     (ALTER TABLE … REPLICA IDENTITY FULL on it and its partitions)"
                ),
            }
        });
    }

    /// With `--max-shapes` reached, removes the least recently used ready shape.
    async fn evict_if_full(&self) -> Result<(), ShapeError> {
        if self.store.len() < self.config.max_shapes {
            return Ok(());
        }
        let victim = self
            .store
            .all()
            .into_iter()
            .filter(|s| s.state() == ShapeState::Ready)
            .min_by_key(|s| s.last_used());
        if let Some(victim) = victim {
            tracing::info!(handle = %victim.handle, "evicting the least recently used shape (--max-shapes)");
            self.remove(&victim.handle).await?;
        }
        Ok(())
    }
}

/// A failed write of the router's, as a client hears of it.
pub(super) fn storage_error(err: std::io::Error) -> ShapeError {
    ShapeError::unavailable(format!("storage: {err}"))
}
