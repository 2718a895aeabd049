//! The local database: one thread owns the SQLite connection, and everything else talks to it
//! through a [`Store`] handle holding a channel.
//!
//! Why a thread and not a tokio task: rusqlite is blocking, and a long initial sync must not
//! starve the runtime. Why one owner: SQLite has one writer at a time anyway, and a single
//! owner can keep a *batch* open — the rows of one up-to-date batch (a Postgres transaction,
//! or a whole initial snapshot) are applied as they stream in, inside one SQLite transaction
//! committed at up-to-date, so readers never see half of it. While a batch is open, jobs that
//! belong to other shapes or to the app (local writes, queries) wait in a queue and run right
//! after the commit; a subscription that fails mid-batch sends [`BatchStep::Abort`].
//!
//! Another connection may write to the same file (the CLI's `write` while a `sync` runs): every
//! transaction this thread opens first checks SQLite's `data_version`, and reloads the in-memory
//! state (which rows have overlays, answered writes) when someone else committed since, so a
//! server change never lands in the app's table over an overlay this thread has not seen.
//!
//! The parts: [`mirror`] (server rows into the app's tables, resets, migrations), [`overlay`]
//! (pending local values on top of server rows), [`outbox`] (local writes and their results),
//! [`conflicts`], [`tags`] (which rows a move-out takes out of a subquery shape) and
//! [`tag_table`] (their state in the database), and [`sync_tables`] (the `_shapesync_*`
//! tables).

pub mod conflicts;
pub mod export;
pub mod mirror;
pub mod outbox;
pub mod overlay;
pub mod sync_tables;
pub mod tag_table;
pub mod tags;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use shapes::handle::Handle;
use shapes::lsn::{Lsn, Xid32};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::client::Clock;
use crate::error::ClientError;
use crate::schema_mapping::ShapeSchema;
use crate::status::StatusBoard;

pub use conflicts::Conflict;
pub use mirror::{BatchStep, Change, Incoming};
pub use outbox::{LocalWrite, WriteOp};

/// Something the app may want to react to.
#[derive(Debug, Clone)]
// Events are rare (a conflict, a priority becoming ready): boxing the conflict would change
// the API for nothing measurable.
#[allow(clippy::large_enum_variant)]
pub enum ClientEvent {
    /// A local write lost (some of) its columns or was rejected, and was rolled back.
    Conflict(Conflict),
    /// Every shape of sync priority `priority` or a higher one has completed its initial sync
    /// (or refetch) and is readable; `lsn` is the "synced up to" of the shape that completed
    /// it (0 when the server had processed no transaction yet). Sent each time it becomes
    /// ready (again after a refetch).
    PriorityReady { priority: u8, lsn: Lsn },
}

/// What the store knows about one subscribed shape.
#[derive(Debug, Clone)]
pub(crate) struct ShapeState {
    pub definition: String,
    /// The Postgres table, as mutations name it.
    pub table: String,
    pub schema: Option<ShapeSchema>,
    pub schema_json: Option<String>,
    /// Row keys that have overlays (and so a shadow row).
    pub overlaid: HashSet<String>,
    pub global_lsn: Lsn,
    /// Some row has tag state (so a delete without tag headers must still end it).
    pub tagged: bool,
}

/// The persisted position of a subscription.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    pub handle: Option<Handle>,
    pub offset: String,
    pub schema_json: Option<String>,
    /// The `global_lsn` of the last committed up-to-date: every transaction committed in the
    /// database at or before it is in the mirror ("synced up to").
    pub global_lsn: Lsn,
}

/// State owned by the database thread.
pub struct StoreCore {
    pub(crate) conn: Connection,
    pub(crate) shapes: HashMap<String, ShapeState>,
    /// txid → sequence numbers of answered writes waiting for their echo.
    pub(crate) acked_by_txid: HashMap<Xid32, Vec<i64>>,
    pub(crate) client_id: String,
    pub(crate) events: broadcast::Sender<ClientEvent>,
    pub(crate) status: StatusBoard,
    open_batch: Option<String>,
    /// Milliseconds after which an answered write with no known LSN stops overlaying.
    pub(crate) ack_grace_ms: i64,
    /// The client's clock: the grace period is measured on it.
    pub(crate) clock: Clock,
    /// `PRAGMA data_version` as of the last look: it changes when another connection commits.
    data_version: i64,
}

type Call = Box<dyn FnOnce(&mut StoreCore) + Send>;

enum Job {
    Batch {
        shape: String,
        step: BatchStep,
        reply: Option<oneshot::Sender<Result<(), ClientError>>>,
    },
    Call(Call),
}

/// How to open the database.
#[derive(Clone)]
pub struct OpenOptions {
    /// SQLCipher key (needs the `encryption` feature).
    pub key: Option<String>,
    /// Overrides the stored device id (tests; normally made once and kept).
    pub client_id: Option<String>,
    pub ack_grace_ms: i64,
    /// The client's clock (µs since the epoch).
    pub clock: Clock,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key (a secret) nor the clock (a function).
        f.debug_struct("OpenOptions")
            .field("client_id", &self.client_id)
            .field("ack_grace_ms", &self.ack_grace_ms)
            .finish_non_exhaustive()
    }
}

/// The handle: cheap to clone; the thread stops when every handle is gone.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::UnboundedSender<Job>,
    client_id: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database and starts its thread.
    pub fn open(
        path: &Path,
        options: OpenOptions,
        status: StatusBoard,
        events: broadcast::Sender<ClientEvent>,
    ) -> Result<Self, ClientError> {
        let core = StoreCore::open(path, options, status, events)?;
        let client_id = core.client_id.clone();
        let (jobs, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("shapesync-sqlite".into())
            .spawn(move || run(core, rx))
            .map_err(|e| ClientError::Network(format!("cannot start the database thread: {e}")))?;
        Ok(Self { jobs, client_id })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Runs `f` on the database thread and returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut StoreCore) -> Result<R, ClientError> + Send + 'static,
    ) -> Result<R, ClientError> {
        let (tx, rx) = oneshot::channel();
        let job = Job::Call(Box::new(move |core| {
            let _ = tx.send(f(core));
        }));
        self.jobs.send(job).map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Sends a batch step; await the returned receiver for its result.
    pub fn batch(
        &self,
        shape: &str,
        step: BatchStep,
    ) -> Result<oneshot::Receiver<Result<(), ClientError>>, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Batch {
                shape: shape.to_owned(),
                step,
                reply: Some(tx),
            })
            .map_err(|_| ClientError::Closed)?;
        Ok(rx)
    }

    /// Rolls back `shape`'s open batch, if any, without waiting (safe in `Drop`).
    pub fn abort_batch(&self, shape: &str) {
        let _ = self.jobs.send(Job::Batch {
            shape: shape.to_owned(),
            step: BatchStep::Abort,
            reply: None,
        });
    }
}

fn open_connection(path: &Path, key: Option<&str>) -> Result<Connection, ClientError> {
    let conn = Connection::open(path)?;
    if let Some(key) = key {
        if !cfg!(feature = "encryption") {
            return Err(ClientError::EncryptionUnavailable);
        }
        conn.pragma_update(None, "key", key)?;
    }
    let readable = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    });
    if let Err(err) = readable {
        if err.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
            return Err(ClientError::WrongKey {
                path: path.display().to_string(),
            });
        }
        return Err(err.into());
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

fn run(mut core: StoreCore, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut deferred: VecDeque<Job> = VecDeque::new();
    while let Some(job) = next_job(&core, &mut deferred, &mut jobs) {
        match job {
            Job::Batch { shape, step, reply } => {
                let other_batch = core.open_batch.as_ref().is_some_and(|open| *open != shape);
                if other_batch {
                    deferred.push_back(Job::Batch { shape, step, reply });
                    continue;
                }
                let result = core.batch_step(&shape, step);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                } else if let Err(err) = result {
                    tracing::warn!(shape, error = %err, "batch step failed");
                }
            }
            Job::Call(f) if core.open_batch.is_some() => deferred.push_back(Job::Call(f)),
            Job::Call(f) => f(&mut core),
        }
    }
    if core.open_batch.is_some() {
        let _ = core.conn.execute_batch("ROLLBACK");
    }
}

/// The next job to run: while a batch is open, the open shape's own deferred steps first (they
/// may have been queued behind another shape's batch); with none open, deferred jobs in order;
/// else the channel.
fn next_job(
    core: &StoreCore,
    deferred: &mut VecDeque<Job>,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
) -> Option<Job> {
    let waiting = match &core.open_batch {
        Some(open) => deferred
            .iter()
            .position(|job| matches!(job, Job::Batch { shape, .. } if shape == open))
            .and_then(|i| deferred.remove(i)),
        None => deferred.pop_front(),
    };
    waiting.or_else(|| jobs.blocking_recv())
}

impl StoreCore {
    /// Opens (creating if needed) the database, on the calling thread.
    pub(crate) fn open(
        path: &Path,
        options: OpenOptions,
        status: StatusBoard,
        events: broadcast::Sender<ClientEvent>,
    ) -> Result<Self, ClientError> {
        let conn = open_connection(path, options.key.as_deref())?;
        let client_id = sync_tables::prepare(&conn, options.client_id.as_deref())?;
        let mut core = StoreCore {
            conn,
            shapes: HashMap::new(),
            acked_by_txid: HashMap::new(),
            client_id,
            events,
            status,
            open_batch: None,
            ack_grace_ms: options.ack_grace_ms,
            clock: options.clock,
            data_version: 0,
        };
        core.data_version = core.read_data_version()?;
        core.load()?;
        Ok(core)
    }

    fn load(&mut self) -> Result<(), ClientError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, definition, pg_table, schema, global_lsn FROM _shapesync_shapes",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut shapes = HashMap::new();
        for row in rows {
            let (name, definition, table, schema_json, global_lsn) = row?;
            let schema = schema_json
                .as_deref()
                .and_then(|s| ShapeSchema::parse(s).ok());
            shapes.insert(
                name,
                ShapeState {
                    definition,
                    table,
                    schema,
                    schema_json,
                    overlaid: HashSet::new(),
                    global_lsn: Lsn(global_lsn as u64),
                    tagged: false,
                },
            );
        }
        drop(stmt);
        self.shapes = shapes;
        let names: Vec<String> = self.shapes.keys().cloned().collect();
        for name in names {
            let keys = self.shadow_keys(&name)?;
            let tagged = self.has_tags(&name)?;
            if let Some(state) = self.shapes.get_mut(&name) {
                state.overlaid = keys;
                state.tagged = tagged;
            }
        }
        self.load_acked()?;
        self.refresh_counts()
    }

    fn shadow_keys(&self, shape: &str) -> Result<HashSet<String>, ClientError> {
        let table = sync_tables::shadow_table(shape);
        let exists: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [&table],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Ok(HashSet::new());
        }
        let mut stmt = self.conn.prepare(&format!(
            "SELECT _key FROM {}",
            crate::schema_mapping::quote(&table)
        ))?;
        let keys = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    fn load_acked(&mut self) -> Result<(), ClientError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, txid FROM _shapesync_acked WHERE txid IS NOT NULL")?;
        let rows: Vec<(i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        self.acked_by_txid.clear();
        for (seq, txid) in rows {
            // Written from a 32-bit xid: a wider number cannot be one (and never matched).
            if let Ok(txid) = u32::try_from(txid) {
                self.acked_by_txid.entry(Xid32(txid)).or_default().push(seq);
            }
        }
        Ok(())
    }

    /// Publishes the outbox and conflict counts.
    pub(crate) fn refresh_counts(&self) -> Result<(), ClientError> {
        let pending: i64 =
            self.conn
                .query_row("SELECT count(*) FROM _shapesync_outbox", [], |r| r.get(0))?;
        let conflicts: i64 = self.conn.query_row(
            "SELECT count(*) FROM _shapesync_conflicts WHERE resolved = 0",
            [],
            |r| r.get(0),
        )?;
        self.status.set_counts(pending as u64, conflicts as u64);
        Ok(())
    }

    /// The connection, for reading the app's tables (tests, export, the app's queries).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn shape(&self, name: &str) -> Result<&ShapeState, ClientError> {
        self.shapes.get(name).ok_or_else(|| ClientError::Shape {
            name: name.to_owned(),
            message: "not subscribed in this database".into(),
        })
    }

    pub(crate) fn schema(&self, name: &str) -> Result<ShapeSchema, ClientError> {
        self.shape(name)?
            .schema
            .clone()
            .ok_or_else(|| ClientError::Shape {
                name: name.to_owned(),
                message: "not synced yet: its columns are unknown until the first sync".into(),
            })
    }

    fn begin_batch(&mut self, shape: &str) -> Result<(), ClientError> {
        if self.open_batch.is_none() {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            self.open_batch = Some(shape.to_owned());
            self.follow_other_writers()?;
        }
        Ok(())
    }

    fn read_data_version(&self) -> Result<i64, ClientError> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Inside a write transaction (so nobody else can commit meanwhile): reloads the
    /// in-memory state if another connection committed since the last look.
    fn follow_other_writers(&mut self) -> Result<(), ClientError> {
        let version = self.read_data_version()?;
        if version != self.data_version {
            tracing::debug!("another connection wrote to the database: reloading its state");
            self.load()?;
            self.data_version = version;
        }
        Ok(())
    }

    fn end_batch(&mut self, commit: bool) -> Result<(), ClientError> {
        if self.open_batch.take().is_some() {
            self.conn
                .execute_batch(if commit { "COMMIT" } else { "ROLLBACK" })?;
        }
        Ok(())
    }

    /// Runs `f` in a transaction of its own (outside batches).
    pub(crate) fn in_transaction<R>(
        &mut self,
        f: impl FnOnce(&mut StoreCore) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match self.follow_other_writers().and_then(|()| f(self)) {
            Ok(r) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(r)
            }
            Err(err) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                // In-memory state follows the database again.
                let _ = self.load();
                Err(err)
            }
        }
    }
}
