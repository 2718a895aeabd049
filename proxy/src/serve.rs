//! Running the proxy beside a Postgres: check the database, bind, serve until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, AuthSetupError};
use crate::config::ServeConfig;
use crate::mutations::MutationService;
use crate::mutations::gc::{self, GcPolicy};
use crate::postgres::table_catalog::TableCatalog;
use crate::postgres::{self, DatabaseError};
use crate::read_path::start::{ReadPath, StartError};
use crate::replication::commit_watch::CommitWatch;
use crate::takeover::Standby;
use crate::takeover::leader_lock::LeaderLock;

use crate::http::AppState;
use crate::read_path::Health;
use crate::read_path::idle::Stream;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(
        "cannot listen on {addr}: {source} (is another shapesync or server using that port? \
         choose another with --port)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the storage directory {dir}: {source}")]
    Storage {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Http(#[source] std::io::Error),
    #[error(transparent)]
    ReadPath(#[from] StartError),
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
}

/// Serves until `shutdown` is cancelled. `bound` (if given) receives the listening address
/// once requests are accepted.
pub async fn run(
    config: ServeConfig,
    shutdown: CancellationToken,
    bound: Option<oneshot::Sender<SocketAddr>>,
) -> Result<(), ServeError> {
    let (health_tx, health) = watch::channel(Health::Starting);
    let mut client = postgres::connect(&config.database_url).await?;
    postgres::check_wal_level(&client).await?;
    // before anything parses a `where` (the rules below do)
    shapes::where_clause::ctype::set_database_ctype(std::sync::Arc::new(
        crate::postgres::ctype::read(&client).await?,
    ));
    let steps = crate::postgres::proxy_schema::upgrade(&mut client)
        .await
        .map_err(DatabaseError::Query)?;
    if !steps.is_empty() {
        tracing::info!(?steps, "upgraded the shapesync schema");
    }
    let auth = Arc::new(Auth::load(&config.auth, config.secret.as_deref(), &client).await?);
    if !auth.is_on() {
        tracing::warn!(
            "auth is off: anyone who can reach the proxy reads every table and writes the \
             --writable ones (set --secret, or --jwt-secret/--jwt-public-key with --rules)"
        );
    }
    drop(client);
    std::fs::create_dir_all(&config.storage_dir).map_err(|source| ServeError::Storage {
        dir: config.storage_dir.display().to_string(),
        source,
    })?;
    let listener =
        crate::http::listener::bind(config.listen, config.reuse_port).map_err(|source| {
            ServeError::Bind {
                addr: config.listen,
                source,
            }
        })?;
    let local_addr = listener.local_addr().map_err(ServeError::Http)?;
    let _ = crate::observability::prometheus::handle();
    let mut bound = bound.map(|tx| (tx, local_addr));

    let config = Arc::new(config);
    // One table catalog for both paths (proxy/ARCHITECTURE.md, "The table catalog").
    let catalog = Arc::new(TableCatalog::default());
    let mut listener = Some(listener);
    // Another instance on this slot: stand by for it (serving its stored shapes) until it
    // exits, then take over.
    let (lock, standing_by) = match LeaderLock::try_acquire(&config.database_url, &config.slot)
        .await?
    {
        Some(lock) => (lock, None),
        None => {
            let holder = LeaderLock::holder(&config.database_url, &config.slot).await;
            tracing::info!(
                holder_pid = holder,
                slot = config.slot,
                "another shapesync runs on this database and slot: standing by until it exits"
            );
            let standby = Standby::start(&config, &catalog, &auth, health.clone(), &shutdown)
                .await
                .map_err(StartError::Storage)?;
            health_tx.send_replace(Health::Waiting);
            let (apps_tx, apps) = watch::channel(standby.router());
            let listener = listener.take().expect("the listener is not serving yet");
            let server = tokio::spawn(crate::http::listener::serve(
                listener,
                apps,
                shutdown.clone(),
            ));
            announce(&mut bound);
            let Some(lock) = LeaderLock::wait(&config.database_url, &config.slot, &shutdown).await
            else {
                standby.stop().await;
                let _ = server.await;
                tracing::info!("shapesync stopped");
                return Ok(());
            };
            tracing::info!("the running instance exited: taking over");
            (lock, Some((standby, apps_tx, server)))
        }
    };

    // Replication records every commit here; writes wait on it for their commit LSN.
    let commits = Arc::new(CommitWatch::default());
    let read_path = ReadPath::start(
        config.clone(),
        commits.clone(),
        catalog.clone(),
        health_tx,
        shutdown.clone(),
    )
    .await?;
    let demand = read_path.shapes.demand().clone();
    tokio::spawn(lock.keep(move || demand.stream() != Stream::Open, shutdown.clone()));
    let writes = Arc::new(MutationService::new(
        &config.database_url,
        config.writes.clone(),
        config.tombstones.clone(),
        commits,
        catalog,
    ));
    if config.writes.tombstone_retention.is_some() && config.tombstones.is_empty() {
        tracing::warn!(
            "--tombstone-retention is set but --tombstones names no table: no tombstoned row \
             will be purged (only the clocks of deleted rows and old mutation ids)"
        );
    }
    tokio::spawn(gc::run_periodically(
        config.database_url.clone(),
        GcPolicy::from_config(&config.writes, &config.tombstones),
        config.writes.gc_interval,
        shutdown.clone(),
    ));
    let state = AppState {
        health,
        writes,
        settings: config,
        shapes: read_path.shapes.clone(),
        auth,
        shutdown: shutdown.clone(),
    };
    let app = crate::http::router(state);
    match (standing_by, listener) {
        (Some((standby, apps, server)), _) => {
            // New requests go to this instance's router; the standby's live ones end now.
            drop(apps.send_replace(app));
            standby.stop().await;
            tracing::info!(addr = %local_addr, "shapesync took over and is serving");
            let _ = server.await;
        }
        (None, Some(listener)) => {
            tracing::info!(addr = %local_addr, "shapesync is serving");
            announce(&mut bound);
            crate::http::listener::serve(listener, watch::channel(app).1, shutdown.clone()).await;
        }
        (None, None) => unreachable!("the listener serves once"),
    }
    shutdown.cancel();
    read_path.stopped().await;
    tracing::info!("shapesync stopped");
    Ok(())
}

/// Tells the caller the address requests are accepted on (once).
fn announce(bound: &mut Option<(oneshot::Sender<SocketAddr>, SocketAddr)>) {
    if let Some((tx, addr)) = bound.take() {
        let _ = tx.send(addr);
    }
}
