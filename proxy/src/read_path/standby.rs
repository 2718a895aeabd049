//! A standby's view of the shape logs, during a rolling deploy: while another instance on the
//! same replication slot and storage directory still runs, this one serves the shapes that
//! instance stored, read-only (`crate::takeover`).
//!
//! It loads each complete shape directory, follows what the writer commits to each log (so
//! catch-up and live requests here see the writer's changes too), and drops the shapes whose
//! directory went away (the writer removed or rotated them: their clients get 409, as from
//! the writer). It never writes to the storage directory.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::restore::Dropped;
use super::{Shapes, durability};
use crate::storage::shape_log::ShapeLog;
use crate::storage::shape_store::ShapeState;

/// How often the standby looks for what the writer did.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// The stored shapes a standby will never serve (by directory name).
#[derive(Debug, Default)]
pub struct Refused(HashSet<String>);

impl Shapes {
    /// Loads the stored shapes, read-only, before the standby serves requests.
    pub async fn load_read_only(self: &Arc<Self>) -> Refused {
        let mut refused = Refused::default();
        let loaded = self.load_new_shapes(&mut refused.0).await;
        tracing::info!(
            shapes = loaded,
            "standby: serving the stored shapes read-only until the running instance exits"
        );
        refused
    }

    /// Follows the writer's storage until `stop`: new shapes, new transactions, removals.
    pub async fn follow_writer(self: Arc<Self>, refused: Refused, stop: CancellationToken) {
        let mut refused = refused.0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_EVERY) => {}
                () = stop.cancelled() => return,
            }
            let shapes = self.clone();
            let _ = tokio::task::spawn_blocking(move || shapes.follow_logs()).await;
            self.load_new_shapes(&mut refused).await;
        }
    }

    /// Loads the complete shape directories not loaded yet; remembers in `refused` the ones
    /// that can never be served (the writer will drop them too). Returns how many it loaded.
    async fn load_new_shapes(self: &Arc<Self>, refused: &mut HashSet<String>) -> usize {
        debug_assert!(self.standby, "only a standby reads logs it does not write");
        let dirs = match self.store.persisted_dirs() {
            Ok(dirs) => dirs,
            Err(err) => {
                tracing::warn!(error = %err, "standby: cannot read the storage directory");
                return 0;
            }
        };
        let known: HashSet<String> = self
            .all()
            .iter()
            .map(|shape| shape.handle.as_str().to_owned())
            .collect();
        let mut loaded = 0;
        for dir in dirs {
            let Some(name) = dir.name().map(str::to_owned) else {
                continue;
            };
            if known.contains(&name) || refused.contains(&name) {
                continue;
            }
            match self.load_stored(&dir, ShapeLog::open_read_only).await {
                Ok(shape) => {
                    // A shape and the one that replaced it may both be on disk for a moment:
                    // the older is served until its directory goes, then the newer.
                    if self.store.insert(shape.clone()).1 {
                        self.note_last_seen(shape.log.last_commit());
                        loaded += 1;
                    }
                }
                Err(Dropped::Incomplete(_)) => {}
                Err(Dropped::Because(reason)) => {
                    tracing::debug!(dir = name, reason, "standby: not serving a stored shape");
                    refused.insert(name);
                }
                Err(Dropped::Transient(err)) => {
                    tracing::debug!(error = %err, "standby: cannot load stored shapes now");
                    break;
                }
            }
        }
        loaded
    }

    /// Takes in what the writer committed to every log, and the position it has processed
    /// everything up to; drops the shapes whose log is gone. Blocking file I/O.
    fn follow_logs(&self) {
        for shape in self.all() {
            match shape.log.follow_writer() {
                Ok(true) => self.note_last_seen(shape.log.last_commit()),
                Ok(false) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    if let Some(gone) = self.store.remove(&shape.handle) {
                        gone.set_state(ShapeState::Gone);
                    }
                }
                Err(err) => {
                    tracing::debug!(handle = %shape.handle, error = %err, "standby: cannot follow a log");
                }
            }
        }
        // Offsets up to what the writer confirmed are valid here too (an SSE client may
        // continue from a `global_last_seen_lsn` that no log of its shape reached).
        self.note_last_seen(durability::load_resume(&self.store.resume_file()));
    }
}
