//! `shapesync dev`: a private Postgres with the example schema, and the proxy in front of it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rand::distr::{Alphanumeric, SampleString};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::ops::local_cluster::{self, ClusterError, ClusterOptions, LocalCluster};
use crate::ops::migrations::{self, MigrationError};
use crate::postgres::{self, DatabaseError};
use crate::serve::{self, ServeError};

/// The database of the example app inside the private cluster.
pub const DEV_DATABASE: &str = "shapesync_dev";

/// What `shapesync dev` runs (resolved from its flags by `cli`).
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Directory of the private cluster (and, by default, the shape logs).
    pub data_dir: PathBuf,
    /// Port of the private Postgres (`None`: a free one).
    pub pg_port: Option<u16>,
    /// `*.sql` files to apply instead of the built-in example app.
    pub migrations: Option<PathBuf>,
    /// The proxy's configuration; its `database_url` is replaced by the private cluster's.
    pub proxy: ServeConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs until `shutdown` is cancelled, then stops the proxy and the cluster.
pub async fn run(args: DevOptions, shutdown: CancellationToken) -> Result<(), DevError> {
    let data_dir = args.data_dir.clone();
    let cluster = tokio::task::spawn_blocking({
        let data_dir = data_dir.clone();
        let pg_port = args.pg_port;
        move || start_cluster(&data_dir, pg_port)
    })
    .await??;
    let result = serve_on(&cluster, &args, shutdown).await;
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    tracing::info!("private Postgres stopped");
    result
}

async fn serve_on(
    cluster: &LocalCluster,
    args: &DevOptions,
    shutdown: CancellationToken,
) -> Result<(), DevError> {
    create_database(cluster).await?;
    let url = cluster.url(DEV_DATABASE);
    let mut client = postgres::connect(&url).await?;
    let files = match &args.migrations {
        Some(dir) => migrations::from_dir(dir)?,
        None => migrations::embedded(),
    };
    let applied = migrations::apply(&mut client, &files).await?;
    drop(client);
    tracing::info!(
        new = applied.newly_applied.len(),
        already = applied.already_applied,
        "migrations up to date"
    );
    if shutdown.is_cancelled() {
        return Ok(());
    }

    let mut config = args.proxy.clone();
    config.database_url.clone_from(&url);
    let auth_on = config.auth.any_given(config.secret.as_deref());
    // The status page's address, as the developer would open it.
    let status_page = config.status_page.then_some(match config.secret {
        Some(_) => "/?secret=…",
        None => "/",
    });
    let (bound_tx, bound_rx) = oneshot::channel();
    let server = tokio::spawn(serve::run(config, shutdown, Some(bound_tx)));
    if let Ok(addr) = bound_rx.await {
        print_banner(addr, cluster, &url, status_page);
        if !auth_on {
            print_auth_warning(addr);
        }
    }
    server.await??;
    Ok(())
}

fn start_cluster(data_dir: &Path, pg_port: Option<u16>) -> Result<LocalCluster, DevError> {
    let pgdata = local_cluster::dev_pgdata_location(data_dir)?;
    let password = dev_password(data_dir)?;
    if !pgdata.join("PG_VERSION").is_file() {
        eprintln!(
            "Creating a PostgreSQL cluster in {} (first run only)…",
            pgdata.display()
        );
    }
    let cluster = LocalCluster::open_or_init(
        &pgdata,
        &password,
        ClusterOptions {
            port: pg_port,
            settings: vec![("max_slot_wal_keep_size".to_owned(), "4GB".to_owned())],
            unsafe_fast: false,
        },
    )?;
    tracing::info!(
        pgdata = %cluster.pgdata().display(),
        port = cluster.port(),
        pid = cluster.pid().unwrap_or_default(),
        "private Postgres running"
    );
    Ok(cluster)
}

/// The superuser password of the dev cluster, made once and kept in `DATA_DIR/postgres-password`
/// (readable by its owner only).
fn dev_password(data_dir: &Path) -> Result<String, DevError> {
    let path: PathBuf = data_dir.join("postgres-password");
    let io_err = |context: String| move |source| DevError::Io { context, source };
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_owned());
    }
    std::fs::create_dir_all(data_dir)
        .map_err(io_err(format!("creating {}", data_dir.display())))?;
    let password = Alphanumeric.sample_string(&mut rand::rng(), 24);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(format!("creating {}", path.display())))?;
    file.write_all(password.as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))?;
    Ok(password)
}

async fn create_database(cluster: &LocalCluster) -> Result<(), DevError> {
    let client = postgres::connect(&cluster.url("postgres")).await?;
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&DEV_DATABASE],
        )
        .await
        .map_err(DatabaseError::Query)?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {DEV_DATABASE}"))
            .await
            .map_err(DatabaseError::Query)?;
    }
    Ok(())
}

fn print_banner(addr: SocketAddr, cluster: &LocalCluster, url: &str, status: Option<&str>) {
    let base = format!("http://{addr}");
    let status = status.map_or_else(String::new, |path| format!("  status     {base}{path}\n"));
    println!(
        "\nshapesync dev is running (Ctrl-C stops the proxy and the private Postgres)\n\n\
         \x20 proxy      {base}\n\
         {status}\
         \x20 health     {base}/v1/health\n\
         \x20 a shape    {base}/v1/shape?table=todos&offset=-1\n\
         \x20 Postgres   {url}\n\
         \x20 psql       psql '{url}'\n\
         \x20 data       {}\n",
        cluster.pgdata().display()
    );
    let _ = std::io::stdout().flush();
}

/// `dev` runs open unless auth flags are given: say so where the developer looks.
fn print_auth_warning(addr: SocketAddr) {
    println!(
        "WARNING: auth is off. Anyone who can reach {addr} reads every table and writes the \
         example tables.\n\
         \x20        To try auth: --jwt-secret KEY --rules rules.example.toml (see the README's \
         Auth section).\n"
    );
    let _ = std::io::stdout().flush();
}
