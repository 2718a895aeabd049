//! One throwaway PostgreSQL cluster for the whole run, and a fresh database per scenario, so
//! that a scenario's proxy (and its replication slot) never decodes another scenario's writes.

use anyhow::Context;
use proxy::ops::local_cluster::{ClusterOptions, LocalCluster};

pub struct BenchCluster {
    pub cluster: LocalCluster,
    admin: tokio_postgres::Client,
}

/// A database of the bench cluster.
#[derive(Debug, Clone)]
pub struct Database {
    pub name: String,
    pub url: String,
    /// TCP port of the cluster on 127.0.0.1.
    pub port: u16,
}

impl BenchCluster {
    pub async fn start() -> anyhow::Result<Self> {
        let options = ClusterOptions {
            settings: vec![
                // 1,000 SSE clients on their own shapes make many snapshots; the proxy holds
                // a few connections; the baselines add walsenders.
                ("max_connections".into(), "300".into()),
                // A walsender waits this long for a client that stopped reading: longer than
                // any pause in the bench.
                ("wal_sender_timeout".into(), "60s".into()),
            ],
            ..ClusterOptions::default()
        };
        let cluster = tokio::task::spawn_blocking(move || LocalCluster::temporary(options))
            .await?
            .context("starting a throwaway PostgreSQL cluster")?;
        let admin = proxy::postgres::connect(&cluster.url("postgres"))
            .await
            .context("connecting to the bench cluster")?;
        Ok(Self { cluster, admin })
    }

    /// A new, empty database.
    pub async fn database(&self, name: &str) -> anyhow::Result<Database> {
        self.admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(Database {
            name: name.to_owned(),
            url: self.cluster.url(name),
            port: self.cluster.port(),
        })
    }

    /// `SELECT version()`.
    pub async fn server_version(&self) -> String {
        match self.admin.query_one("SELECT version()", &[]).await {
            Ok(row) => row.get(0),
            Err(err) => format!("unknown ({err})"),
        }
    }
}

impl Database {
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        proxy::postgres::connect(&self.url)
            .await
            .with_context(|| format!("connecting to database {}", self.name))
    }
}
