//! Benchmark (not a test) of the SQLite client: initial sync of a large shape and the apply
//! rate of live changes, through the real `shapesync-client` binary as a separate process
//! (so its peak RSS is its own), against a proxy in this process and a throwaway Postgres.
//!
//! ```text
//! cargo build --release -p client-sqlite --bin shapesync-client
//! cargo run --release -p client-sqlite --example initial_sync_bench -- [ROWS] [LIVE_ROWS]
//! ```
//! Defaults: 1,000,000 rows, then 100,000 live rows in one transaction.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let live: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let client_bin = client_binary()?;
    let db = tests::TestDb::new("client_bench").await;
    let pg = db.connect().await;
    let started = Instant::now();
    pg.batch_execute(&format!(
        "CREATE TABLE items (id int8 PRIMARY KEY, title text NOT NULL, n int8, done bool, at timestamptz);
         INSERT INTO items SELECT g, 'item number ' || g, g * 7, g % 2 = 0, now() FROM generate_series(1, {rows}) g;"
    ))
    .await?;
    eprintln!(
        "loaded {rows} rows into Postgres in {:.1?}",
        started.elapsed()
    );

    let storage = tempfile::tempdir()?;
    let config = proxy::config::ServeConfig::new(
        db.url.clone(),
        "127.0.0.1:0".parse()?,
        storage.path().to_owned(),
    );
    let shutdown = CancellationToken::new();
    let (tx, bound) = tokio::sync::oneshot::channel();
    tokio::spawn(proxy::serve::run(config, shutdown.clone(), Some(tx)));
    let url = format!("http://{}", bound.await?);

    // The proxy writes the snapshot on the first request: do it first, so the figure below
    // is the client's.
    let started = Instant::now();
    let warm = reqwest::get(format!("{url}/v1/shape?table=items&offset=-1")).await?;
    warm.bytes().await?;
    eprintln!("proxy snapshot (first request): {:.1?}", started.elapsed());

    if let Ok(seconds) = std::env::var("BENCH_HOLD_SECONDS") {
        // For profiling by hand: keep the server up and say where it is.
        eprintln!(
            "serving {url} (shape `items`) for {seconds} s; database {}",
            db.url
        );
        tokio::time::sleep(Duration::from_secs(seconds.parse()?)).await;
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.db");
    let sync = SyncCommand {
        bin: client_bin,
        url,
        file: file.to_str().unwrap_or_default().to_owned(),
        gzip: std::env::var("BENCH_GZIP")
            .map(|v| v != "0")
            .unwrap_or(true),
    };
    initial_sync(&sync, rows).await?;
    live_changes(&sync, &pg, rows, live).await?;
    shutdown.cancel();
    Ok(())
}

/// `shapesync-client sync` of the shape `items` into one file.
struct SyncCommand {
    bin: PathBuf,
    url: String,
    file: String,
    gzip: bool,
}

impl SyncCommand {
    fn command(&self, once: bool) -> std::process::Command {
        let mut command = std::process::Command::new(&self.bin);
        command.args([
            "sync", "--url", &self.url, "--db", &self.file, "--shape", "items",
        ]);
        if once {
            command.arg("--once");
        }
        if !self.gzip {
            command.arg("--no-gzip");
        }
        command
    }
}

async fn initial_sync(sync: &SyncCommand, rows: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let child = sync.command(true).spawn()?;
    let usage = tokio::task::spawn_blocking(move || wait_with_usage(child)).await??;
    let elapsed = started.elapsed();
    let count = count_rows(&sync.file)?;
    anyhow::ensure!(count == rows, "{count} rows mirrored, expected {rows}");
    eprintln!(
        "initial sync (gzip {}): {rows} rows in {elapsed:.2?} = {:.0} rows/s; client {usage}",
        sync.gzip,
        rows as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

async fn live_changes(
    sync: &SyncCommand,
    pg: &tokio_postgres::Client,
    rows: u64,
    live: u64,
) -> anyhow::Result<()> {
    let follower = sync.command(false).spawn()?;
    let follower_pid = follower.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    pg.batch_execute(&format!(
        "INSERT INTO items SELECT g, 'live ' || g, g, true, now() FROM generate_series({}, {}) g",
        rows + 1,
        rows + live
    ))
    .await?;
    let committed = started.elapsed();
    while count_rows(&sync.file)? < rows + live {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "live rows did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    // SAFETY: SIGINT to the child we started; its Ctrl-C handler exits cleanly.
    unsafe {
        libc::kill(follower_pid as libc::pid_t, libc::SIGINT);
    }
    let usage = tokio::task::spawn_blocking(move || wait_with_usage(follower)).await??;
    eprintln!(
        "live: {live} rows in one transaction (commit took {committed:.2?}) mirrored {elapsed:.2?} \
         after the insert began = {:.0} rows/s end to end; client (whole run incl. 2 s idle) {usage}",
        live as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Waits for a child and reports its own peak RSS and CPU time (`wait4`).
fn wait_with_usage(child: std::process::Child) -> anyhow::Result<String> {
    let mut status = 0;
    // SAFETY: wait4 writes into the status and rusage we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    anyhow::ensure!(pid > 0, "wait4 failed");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(format!(
        "peak RSS {} MB, CPU {:.2}s user + {:.2}s system",
        usage.ru_maxrss / 1024,
        secs(usage.ru_utime),
        secs(usage.ru_stime)
    ))
}

fn client_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .ok_or_else(|| anyhow::anyhow!("cannot locate the target directory"))?;
    let bin = dir.join("shapesync-client");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it first (cargo build --release -p client-sqlite --bin shapesync-client)",
        bin.display()
    );
    Ok(bin)
}

fn count_rows(file: &str) -> anyhow::Result<u64> {
    let conn = client_sqlite::rusqlite::Connection::open_with_flags(
        file,
        client_sqlite::rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let n: i64 = conn
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap_or(0);
    Ok(n as u64)
}
