//! One live shape: its definition, its log, and whether it can be served yet.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use shapes::definition::ShapeDefinition;
use shapes::handle::Handle;
use shapes::routing::ShapeId;
use shapes::schema::TableSchema;

use super::meta::ShapeMeta;
use crate::storage::shape_log::ShapeLog;
use crate::storage::watched::{Watched, Watcher};

/// Where a shape is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeState {
    /// Registered and capturing changes; the snapshot is being taken.
    Creating,
    /// Snapshot complete: serve it.
    Ready,
    /// The snapshot failed; the shape is being removed.
    Failed(Arc<str>),
    /// Deleted or rotated: clients must refetch.
    Gone,
}

#[derive(Debug)]
pub struct Shape {
    pub id: ShapeId,
    pub handle: Handle,
    pub definition: ShapeDefinition,
    pub table: Arc<TableSchema>,
    pub log: ShapeLog,
    /// Position of the tombstone column, on tombstoned tables.
    pub tombstone: Option<usize>,
    pub meta: ShapeMeta,
    state: Watched<ShapeState>,
    /// When the shape was last asked for, on the process-wide [`USE_CLOCK`].
    last_used: AtomicU64,
    /// Long-polls and SSE streams waiting on the shape now (see [`LiveClient`]).
    live_clients: AtomicUsize,
}

/// A live request (long-poll or SSE stream) waiting on a shape: counted in
/// [`Shape::live_clients`] until dropped.
#[derive(Debug)]
pub struct LiveClient(Arc<Shape>);

impl Drop for LiveClient {
    fn drop(&mut self) {
        self.0.live_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Orders uses of shapes for least-recently-used eviction. A counter, not a clock: many
/// requests fall within one clock tick, and every one of them must count.
static USE_CLOCK: AtomicU64 = AtomicU64::new(0);

fn next_use() -> u64 {
    USE_CLOCK.fetch_add(1, Ordering::Relaxed)
}

impl Shape {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ShapeId,
        definition: ShapeDefinition,
        table: Arc<TableSchema>,
        log: ShapeLog,
        tombstone: Option<usize>,
        meta: ShapeMeta,
        state: ShapeState,
    ) -> Self {
        let handle = meta
            .handle
            .parse()
            .unwrap_or_else(|_| Handle::new(definition.identity_hash(), meta.created_micros));
        Self {
            id,
            handle,
            definition,
            table,
            log,
            tombstone,
            meta,
            state: Watched::new(state),
            last_used: AtomicU64::new(next_use()),
            live_clients: AtomicUsize::new(0),
        }
    }

    /// The `electric-schema` header value (kept once, in the meta).
    pub fn schema_header(&self) -> &str {
        &self.meta.schema_header
    }

    pub fn state(&self) -> ShapeState {
        self.state.borrow().clone()
    }

    pub fn set_state(&self, state: ShapeState) {
        self.state.send_replace(state);
    }

    pub fn watch_state(&self) -> Watcher<ShapeState> {
        self.state.subscribe()
    }

    /// Notes a request, for least-recently-used eviction.
    pub fn touch(&self) {
        self.last_used.store(next_use(), Ordering::Relaxed);
    }

    /// Orders shapes by their last use: lower was used longer ago.
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// Counts a live request on the shape until the guard drops.
    pub fn live_client(self: &Arc<Self>) -> LiveClient {
        self.live_clients.fetch_add(1, Ordering::Relaxed);
        LiveClient(self.clone())
    }

    /// Live requests (long-polls and SSE streams) waiting on the shape now.
    pub fn live_clients(&self) -> usize {
        self.live_clients.load(Ordering::Relaxed)
    }
}
