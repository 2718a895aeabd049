//! `latency_subquery`: commit acknowledgement → SSE client of ordinary outer-row changes on a
//! subquery shape, at 100 one-row commits per second, as `latency_1` measures them.
//!
//! 100 projects of 10 todos; user 1 is a member of projects 1–10, and one client follows user
//! 1's shape (`project_id IN (SELECT project_id FROM members WHERE user_id = $1)`). Commit i
//! updates the title of todo `i mod 100 + 1`, one of the 100 todos of user 1's projects (no
//! membership changes: no row moves). The shape's log is in commit order, so the k-th update
//! the client receives is commit k's (checked by key). The first tenth of the commits warms up
//! and is not counted. `--quick` makes 100 commits.

use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::mpsc;

use super::{Op, SCHEMA, forward_changes, shape_query};
use crate::Bench;
use crate::figures::{Figure, Target};
use crate::proxy_child::ProxyChild;
use crate::scenarios::latency::signed_ms;
use crate::sse;
use crate::stats;

const RATE_PER_SECOND: u64 = 100;

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let name = "latency_subquery";
    // `--quick`: one second of commits.
    let commits = if bench.scale.quick { 100 } else { 3000 };
    let warm_up = commits / 10;
    let db = bench.cluster.database(name).await?;
    let sql = db.connect().await?;
    sql.batch_execute(SCHEMA).await?;
    sql.batch_execute(
        "INSERT INTO projects SELECT g, 'project ' || g FROM generate_series(1, 100) g;
         INSERT INTO todos SELECT g, 1 + (g - 1) / 10, 'todo ' || g, false
         FROM generate_series(1, 1000) g;
         INSERT INTO members SELECT g, 1 FROM generate_series(1, 10) g;
         INSERT INTO members SELECT g, 2 FROM generate_series(5, 50) g",
    )
    .await?;
    sql.batch_execute("VACUUM ANALYZE").await?;
    let proxy = ProxyChild::start(&db, &[]).await?;
    let subscription = sse::fetch(proxy.addr, &shape_query(1), |_| {}).await?;
    let live = sse::Live::open(proxy.addr, &subscription).await?;
    let (tx, mut received) = mpsc::unbounded_channel();
    let task = forward_changes(live, tx);

    let update = sql
        .prepare("UPDATE todos SET title = 'v' || $2::int8 WHERE id = $1")
        .await?;
    let expected = |i: usize| (i % 100) as i64 + 1;
    let mut acks = Vec::with_capacity(commits);
    let mut arrivals = Vec::with_capacity(commits);
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SECOND));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let take = |arrivals: &mut Vec<Instant>, (op, id, at): super::Received| {
        let k = arrivals.len();
        if op != Op::Update || id != expected(k) {
            bail!(
                "change {k}: expected an update of todo {}, got a {op:?} of {id}",
                expected(k)
            );
        }
        arrivals.push(at);
        Ok(())
    };
    for i in 0..commits {
        ticker.tick().await;
        sql.execute(&update, &[&expected(i), &(i as i64)]).await?;
        acks.push(Instant::now());
        while let Ok(change) = received.try_recv() {
            take(&mut arrivals, change)?;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while arrivals.len() < commits {
        match tokio::time::timeout_at(deadline, received.recv()).await {
            Ok(Some(change)) => take(&mut arrivals, change)?,
            _ => bail!(
                "only {} of {commits} commits reached the client",
                arrivals.len()
            ),
        }
    }
    task.abort();
    proxy.stop().await;

    let mut latencies: Vec<f64> = (warm_up..commits)
        .map(|k| signed_ms(acks[k], arrivals[k]))
        .collect();
    stats::sort(&mut latencies);
    let note = format!(
        "one SSE client on a subquery shape (10 member projects of 100), {} one-row todo updates at {RATE_PER_SECOND}/s (after {warm_up} warm-up); max {:.2} ms",
        commits - warm_up,
        stats::quantile(&latencies, 1.0)
    );
    for (quantile, label, target) in [(0.5, "p50", 2.0), (0.99, "p99", 10.0)] {
        bench.report.add(
            Figure::new(
                format!("{name}.{label}"),
                stats::quantile(&latencies, quantile),
                "ms",
            )
            .target(Target::AtMost(target))
            .note(note.clone()),
        );
    }
    bench.report.distribution(
        format!("{name}: commit → client (subquery shape)"),
        latencies,
    );
    Ok(())
}
