//! `initial_sync_1m`: a 1,000,000-row shape synced from scratch into SQLite by the
//! client-sqlite library: rows/s, and the peak RSS of the client and of the proxy.
//!
//! First the client-sqlite library, in a process of its own (`client_child`), syncs the shape
//! into a fresh SQLite file as the table's first device: its request makes the proxy take the
//! snapshot (`initial_sync_1m`, cold: rows/s from process start to the first up-to-date
//! committed, and its peak RSS, VmHWM as it reports it). A second device then syncs the same
//! shape into another file, its snapshot already on the proxy's disk (`….warm`). Last, the
//! bench's own HTTP client fetches the shape from offset -1 to its first up-to-date, counting
//! the rows and discarding them (`….http`, warm: what the proxy serves, with no SQLite
//! behind it). The proxy's memory growth is its peak resident set over all three (`VmHWM`)
//! minus its resident set before (`VmRSS`). Then the same mirror follows the shape
//! live while one transaction inserts a tenth as many rows again (`initial_sync_1m.live_apply`:
//! rows/s from the commit's acknowledgement to its last row committed in SQLite).

use std::time::Instant;

use anyhow::bail;

use crate::Bench;
use crate::client_child;
use crate::figures::{Figure, Target};
use crate::proxy_child::ProxyChild;
use crate::sse;

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let rows = bench.scale.of(1_000_000) as i64;
    let db = bench.cluster.database("initial_sync_1m").await?;
    let client = db.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE items (id int8 PRIMARY KEY, owner_id text NOT NULL, title text NOT NULL,
                                 done boolean NOT NULL, position float8 NOT NULL,
                                 updated_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    client
        .execute(
            "INSERT INTO items (id, owner_id, title, done, position)
             SELECT g, 'owner ' || (g % 1000), 'item number ' || g, g % 3 = 0, g / 7.0
             FROM generate_series(1::int8, $1) g",
            &[&rows],
        )
        .await?;
    client.batch_execute("VACUUM ANALYZE items").await?;
    let proxy = ProxyChild::start(&db, &[]).await?;
    let before = proxy.memory()?;

    let dir = tempfile::tempdir()?;
    let url = format!("http://{}", proxy.addr);
    let sync = |file: std::path::PathBuf| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || client_child::run(&url, &file, "items"))
    };
    let file = dir.path().join("mirror.db");
    let run = sync(file.clone()).await??;
    let warm = sync(dir.path().join("second.db")).await??;

    let started = Instant::now();
    let mut counter = PatternCounter::new(br#"{"key":"#);
    sse::fetch(proxy.addr, "table=items", |bytes| counter.feed(bytes)).await?;
    let elapsed = started.elapsed();
    if counter.count != rows as u64 {
        bail!("the shape had {} rows, not {rows}", counter.count);
    }
    let after = proxy.memory()?;

    // Live: the mirror resumes, then one transaction of `live` new rows is committed.
    let live = bench.scale.of(100_000) as i64;
    let last_id = rows + live;
    let follower = tokio::task::spawn_blocking(move || {
        client_child::Follower::start(&url, &file, "items", last_id)
    })
    .await??;
    client
        .execute(
            "INSERT INTO items (id, owner_id, title, done, position)
             SELECT g, 'owner ' || (g % 1000), 'live item ' || g, g % 3 = 0, g / 7.0
             FROM generate_series($1::int8, $2) g",
            &[&(rows + 1), &last_id],
        )
        .await?;
    let committed = std::time::SystemTime::now();
    let (applied, follower_cpu) = tokio::task::spawn_blocking(move || follower.finish()).await??;
    let live_secs = applied.duration_since(committed)?.as_secs_f64();
    proxy.stop().await;
    bench.report.add(
        Figure::new(
            "initial_sync_1m",
            rows as f64 / run.elapsed.as_secs_f64(),
            "rows/s",
        )
        .target(Target::AtLeast(150_000.0))
        .note(format!(
            "cold: the first device, whose request takes the snapshot; {rows} rows into SQLite by client-sqlite (gzip on) in {:.2} s, client CPU {:.2} s",
            run.elapsed.as_secs_f64(),
            run.cpu_seconds
        )),
    );
    bench.report.add(
        Figure::new(
            "initial_sync_1m.warm",
            rows as f64 / warm.elapsed.as_secs_f64(),
            "rows/s",
        )
        .note(format!(
            "a second device, the snapshot already taken; {rows} rows into SQLite in {:.2} s, client CPU {:.2} s",
            warm.elapsed.as_secs_f64(),
            warm.cpu_seconds
        )),
    );
    bench.report.add(
        Figure::new("initial_sync_1m.client_rss", run.peak_rss_mb, "MB")
            .target(Target::AtMost(100.0))
            .note("peak RSS (VmHWM) of the client process".to_owned()),
    );
    bench.report.add(
        Figure::new(
            "initial_sync_1m.proxy_rss_growth",
            (after.peak_kb as f64 - before.rss_kb as f64) / 1024.0,
            "MB",
        )
        .target(Target::AtMost(50.0))
        .note(format!(
            "proxy VmHWM during the syncs − VmRSS before ({} → peak {} MB), {rows} rows served to two devices and the bench's HTTP client",
            before.rss_kb / 1024,
            after.peak_kb / 1024
        )),
    );
    bench.report.add(
        Figure::new("initial_sync_1m.live_apply", live as f64 / live_secs, "rows/s")
            .target(Target::AtLeast(150_000.0))
            .note(format!(
                "one {live}-row transaction, commit ack → its last row committed to the client's SQLite, {live_secs:.2} s; follower CPU {follower_cpu:.2} s (resume included)"
            )),
    );
    bench.report.add(
        Figure::new(
            "initial_sync_1m.http",
            rows as f64 / elapsed.as_secs_f64(),
            "rows/s",
        )
        .note(format!(
            "warm: {rows} rows of the stored snapshot over HTTP to a client that discards them (no SQLite), {:.2} s",
            elapsed.as_secs_f64()
        )),
    );
    Ok(())
}

/// Counts a pattern in a byte stream that arrives in pieces.
struct PatternCounter {
    pattern: &'static [u8],
    /// The last bytes seen, which may start a match completed by the next piece.
    tail: Vec<u8>,
    count: u64,
}

impl PatternCounter {
    fn new(pattern: &'static [u8]) -> Self {
        Self {
            pattern,
            tail: Vec::new(),
            count: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let keep = self.pattern.len() - 1;
        // Matches across the boundary: the tail joined with the start of this piece.
        let mut joint = std::mem::take(&mut self.tail);
        joint.extend_from_slice(&bytes[..bytes.len().min(keep)]);
        self.count += count(&joint, self.pattern) as u64;
        self.count += count(bytes, self.pattern) as u64;
        let from = bytes.len().saturating_sub(keep);
        if bytes.len() >= keep {
            self.tail = bytes[from..].to_vec();
        } else {
            // A piece shorter than the pattern: keep the end of tail + piece.
            let start = joint.len().saturating_sub(keep);
            self.tail = joint[start..].to_vec();
        }
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    let first = needle[0];
    let mut n = 0;
    let mut i = 0;
    while let Some(at) = haystack[i..].iter().position(|b| *b == first) {
        let start = i + at;
        if haystack[start..].starts_with(needle) {
            n += 1;
        }
        i = start + 1;
    }
    n
}
