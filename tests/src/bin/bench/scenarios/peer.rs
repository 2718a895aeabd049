//! `peer_latency`: commit → client latency of shapesync beside a peer's, measured the same way
//! in the same run: Rocicorp Zero (`zero-cache` and its client, from npm), the one peer whose
//! server runs here (Electric and PowerSync ship as Docker images; there is no Docker engine).
//!
//! Each run gets a database of its own on the bench's cluster, a table `peer (id int8 primary
//! key, title text)` with ten rows, and one client following the whole table. Then single-row
//! INSERTs, one after the other, each waiting for the client to see its row; a latency is the
//! time from the INSERT's commit acknowledgement to the client holding the row. The first five
//! are not counted. Three runs:
//!
//! - `shapesync`: the bench's own SSE reader (the wire, as `latency_1` reads it);
//! - `shapesync_ts_client`: Electric's TypeScript client (`ShapeStream`, long-polling, its
//!   default) in Node, against shapesync: a JavaScript client, like Zero's;
//! - `zero`: zero-cache and a Zero client in Node.
//!
//! The two Node runs are `tests/peers/latency.mjs`, one procedure for both. It, Zero, the
//! TypeScript client and Node 22 (which Zero 1.9 needs) are installed from npm by
//! `tests/peers/install.sh` into `~/.cache/shapesync/peers` (`BENCH_PEERS_DIR` to change it)
//! the first time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Bench;
use crate::cluster::Database;
use crate::figures::Figure;
use crate::proxy_child::ProxyChild;
use crate::scenarios::latency::signed_ms;
use crate::sse;
use crate::stats;

/// INSERTs counted (a tenth with `--quick`), after [`WARM_UP`] that are not.
const COMMITS: usize = 200;
const WARM_UP: usize = 5;

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let commits = bench.scale.of(COMMITS);
    let procedure = format!(
        "{commits} single-row INSERTs one after the other (after {WARM_UP} warm-up), each \
         waiting for one client following the whole table: commit acknowledged → row at the \
         client"
    );
    let ours = shapesync(&bench.cluster.database("peer_shapesync").await?, commits).await?;
    report(
        bench,
        "shapesync",
        ours,
        &format!("{procedure}; the bench's SSE reader"),
    );

    let db = bench.cluster.database("peer_ts_client").await?;
    let proxy = ProxyChild::start(&db, &[]).await?;
    let url = format!("http://{}", proxy.addr);
    let ts_client = node_run(
        &db,
        commits,
        &[("SYSTEM", "electric"), ("SHAPESYNC_URL", &url)],
    )
    .await;
    proxy.stop().await;
    let ts_client = ts_client?;
    report(
        bench,
        "shapesync_ts_client",
        ts_client.latencies_ms,
        &format!(
            "{procedure}; {} on Node {}",
            ts_client.version, ts_client.node
        ),
    );

    let db = bench.cluster.database("peer_zero").await?;
    let zero = node_run(&db, commits, &[("SYSTEM", "zero")]).await;
    drop_slots(&db).await?;
    let zero = zero?;
    report(
        bench,
        "zero",
        zero.latencies_ms,
        &format!(
            "{procedure}; {} (zero-cache and its client on Node {})",
            zero.version, zero.node
        ),
    );
    Ok(())
}

fn report(bench: &mut Bench, system: &str, mut latencies: Vec<f64>, note: &str) {
    stats::sort(&mut latencies);
    for (quantile, label) in [(0.5, "p50"), (0.99, "p99")] {
        bench.report.add(
            Figure::new(
                format!("peer_latency.{system}.{label}"),
                stats::quantile(&latencies, quantile),
                "ms",
            )
            .note(format!(
                "{note}; max {:.2} ms",
                stats::quantile(&latencies, 1.0)
            )),
        );
    }
}

/// shapesync's latencies (ms) for `commits` INSERTs into its database.
async fn shapesync(db: &Database, commits: usize) -> anyhow::Result<Vec<f64>> {
    let client = db.connect().await?;
    create_table(&client).await?;
    let proxy = ProxyChild::start(db, &[]).await?;
    let subscription = sse::fetch(proxy.addr, "table=peer", |_| {}).await?;
    let live = sse::Live::open(proxy.addr, &subscription).await?;
    let (arrivals_tx, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let follower = sse::forward_arrivals(live, arrivals_tx);
    let insert = client
        .prepare("INSERT INTO peer (id, title) VALUES ($1, $2)")
        .await?;
    let mut latencies = Vec::with_capacity(commits);
    for i in 0..WARM_UP + commits {
        let id = 1000 + i as i64;
        client
            .execute(&insert, &[&id, &format!("row {id}")])
            .await?;
        let acknowledged = Instant::now();
        let arrived = loop {
            match tokio::time::timeout(Duration::from_secs(10), arrivals.recv()).await {
                Ok(Some((arrived, at))) if arrived == id => break at,
                Ok(Some(_)) => {}
                _ => bail!("row {id} did not reach the SSE client in 10 s"),
            }
        };
        if i >= WARM_UP {
            latencies.push(signed_ms(acknowledged, arrived));
        }
    }
    follower.abort();
    proxy.stop().await;
    Ok(latencies)
}

/// The table and its ten rows, as `latency.mjs` makes them.
async fn create_table(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    client
        .batch_execute(
            "CREATE TABLE peer (id int8 PRIMARY KEY, title text NOT NULL);
             INSERT INTO peer SELECT g, 'seed ' || g FROM generate_series(1, 10) g",
        )
        .await?;
    Ok(())
}

/// What `latency.mjs` prints.
#[derive(serde::Deserialize)]
struct NodeRun {
    version: String,
    node: String,
    latencies_ms: Vec<f64>,
}

/// `latency.mjs` with `env` on `db` (it makes the table): the latencies of `commits` INSERTs.
async fn node_run(db: &Database, commits: usize, env: &[(&str, &str)]) -> anyhow::Result<NodeRun> {
    let dir = install().await?;
    let node_path = dir.join("node22/package/bin");
    let path = format!(
        "{}:{}",
        node_path.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = tokio::process::Command::new(node_path.join("node"))
        .arg("latency.mjs")
        .current_dir(&dir)
        .env("PATH", path)
        .env("PEER_DB_URL", &db.url)
        .env("N", commits.to_string())
        .env("WARM", WARM_UP.to_string())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), output)
        .await
        .context("latency.mjs did not end in 10 minutes")?
        .context("running tests/peers/latency.mjs")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "tests/peers/latency.mjs {env:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("latency.mjs printed no result")?;
    let run: NodeRun = serde_json::from_str(line).context("latency.mjs's result")?;
    if run.latencies_ms.len() != commits {
        bail!(
            "latency.mjs measured {} INSERTs, not {commits}",
            run.latencies_ms.len()
        );
    }
    Ok(run)
}

/// Runs `tests/peers/install.sh` (nothing to do once installed); the directory.
async fn install() -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/install.sh");
    let mut command = tokio::process::Command::new("bash");
    command.arg(&script);
    if let Some(dir) = std::env::var_os("BENCH_PEERS_DIR") {
        command.arg(dir);
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(PathBuf::from(dir))
}

/// zero-cache leaves its replication slots behind: they would hold WAL for the rest of the run.
async fn drop_slots(db: &Database) -> anyhow::Result<()> {
    let client = db.connect().await?;
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE database = current_database() AND NOT active",
            &[],
        )
        .await
        .context("dropping zero-cache's replication slots")?;
    Ok(())
}
