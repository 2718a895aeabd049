//! The SQLite client as a process of its own (the bench binary re-executed as
//! `bench client-sync URL FILE TABLE`), so that its peak memory is its own.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

/// What one client run cost.
#[derive(Debug, Clone, Copy)]
pub struct ClientRun {
    pub elapsed: Duration,
    pub peak_rss_mb: f64,
    pub cpu_seconds: f64,
}

/// `bench client-sync URL FILE TABLE`: syncs the shape of TABLE into FILE until up to date.
pub fn main(args: &[String]) -> ExitCode {
    let [url, file, table] = args else {
        eprintln!("usage: bench client-sync URL FILE TABLE");
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("client-sync: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sync_once(url, file, table)) {
        Ok(()) => {
            // The peak of this process since exec, read by the parent from stdout (a wait4
            // figure would also count the parent's pages the child shared before exec).
            let peak = crate::proxy_child::memory_of(std::process::id()).map_or(0, |m| m.peak_kb);
            println!("peak_kb {peak}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("client-sync: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn sync_once(url: &str, file: &str, table: &str) -> anyhow::Result<()> {
    let mut config = client_sqlite::client::ClientConfig::new(url, file);
    config.shapes = vec![table.parse()?];
    let client = client_sqlite::client::Client::open(config).await?;
    client.wait_synced(Duration::from_secs(600)).await?;
    client.close().await;
    Ok(())
}

/// Runs a client to completion; its CPU time comes from `wait4`, its peak RSS from what it
/// reports of itself.
pub fn run(url: &str, file: &Path, table: &str) -> anyhow::Result<ClientRun> {
    let started = Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("client-sync")
        .arg(url)
        .arg(file)
        .arg(table)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the client process")?;
    let mut stdout = child.stdout.take().context("client stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let mut status = 0;
    // SAFETY: wait4 writes into the status and the rusage we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    anyhow::ensure!(pid > 0, "wait4 failed");
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the client process failed ({status})"
    );
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let report = reader.join().unwrap_or_default();
    let peak_kb: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("peak_kb "))
        .and_then(|v| v.trim().parse().ok())
        .context("the client did not report its peak memory")?;
    Ok(ClientRun {
        elapsed,
        peak_rss_mb: peak_kb / 1024.0,
        cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime),
    })
}
