//! Rolling deploys: a second `shapesync serve` on the same database, slot and storage
//! directory stands by while the first runs, then takes over when it exits.
//!
//! ```text
//! start ─► leader lock free? ─yes─► read path + replication ─► serve
//!                  │ no
//!                  ▼
//!          standby: serve the stored logs read-only ─► lock taken ─► read path ─► swap router
//! ```
//! One instance per slot holds the [`leader_lock::LeaderLock`]. A standby serves the shapes
//! the running instance stored (catch-up, live requests as the writer's logs grow, writes
//! straight to Postgres); it makes and removes no shape (503 + `retry-after`) and
//! `/v1/health` says `waiting`. Once the lock is its own it starts its read path (restoring
//! the same logs, resuming the slot where the last instance stopped), sends new requests to
//! it, and ends the standby's live requests: their clients come back to the new router with
//! the offsets they hold, so no client refetches.

pub mod leader_lock;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::config::ServeConfig;
use crate::http::AppState;
use crate::mutations::MutationService;
use crate::mutations::config::WriteConfig;
use crate::postgres::table_catalog::TableCatalog;
use crate::read_path::{Health, Shapes};
use crate::replication::commit_watch::CommitWatch;
use crate::storage::shape_store::ShapeStore;

/// A standby's serving parts.
pub struct Standby {
    router: Router,
    /// Ends the standby's live requests and its following of the logs.
    stop: CancellationToken,
    follower: JoinHandle<()>,
}

impl Standby {
    /// Loads the stored shapes read-only and starts following the running instance's writes.
    pub async fn start(
        config: &Arc<ServeConfig>,
        catalog: &Arc<TableCatalog>,
        auth: &Arc<Auth>,
        health: watch::Receiver<Health>,
        shutdown: &CancellationToken,
    ) -> std::io::Result<Self> {
        let store = ShapeStore::open(&config.storage_dir)?;
        let shapes = Arc::new(Shapes::standby(config.clone(), store, catalog.clone()));
        let stop = shutdown.child_token();
        let refused = shapes.load_read_only().await;
        let follower = tokio::spawn(shapes.clone().follow_writer(refused, stop.clone()));
        // Writes go to Postgres as always; the running instance streams them out. Their
        // commit LSN is not known here, so answers carry the transaction id only.
        let writes = WriteConfig {
            lsn_wait: Duration::ZERO,
            ..config.writes.clone()
        };
        let writes = Arc::new(MutationService::new(
            &config.database_url,
            writes,
            config.tombstones.clone(),
            Arc::new(CommitWatch::default()),
            catalog.clone(),
        ));
        let router = crate::http::router(AppState {
            health,
            writes,
            settings: config.clone(),
            shapes,
            auth: auth.clone(),
            shutdown: stop.clone(),
        });
        Ok(Self {
            router,
            stop,
            follower,
        })
    }

    /// What requests are served with while standing by.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Ends the standby's live requests (they answer up-to-date at once) and stops
    /// following the logs.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.follower.await;
    }
}
