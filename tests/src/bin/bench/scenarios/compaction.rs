//! `compaction`: 1,000 rows each updated 1,000 times (10⁶ changes, in 10,000 transactions of
//! 100 updates: the kept tail ends at a transaction boundary, so transactions much bigger than
//! the tail would keep one whole), followed by two proxies on the same database (a slot each):
//!
//! - `C` compacts as it goes (`--compact-after 256KiB`). Its shape log is sampled every 20 ms
//!   (a sample smaller than the one before follows a compaction; the largest is in the note:
//!   while 10⁶ changes arrive in seconds, compaction runs behind the writer). Once the writes
//!   stopped and the compactor caught up (no compaction in flight, the log unchanged for 5 s),
//!   `compaction.log_vs_snapshot`: `snapshot.log` + `changes.log` over the `snapshot.log` of a
//!   fresh shape of the same rows (target ≤ 3).
//! - `U` never compacts. `compaction.initial_sync_speedup`: the time a new device takes to
//!   fetch the shape from `-1` to up-to-date (HTTP, bytes read and counted, not applied) on `U`
//!   (snapshot + 10⁶ updates) over the same on `C` (target ≥ 100; both logs in the page cache;
//!   the fastest of 5 devices each).
//! - `U` is then restarted with compaction on (`--compact-after 1MiB`): it compacts the whole
//!   history at once while one-row commits at 100/s go to another shape followed over SSE.
//!   `compaction.live_latency.p99`: commit acknowledgement → change received, for the commits
//!   made from the restart until the compaction is in place and a second more (target ≤ 10 ms).
//!   The note counts the commits over 10 ms before the merge, while it writes the new file and
//!   after the swap. `compaction.live_latency_quiet.p99`, the control: as many commits on the
//!   same proxy and stream 5 s later (the replaced file released), with nothing compacting.
//! - Churn, last, on a proxy `K` of its own: 100,000 rows that live for one transaction (1,000
//!   transactions, each inserting 100 rows and deleting the 100 before; the last 100 stay),
//!   written while `K` does not compact; `K` is then restarted with `--compact-after 256KiB`
//!   and compacts the whole history at once. Once its log settled,
//!   `compaction.churn_messages`: what a new device receives from `-1` (the 100 rows, the
//!   kept tail's changes, nothing of the rows that lived and died in the compacted part;
//!   199,900 changes without compaction), and `compaction.churn_bytes_per_gone_row`: the
//!   log's bytes over the rows gone (the retraction each leaves for devices that held it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::Bench;
use crate::cluster::Database;
use crate::figures::{Figure, Target};
use crate::proxy_child::ProxyChild;
use crate::scenarios::latency::signed_ms;
use crate::sse;
use crate::stats;

const ITEMS: &str = "table=items";

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let rows = bench.scale.of(1000) as i64;
    let rounds = bench.scale.of(1000);
    let db = bench.cluster.database("compaction").await?;
    let sql = db.connect().await?;
    sql.batch_execute(
        "CREATE TABLE items (id int8 PRIMARY KEY, title text NOT NULL, n int8 NOT NULL,
                             note text NOT NULL);
         CREATE TABLE lat (id int8 PRIMARY KEY, title text NOT NULL)",
    )
    .await?;
    sql.execute(
        "INSERT INTO items SELECT g, 'item ' || g, 0, 'a note of some length for item ' || g
         FROM generate_series(1::int8, $1) g",
        &[&rows],
    )
    .await?;
    let compacting =
        ProxyChild::start_on_slot(&db, "compaction_c", &["--compact-after", "256KiB"]).await?;
    let plain = ProxyChild::start_on_slot(&db, "compaction_u", &["--compact-after", "off"]).await?;
    let c_items = sse::fetch(compacting.addr, ITEMS, |_| {}).await?;
    let u_items = sse::fetch(plain.addr, ITEMS, |_| {}).await?;
    let c_dir = shape_dir(compacting.storage_dir(), &c_items.handle);

    // The history, while C's log is sampled.
    let sampler = Sampler::start(c_dir.join("changes.log"));
    let started = Instant::now();
    let update = sql
        .prepare(
            "UPDATE items SET n = n + 1, title = 'item ' || id || ' v' || $1::int8
             WHERE id % 10 = $2",
        )
        .await?;
    let mut transactions = 0;
    for round in 0..rounds {
        for part in 0..10i64 {
            sql.execute(&update, &[&(round as i64), &part]).await?;
            transactions += 1;
        }
    }
    sql.batch_execute("UPDATE items SET title = 'final' WHERE id = 1")
        .await?;
    let written = started.elapsed();
    let changes = rows as usize * rounds;
    println!(
        "   {changes} changes in {transactions} transactions written in {:.1} s",
        written.as_secs_f64()
    );
    // Both proxies have everything once the last update is in their logs.
    wait_for_final(&compacting, &c_items).await?;
    wait_for_final(&plain, &u_items).await?;
    let (_, compactions, largest) = sampler.stop().await;
    let c_log = c_dir.join("changes.log");
    let settled = settle(&c_log).await?;

    let fresh = sse::fetch(compacting.addr, "table=items&where=id%20%3E%200", |_| {}).await?;
    let fresh_snapshot =
        file_len(&shape_dir(compacting.storage_dir(), &fresh.handle).join("snapshot.log"));
    let snapshot = file_len(&c_dir.join("snapshot.log"));
    let after_compaction = snapshot + settled;
    bench.report.add(
        Figure::new(
            "compaction.log_vs_snapshot",
            after_compaction as f64 / fresh_snapshot as f64,
            "×",
        )
        .target(Target::AtMost(3.0))
        .note(format!(
            "{after_compaction} bytes once compaction caught up (snapshot {snapshot}, changes.log {settled}) vs a fresh snapshot of {fresh_snapshot}; while writing: {compactions} compactions seen, changes.log at most {largest} bytes"
        )),
    );

    // A new device: from -1 to up-to-date, on the compacted log and on the whole history.
    let (c_time, c_count) = timed_fetch(&compacting).await?;
    let (u_time, u_count) = timed_fetch(&plain).await?;
    bench.report.add(
        Figure::new(
            "compaction.initial_sync_speedup",
            u_time.as_secs_f64() / c_time.as_secs_f64(),
            "×",
        )
        .target(Target::AtLeast(100.0))
        .note(format!(
            "new device from -1 (HTTP, read and counted; fastest of {DEVICES}): {c_count} messages in {:.2} ms compacted, {u_count} in {:.0} ms replaying the history",
            c_time.as_secs_f64() * 1e3,
            u_time.as_secs_f64() * 1e3
        )),
    );
    compacting.stop().await;

    // Live latency while the whole history is compacted at once.
    let storage = plain.stop_keeping_storage().await;
    let u_log = shape_dir(storage.path(), &u_items.handle).join("changes.log");
    let before = file_len(&u_log);
    let restarted =
        ProxyChild::start_in(&db, "compaction_u", storage, &["--compact-after", "1MiB"]).await?;
    let live = latency_while_compacting(&db, &restarted, &u_log, before).await?;
    let after = file_len(&u_log);
    restarted.stop().await;
    let quiet_p99 = {
        let mut quiet = live.quiet.clone();
        stats::sort(&mut quiet);
        stats::quantile(&quiet, 0.99)
    };
    let slow = |phase: Phase| {
        let (all, slow) = live
            .during
            .iter()
            .filter(|(p, _)| *p == phase)
            .fold((0, 0), |(all, slow), (_, ms)| {
                (all + 1, slow + usize::from(*ms > 10.0))
            });
        format!("{slow} of {all}")
    };
    let mut latencies: Vec<f64> = live.during.iter().map(|(_, ms)| *ms).collect();
    stats::sort(&mut latencies);
    let note = format!(
        "{} one-row commits at 100/s while a {before}-byte log compacted to {after}; max {:.2} ms; over 10 ms: {} before the merge, {} while merging, {} after the swap; the same commits with nothing compacting, 5 s later: p99 {quiet_p99:.2} ms",
        latencies.len(),
        stats::quantile(&latencies, 1.0),
        slow(Phase::Starting),
        slow(Phase::Merging),
        slow(Phase::Installed),
    );
    for (quantile, label) in [(0.5, "p50"), (0.99, "p99")] {
        let mut figure = Figure::new(
            format!("compaction.live_latency.{label}"),
            stats::quantile(&latencies, quantile),
            "ms",
        )
        .note(note.clone());
        if label == "p99" {
            figure = figure.target(Target::AtMost(10.0));
        }
        bench.report.add(figure);
    }
    bench.report.add(
        Figure::new("compaction.live_latency_quiet.p99", quiet_p99, "ms").note(format!(
            "the control: {} one-row commits at 100/s on the same proxy and stream, 5 s after the compaction (nothing compacting)",
            live.quiet.len()
        )),
    );
    bench
        .report
        .distribution("compaction: commit → client while compacting", latencies);
    churn(bench, &db, &sql).await
}

/// The churn phase on the compacting proxy (see the module's doc).
async fn churn(
    bench: &mut Bench,
    db: &Database,
    sql: &tokio_postgres::Client,
) -> anyhow::Result<()> {
    const CHURN: &str = "table=churn";
    const BATCH: i64 = 100;
    sql.batch_execute("CREATE TABLE churn (id int8 PRIMARY KEY, note text NOT NULL)")
        .await?;
    let writing =
        ProxyChild::start_on_slot(db, "compaction_k", &["--compact-after", "off"]).await?;
    let shape = sse::fetch(writing.addr, CHURN, |_| {}).await?;
    let batches = bench.scale.of(1000) as i64;
    let step = sql
        .prepare(
            "WITH gone AS (DELETE FROM churn WHERE id < $1)
             INSERT INTO churn SELECT g, 'a short-lived row ' || g
             FROM generate_series($1, $1 + 99) g",
        )
        .await?;
    for batch in 0..batches {
        sql.execute(&step, &[&(batch * BATCH)]).await?;
    }
    let dir = shape_dir(writing.storage_dir(), &shape.handle);
    settle(&dir.join("changes.log")).await?;
    let storage = writing.stop_keeping_storage().await;
    let dir = shape_dir(storage.path(), &shape.handle);
    let proxy =
        ProxyChild::start_in(db, "compaction_k", storage, &["--compact-after", "256KiB"]).await?;
    let log = settle(&dir.join("changes.log")).await?;
    let bytes = log + file_len(&dir.join("snapshot.log"));
    let needle = br#"{"key":"#;
    let mut messages = 0u64;
    sse::fetch(proxy.addr, CHURN, |b| {
        messages += b.windows(needle.len()).filter(|w| w == needle).count() as u64;
    })
    .await?;
    let changes = 2 * batches * BATCH - BATCH;
    let gone = (batches - 1) * BATCH;
    bench.report.add(Figure::new("compaction.churn_messages", messages as f64, "messages").note(
        format!(
            "a new device from -1 after {gone} rows lived for one transaction each ({changes} changes, {BATCH} rows left): the rows left and the kept tail's changes"
        ),
    ));
    bench.report.add(
        Figure::new(
            "compaction.churn_bytes_per_gone_row",
            bytes as f64 / gone as f64,
            "bytes",
        )
        .note(format!(
            "snapshot.log + changes.log ({bytes} bytes) once compaction caught up, over the {gone} rows gone: one retraction each (a delete sent only to a device that held the row)"
        )),
    );
    proxy.stop().await;
    Ok(())
}

fn shape_dir(storage: &Path, handle: &str) -> PathBuf {
    storage.join("v1/shapes").join(handle)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Waits until no compaction of the log at `path` is in flight and its length stayed the same
/// for 5 s (the compactor looks every second); returns that length.
async fn settle(path: &Path) -> anyhow::Result<u64> {
    let building = path.with_extension("log.compact");
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut last, mut since) = (file_len(path), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let len = file_len(path);
        if len != last || building.exists() {
            last = len;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(5) {
            return Ok(len);
        }
        if Instant::now() > deadline {
            bail!("the log did not settle within 5 minutes after the writes");
        }
    }
}

/// Samples a file's length every 20 ms: the length seen right after it last shrank, how often
/// it shrank, and the largest length.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Option<u64>, usize, u64)>,
}

impl Sampler {
    fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut last, mut after_shrink, mut shrinks) = (file_len(&path), None, 0);
                let mut largest = last;
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let len = file_len(&path);
                    if len < last {
                        after_shrink = Some(len);
                        shrinks += 1;
                    }
                    largest = largest.max(len);
                    last = len;
                }
                (after_shrink, shrinks, largest)
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> (Option<u64>, usize, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or((None, 0, 0))
    }
}

/// Follows the shape from `from` until the final update is in it.
async fn wait_for_final(proxy: &ProxyChild, from: &sse::Subscription) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut at = from.clone();
    loop {
        let mut seen = false;
        let finder = br#""title":"final""#;
        let path = format!("{}&handle={}&offset={}", at.query, at.handle, at.offset);
        let next = fetch_after(proxy, &path, |bytes| {
            seen |= bytes.windows(finder.len()).any(|w| w == finder);
        })
        .await?;
        if seen {
            return Ok(());
        }
        at.offset = next;
        if Instant::now() > deadline {
            bail!("the proxy did not get the history within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads from the position in `query` to up-to-date; returns the offset reached.
async fn fetch_after(
    proxy: &ProxyChild,
    query: &str,
    mut body: impl FnMut(&[u8]),
) -> anyhow::Result<String> {
    let mut path = format!("/v1/shape?{query}");
    loop {
        let mut response = crate::http_wire::get(proxy.addr, &path, false).await?;
        if response.head.status != 200 {
            bail!("GET {path}: status {}", response.head.status);
        }
        let head = response.head.clone();
        while response.read_body(|b, _| body(b)).await? {}
        let offset = head
            .header("electric-offset")
            .context("no electric-offset")?
            .to_owned();
        if head.header("electric-up-to-date").is_some() {
            return Ok(offset);
        }
        let handle = head.header("electric-handle").context("no handle")?;
        path = format!("/v1/shape?{ITEMS}&handle={handle}&offset={offset}");
    }
}

/// Fetches timed per device: the fastest counts (a 2-core machine shared with other work
/// adds scheduling delays of tens of milliseconds to single runs).
const DEVICES: usize = 5;

/// A new device's fetch from -1 to up-to-date, [`DEVICES`] times: the fastest time and the
/// messages it got.
async fn timed_fetch(proxy: &ProxyChild) -> anyhow::Result<(Duration, u64)> {
    let needle = br#"{"key":"#;
    let mut best: Option<(Duration, u64)> = None;
    for _ in 0..DEVICES {
        let mut count = 0u64;
        let started = Instant::now();
        sse::fetch(proxy.addr, ITEMS, |bytes| {
            count += bytes.windows(needle.len()).filter(|w| w == needle).count() as u64;
        })
        .await?;
        let elapsed = started.elapsed();
        if best.is_none_or(|(b, _)| elapsed < b) {
            best = Some((elapsed, count));
        }
    }
    best.context("no fetch")
}

/// Where the compaction was when a commit was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The proxy started, the compactor had not begun writing the new file.
    Starting,
    /// The new file (`changes.log.compact`) was being written.
    Merging,
    /// The new file was in place.
    Installed,
}

/// Commit → client latencies (ms) of one-row commits: while a log compacts, and with nothing
/// compacting.
struct LiveLatency {
    during: Vec<(Phase, f64)>,
    quiet: Vec<f64>,
}

/// One-row commits at 100/s to `lat`, followed over SSE, from now until the log at `log`
/// shrank from `before` (its compaction is in place) and a second more; then, once the
/// replaced file was released (a few seconds), as many again: the control.
async fn latency_while_compacting(
    db: &Database,
    proxy: &ProxyChild,
    log: &Path,
    before: u64,
) -> anyhow::Result<LiveLatency> {
    let subscription = sse::fetch(proxy.addr, "table=lat", |_| {}).await?;
    let live = sse::Live::open(proxy.addr, &subscription).await?;
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let task = sse::forward_arrivals(live, arrivals_tx);
    let client = db.connect().await?;
    let insert = client
        .prepare("INSERT INTO lat (id, title) VALUES ($1, 'a row')")
        .await?;
    let building = log.with_extension("log.compact");
    let mut next_id = 0i64;
    let mut acks = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = Instant::now() + Duration::from_secs(300);
    // Until the compaction is in place, and a second after.
    let mut compacted_at: Option<Instant> = None;
    let mut phase = Phase::Starting;
    while compacted_at.is_none_or(|at| at.elapsed() < Duration::from_secs(1)) {
        ticker.tick().await;
        client.execute(&insert, &[&next_id]).await?;
        let ack = Instant::now();
        if phase == Phase::Starting && building.exists() {
            phase = Phase::Merging;
        }
        if compacted_at.is_none() && file_len(log) < before {
            compacted_at = Some(Instant::now());
            phase = Phase::Installed;
        }
        acks.push((next_id, ack, Some(phase)));
        next_id += 1;
        if Instant::now() > deadline {
            bail!("the history was not compacted within 5 minutes");
        }
    }
    // The replaced file is closed (its blocks freed) a few seconds after the swap.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = acks.len();
    for _ in 0..during {
        ticker.tick().await;
        client.execute(&insert, &[&next_id]).await?;
        acks.push((next_id, Instant::now(), None));
        next_id += 1;
    }
    let mut received = std::collections::HashMap::new();
    let wait = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.len() < acks.len() {
        match tokio::time::timeout_at(wait, arrivals.recv()).await {
            Ok(Some((id, at))) => {
                received.entry(id).or_insert(at);
            }
            _ => bail!("only {} of {} commits arrived", received.len(), acks.len()),
        }
    }
    task.abort();
    let mut latency = LiveLatency {
        during: Vec::new(),
        quiet: Vec::new(),
    };
    for (id, ack, phase) in acks {
        let ms = signed_ms(ack, received[&id]);
        match phase {
            Some(phase) => latency.during.push((phase, ms)),
            None => latency.quiet.push(ms),
        }
    }
    Ok(latency)
}
