//! Starting and stopping the read path: the consumer task, group fsync, the replication
//! stream (restarted when the consumer must replay a transaction), and the slot watch.

use std::sync::Arc;
use std::time::Duration;

use shapes::lsn::Lsn;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::consumer::{ConsumerChannels, run_consumer};
use super::{Health, ShapeError, Shapes, table_watch};
use crate::config::ServeConfig;
use crate::observability::prometheus;
use crate::postgres::table_catalog::TableCatalog;
use crate::read_path::durability;
use crate::replication::commit_watch::CommitWatch;
use crate::replication::row_pool::RowPool;
use crate::replication::stream::{ReplicationStream, StreamConfig, StreamStatus};
use crate::storage::shape_log::compaction::policy::CompactionPolicy;
use crate::storage::shape_store::ShapeStore;

/// Events queued between the replication stream and the consumer.
const EVENT_QUEUE: usize = 8192;

/// How often the catalog is asked whether the tables of shapes were dropped or renamed.
const TABLE_WATCH_EVERY: Duration = Duration::from_secs(1);

/// The running read path.
pub struct ReadPath {
    pub shapes: Arc<Shapes>,
    supervisor: JoinHandle<()>,
    consumer: JoinHandle<()>,
    durability: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the storage directory: {0}")]
    Storage(#[source] std::io::Error),
    #[error("restoring shapes: {0}")]
    Restore(#[from] ShapeError),
    #[error("replication cannot start: {0}")]
    Replication(String),
}

impl ReadPath {
    /// Restores stored shapes, then starts streaming from where the last run stopped. Returns
    /// once the stream is up (or fails with the definite reason it cannot be).
    pub async fn start(
        config: Arc<ServeConfig>,
        commits: Arc<CommitWatch>,
        catalog: Arc<TableCatalog>,
        health: watch::Sender<Health>,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        let store = ShapeStore::open(&config.storage_dir).map_err(StartError::Storage)?;
        let resume_file = store.resume_file();
        let resume = durability::load_resume(&resume_file);
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let shapes = Arc::new(Shapes::new(
            config.clone(),
            store,
            commits,
            catalog,
            commands_tx,
        ));

        let (written_tx, written) = mpsc::unbounded_channel();
        let (flushed_tx, flushed) = watch::channel(resume);
        let lost: durability::LostLogs = {
            let shapes = shapes.clone();
            Arc::new(move |dirs| shapes.drop_lost_logs(dirs))
        };
        let durability = tokio::spawn(durability::run(resume_file, written, flushed_tx, lost));
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let restart = Arc::new(Notify::new());
        let rows = Arc::new(RowPool::default());
        let consumer = tokio::spawn(run_consumer(
            shapes.clone(),
            resume,
            ConsumerChannels {
                events,
                commands,
                written: written_tx,
                restart_stream: restart.clone(),
                rows: rows.clone(),
            },
        ));
        let restored = shapes.restore().await?;
        tracing::info!(restored, resume = %resume, "shape logs restored");
        // What clients of the last run saw stays in bounds before anything is streamed again.
        shapes.note_last_seen(resume);
        if let Some(confirmed) = shapes.slot_confirmed().await {
            shapes.note_last_seen(confirmed);
        }

        let stream_config = StreamConfig {
            rows,
            ..StreamConfig::new(
                config.database_url.clone(),
                config.slot.clone(),
                config.publication.clone(),
            )
        };
        let stream = ReplicationStream::spawn(
            stream_config.clone(),
            resume,
            events_tx.clone(),
            flushed.clone(),
            shutdown.clone(),
        );
        wait_streaming(&stream).await?;
        health.send_replace(Health::Active);
        tokio::spawn({
            let shapes = shapes.clone();
            let shutdown = shutdown.clone();
            async move { shapes.watch_slot(shutdown).await }
        });
        tokio::spawn(table_watch::watch_tables(
            shapes.clone(),
            TABLE_WATCH_EVERY,
            shutdown.clone(),
        ));
        if let Some(compact_after) = config.compact_after {
            let policy = CompactionPolicy { compact_after };
            tokio::spawn(super::compactor::run(
                shapes.clone(),
                policy,
                shutdown.clone(),
            ));
        }
        let supervisor = tokio::spawn(supervise(
            stream,
            Supervision {
                config: stream_config,
                events: events_tx,
                flushed,
                restart,
                health,
                shapes: shapes.clone(),
                idle_timeout: config.replication_idle_timeout,
            },
            shutdown,
        ));
        Ok(Self {
            shapes,
            supervisor,
            consumer,
            durability,
        })
    }

    /// Waits for the stream to stop (the shutdown token was cancelled), then for the consumer
    /// to drain and the last flushed position to be saved.
    pub async fn stopped(self) {
        let _ = self.supervisor.await;
        let _ = self.consumer.await;
        let _ = self.durability.await;
    }
}

impl Shapes {
    /// The slot's confirmed position: every transaction that ended before it is in the shape
    /// logs (it advances only with what this proxy acknowledged as durable), also when
    /// `resume.lsn` (saved at most every 500 ms) lags behind after a crash. `None` if there is
    /// no slot yet.
    async fn slot_confirmed(&self) -> Option<Lsn> {
        let client = self.metadata.get().await.ok()?;
        let row = client
            .query_opt(
                "SELECT (confirmed_flush_lsn - '0/0')::text FROM pg_replication_slots
                 WHERE slot_name = $1 AND confirmed_flush_lsn IS NOT NULL",
                &[&self.config.slot],
            )
            .await
            .ok()??;
        row.get::<_, String>(0).parse().ok().map(Lsn)
    }

    /// Reports the slot's lag as a metric until shutdown.
    async fn watch_slot(&self, shutdown: CancellationToken) {
        prometheus::watch_slot(
            &self.metadata,
            &self.config.slot,
            self.config.max_lag_bytes,
            Duration::from_secs(10),
            // Closed for idleness: leave the database alone.
            || self.demand().stream() == super::idle::Stream::Open,
            shutdown,
        )
        .await;
    }
}

/// Waits until the first session streams; a definite error before that stops the start.
async fn wait_streaming(stream: &ReplicationStream) -> Result<(), StartError> {
    let mut status = stream.status();
    let reached = status
        .wait_for(|s| {
            matches!(
                s,
                StreamStatus::Streaming { .. }
                    | StreamStatus::Failed { .. }
                    | StreamStatus::Stopped
            )
        })
        .await
        .map_err(|_| StartError::Replication("the replication task ended".into()))?
        .clone();
    match reached {
        StreamStatus::Failed { error } => Err(StartError::Replication(error)),
        _ => Ok(()),
    }
}

/// What the supervisor of the stream works with.
struct Supervision {
    config: StreamConfig,
    events: mpsc::Sender<crate::replication::event::ReplicationEvent>,
    flushed: watch::Receiver<Lsn>,
    restart: Arc<Notify>,
    health: watch::Sender<Health>,
    shapes: Arc<Shapes>,
    /// `--replication-idle-timeout`.
    idle_timeout: Option<Duration>,
}

impl Supervision {
    fn spawn_stream(&self, shutdown: &CancellationToken) -> ReplicationStream {
        let start = *self.flushed.borrow();
        tracing::info!(start = %start, "starting replication");
        ReplicationStream::spawn(
            self.config.clone(),
            start,
            self.events.clone(),
            self.flushed.clone(),
            shutdown.clone(),
        )
    }
}

/// Keeps a stream running: mirrors its status into health, starts a new one (from the
/// flushed position) when the consumer asks for a replay or a definite error stopped it, and
/// with `--replication-idle-timeout` closes it while idle and opens it again on demand.
async fn supervise(
    mut stream: ReplicationStream,
    supervision: Supervision,
    shutdown: CancellationToken,
) {
    let Supervision {
        restart,
        health,
        shapes,
        idle_timeout,
        ..
    } = &supervision;
    // One receiver per stream, kept across iterations: `status()` hands out a clone of the
    // stream's own receiver, which never marks a value seen, so a fresh clone in every
    // iteration would see the same status as changed again at once and spin.
    let mut status = stream.status();
    loop {
        let replace = tokio::select! {
            () = shutdown.cancelled() => false,
            () = restart.notified() => true,
            () = until_idle(shapes, *idle_timeout) => {
                if let Err(err) = stream.shutdown().await {
                    tracing::warn!(error = %err, "replication stream ended with an error");
                }
                shapes.metadata().close().await;
                shapes.close_snapshot_clients();
                tracing::info!(
                    idle = ?idle_timeout.unwrap_or_default(),
                    "no live client and no change: closed the replication connection until the next request"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = shapes.demand().wanted() => {}
                }
                shapes.demand().reopening();
                stream = supervision.spawn_stream(&shutdown);
                status = stream.status();
                tokio::spawn(catch_up(shapes.clone(), shutdown.clone()));
                continue;
            }
            changed = status.changed() => match changed.map(|()| status.borrow_and_update().clone()) {
                // The stream's task is gone without saying Stopped: replace it.
                Err(_) => true,
                Ok(StreamStatus::Streaming { .. }) => { health.send_replace(Health::Active); continue; }
                Ok(StreamStatus::Connecting | StreamStatus::Reconnecting { .. }) => {
                    health.send_replace(Health::Waiting);
                    continue;
                }
                Ok(StreamStatus::Failed { error }) => {
                    tracing::error!(error, "replication stopped; retrying in 30 s");
                    health.send_replace(Health::Waiting);
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(30)) => {}
                        () = shutdown.cancelled() => {}
                    }
                    true
                }
                Ok(StreamStatus::Stopped) => false,
            },
        };
        if let Err(err) = stream.shutdown().await {
            tracing::warn!(error = %err, "replication stream ended with an error");
        }
        if !replace || shutdown.is_cancelled() {
            return;
        }
        stream = supervision.spawn_stream(&shutdown);
        status = stream.status();
    }
}

/// Returns once the stream has been idle for `timeout` (never without one).
async fn until_idle(shapes: &Shapes, timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => shapes.demand().until_idle(timeout).await,
        None => std::future::pending().await,
    }
}

/// After the stream was opened again: once it has processed a fence written now, every
/// change committed while it was closed is in the logs, and waiting requests go on.
async fn catch_up(shapes: Arc<Shapes>, shutdown: CancellationToken) {
    let started = tokio::time::Instant::now();
    loop {
        match shapes.emit_fence().await {
            Ok(fence) => {
                if shapes
                    .processed(fence, Duration::from_secs(60), &shutdown)
                    .await
                {
                    shapes.demand().opened();
                    tracing::info!(
                        took = ?started.elapsed(),
                        "replication connection open again and caught up"
                    );
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "reopening replication: no fence yet; retrying")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
