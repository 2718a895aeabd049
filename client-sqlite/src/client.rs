//! The library's front door: open a database, subscribe shapes, write locally, watch status.
//!
//! ```no_run
//! # async fn demo() -> Result<(), client_sqlite::ClientError> {
//! use client_sqlite::{Client, ClientConfig, ShapeSpec};
//! let config = ClientConfig::new("http://127.0.0.1:3000", "app.db")
//!     .shape(ShapeSpec::table("todos").with_where("owner_id = 'alice'"));
//! let client = Client::open(config).await?;
//! let mut values = serde_json::Map::new();
//! values.insert("title".into(), "Buy milk".into());
//! let key = serde_json::json!({"id": "8f1d7a0e-0c1e-4a53-9a55-0a4f6f0b0001"});
//! client.update("todos", key.as_object().unwrap().clone(), values).await?;
//! println!("{}", client.status().state);
//! # Ok(()) }
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use reqwest::Url;
use rusqlite::Connection;
use serde_json::{Map, Value as Json};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;
use crate::shape_spec::ShapeSpec;
use crate::status::{ShapePhase, Status, StatusBoard};
use crate::store::outbox::Queued;
use crate::store::{ClientEvent, Conflict, LocalWrite, OpenOptions, Store, WriteOp};
use crate::subscription::{self, Network, SyncContext, SyncOptions};
use crate::yjs_doc::YjsDoc;

/// The client's clock for write timestamps, in µs since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// How to open a [`Client`].
#[derive(Clone)]
pub struct ClientConfig {
    /// The server, e.g. `https://sync.example.com` (paths `/v1/shape`, `/v1/mutations`).
    pub url: String,
    pub db_path: PathBuf,
    pub shapes: Vec<ShapeSpec>,
    /// Encryption key (feature `encryption`).
    pub key: Option<String>,
    /// Overrides the device id stored in the database.
    pub client_id: Option<String>,
    pub sync: SyncOptions,
    /// Writes per `/v1/mutations` request.
    pub push_batch: usize,
    /// How long a write answered without an LSN keeps its overlay.
    pub ack_grace: Duration,
    /// Extra headers on every request (e.g. `authorization: Bearer …`).
    pub headers: Vec<(String, String)>,
    /// Timestamps of local writes, and the clock `ack_grace` is measured on (default: the
    /// system clock, strictly increasing).
    pub clock: Option<Clock>,
    /// Start with the network on (see [`Client::set_online`]).
    pub online: bool,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("db_path", &self.db_path)
            .field("shapes", &self.shapes)
            .field("key", &self.key.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    pub fn new(url: &str, db_path: impl Into<PathBuf>) -> Self {
        Self {
            url: url.to_owned(),
            db_path: db_path.into(),
            shapes: Vec::new(),
            key: None,
            client_id: None,
            sync: SyncOptions::default(),
            push_batch: 100,
            ack_grace: Duration::from_secs(30),
            headers: Vec::new(),
            clock: None,
            online: true,
        }
    }

    pub fn shape(mut self, spec: ShapeSpec) -> Self {
        self.shapes.push(spec);
        self
    }
}

/// A running client. Dropping it stops its tasks; [`Client::close`] also waits for them.
pub struct Client {
    store: Store,
    status: StatusBoard,
    events: broadcast::Sender<ClientEvent>,
    online: watch::Sender<bool>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    wake_push: Arc<Notify>,
    clock: Clock,
    /// What the subscriptions share (none when opened offline).
    sync: Option<Arc<SyncContext>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("store", &self.store)
            .finish()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Client {
    /// Opens the database, registers the shapes, and starts syncing.
    pub async fn open(config: ClientConfig) -> Result<Self, ClientError> {
        let mut client = Self::open_offline(&config).await?;
        client.start(&config).await?;
        Ok(client)
    }

    /// Opens the database without any network activity (for local writes, status, export).
    pub async fn open_offline(config: &ClientConfig) -> Result<Self, ClientError> {
        let status = StatusBoard::default();
        let (events, _) = broadcast::channel(256);
        let clock = config.clock.clone().unwrap_or_else(system_clock);
        let options = OpenOptions {
            key: config.key.clone(),
            client_id: config.client_id.clone(),
            ack_grace_ms: config.ack_grace.as_millis() as i64,
            clock: clock.clone(),
        };
        let path = config.db_path.clone();
        let (store_status, store_events) = (status.clone(), events.clone());
        let store = tokio::task::spawn_blocking(move || {
            Store::open(&path, options, store_status, store_events)
        })
        .await
        .map_err(|_| ClientError::Closed)??;
        let last_sync = store.call(|core| core.last_sync()).await?;
        status.set_last_sync(last_sync);
        Ok(Self {
            store,
            status,
            events,
            online: watch::Sender::new(config.online),
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
            wake_push: Arc::new(Notify::new()),
            clock,
            sync: None,
        })
    }

    async fn start(&mut self, config: &ClientConfig) -> Result<(), ClientError> {
        let base_url: Url = config.url.parse().map_err(|e| ClientError::Shape {
            name: config.url.clone(),
            message: format!("not a URL: {e}"),
        })?;
        if base_url.scheme() == "https" && !cfg!(feature = "tls") {
            return Err(ClientError::TlsUnavailable {
                url: config.url.clone(),
            });
        }
        let ctx = Arc::new(SyncContext {
            http: http_client(&config.headers, config.sync.gzip)?,
            base_url,
            store: self.store.clone(),
            status: self.status.clone(),
            options: config.sync.clone(),
            sync_now: watch::Sender::new(shapes::lsn::Lsn::ZERO),
            events: self.events.clone(),
        });
        self.sync = Some(ctx.clone());
        let network = Network {
            online: self.online.subscribe(),
            shutdown: self.shutdown.clone(),
        };
        // Every shape is on the board before any starts: a low priority waits for the
        // higher ones it can see.
        let mut cursors = Vec::new();
        for spec in &config.shapes {
            let registered = spec.clone();
            let cursor = self
                .store
                .call(move |core| core.register(&registered))
                .await?;
            let ready = cursor.offset != "-1" && cursor.schema_json.is_some();
            self.status.register(&spec.name, spec.priority, ready);
            self.status
                .set_phase(&spec.name, crate::status::ShapePhase::Connecting);
            cursors.push(cursor);
        }
        for (spec, cursor) in config.shapes.iter().zip(cursors) {
            let task = subscription::run(ctx.clone(), spec.clone(), cursor, network.clone());
            self.tasks.push(tokio::spawn(task));
        }
        let push = crate::outbox_push::run(ctx, network, self.wake_push.clone(), config.push_batch);
        self.tasks.push(tokio::spawn(push));
        Ok(())
    }

    pub fn client_id(&self) -> &str {
        self.store.client_id()
    }

    /// The status now.
    pub fn status(&self) -> Status {
        self.status.current()
    }

    /// Every status change.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Conflicts (and future kinds of events) as they happen.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.events.subscribe()
    }

    /// Switches the network off (requests are dropped, writes queue up) or back on.
    pub fn set_online(&self, online: bool) {
        self.online.send_replace(online);
    }

    /// Applies a local write at once and queues it for the server.
    pub async fn write(&self, write: LocalWrite) -> Result<Queued, ClientError> {
        let at = (self.clock)();
        let queued = self
            .store
            .call(move |core| core.enqueue(&write, at))
            .await?;
        self.wake_push.notify_one();
        Ok(queued)
    }

    pub async fn insert(
        &self,
        shape: &str,
        values: Map<String, Json>,
    ) -> Result<Queued, ClientError> {
        self.write(local(shape, WriteOp::Insert, Map::new(), values))
            .await
    }

    pub async fn upsert(
        &self,
        shape: &str,
        values: Map<String, Json>,
    ) -> Result<Queued, ClientError> {
        self.write(local(shape, WriteOp::Upsert, Map::new(), values))
            .await
    }

    pub async fn update(
        &self,
        shape: &str,
        key: Map<String, Json>,
        values: Map<String, Json>,
    ) -> Result<Queued, ClientError> {
        self.write(local(shape, WriteOp::Update, key, values)).await
    }

    pub async fn delete(&self, shape: &str, key: Map<String, Json>) -> Result<Queued, ClientError> {
        self.write(local(shape, WriteOp::Delete, key, Map::new()))
            .await
    }

    /// The Yjs document in `column` of the row `key`, as the app reads it now.
    pub async fn yjs_doc(
        &self,
        shape: &str,
        key: Map<String, Json>,
        column: &str,
    ) -> Result<YjsDoc, ClientError> {
        let (shape, column) = (shape.to_owned(), column.to_owned());
        self.store
            .call(move |core| {
                let state = core.read_blob(&shape, &key, &column)?;
                YjsDoc::load(&shape, key, &column, state.as_deref())
            })
            .await
    }

    /// Sends the document's edits since it was loaded (or last saved) as a merge mutation.
    /// `None` when there was nothing to send.
    pub async fn save_yjs_doc(&self, doc: &mut YjsDoc) -> Result<Option<Queued>, ClientError> {
        let update = doc.local_update();
        if update.len() <= 2 {
            return Ok(None);
        }
        let mut write = local(&doc.shape, WriteOp::Update, doc.key.clone(), Map::new());
        write.merge.insert(doc.column.clone(), update);
        let queued = self.write(write).await?;
        doc.mark_saved();
        Ok(Some(queued))
    }

    pub async fn conflicts(&self, include_resolved: bool) -> Result<Vec<Conflict>, ClientError> {
        self.store
            .call(move |core| core.conflicts(include_resolved))
            .await
    }

    pub async fn resolve_conflict(&self, id: i64) -> Result<(), ClientError> {
        self.store.call(move |core| core.resolve_conflict(id)).await
    }

    /// Runs a read on the database thread (the app's tables are plain SQLite tables; other
    /// connections may read them too, the database is in WAL mode).
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, ClientError> {
        self.store
            .call(move |core| f(core.connection()).map_err(ClientError::from))
            .await
    }

    /// Each subscription's table, position and row count.
    pub async fn shapes(&self) -> Result<Vec<crate::store::export::ShapeSummary>, ClientError> {
        self.store.call(|core| core.shape_summaries()).await
    }

    /// Writes every mirrored table as one JSON object `{table: [row, …], …}`, streaming.
    pub async fn export_json<W: Write + Send + 'static>(&self, out: W) -> Result<W, ClientError> {
        self.store.call(move |core| core.export_json(out)).await
    }

    /// Waits until every shape is up to date and the outbox is empty.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut rx = self.watch_status();
        let wait = rx.wait_for(|s| s.all_up_to_date() && s.pending == 0);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Network(format!(
                "not in sync after {timeout:?}: {}",
                self.status().state
            ))),
        }
    }

    /// Syncs up to now: returns once every shape's mirror includes every transaction
    /// committed in the database before the call (a plain SQL write of the app's backend,
    /// another device's write the server answered), with the database position it reached.
    ///
    /// It asks the server for a fence position (`GET /v1/lsn`, one small query on the server
    /// per call), makes every subscription that is synced below it ask the server at once
    /// instead of waiting live, and waits until each one committed an up-to-date at or past
    /// it (`Status::synced_lsns`). Local writes are not waited for ([`Client::wait_synced`]
    /// does that). Errors: [`ClientError::Offline`] when offline (or switched off meanwhile),
    /// `Refused { status: 404, .. }` from a server without the endpoint (an Electric server),
    /// `Shape` when the server refuses a shape. Transient failures are retried; bound the
    /// wait with a timeout if needed.
    pub async fn sync_now(&self) -> Result<shapes::lsn::Lsn, ClientError> {
        let ctx = self.sync.as_ref().ok_or(ClientError::Offline)?;
        let network = Network {
            online: self.online.subscribe(),
            shutdown: self.shutdown.clone(),
        };
        if !*network.online.borrow() {
            return Err(ClientError::Offline);
        }
        let lsn = crate::sync_now::fence(ctx, &network).await?;
        ctx.sync_now
            .send_modify(|wanted| *wanted = (*wanted).max(lsn));
        let mut status = self.watch_status();
        let reached = status.wait_for(|s| {
            s.synced_past(lsn) || s.shapes.values().any(|p| matches!(p, ShapePhase::Error(_)))
        });
        let status = network
            .guard(async { reached.await.map_err(|_| ClientError::Closed) })
            .await?
            .clone();
        for (name, phase) in &status.shapes {
            if let ShapePhase::Error(message) = phase {
                return Err(ClientError::Shape {
                    name: name.clone(),
                    message: message.clone(),
                });
            }
        }
        Ok(lsn)
    }

    /// Stops syncing and waits for the tasks and the database thread to finish.
    pub async fn close(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

fn local(
    shape: &str,
    op: WriteOp,
    key: Map<String, Json>,
    values: Map<String, Json>,
) -> LocalWrite {
    LocalWrite {
        shape: shape.to_owned(),
        op,
        key,
        values,
        merge: Default::default(),
    }
}

/// The system clock, never going back and never repeating a microsecond.
fn system_clock() -> Clock {
    let last = Arc::new(AtomicI64::new(0));
    Arc::new(move || {
        let now = chrono::Utc::now().timestamp_micros();
        let previous = last.fetch_max(now, Ordering::SeqCst);
        if previous >= now {
            last.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            now
        }
    })
}

fn http_client(headers: &[(String, String)], gzip: bool) -> Result<reqwest::Client, ClientError> {
    #[cfg(feature = "tls")]
    {
        // Process-wide and idempotent: the first caller installs ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| ClientError::InvalidWrite(format!("header {name}: {e}")))?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|e| ClientError::InvalidWrite(format!("header value: {e}")))?;
        map.insert(name, value);
    }
    reqwest::Client::builder()
        .default_headers(map)
        .gzip(gzip)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(ClientError::from)
}
