//! Test support shared by the integration tests and the benchmark suite: a throwaway
//! PostgreSQL cluster per test (the same [`LocalCluster`] that runs `shapesync dev`), a fresh
//! database in it, and waiting on conditions with a deadline instead of sleeping.

pub mod cache_edge;
pub mod cases;
pub mod ecosystems;
pub mod electric;
pub mod in_process;
pub mod process_stat;
pub mod proxy_process;
pub mod shape_consumer;
pub mod shape_http;
pub mod subquery_world;
pub mod tanstack;
pub mod todo_clients;

use std::future::Future;
use std::time::{Duration, Instant};

use proxy::ops::local_cluster::{ClusterOptions, LocalCluster};

pub mod replication;

/// A throwaway cluster with one fresh database. Dropping it stops the cluster and removes its
/// directory.
#[derive(Debug)]
pub struct TestDb {
    pub cluster: LocalCluster,
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A new cluster with a database named `name`.
    pub async fn new(name: &str) -> Self {
        Self::with_options(name, ClusterOptions::default()).await
    }

    pub async fn with_options(name: &str, options: ClusterOptions) -> Self {
        let cluster = tokio::task::spawn_blocking(move || LocalCluster::temporary(options))
            .await
            .expect("cluster start task")
            .unwrap_or_else(|err| panic!("starting a throwaway PostgreSQL cluster: {err}"));
        let admin = proxy::postgres::connect(&cluster.url("postgres"))
            .await
            .expect("connect to the throwaway cluster");
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create the test database");
        let url = cluster.url(name);
        Self {
            cluster,
            name: name.to_owned(),
            url,
        }
    }

    /// A new connection to the test database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        proxy::postgres::connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

/// Polls `check` until it yields `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real router with the write path only (no replication, no shapes): for tests and
/// benchmarks of `/v1/mutations` alone. Commit LSNs never arrive, so set a short
/// `writes.lsn_wait`.
pub fn writes_only_router(config: proxy::config::ServeConfig) -> axum::Router {
    use std::sync::Arc;
    let commits = Arc::new(proxy::replication::commit_watch::CommitWatch::default());
    let catalog = Arc::new(proxy::postgres::table_catalog::TableCatalog::default());
    let writes = Arc::new(proxy::mutations::MutationService::new(
        &config.database_url,
        config.writes.clone(),
        config.tombstones.clone(),
        commits.clone(),
        catalog.clone(),
    ));
    let (_, health) = tokio::sync::watch::channel(proxy::read_path::Health::Active);
    let config = Arc::new(config);
    let store =
        proxy::storage::shape_store::ShapeStore::open(&config.storage_dir).expect("shape store");
    let (commands, _) = tokio::sync::mpsc::unbounded_channel();
    let shapes = Arc::new(proxy::read_path::Shapes::new(
        config.clone(),
        store,
        commits,
        catalog,
        commands,
    ));
    proxy::http::router(proxy::http::AppState {
        health,
        writes,
        settings: config,
        shapes,
        auth: Arc::new(proxy::auth::Auth::off()),
        shutdown: tokio_util::sync::CancellationToken::new(),
    })
}
