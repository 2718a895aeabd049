//! shapesync's device client: keeps a local SQLite database in sync with shapes served by a
//! shapesync (or Electric) server, and keeps working offline.
//!
//! - [`subscription`]: one task per shape speaks the Electric HTTP Shape API v1 (catch-up,
//!   SSE with long-poll fallback, backoff, resume, 409 refetch);
//! - [`store`]: one thread owns the SQLite connection — the mirror tables, overlays of pending
//!   local writes, the outbox, conflicts, and the `_shapesync_*` bookkeeping;
//! - [`outbox_push`]: sends local writes to `POST /v1/mutations` in order, with their ids;
//! - [`status`]: `offline | connecting | syncing | up-to-date | pending(n) | conflicts(n) |
//!   error`, per-priority readiness and "synced up to", on a `tokio::sync::watch`;
//! - [`Client::sync_now`]: returns once every mirror includes every transaction committed
//!   before the call (the server's `GET /v1/lsn` fence);
//! - [`yjs_doc`]: Yjs documents in columns, merged rather than overwritten;
//! - [`schema_mapping`]: Postgres types → SQLite columns (the table is in its docs).
//!
//! Start with [`Client`].

pub mod client;
pub mod error;
pub mod outbox_push;
pub mod schema_mapping;
pub mod shape_spec;
pub mod status;
pub mod store;
pub mod subscription;
mod sync_now;
pub mod yjs_doc;

pub use client::{Client, ClientConfig, Clock};
pub use error::ClientError;
/// The SQLite binding the client is built on (its types appear in [`Client::read`]).
pub use rusqlite;
pub use shape_spec::{Moves, ShapeSpec};
pub use status::{ShapePhase, Status, SyncState};
pub use store::{ClientEvent, Conflict, LocalWrite, WriteOp};
pub use subscription::SyncOptions;
pub use yjs_doc::YjsDoc;
