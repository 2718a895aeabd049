//! `latency_1` and `latency_1000`: commit acknowledgement → change received by an SSE client,
//! for single-row commits at a steady 100 per second.
//!
//! - `latency_1`: one client following the whole table;
//! - `latency_1000`: 1,000 clients, each on a shape of its own (`where bucket = k`); commit i
//!   goes to bucket i mod 1,000, so every commit is routed to exactly one of 1,000 shapes.
//!
//! The writer and the clients live in this process and share its clock: the writer notes when
//! each INSERT returned (the commit acknowledgement), each client when the read that carried
//! the row returned; latency = received − acknowledged. It can be slightly negative: the
//! proxy may deliver a row before the acknowledgement reaches the writer. The first tenth of
//! the commits warms up and is not counted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::mpsc;

use crate::Bench;
use crate::figures::{Figure, Target};
use crate::proxy_child::ProxyChild;
use crate::sse;
use crate::stats;

#[derive(Debug, Clone, Copy)]
pub enum Spread {
    /// One client on the whole table.
    OneClient,
    /// 1,000 clients, a shape each.
    ShapePerClient,
}

const RATE_PER_SECOND: u64 = 100;

pub async fn run(bench: &mut Bench, spread: Spread) -> anyhow::Result<()> {
    let (name, clients) = match spread {
        Spread::OneClient => ("latency_1", 1),
        Spread::ShapePerClient => ("latency_1000", bench.scale.of(1000)),
    };
    let commits = bench.scale.of(3000) as i64;
    let warm_up = commits / 10;
    let db = bench.cluster.database(name).await?;
    let client = db.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE lat (id int8 PRIMARY KEY, bucket int NOT NULL, title text NOT NULL,
                               at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let proxy = ProxyChild::start(&db, &[]).await?;
    let queries = match spread {
        Spread::OneClient => vec!["table=lat".to_owned()],
        Spread::ShapePerClient => (0..clients)
            .map(|k| format!("table=lat&where=bucket%20%3D%20{k}"))
            .collect(),
    };
    let streams = sse::open_many(proxy.addr, queries, 8).await?;
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|live| sse::forward_arrivals(live, arrivals_tx.clone()))
        .collect();

    let insert = client
        .prepare("INSERT INTO lat (id, bucket, title) VALUES ($1, $2, 'a row')")
        .await?;
    let mut acks: HashMap<i64, Instant> = HashMap::new();
    let mut received: HashMap<i64, Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SECOND));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for id in 0..commits {
        ticker.tick().await;
        let bucket = (id % clients as i64) as i32;
        client.execute(&insert, &[&id, &bucket]).await?;
        acks.insert(id, Instant::now());
        while let Ok((id, at)) = arrivals.try_recv() {
            received.entry(id).or_insert(at);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.len() < commits as usize {
        match tokio::time::timeout_at(deadline, arrivals.recv()).await {
            Ok(Some((id, at))) => {
                received.entry(id).or_insert(at);
            }
            _ => bail!(
                "only {} of {commits} commits reached the clients",
                received.len()
            ),
        }
    }
    for task in tasks {
        task.abort();
    }
    proxy.stop().await;

    let mut latencies: Vec<f64> = (warm_up..commits)
        .map(|id| signed_ms(acks[&id], received[&id]))
        .collect();
    stats::sort(&mut latencies);
    let note = format!(
        "{clients} SSE client(s), {} commits at {RATE_PER_SECOND}/s (after {warm_up} warm-up); max {:.2} ms",
        commits - warm_up,
        stats::quantile(&latencies, 1.0)
    );
    for (quantile, label, target) in [
        (0.5, "p50", 2.0),
        (0.95, "p95", f64::NAN),
        (0.99, "p99", 10.0),
    ] {
        let mut figure = Figure::new(
            format!("{name}.{label}"),
            stats::quantile(&latencies, quantile),
            "ms",
        )
        .note(note.clone());
        if matches!(spread, Spread::ShapePerClient) && !target.is_nan() {
            figure = figure.target(Target::AtMost(target));
        }
        bench.report.add(figure);
    }
    bench.report.distribution(
        format!("{name}: commit → client ({clients} shape(s))"),
        latencies,
    );
    Ok(())
}

/// `to − from` in milliseconds, negative when `to` came first.
pub fn signed_ms(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64() * 1e3
    } else {
        -((from - to).as_secs_f64() * 1e3)
    }
}
