//! The read path's moving parts, and the API the HTTP layer uses ([`Shapes`]).
//!
//! ```text
//! replication stream ──events──► consumer task (owns the Router) ──Written──► durability
//!                                     ▲ commands (register, finish snapshot, remove, drop lost logs, compact)
//! HTTP ─► Shapes::shape_for ─► create: prepare table → register (capturing) → snapshot → finish
//! ```
//! Commands reach the consumer only between transactions, so a shape starts, and a removal
//! asked for stops it, at a transaction boundary. The consumer task is the one place a shape is removed: it decides
//! rotations itself (it sees the WAL), and everyone else asks it with a [`Command`].

pub mod activity;
mod compactor;
mod consumer;
mod create;
mod creation_sync;
pub mod durability;
pub mod fence;
mod health;
pub mod idle;
pub mod partitions;
mod reshape;
mod restore;
mod retire;
pub mod router;
pub(crate) mod schema_change;
pub mod snapshot;
pub mod snapshot_clients;
pub mod standby;
pub mod start;
pub mod subquery;
mod table_watch;
pub mod tables;

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use shapes::definition::{DefinitionError, MoveMode, ShapeDefinition};
use shapes::handle::Handle;
use shapes::lsn::{Lsn, Xid32};
use shapes::request::ShapeRequest;
use shapes::schema::{QualifiedName, TableSchema};
use shapes::table_name::reserved_table;
use shapes::where_clause::WhereClause;
use tokio::sync::{Semaphore, SemaphorePermit, mpsc, oneshot, watch};

use crate::config::ServeConfig;
use crate::postgres::MetadataClient;
use crate::postgres::table_catalog::TableCatalog;
use crate::replication::commit_watch::CommitWatch;
use crate::storage::shape_dir::ShapeDir;
use crate::storage::shape_store::{Shape, ShapeState, ShapeStore};
use tables::{TableCache, TableError};

use activity::Activity;
pub use consumer::{Command, run_consumer};
pub use health::Health;

/// Why a shape cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    /// A request parameter is wrong: 400 naming it.
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    /// Try again later: 503 with `retry-after`.
    #[error("{message}")]
    Unavailable { message: String, retry_after: u64 },
    /// A concurrency limit of this proxy is reached (its message names the flag): 503 with
    /// `retry-after`, code `concurrent_request_limit_exceeded` as Electric says it.
    #[error("{message}")]
    LimitReached { message: String, retry_after: u64 },
    /// The proxy's database role lacks a privilege: retrying cannot help until an
    /// administrator acts, so 403 with the statement to run (never a 503 retried forever).
    #[error("{0}")]
    MissingPrivilege(String),
    /// The handle no longer names this shape: 409.
    #[error("shape was removed")]
    Gone,
    /// This instance is a standby (another one runs on the same slot): it serves stored
    /// shapes but makes and removes none until it takes over. 503 with `retry-after`.
    #[error("{0}")]
    Standby(String),
    #[error("{0}")]
    Internal(String),
}

impl From<DefinitionError> for ShapeError {
    fn from(err: DefinitionError) -> Self {
        Self::Invalid {
            param: err.param(),
            message: err.message(),
        }
    }
}

impl From<TableError> for ShapeError {
    fn from(err: TableError) -> Self {
        match err {
            TableError::Catalog(crate::postgres::catalog::CatalogError::Query(e))
            | TableError::Database(crate::postgres::DatabaseError::Query(e))
                if crate::postgres::is_transient(&e) =>
            {
                Self::unavailable(format!("database unavailable: {e}"))
            }
            TableError::Database(e) if e.is_transient() => {
                Self::unavailable(format!("database unavailable: {e}"))
            }
            TableError::Catalog(
                e @ (crate::postgres::catalog::CatalogError::UnknownTable(_)
                | crate::postgres::catalog::CatalogError::NotATable { .. }
                | crate::postgres::catalog::CatalogError::Unlogged(_)),
            ) => Self::Invalid {
                param: "table",
                message: e.to_string(),
            },
            e @ TableError::NoPrimaryKey(_) => Self::Invalid {
                param: "table",
                message: e.to_string(),
            },
            other => Self::Internal(other.to_string()),
        }
    }
}

/// What a standby answers when asked to `what` (503 + `retry-after`).
fn standby_refusal(what: &str) -> ShapeError {
    ShapeError::Standby(format!(
        "this shapesync is a standby: another instance on the same replication slot is still \
         running (a rolling deploy), and until it exits this one serves the shapes it has \
         stored but cannot {what}; retry shortly"
    ))
}

impl ShapeError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            retry_after: 5,
        }
    }
}

/// The shapes this proxy serves: finds or makes the shape a request names, and asks the
/// consumer task to remove one. Shared by every request.
#[derive(Debug)]
pub struct Shapes {
    config: Arc<ServeConfig>,
    store: ShapeStore,
    metadata: MetadataClient,
    tables: TableCache,
    commits: Arc<CommitWatch>,
    /// To the consumer task, which owns the router and is the one place shapes are removed.
    commands: mpsc::UnboundedSender<Command>,
    snapshot_permits: Semaphore,
    /// Connections kept for the next snapshot.
    snapshot_clients: snapshot_clients::SnapshotClients,
    /// Shapes being created (registered, snapshot queued or running).
    creating: std::sync::atomic::AtomicUsize,
    /// Definitions a request is making a shape of right now (until it is in the store), with
    /// what wakes the requests for the same definition that wait for it.
    being_made: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
    prepared: Mutex<HashSet<QualifiedName>>,
    /// Commit LSN of the last transaction processed (any shape); after a restart, until the
    /// stream passes it, the position below which the last run processed everything.
    last_seen: watch::Sender<Lsn>,
    /// A standby's read-only view of the logs another instance writes (see [`standby`]).
    standby: bool,
    /// What keeps the replication stream open (`--replication-idle-timeout`).
    demand: Arc<idle::Demand>,
    /// The last transaction applied and the rotations, for operators.
    activity: Activity,
    /// New shapes' files made durable together.
    creation_sync: creation_sync::CreationSync,
}

impl Shapes {
    pub fn new(
        config: Arc<ServeConfig>,
        store: ShapeStore,
        commits: Arc<CommitWatch>,
        catalog: Arc<TableCatalog>,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Self {
        Self {
            metadata: MetadataClient::new(config.database_url.clone()),
            snapshot_permits: Semaphore::new(config.max_concurrent_snapshots.max(1)),
            snapshot_clients: snapshot_clients::SnapshotClients::new(
                config.database_url.clone(),
                config.max_concurrent_snapshots.max(1),
            ),
            creating: std::sync::atomic::AtomicUsize::new(0),
            being_made: Mutex::default(),
            config,
            store,
            tables: TableCache::new(catalog),
            commits,
            commands,
            prepared: Mutex::new(HashSet::new()),
            last_seen: watch::channel(Lsn::ZERO).0,
            standby: false,
            demand: Arc::default(),
            activity: Activity::default(),
            creation_sync: creation_sync::CreationSync::default(),
        }
    }

    /// A standby's shapes: the logs in `store` that another instance writes, served
    /// read-only (see [`standby`]). No consumer task: nothing is routed or removed here.
    pub fn standby(
        config: Arc<ServeConfig>,
        store: ShapeStore,
        catalog: Arc<TableCatalog>,
    ) -> Self {
        let (commands, _) = mpsc::unbounded_channel();
        Self {
            standby: true,
            ..Self::new(
                config,
                store,
                Arc::new(CommitWatch::default()),
                catalog,
                commands,
            )
        }
    }

    /// What keeps the replication stream open: live requests hold [`idle::Demand::live`]
    /// while they wait.
    pub fn demand(&self) -> &Arc<idle::Demand> {
        &self.demand
    }

    /// Waits until the replication stream is open and caught up, reopening it if it was
    /// closed for idleness: what is served next includes every earlier commit.
    pub async fn stream_open(&self) -> Result<(), ShapeError> {
        if self.demand.wait_open(self.config.long_poll_timeout).await {
            return Ok(());
        }
        Err(ShapeError::unavailable(
            "the replication stream, closed while idle (--replication-idle-timeout), has not \
             caught up yet; retry",
        ))
    }

    /// Whether this is a standby's read-only view.
    pub fn is_standby(&self) -> bool {
        self.standby
    }

    /// `global_last_seen_lsn`: the commit LSN of the last transaction processed.
    pub fn last_seen(&self) -> Lsn {
        *self.last_seen.borrow()
    }

    /// What the read path did lately: the last transaction applied, rotations.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// The shared connection for short catalog and control queries (not snapshots).
    pub fn metadata(&self) -> &MetadataClient {
        &self.metadata
    }

    pub fn watch_last_seen(&self) -> watch::Receiver<Lsn> {
        self.last_seen.subscribe()
    }

    pub(crate) fn note_last_seen(&self, lsn: Lsn) {
        self.last_seen.send_if_modified(|current| {
            let advance = lsn > *current;
            if advance {
                *current = lsn;
            }
            advance
        });
    }

    /// A snapshot connection slot (`--max-concurrent-snapshots`) for a subset snapshot, if one
    /// is free now: a subset never waits behind queued initial snapshots, the client retries.
    pub fn try_snapshot_permit(&self) -> Result<SemaphorePermit<'_>, ShapeError> {
        self.snapshot_permits
            .try_acquire()
            .map_err(|_| ShapeError::LimitReached {
                message: format!(
                    "concurrent snapshot limit exceeded (limit: {}, set by \
                     --max-concurrent-snapshots); retry shortly",
                    self.config.max_concurrent_snapshots.max(1)
                ),
                retry_after: 1,
            })
    }

    /// The definition a request names (validated against the table), with the row filter
    /// of the auth rules, if any, ANDed in.
    pub async fn definition(&self, request: &ShapeRequest) -> Result<ShapeDefinition, ShapeError> {
        let name = request.table.clone();
        // Before any SQL; this also drops a restored shape of such a table.
        if let Some(reserved) = reserved_table(&name) {
            return Err(ShapeError::Invalid {
                param: "table",
                message: reserved.to_string(),
            });
        }
        let table = self.tables.get(&self.metadata, &name).await?;
        // The tables the subqueries read (of the `where`, and of the rules' row filters), as
        // they are now.
        let mut others = std::collections::HashMap::new();
        let texts = request
            .where_
            .iter()
            .chain(request.filter.iter().map(|f| &f.where_))
            .chain(request.inner_filters.iter().map(|(_, f)| &f.where_));
        let mut named: Vec<QualifiedName> = request
            .inner_filters
            .iter()
            .map(|(t, _)| t.clone())
            .collect();
        for text in texts.filter(|t| t.contains('(')) {
            named.extend(
                WhereClause::tables_named(text).map_err(|e| ShapeError::Invalid {
                    param: "where",
                    message: e.to_string(),
                })?,
            );
        }
        for inner in named {
            if others.contains_key(&inner) {
                continue;
            }
            if reserved_table(&inner).is_some() {
                return Err(ShapeError::Invalid {
                    param: "where",
                    message: format!("a subquery may not read {inner}"),
                });
            }
            // A missing table is the `where`'s mistake (400); a database away is a 503.
            let schema =
                self.tables.get(&self.metadata, &inner).await.map_err(
                    |e| match ShapeError::from(e) {
                        ShapeError::Invalid { message, .. } => ShapeError::Invalid {
                            param: "where",
                            message: format!("the subquery's table: {message}"),
                        },
                        other => other,
                    },
                )?;
            others.insert(inner, schema);
        }
        compile_definition_with(request, &table, &|name| others.get(name).cloned())
    }

    /// The shape for a request: the existing one, or a new one (whose snapshot starts now).
    /// Waits until it can be served.
    pub async fn shape_for(
        self: &Arc<Self>,
        request: &ShapeRequest,
    ) -> Result<Arc<Shape>, ShapeError> {
        self.shape_for_admitting(request, || Ok::<(), ShapeError>(()))
            .await
    }

    /// Like [`Shapes::shape_for`], asking `admit` before a new shape is made (a per-client
    /// limit may refuse it).
    pub async fn shape_for_admitting<E: From<ShapeError>>(
        self: &Arc<Self>,
        request: &ShapeRequest,
        admit: impl FnOnce() -> Result<(), E>,
    ) -> Result<Arc<Shape>, E> {
        if !self.standby {
            self.stream_open().await?;
        }
        let definition = self.definition(request).await?;
        let shape = match self.store.get_by_definition(definition.canonical()) {
            Some(shape) => shape,
            None if self.standby => return Err(standby_refusal("create new shapes").into()),
            None => {
                admit()?;
                self.create(request, definition).await?
            }
        };
        shape.touch();
        self.wait_ready(&shape).await?;
        Ok(shape)
    }

    /// Waits for a shape's snapshot.
    pub async fn wait_ready(&self, shape: &Arc<Shape>) -> Result<(), ShapeError> {
        let mut state = shape.watch_state();
        let state = state
            .wait_for(|s| *s != ShapeState::Creating)
            .await
            .map_err(|_| ShapeError::Gone)?;
        match state {
            ShapeState::Ready => Ok(()),
            ShapeState::Creating => Err(ShapeError::Gone),
            ShapeState::Gone => Err(ShapeError::Gone),
            ShapeState::Failed(message) => Err(ShapeError::unavailable(format!(
                "the shape's snapshot failed: {message}"
            ))),
        }
    }

    /// The table a shape of `name` would be built on (cached until the stream says it
    /// changed).
    pub async fn table(&self, name: &QualifiedName) -> Result<Arc<TableSchema>, TableError> {
        self.tables.get(&self.metadata, name).await
    }

    /// The shape a handle names, if it is being served.
    pub fn by_handle(&self, handle: &Handle) -> Option<Arc<Shape>> {
        self.store.get(handle)
    }

    /// The shape served for a request, if there is one (none is made).
    pub async fn existing(&self, request: &ShapeRequest) -> Result<Option<Arc<Shape>>, ShapeError> {
        let definition = self.definition(request).await?;
        Ok(self.store.get_by_definition(definition.canonical()))
    }

    /// The shape now served for `shape`'s definition: itself, or the one that replaced it
    /// after a rotation (`None` if nobody asked for it since).
    pub fn successor(&self, shape: &Shape) -> Option<Arc<Shape>> {
        self.store.get_by_definition(shape.definition.canonical())
    }

    /// How many shapes are served.
    pub fn count(&self) -> usize {
        self.store.len()
    }

    /// Where large responses wait for the socket (see `ShapeStore::spool_dir`).
    pub fn spool_dir(&self) -> PathBuf {
        self.store.spool_dir()
    }

    /// The file naming the database the stored shapes came from.
    fn identity_file(&self) -> PathBuf {
        self.store.identity_file()
    }

    /// Removes a shape (`DELETE /v1/shape`, eviction, a failed creation): the consumer task
    /// takes it out of the router and the store, and its clients get 409 and refetch. Returns
    /// the shape once it is out, `None` if it was already gone.
    pub async fn remove(&self, handle: &Handle) -> Result<Option<Arc<Shape>>, ShapeError> {
        if self.standby {
            return Err(standby_refusal("remove shapes"));
        }
        self.ask(|reply| Command::Remove {
            handle: handle.clone(),
            reply,
        })
        .await
    }

    /// Rotates shapes (their table was dropped or renamed): the consumer task takes them out
    /// and their clients get 409 and refetch.
    async fn rotate(&self, handles: Vec<Handle>, why: String) {
        let _ = self
            .ask(|reply| Command::Rotate {
                handles,
                why,
                reply,
            })
            .await;
    }

    /// Drops the shapes whose logs are in `dirs` (an fsync of them failed: their contents
    /// cannot be trusted) and removes the directories durably, so that no position confirmed
    /// later depends on them. Their clients get 409 and refetch a new snapshot. Blocks: runs
    /// on the blocking pool (see [`durability::LostLogs`]).
    pub fn drop_lost_logs(&self, dirs: &[ShapeDir]) -> io::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::DropLostLogs {
                dirs: dirs.to_vec(),
                reply,
            })
            .map_err(|_| io::Error::other("the consumer task is not running"))?;
        answer
            .blocking_recv()
            .map_err(|_| io::Error::other("the consumer task stopped"))?;
        for dir in dirs {
            match dir.remove() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.store.sync_shapes_dir()
    }

    /// Every shape served.
    pub fn all(&self) -> Vec<Arc<Shape>> {
        self.store.all()
    }

    /// The tables of the shapes served, by `pg_class.oid`.
    pub fn tables(&self) -> std::collections::BTreeMap<u32, QualifiedName> {
        self.store.tables()
    }

    /// The shapes served that `keep` says yes to (see [`ShapeStore::select`]).
    pub fn select(&self, keep: impl FnMut(&Shape) -> bool) -> Vec<Arc<Shape>> {
        self.store.select(keep)
    }

    /// The shapes served on `table`.
    fn on_table(&self, table: &QualifiedName) -> Vec<Arc<Shape>> {
        self.store.on_table(table)
    }

    /// Forgets what the catalog said of `table`: the stream says it changed.
    fn table_changed(&self, table: &QualifiedName) {
        self.tables.invalidate(table);
    }

    /// A transaction the consumer has processed: the write path learns its commit LSN, and
    /// live requests may answer up to it.
    fn note_commit(&self, xid: Xid32, commit_lsn: Lsn) {
        self.demand.touch();
        self.commits.record(xid, commit_lsn);
        self.note_last_seen(commit_lsn);
    }

    /// `shape` is being rotated (its clients refetch from a new snapshot).
    fn note_rotation(&self, shape: &Shape) {
        self.activity.note_rotation(shape.definition.canonical());
    }

    /// The partitioned tables above a relation, nearest first (see [`partitions`]).
    async fn partitioned_ancestors(
        &self,
        oid: u32,
        xid: Option<Xid32>,
    ) -> io::Result<Vec<QualifiedName>> {
        partitions::ancestors(&self.metadata, oid, xid).await
    }

    /// Takes a shape out of the store and marks it `Gone` (waiting requests wake up and
    /// answer 409); with `remove_dir`, its directory goes too, in the background. Only the
    /// consumer task calls it, after the router stopped feeding the shape.
    fn retire(&self, handle: &Handle, remove_dir: bool) -> Option<Arc<Shape>> {
        let shape = self.store.remove(handle)?;
        shape.set_state(ShapeState::Gone);
        if remove_dir {
            let dir = shape.log.dir().clone();
            tokio::task::spawn_blocking(move || {
                if let Err(err) = dir.remove() {
                    tracing::warn!(dir = %dir.path().display(), error = %err, "cannot remove a shape's directory");
                }
            });
        }
        tracing::info!(handle = %shape.handle, table = %shape.definition.table(), "shape removed");
        Some(shape)
    }
}

/// Whether a shape may have its moves sent as Electric's events: a client applies a
/// `move-out` by flipping the moved value's positions, which tells the truth only when every
/// subquery is a positive `IN`/`EXISTS` of the `where` itself.
fn check_move_events(plan: Option<&shapes::where_clause::TagPlan>) -> Result<(), ShapeError> {
    let refuse = |message: &str| {
        Err(ShapeError::Invalid {
            param: "moves",
            message: message.to_owned(),
        })
    };
    match plan {
        None => refuse(
            "moves=events applies to shapes whose where has subqueries; leave it out (or use moves=rows)",
        ),
        Some(plan) if !plan.all_positive() || plan.has_mixed() => refuse(
            "moves=events needs every subquery to be a positive IN or EXISTS in the where's AND/OR/NOT (Electric's move events cannot describe NOT IN, NOT EXISTS or a subquery inside another expression); use moves=rows",
        ),
        Some(_) => Ok(()),
    }
}

/// A request's definition against `table` (as its columns are now), with the row filter of
/// the auth rules, if any, ANDed in.
fn compile_definition(
    request: &ShapeRequest,
    table: &TableSchema,
) -> Result<ShapeDefinition, ShapeError> {
    compile_definition_with(request, table, &|_| None)
}

/// [`compile_definition`] with the schemas of the tables the `where`'s subqueries read.
fn compile_definition_with(
    request: &ShapeRequest,
    table: &TableSchema,
    others: &dyn Fn(&QualifiedName) -> Option<Arc<TableSchema>>,
) -> Result<ShapeDefinition, ShapeError> {
    let definition = filtered_definition(request, table, others)?;
    // Every message of a subquery shape carries its tags: a `where` too big for them is
    // refused now, as Electric does.
    let plan = match definition.where_clause().filter(|w| w.has_subqueries()) {
        Some(w) => Some(
            shapes::where_clause::TagPlan::of(w).map_err(|e| ShapeError::Invalid {
                param: "where",
                message: e.to_string(),
            })?,
        ),
        None => None,
    };
    if request.moves == MoveMode::Events {
        check_move_events(plan.as_ref())?;
    }
    Ok(definition.with_moves(request.moves))
}

/// The request's definition with the rules' row filters ANDed in.
fn filtered_definition(
    request: &ShapeRequest,
    table: &TableSchema,
    others: &dyn Fn(&QualifiedName) -> Option<Arc<TableSchema>>,
) -> Result<ShapeDefinition, ShapeError> {
    let definition = ShapeDefinition::new_with_tables(
        table,
        request.where_.as_deref(),
        &request.params,
        request.columns.as_deref(),
        request.replica,
        request.log,
        others,
    )?;
    let mut definition = definition;
    if let Some(filter) = &request.filter {
        let filter = WhereClause::parse_with_tables(&filter.where_, &filter.params, table, others)
            .map_err(|e| {
                ShapeError::Internal(format!(
                    "the row filter of the rules of {}: {e}",
                    request.table
                ))
            })?;
        definition = definition.with_filter(&filter);
    }
    if request.inner_filters.is_empty() {
        return Ok(definition);
    }
    let mut inner = Vec::new();
    for (name, filter) in &request.inner_filters {
        let schema = others(name).ok_or_else(|| {
            ShapeError::Internal(format!("the rules' row filter of {name}: no such table"))
        })?;
        let clause =
            WhereClause::parse_with_tables(&filter.where_, &filter.params, &schema, others)
                .map_err(|e| {
                    ShapeError::Internal(format!("the row filter of the rules of {name}: {e}"))
                })?;
        inner.push((name.clone(), clause));
    }
    Ok(definition.with_subquery_filters(&inner))
}
