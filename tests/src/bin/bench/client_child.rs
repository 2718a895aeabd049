//! The SQLite client as a process of its own (the bench binary re-executed as
//! `bench client-sync URL FILE TABLE`, or `bench client-follow URL FILE TABLE LAST_ID`), so
//! that its peak memory and CPU are its own.

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

/// `bench client-follow URL FILE TABLE LAST_ID`: resumes the mirror in FILE, prints `ready`
/// once up to date, then follows the shape live until the row with id LAST_ID is committed to
/// SQLite, and prints `done <µs since the Unix epoch>` (the parent compares it with its commit
/// acknowledgement on the same clock).
pub fn follow_main(args: &[String]) -> ExitCode {
    let [url, file, table, last_id] = args else {
        eprintln!("usage: bench client-follow URL FILE TABLE LAST_ID");
        return ExitCode::FAILURE;
    };
    let Ok(last_id) = last_id.parse::<i64>() else {
        eprintln!("client-follow: LAST_ID must be an integer");
        return ExitCode::FAILURE;
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(follow(url, file, table, last_id)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("client-follow: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn follow(url: &str, file: &str, table: &str, last_id: i64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut config = client_sqlite::client::ClientConfig::new(url, file);
    config.shapes = vec![table.parse()?];
    let client = client_sqlite::client::Client::open(config).await?;
    client.wait_synced(Duration::from_secs(600)).await?;
    println!("ready");
    std::io::stdout().flush()?;
    let reader = client_sqlite::rusqlite::Connection::open_with_flags(
        file,
        client_sqlite::rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let query = format!("SELECT count(*) FROM \"{table}\" WHERE id = ?1");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let found: i64 = reader.query_row(&query, [last_id], |r| r.get(0))?;
        if found > 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "row {last_id} never arrived");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    println!("done {}", at.as_micros());
    client.close().await;
    Ok(())
}

/// A live follower (see [`follow_main`]) running beside the parent.
pub struct Follower {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Follower {
    /// Starts the follower and returns once it is up to date.
    pub fn start(url: &str, file: &Path, table: &str, last_id: i64) -> anyhow::Result<Self> {
        use std::io::BufRead;
        // For profiling: BENCH_CLIENT_WRAPPER="perf record -g -o client.perf" runs the
        // follower under a tool that execs it in place.
        let wrapper = std::env::var("BENCH_CLIENT_WRAPPER").unwrap_or_default();
        let mut wrapper = wrapper.split_whitespace();
        let exe = std::env::current_exe()?;
        let mut command = match wrapper.next() {
            Some(tool) => {
                let mut command = std::process::Command::new(tool);
                command.args(wrapper).arg(exe);
                command
            }
            None => std::process::Command::new(exe),
        };
        let mut child = command
            .arg("client-follow")
            .arg(url)
            .arg(file)
            .arg(table)
            .arg(last_id.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the follower process")?;
        let stdout = child.stdout.take().context("follower stdout")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        match lines.next() {
            Some(Ok(line)) if line == "ready" => Ok(Self { child, lines }),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the follower did not get up to date ({other:?})")
            }
        }
    }

    /// Waits for the last row; returns when it was committed to SQLite and the follower's CPU
    /// time over its whole life (resume included).
    pub fn finish(mut self) -> anyhow::Result<(std::time::SystemTime, f64)> {
        let line = self
            .lines
            .next()
            .context("the follower ended without its row")??;
        let micros: u64 = line
            .strip_prefix("done ")
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("unexpected follower output {line:?}"))?;
        let mut status = 0;
        // SAFETY: wait4 writes into the status and the rusage we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: the pid is our own child's.
        let pid = unsafe { libc::wait4(self.child.id() as i32, &mut status, 0, &mut usage) };
        anyhow::ensure!(pid > 0 && status == 0, "the follower failed ({status})");
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok((
            std::time::UNIX_EPOCH + Duration::from_micros(micros),
            secs(usage.ru_utime) + secs(usage.ru_stime),
        ))
    }
}
