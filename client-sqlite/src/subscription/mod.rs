//! One task per subscribed shape: fetch, stream into the store, stay live.
//!
//! The cycle (proxy/PROTOCOL.md, "Shapes"): catch-up requests (`offset=-1` or the stored
//! offset) until a
//! response ends with up-to-date, then live requests — SSE when the server speaks it, long-poll
//! otherwise (a server or proxy that refuses SSE switches the subscription to long-poll). Each
//! response body is split into messages as it arrives ([`json_array`]), decoded straight into
//! typed rows ([`message`]) and handed to the store in chunks; the store applies them inside
//! one transaction per up-to-date batch and records (handle, offset) with the commit. So after
//! a restart the subscription resumes from its last up-to-date, never from scratch.
//!
//! Failures: transient ones (network, 5xx, 429) roll back the open batch and retry from the
//! last committed offset after an exponential backoff with jitter (`retry-after` wins when
//! longer); a 409 or `must-refetch` rolls back and fetches from scratch ([`BatchStep::Reset`]
//! keeps pending local writes); definite ones (400, 401, 403) show as `error` and retry slowly.

pub mod backoff;
mod fetch;
pub mod json_array;
pub mod message;
pub mod request;
mod sse;
// Public for the fuzz target (tests/fuzz), not an API.
#[doc(hidden)]
pub mod sse_events;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use shapes::handle::Handle;
use shapes::lsn::Lsn;
use tokio::sync::{broadcast, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;
use crate::schema_mapping::ShapeSchema;
use crate::shape_spec::ShapeSpec;
use crate::status::{ShapePhase, StatusBoard};
use crate::store::{BatchStep, ClientEvent, Cursor, Incoming, Store};
use backoff::Backoff;
use request::Mode;

/// The default of [`SyncOptions::max_message_bytes`]: far above any row a shape carries.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Settings shared by every subscription.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Prefer SSE for live updates (else long-poll only).
    pub sse: bool,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Rows handed to the store per step.
    pub chunk_rows: usize,
    /// Longest silence on a live connection before it is considered dead.
    pub idle_timeout: Duration,
    /// Ask for gzip-compressed responses (worth it over real networks; on a fast local link
    /// the server's compression can be the bottleneck of an initial sync).
    pub gzip: bool,
    /// Longest message (an event, or an element of a response) the client accepts: a server
    /// or a proxy that sends more gets a definite error naming this limit, not all the memory.
    pub max_message_bytes: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            sse: true,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            chunk_rows: 5_000,
            idle_timeout: Duration::from_secs(90),
            gzip: true,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Whether the client may use the network, and when to stop.
#[derive(Debug, Clone)]
pub struct Network {
    pub online: watch::Receiver<bool>,
    pub shutdown: CancellationToken,
}

impl Network {
    /// Waits until online; `false` when shutting down.
    pub async fn wait_online(&mut self) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            r = self.online.wait_for(|online| *online) => r.is_ok(),
        }
    }

    /// Resolves when the network is switched off or the client shuts down.
    pub async fn interrupted(&self) {
        let mut online = self.online.clone();
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = online.wait_for(|online| !*online) => {}
        }
    }

    /// Runs `f`, or fails with [`ClientError::Offline`] when interrupted first.
    pub async fn guard<T, E: From<ClientError>>(
        &self,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        tokio::select! {
            r = f => r,
            _ = self.interrupted() => Err(ClientError::Offline.into()),
        }
    }

    /// Sleeps `d` unless interrupted first.
    pub async fn sleep(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }
}

/// What every subscription task shares.
#[derive(Debug)]
pub struct SyncContext {
    pub http: reqwest::Client,
    pub base_url: Url,
    pub store: Store,
    pub status: StatusBoard,
    pub options: SyncOptions,
    /// The newest sync-now target (an LSN from `GET /v1/lsn`): a subscription synced below it
    /// leaves its live request and catches up (see [`crate::Client::sync_now`]).
    pub sync_now: watch::Sender<Lsn>,
    /// Where [`ClientEvent::PriorityReady`] goes.
    pub events: broadcast::Sender<ClientEvent>,
}

pub(crate) enum SyncError {
    MustRefetch,
    SseUnsupported,
    /// A sync-now asks for a position past this subscription's: leave the live request.
    SyncNow,
    Client(ClientError),
}

impl From<ClientError> for SyncError {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

impl From<json_array::SplitError> for SyncError {
    fn from(e: json_array::SplitError) -> Self {
        Self::Client(match e {
            json_array::SplitError::TooLarge { limit } => ClientError::MessageTooLarge {
                limit,
                what: "a response body",
            },
            json_array::SplitError::NotAnArray(_) => ClientError::Protocol(e.to_string()),
        })
    }
}

impl From<sse_events::EventTooLarge> for SyncError {
    fn from(e: sse_events::EventTooLarge) -> Self {
        Self::Client(ClientError::MessageTooLarge {
            limit: e.limit,
            what: "the event stream",
        })
    }
}

/// One subscription's state.
pub(crate) struct ShapeSync {
    ctx: Arc<SyncContext>,
    spec: ShapeSpec,
    network: Network,
    handle: Option<Handle>,
    offset: String,
    committed: (Option<Handle>, String),
    schema: Option<ShapeSchema>,
    cursor: Option<String>,
    up_to_date: bool,
    sse: bool,
    /// Row changes and move events read and not yet handed to the store, in log order.
    pending: Vec<Incoming>,
    /// The store's answer to the last step sent (one step in flight while the next is read).
    in_flight: Option<oneshot::Receiver<Result<(), ClientError>>>,
    batch_open: bool,
    /// "Synced up to": the `global_last_seen_lsn` of the last committed up-to-date.
    synced: Lsn,
    /// Sync-now targets, and the last one a catch-up request was made for (one per target:
    /// a server that answers below it is then waited for live, not asked again and again).
    wanted: watch::Receiver<Lsn>,
    caught_up_for: Lsn,
}

/// Runs a subscription until shutdown.
pub async fn run(ctx: Arc<SyncContext>, spec: ShapeSpec, cursor: Cursor, network: Network) {
    let schema = cursor
        .schema_json
        .as_deref()
        .and_then(|s| ShapeSchema::parse(s).ok());
    ctx.status.set_synced(&spec.name, cursor.global_lsn);
    let mut sync = ShapeSync {
        sse: ctx.options.sse,
        handle: cursor.handle.clone(),
        offset: cursor.offset.clone(),
        committed: (cursor.handle, cursor.offset),
        schema,
        cursor: None,
        up_to_date: false,
        pending: Vec::new(),
        in_flight: None,
        batch_open: false,
        synced: cursor.global_lsn,
        wanted: ctx.sync_now.subscribe(),
        caught_up_for: Lsn::ZERO,
        ctx,
        spec,
        network,
    };
    sync.run().await;
}

impl ShapeSync {
    async fn run(&mut self) {
        let mut backoff = Backoff::new(self.ctx.options.backoff_base, self.ctx.options.backoff_max);
        let name = self.spec.name.clone();
        loop {
            if !self.network.online.borrow().to_owned() {
                self.ctx.status.set_phase(&name, ShapePhase::Offline);
            }
            if !self.network.wait_online().await {
                break;
            }
            // A first sync or a refetch waits for every shape of a higher priority.
            if self.offset == "-1" && !self.batch_open && !self.wait_for_priorities().await {
                break;
            }
            // A batch open across requests (a snapshot in many responses) is still syncing.
            if !self.up_to_date && !self.batch_open {
                self.ctx.status.set_phase(&name, ShapePhase::Connecting);
            }
            let wanted = *self.wanted.borrow_and_update();
            let sync_now = self.synced < wanted && self.caught_up_for < wanted;
            let mode = match (self.up_to_date && !sync_now, self.sse) {
                (false, _) => Mode::CatchUp,
                (true, true) => Mode::Sse,
                (true, false) => Mode::LongPoll,
            };
            if sync_now {
                self.caught_up_for = wanted;
            }
            let network = self.network.clone();
            let result = if mode == Mode::CatchUp {
                network.guard(self.request(mode)).await
            } else {
                // A live request waits for news of this shape only; a sync-now needs an
                // answer about a position, which a catch-up request gives at once.
                let mut targets = self.wanted.clone();
                let below = self.synced.max(self.caught_up_for);
                tokio::select! {
                    r = network.guard(self.request(mode)) => r,
                    _ = targets.wait_for(|w| *w > below) => Err(SyncError::SyncNow),
                }
            };
            if let Err(err) = result {
                let delay = self.fail(err, &mut backoff).await;
                self.network.sleep(delay).await;
            } else {
                backoff.reset();
            }
            if self.network.shutdown.is_cancelled() {
                break;
            }
        }
        self.abort().await;
    }

    async fn fail(&mut self, err: SyncError, backoff: &mut Backoff) -> Duration {
        self.abort().await;
        let name = self.spec.name.clone();
        match err {
            SyncError::MustRefetch => {
                tracing::info!(shape = name, "the server asks to fetch the shape again");
                self.ctx.status.add_refetch();
                self.ctx.status.set_ready(&name, false);
                self.handle = None;
                self.offset = "-1".into();
                self.up_to_date = false;
                Duration::ZERO
            }
            SyncError::SyncNow => Duration::ZERO,
            SyncError::SseUnsupported => {
                tracing::warn!(shape = name, "SSE unavailable: falling back to long-poll");
                self.sse = false;
                Duration::ZERO
            }
            SyncError::Client(ClientError::Offline) => Duration::ZERO,
            SyncError::Client(e) if e.is_transient() => {
                tracing::debug!(shape = name, error = %e, "shape request failed; retrying");
                self.ctx.status.set_phase(&name, ShapePhase::Offline);
                backoff.next_delay(e.retry_after())
            }
            SyncError::Client(e) => {
                tracing::warn!(shape = name, error = %e, "shape request refused");
                self.ctx
                    .status
                    .set_phase(&name, ShapePhase::Error(e.to_string()));
                backoff.next_delay(None).max(self.ctx.options.backoff_max)
            }
        }
    }

    /// Waits until every shape of a higher priority is ready; `false` when shutting down.
    async fn wait_for_priorities(&mut self) -> bool {
        let priority = self.spec.priority;
        let mut status = self.ctx.status.subscribe();
        let held = !status.borrow().may_start(priority);
        if held {
            self.ctx
                .status
                .set_phase(&self.spec.name, ShapePhase::Waiting);
        }
        tokio::select! {
            () = self.network.shutdown.cancelled() => false,
            r = status.wait_for(|s| s.may_start(priority)) => r.is_ok(),
        }
    }

    /// Rolls back the open batch and returns to the last committed position.
    async fn abort(&mut self) {
        self.pending.clear();
        if let Some(rx) = self.in_flight.take() {
            let _ = rx.await;
        }
        if self.batch_open {
            if let Ok(rx) = self.ctx.store.batch(&self.spec.name, BatchStep::Abort) {
                let _ = rx.await;
            }
            self.batch_open = false;
            (self.handle, self.offset) = self.committed.clone();
            self.up_to_date = self.offset != "-1" && self.up_to_date;
        }
    }
}
