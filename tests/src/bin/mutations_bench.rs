//! Benchmark of `POST /v1/mutations` over real HTTP on a throwaway cluster:
//! 1. throughput: batches of 100 upserts from 4 concurrent clients, each on its own 10k rows
//!    (mutations/s);
//! 2. latency: single-mutation requests at a steady rate (p50/p99).
//!
//! Run: `cargo run --release -p tests --bin mutations_bench` (`BENCH_SECONDS` per phase,
//! default 10).

use std::time::{Duration, Instant};

use proxy::config::ServeConfig;
use proxy::mutations::WriteConfig;
use serde_json::{Value, json};
use tests::TestDb;

const BATCH: usize = 100;
const THROUGHPUT_CLIENTS: usize = 4;
const ROWS: u64 = 10_000;
const LATENCY_RATE_PER_SECOND: u64 = 200;

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let db = TestDb::new("mutations_bench").await;
    let mut client = db.connect().await;
    proxy::migrations::apply(&mut client, &proxy::migrations::embedded())
        .await
        .expect("migrations");
    proxy::proxy_schema::upgrade(&mut client)
        .await
        .expect("schema");
    let base = serve(&db.url).await;
    let http = reqwest::Client::new();

    let (count, elapsed) = throughput(&http, &base, Duration::from_secs(seconds)).await;
    println!(
        "throughput: {count} mutations in {:.1} s = {:.0} mutations/s (batches of {BATCH}, {THROUGHPUT_CLIENTS} clients)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    let mut latencies = latency(&http, &base, Duration::from_secs(seconds)).await;
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    println!(
        "single-mutation requests at {LATENCY_RATE_PER_SECOND}/s: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        latencies.len(),
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        pick(1.0).as_secs_f64() * 1e3
    );
}

async fn serve(url: &str) -> String {
    let mut config = ServeConfig::new(
        url.to_owned(),
        "127.0.0.1:0".parse().expect("addr"),
        std::env::temp_dir(),
    );
    config.tombstones = vec!["todos".parse().expect("spec")];
    // Replication is not part of this bench: do not wait for commit LSNs.
    config.writes = WriteConfig {
        lsn_wait: Duration::ZERO,
        max_connections: 8,
        ..WriteConfig::dev()
    };
    config.storage_dir =
        std::env::temp_dir().join(format!("shapesync-mutations-bench-{}", std::process::id()));
    let router = tests::writes_only_router(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/v1/mutations")
}

fn upsert(id: String, row: u64, micros: u64) -> Value {
    json!({"id": id, "table": "todos", "op": "upsert",
           "key": {"id": format!("00000000-0000-4000-8000-{row:012}")},
           "values": {"owner_id": "bench", "title": format!("title {micros}"), "done": micros.is_multiple_of(2), "position": micros % 1000},
           "timestamp": format!("2026-01-01T00:00:00.{:06}Z", micros % 1_000_000)})
}

async fn post(http: &reqwest::Client, url: &str, client_id: &str, mutations: Vec<Value>) {
    let response = http
        .post(url)
        .json(&json!({"client_id": client_id, "mutations": mutations}))
        .send()
        .await
        .expect("request");
    assert!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let body: Value = response.json().await.expect("json");
    let bad = body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["status"] == "rejected");
    assert!(bad.is_none(), "{bad:?}");
}

async fn throughput(http: &reqwest::Client, url: &str, duration: Duration) -> (u64, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..THROUGHPUT_CLIENTS {
        let (http, url) = (http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0_u64;
            let mut n = 0_u64;
            while start.elapsed() < duration {
                let batch = (0..BATCH)
                    .map(|_| {
                        n += 1;
                        // Each client writes its own rows, as devices mostly do.
                        let row = c as u64 * ROWS + (n * 7919) % ROWS;
                        upsert(format!("t{c}-{n}"), row, n)
                    })
                    .collect();
                post(&http, &url, &format!("bench-{c}"), batch).await;
                sent += BATCH as u64;
            }
            sent
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task");
    }
    (total, start.elapsed())
}

async fn latency(http: &reqwest::Client, url: &str, duration: Duration) -> Vec<Duration> {
    let mut ticker =
        tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE_PER_SECOND));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 0_u64;
    while start.elapsed() < duration {
        ticker.tick().await;
        n += 1;
        let (http, url) = (http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            post(
                &http,
                &url,
                &format!("single-{}", n % 16),
                vec![upsert(format!("s{n}"), n % ROWS, n)],
            )
            .await;
            sent.elapsed()
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.expect("task"));
    }
    out
}
