//! Bringing back the shapes of an earlier run, with the same handles and offsets, so clients
//! resume without refetching. A shape whose snapshot never completed, whose format is not
//! ours, or whose table changed meanwhile is dropped (its clients get 409 and refetch).

use std::sync::Arc;

use shapes::wire;

use super::create::storage_error;
use super::{Command, ShapeError, Shapes, schema_change};
use crate::storage::shape_dir::ShapeDir;
use crate::storage::shape_log::ShapeLog;
use crate::storage::shape_store::meta::{FORMAT_VERSION, ShapeMeta};
use crate::storage::shape_store::{Shape, ShapeState};

impl Shapes {
    /// Restores every persisted shape. Must run before the replication stream starts, so the
    /// restored shapes see every transaction Postgres sends.
    pub async fn restore(self: &Arc<Self>) -> Result<usize, ShapeError> {
        let dirs = self
            .store
            .persisted_dirs()
            .map_err(|e| ShapeError::Internal(format!("reading the storage directory: {e}")))?;
        let mut restored = 0;
        for dir in dirs {
            match self.restore_one(&dir).await {
                Ok(()) => restored += 1,
                Err(Dropped::Because(reason) | Dropped::Incomplete(reason)) => {
                    tracing::info!(dir = %dir.path().display(), reason, "dropping a stored shape");
                    if let Err(err) = dir.remove() {
                        tracing::warn!(dir = %dir.path().display(), error = %err, "cannot remove a stored shape");
                    }
                }
                Err(Dropped::Transient(err)) => return Err(err),
            }
        }
        // REPLICA IDENTITY may have been changed while the proxy was down: set it back now.
        // Changes made meanwhile arrive without whole old rows, and rotate their shapes.
        let tables: std::collections::BTreeSet<_> = self
            .store
            .all()
            .iter()
            .map(|shape| shape.definition.table().clone())
            .collect();
        for table in tables {
            self.restore_identity(table);
        }
        Ok(restored)
    }

    async fn restore_one(&self, dir: &ShapeDir) -> Result<(), Dropped> {
        let shape = self.load_stored(dir, ShapeLog::open).await?;
        let (stored, is_new) = self.store.insert(shape.clone());
        if !is_new {
            return Err(Dropped::Because(format!(
                "a newer copy of the same shape exists ({})",
                stored.handle
            )));
        }
        // Clients may hold offsets up to its last transaction.
        self.note_last_seen(shape.log.last_commit());
        if super::subquery::has_subqueries(&shape.definition) {
            let handle = shape.handle.clone();
            let changes = match self
                .ask(|reply| Command::ResyncSubquery { shape, reply })
                .await
                .and_then(|resynced| resynced)
            {
                Ok(changes) => changes,
                Err(e @ ShapeError::Unavailable { .. }) => return Err(Dropped::Transient(e)),
                Err(other) => {
                    self.retire(&handle, false);
                    return Err(Dropped::Because(format!(
                        "its subqueries cannot be read again: {other}"
                    )));
                }
            };
            tracing::info!(%handle, changes, "subquery shape read again after the restart");
            return Ok(());
        }
        self.ask(|reply| Command::Register {
            shape,
            capturing: false,
            reply,
        })
        .await
        .and_then(|registered| registered.map_err(storage_error))
        .map_err(Dropped::Transient)?;
        Ok(())
    }

    /// A stored shape, as it can be served: its definition still holds for the table as it
    /// is now, and its log opens (with `open`: cutting off a torn tail, or read-only).
    pub(super) async fn load_stored(
        &self,
        dir: &ShapeDir,
        open: fn(&ShapeDir, u64) -> std::io::Result<ShapeLog>,
    ) -> Result<Arc<Shape>, Dropped> {
        let meta =
            ShapeMeta::load(dir).map_err(|e| Dropped::Incomplete(format!("shape.json: {e}")))?;
        if meta.format != FORMAT_VERSION {
            return Err(Dropped::Because(format!("on-disk format {}", meta.format)));
        }
        if meta.snapshot.is_none() {
            return Err(Dropped::Incomplete("its snapshot never completed".into()));
        }
        self.store.note_existing_micros(meta.created_micros);
        let definition = self
            .definition(&(&meta.request).into())
            .await
            .map_err(|e| match e {
                ShapeError::Unavailable { .. } => Dropped::Transient(e),
                other => Dropped::Because(format!("its definition no longer holds: {other}")),
            })?;
        let table = self
            .tables
            .get(&self.metadata, definition.table())
            .await
            .map_err(|e| Dropped::Transient(e.into()))?;
        if meta.table_oid.is_some_and(|oid| oid != table.oid) {
            return Err(Dropped::Because(
                "its table was dropped and made again under the same name".into(),
            ));
        }
        let header = wire::schema_header(&table, definition.selected_columns());
        if header != meta.schema_header {
            return Err(Dropped::Because(
                "the columns it selects changed (or, without a `columns` list, the table's)".into(),
            ));
        }
        if let Some(changed) = meta
            .read_columns
            .as_deref()
            .and_then(|read| schema_change::changed_read_column(&table, read))
        {
            return Err(Dropped::Because(changed));
        }
        let log = open(dir, meta.chunk_bytes)
            .map_err(|e| Dropped::Incomplete(format!("its log cannot be read: {e}")))?;
        if log.snapshot().is_none() {
            return Err(Dropped::Incomplete(
                "its snapshot file is incomplete".into(),
            ));
        }
        let (id, _) = self.store.allocate();
        let tombstone = self.tombstone_position_for(&table);
        let shape = Arc::new(Shape::new(
            id,
            definition,
            table,
            log,
            tombstone,
            meta,
            ShapeState::Ready,
        ));
        if dir.name() != Some(shape.handle.as_str()) {
            return Err(Dropped::Because("directory and handle disagree".into()));
        }
        Ok(shape)
    }
}

/// Why a stored shape is not served.
pub(super) enum Dropped {
    /// It can never be served again.
    Because(String),
    /// It is not (or no longer) complete on disk: a crash cut it short, or, seen by a
    /// standby, the instance writing it has not finished it yet.
    Incomplete(String),
    /// Try again later.
    Transient(ShapeError),
}
