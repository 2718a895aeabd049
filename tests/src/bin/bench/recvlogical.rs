//! The baseline: `pg_recvlogical` with pgoutput (protocol 1, the proxy's publication, a slot
//! of its own), the Postgres project's own client for logical decoding. What it reaches is the
//! server's decoding limit on this machine: decoding happens in the walsender, and
//! `pg_recvlogical` only writes what it receives.
//!
//! **Live** ([`LiveRecvlogical`]): started before the workload, writing to a pipe (`-f -`)
//! that a thread of ours reads. pgoutput is binary and pg_recvlogical writes each message
//! followed by a newline, so the thread frames the stream by decoding each message's length
//! (Begin, Commit, Relation, Insert, …) and counts rows and commits; every read is stamped
//! with the time it returned. The workload's end is the read that completed its last commit:
//! once the expected rows and commits have arrived and nothing more came for a quiet period,
//! the time of the last bytes read is the end. (The quiet period only confirms the end; it is
//! not part of the measured time.)
//!
//! **Catch-up** ([`catch_up`]): the workload is written first into a slot created before it;
//! pg_recvlogical then reads it to `/dev/null`, stopping at `--endpos`. The server decodes as
//! fast as the reader takes it.

use std::io::Read;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shapes::lsn::Lsn;

use crate::cluster::{BenchCluster, Database};

/// What the live reader has seen.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub rows: u64,
    pub commits: u64,
    pub bytes: u64,
    pub last_bytes_at: Option<Instant>,
    pub error: Option<String>,
}

pub struct LiveRecvlogical {
    child: Child,
    reader: std::thread::JoinHandle<()>,
    progress: Arc<Mutex<Progress>>,
    slot: String,
}

fn base_args(db: &Database, slot: &str) -> Vec<String> {
    vec![
        "-d".into(),
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={}",
            db.port, db.name
        ),
        format!("--slot={slot}"),
        "--start".into(),
        "-o".into(),
        "proto_version=1".into(),
        "-o".into(),
        "publication_names=shapesync".into(),
        "--no-loop".into(),
        "--fsync-interval=0".into(),
    ]
}

pub async fn create_slot(client: &tokio_postgres::Client, slot: &str) -> anyhow::Result<()> {
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .with_context(|| format!("creating slot {slot}"))?;
    Ok(())
}

pub async fn drop_slot(client: &tokio_postgres::Client, slot: &str) {
    // The walsender of a stopped reader may take a moment to go away.
    for _ in 0..100 {
        match client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
        {
            Ok(_) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    eprintln!("bench: could not drop replication slot {slot}");
}

impl LiveRecvlogical {
    /// Creates `slot` and starts streaming it; returns once its walsender is active.
    pub async fn start(
        cluster: &BenchCluster,
        db: &Database,
        client: &tokio_postgres::Client,
        slot: &str,
    ) -> anyhow::Result<Self> {
        create_slot(client, slot).await?;
        let mut command = cluster.cluster.program_command("pg_recvlogical");
        command.args(base_args(db, slot)).args(["-f", "-"]);
        let mut child = command.spawn().context("starting pg_recvlogical")?;
        let stdout = child.stdout.take().context("pg_recvlogical's stdout")?;
        let progress = Arc::new(Mutex::new(Progress::default()));
        let reader = {
            let progress = progress.clone();
            std::thread::spawn(move || read_stream(stdout, &progress))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let row = client
                .query_one(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await?;
            if row.get::<_, bool>(0) {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("pg_recvlogical exited: {status}");
            }
            if Instant::now() > deadline {
                bail!("pg_recvlogical did not start streaming within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Self {
            child,
            reader,
            progress,
            slot: slot.to_owned(),
        })
    }

    /// Waits until `rows` rows and `commits` commits have arrived and the stream has been
    /// quiet for `quiet`; returns what arrived (its `last_bytes_at` is the end).
    pub async fn wait_for(
        &self,
        rows: u64,
        commits: u64,
        timeout: Duration,
    ) -> anyhow::Result<Progress> {
        const QUIET: Duration = Duration::from_millis(300);
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.progress.lock().expect("progress lock").clone();
            if let Some(error) = &seen.error {
                bail!("reading pg_recvlogical's output: {error}");
            }
            if seen.rows >= rows
                && seen.commits >= commits
                && seen.last_bytes_at.is_some_and(|t| t.elapsed() >= QUIET)
            {
                return Ok(seen);
            }
            if Instant::now() > deadline {
                bail!(
                    "pg_recvlogical had {} of {rows} rows and {} of {commits} commits after {timeout:?}",
                    seen.rows,
                    seen.commits
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn stop(mut self, client: &tokio_postgres::Client) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = tokio::task::spawn_blocking(move || {
            let _ = self.child.wait();
            let _ = self.reader.join();
        })
        .await;
        drop_slot(client, &self.slot).await;
    }
}

fn read_stream(mut stdout: impl Read, progress: &Mutex<Progress>) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(err) => {
                progress.lock().expect("progress lock").error = Some(err.to_string());
                return;
            }
        };
        let at = Instant::now();
        pending.extend_from_slice(&buf[..n]);
        let mut counts = Counts::default();
        let used = match frame(&pending, &mut counts) {
            Ok(used) => used,
            Err(err) => {
                progress.lock().expect("progress lock").error = Some(err);
                return;
            }
        };
        pending.drain(..used);
        let mut p = progress.lock().expect("progress lock");
        p.rows += counts.rows;
        p.commits += counts.commits;
        p.bytes += n as u64;
        p.last_bytes_at = Some(at);
    }
}

#[derive(Debug, Default)]
struct Counts {
    rows: u64,
    commits: u64,
}

/// Consumes every complete message (and its newline) at the start of `bytes`; returns how many
/// bytes that was.
fn frame(bytes: &[u8], counts: &mut Counts) -> Result<usize, String> {
    let mut used = 0;
    while let Some(len) = message_len(&bytes[used..])? {
        match bytes.get(used + len) {
            Some(b'\n') => {}
            Some(_) => {
                return Err(format!(
                    "no newline after a {:?} message",
                    bytes[used] as char
                ));
            }
            // The newline comes with the next read.
            None => break,
        }
        match bytes[used] {
            b'I' | b'U' | b'D' => counts.rows += 1,
            b'C' => counts.commits += 1,
            _ => {}
        }
        used += len + 1;
    }
    Ok(used)
}

/// The length of the pgoutput message at the start of `bytes`, `None` when it is not complete
/// yet.
fn message_len(bytes: &[u8]) -> Result<Option<usize>, String> {
    let mut c = Cursor { bytes, at: 0 };
    let Some(tag) = c.take(1) else {
        return Ok(None);
    };
    let complete = match tag[0] {
        b'B' => c.skip(20),
        b'C' => c.skip(25),
        b'R' => c.relation(),
        b'Y' => c.skip(4).and_then(|_| c.cstr()).and_then(|_| c.cstr()),
        b'O' => c.skip(8).and_then(|_| c.cstr()),
        b'I' => c.skip(5).and_then(|_| c.tuple()),
        b'U' => c.update(),
        b'D' => c.skip(5).and_then(|_| c.tuple()),
        b'T' => c.u32().and_then(|n| c.skip(1 + 4 * n as usize)),
        b'M' => c
            .skip(9)
            .and_then(|_| c.cstr())
            .and_then(|_| c.u32())
            .and_then(|n| c.skip(n as usize)),
        other => return Err(format!("unexpected pgoutput message {:?}", other as char)),
    };
    Ok(complete.map(|_| c.at))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at + n)?;
        self.at += n;
        Some(out)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstr(&mut self) -> Option<()> {
        let len = self.bytes.get(self.at..)?.iter().position(|b| *b == 0)?;
        self.skip(len + 1)
    }
    fn relation(&mut self) -> Option<()> {
        self.skip(4)?;
        self.cstr()?;
        self.cstr()?;
        self.skip(1)?;
        for _ in 0..self.u16()? {
            self.skip(1)?;
            self.cstr()?;
            self.skip(8)?;
        }
        Some(())
    }
    fn tuple(&mut self) -> Option<()> {
        for _ in 0..self.u16()? {
            match self.take(1)?[0] {
                b't' | b'b' => {
                    let len = self.u32()?;
                    self.skip(len as usize)?;
                }
                _ => {}
            }
        }
        Some(())
    }
    fn update(&mut self) -> Option<()> {
        self.skip(4)?;
        if matches!(self.take(1)?[0], b'K' | b'O') {
            self.tuple()?;
            self.skip(1)?;
        }
        self.tuple()
    }
}

/// Reads `slot` with pg_recvlogical to `/dev/null` up to `end`; how long that took.
pub async fn catch_up(
    cluster: &BenchCluster,
    db: &Database,
    slot: &str,
    end: Lsn,
) -> anyhow::Result<Duration> {
    let mut command = cluster.cluster.program_command("pg_recvlogical");
    command
        .args(base_args(db, slot))
        .arg(format!("--endpos={end}"))
        .args(["-f", "/dev/null"]);
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!(
            "pg_recvlogical failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(elapsed)
}
