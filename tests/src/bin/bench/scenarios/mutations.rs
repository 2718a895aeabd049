//! `mutations_batch` and `mutations_single`: `POST /v1/mutations` through the real proxy
//! process, with replication running, on the example app's `todos` table (writable,
//! tombstoned).
//!
//! - batches: 4 concurrent clients post batches of 100 upserts, each on its own 10,000 rows
//!   (as devices mostly write their own rows), for 10 s: mutations applied per second (only
//!   `applied` results count; a `conflict` — a newer write won — is reported apart, and a
//!   rejection fails the bench);
//! - single: one-mutation requests at a steady 200 per second for 10 s: p50/p99 of the
//!   request's round trip.
//!
//! A response carries the commit's LSN, which the proxy learns from its own replication stream
//! (waiting at most `--lsn-wait`, 1 s): the round trip includes that wait, as clients see it.
//! The table is put in the publication first (by fetching its shape), or every write would
//! wait the whole second for a commit that never comes through.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::Bench;
use crate::figures::{Figure, Target};
use crate::proxy_child::ProxyChild;
use crate::sse;
use crate::stats;

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Batches,
    Single,
}

const BATCH: usize = 100;
const CLIENTS: usize = 4;
const ROWS: u64 = 10_000;
const SINGLE_RATE_PER_SECOND: u64 = 200;

pub async fn run(bench: &mut Bench, mode: Mode) -> anyhow::Result<()> {
    let name = match mode {
        Mode::Batches => "mutations_batch",
        Mode::Single => "mutations_single",
    };
    let duration = Duration::from_millis(bench.scale.of(10_000) as u64);
    let db = bench.cluster.database(name).await?;
    let mut client = db.connect().await?;
    proxy::ops::migrations::apply(&mut client, &proxy::ops::migrations::embedded()).await?;
    let proxy = ProxyChild::start(&db, &["--writable", "todos", "--tombstones", "todos"]).await?;
    sse::fetch(proxy.addr, "table=todos", |_| {}).await?;
    let url = format!("http://{}/v1/mutations", proxy.addr);
    let http = reqwest::Client::new();
    let result = match mode {
        Mode::Batches => batches(bench, &http, &url, duration).await,
        Mode::Single => single(bench, &http, &url, duration).await,
    };
    proxy.stop().await;
    result
}

async fn batches(
    bench: &mut Bench,
    http: &reqwest::Client,
    url: &str,
    duration: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, url) = (http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let (mut tally, mut n) = (Tally::default(), 0u64);
            while start.elapsed() < duration {
                let batch = (0..BATCH)
                    .map(|_| {
                        n += 1;
                        let row = c as u64 * ROWS + (n * 7919) % ROWS;
                        upsert(format!("t{c}-{n}"), row, n)
                    })
                    .collect();
                tally.add(post(&http, &url, &format!("bench-{c}"), batch).await?);
            }
            anyhow::Ok(tally)
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        total.add(task.await??);
    }
    let elapsed = start.elapsed();
    bench.report.add(
        Figure::new(
            "mutations_batch",
            total.applied as f64 / elapsed.as_secs_f64(),
            "mutations/s",
        )
        .target(Target::AtLeast(10_000.0))
        .note(format!(
            "{} upserts applied (of {} sent; {} conflicts) in batches of {BATCH} from {CLIENTS} clients in {:.1} s",
            total.applied,
            total.applied + total.conflicts,
            total.conflicts,
            elapsed.as_secs_f64()
        )),
    );
    Ok(())
}

async fn single(
    bench: &mut Bench,
    http: &reqwest::Client,
    url: &str,
    duration: Duration,
) -> anyhow::Result<()> {
    let mut ticker =
        tokio::time::interval(Duration::from_micros(1_000_000 / SINGLE_RATE_PER_SECOND));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 0u64;
    while start.elapsed() < duration {
        ticker.tick().await;
        n += 1;
        let (http, url) = (http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let mutation = vec![upsert(format!("s{n}"), n % ROWS, n)];
            let tally = post(&http, &url, &format!("single-{}", n % 16), mutation).await?;
            if tally.applied != 1 {
                bail!("a single mutation was not applied: {tally:?}");
            }
            anyhow::Ok(sent.elapsed().as_secs_f64() * 1e3)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await??);
    }
    stats::sort(&mut latencies);
    let note = format!(
        "{} one-mutation requests at {SINGLE_RATE_PER_SECOND}/s; max {:.2} ms",
        latencies.len(),
        stats::quantile(&latencies, 1.0)
    );
    bench.report.add(
        Figure::new(
            "mutations_single.p50",
            stats::quantile(&latencies, 0.5),
            "ms",
        )
        .note(note.clone()),
    );
    bench.report.add(
        Figure::new(
            "mutations_single.p99",
            stats::quantile(&latencies, 0.99),
            "ms",
        )
        .target(Target::AtMost(10.0))
        .note(note),
    );
    bench
        .report
        .distribution("mutations_single: request round trip", latencies);
    Ok(())
}

fn upsert(id: String, row: u64, micros: u64) -> Value {
    json!({"id": id, "table": "todos", "op": "upsert",
           "key": {"id": format!("00000000-0000-4000-8000-{row:012}")},
           "values": {"owner_id": "bench", "title": format!("title {micros}"),
                      "done": micros.is_multiple_of(2), "position": micros % 1000},
           "timestamp": format!("2026-01-01T00:00:00.{:06}Z", micros % 1_000_000)})
}

/// Results of posted mutations, by status.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    applied: u64,
    conflicts: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.applied += other.applied;
        self.conflicts += other.conflicts;
    }
}

/// Posts one batch; fails on an error status and on any result that is neither `applied` nor
/// `conflict`.
async fn post(
    http: &reqwest::Client,
    url: &str,
    client_id: &str,
    mutations: Vec<Value>,
) -> anyhow::Result<Tally> {
    let response = http
        .post(url)
        .json(&json!({"client_id": client_id, "mutations": mutations}))
        .send()
        .await
        .context("POST /v1/mutations")?;
    let status = response.status();
    let body: Value = response.json().await.context("the response body")?;
    if !status.is_success() {
        bail!("POST /v1/mutations: {status}: {body}");
    }
    let mut tally = Tally::default();
    for result in body["results"].as_array().into_iter().flatten() {
        match result["status"].as_str() {
            Some("applied") => tally.applied += 1,
            Some("conflict") => tally.conflicts += 1,
            _ => bail!("a mutation was not applied: {result}"),
        }
    }
    Ok(tally)
}
