//! `routing_subquery_10k`: outer-row changes routed by the proxy with 10,000 subquery shapes
//! present, against the same workload with 10 of them, in one run on one proxy.
//!
//! Each user's shape is `project_id IN (SELECT project_id FROM members WHERE user_id = $1)`,
//! user k a member of 10 projects of 10 todos each. Two layouts of the projects:
//! - **own**: user k's projects are `10k+1 … 10k+10` (100,000 projects, 1,000,000 todos), so a
//!   changed todo is in one shape's rows whatever the number of shapes.
//!   - `routing_subquery_10k` (the figure): the changes are of the todos of users 0–9 (the
//!     1,000 todos of the 10 shapes present in both phases), so both phases write the same
//!     messages into the same 10 logs, and the ratio is what finding and deciding them among
//!     10,000 subquery shapes costs (as `routing_100k` is for plain shapes).
//!   - `routing_subquery_10k.spread` (no target): with 10,000 shapes, changes of random todos
//!     of all users, so each lands in another of the 10,000 logs (a transaction of 100 writes
//!     ~100 logs, against ≤ 10 above): the ratio to the 10-shape rate adds the cost of
//!     writing many logs to that of routing.
//! - **shared** (`routing_subquery_10k.shared`, no target): 1,000 projects, user k a member of
//!   `1 + (7k + 101j) mod 1000` (j = 0..9), so each project has ~100 members and a changed todo
//!   (of any project) lands in ~100 shapes' logs (against ~0.1 with 10 shapes): this ratio
//!   includes writing 1,000 times as many messages.
//!
//! Shapes are created through HTTP, each a first fetch (`offset=-1`) by 16 concurrent clients
//! (the proxy's consumer takes each snapshot itself, one after another); no client follows
//! them afterwards. The workload: transactions of 100 `UPDATE todos SET title = …` of random
//! todos: 100,000 changes (`--quick`: 2,000) with 10 shapes, then the same number again once
//! shapes for users 10–9,999 were added (`--quick`: 100 shapes in all; the shared layout
//! replays 5,000, `--quick` 500). To measure the proxy rather than the writer, the proxy is
//! paused (SIGSTOP) while the workload is written, then resumed: the rate is the changes over
//! the time from the resume until `/metrics` shows every transaction applied
//! (`shapesync_transactions_total` and `shapesync_changes_total`, polled every 5 ms).
//! Postgres decodes the backlog while the proxy reads it, so the 10-shape rate is bounded by
//! the walsender too.
//!
//! `routing_subquery_10k.rss_per_shape` (own layout): the proxy's VmRSS after adding the
//! shapes minus before, per shape added (each keeps its levels: the keys of its 100 todos and
//! its 10 members rows, with the values they offer, and the index entries that find them).
//! `routing_subquery_10k.create_rate`: shapes created per second.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;

use super::{SCHEMA, metric, shape_query};
use crate::Bench;
use crate::figures::{Figure, Target};
use crate::proxy_child::ProxyChild;
use crate::sse;

const CREATORS: usize = 16;
const TODOS_PER_PROJECT: i64 = 10;
const PROJECTS_PER_USER: i64 = 10;
const CHANGES_PER_TXN: usize = 100;
const FEW: u64 = 10;

/// How users share projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Projects {
    /// Each user's projects are theirs alone.
    Own,
    /// 1,000 projects, ~100 members each.
    Shared,
}

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    measure(bench, Projects::Own).await?;
    measure(bench, Projects::Shared).await
}

async fn measure(bench: &mut Bench, projects: Projects) -> anyhow::Result<()> {
    let name = match projects {
        Projects::Own => "routing_subquery_10k",
        Projects::Shared => "routing_subquery_10k.shared",
    };
    let users: u64 = if bench.scale.quick { 100 } else { 10_000 };
    // `--quick` (a debug build in CI) samples briefly.
    let changes = if bench.scale.quick { 2_000 } else { 100_000 };
    let changes_many = match (projects, bench.scale.quick) {
        (Projects::Own, _) => changes,
        (Projects::Shared, true) => 500,
        (Projects::Shared, false) => 5_000,
    };
    let project_count = match projects {
        Projects::Own => users as i64 * PROJECTS_PER_USER,
        Projects::Shared => 1000,
    };
    let db = bench.cluster.database(&name.replace('.', "_")).await?;
    let sql = db.connect().await?;
    sql.batch_execute(SCHEMA).await?;
    sql.execute(
        "INSERT INTO projects SELECT g, 'project ' || g FROM generate_series(1::int8, $1) g",
        &[&project_count],
    )
    .await?;
    sql.execute(
        "INSERT INTO todos SELECT g, 1 + (g - 1) / $2::int8, 'todo ' || g, false
         FROM generate_series(1::int8, $1::int8 * $2::int8) g",
        &[&project_count, &TODOS_PER_PROJECT],
    )
    .await?;
    // User k's projects: 10k+1 … 10k+10 (own), or spread over 1,000 (shared).
    let members = match projects {
        Projects::Own => "1 + k * 10 + j",
        Projects::Shared => "1 + (k * 7 + j * 101) % 1000",
    };
    sql.execute(
        &format!(
            "INSERT INTO members (project_id, user_id) SELECT {members}, k
             FROM generate_series(0::int8, $1::int8 - 1) k, generate_series(0::int8, 9) j"
        ),
        &[&(users as i64)],
    )
    .await?;
    sql.batch_execute("VACUUM ANALYZE").await?;
    let proxy = ProxyChild::start(&db, &[]).await?;
    let todos = (project_count * TODOS_PER_PROJECT) as u64;

    create(proxy.addr, 0..FEW).await?;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    // Own layout: the todos of the first 10 users' projects, which their shapes hold.
    let changed = match projects {
        Projects::Own => FEW * (PROJECTS_PER_USER * TODOS_PER_PROJECT) as u64,
        Projects::Shared => todos,
    };
    let few = apply_rate(&proxy, &sql, changes, changed, &mut rng).await?;
    println!(
        "   {name}: {FEW} shapes: {:.0} changes/s (written in {:.2} s, applied in {:.2} s)",
        few.rate, few.write_secs, few.apply_secs
    );

    let before = proxy.memory()?;
    let started = Instant::now();
    create(proxy.addr, FEW..users).await?;
    let create_secs = started.elapsed().as_secs_f64();
    // Let the last snapshots' buffers go before reading the memory.
    if !bench.scale.quick {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let after = proxy.memory()?;
    let added = users - FEW;
    println!(
        "   {added} shapes created in {create_secs:.1} s; proxy RSS {} → {} MB",
        before.rss_kb / 1024,
        after.rss_kb / 1024
    );
    let many = apply_rate(&proxy, &sql, changes_many, changed, &mut rng).await?;
    println!(
        "   {name}: {users} shapes: {:.0} changes/s (written in {:.2} s, applied in {:.2} s)",
        many.rate, many.write_secs, many.apply_secs
    );
    let spread = if projects == Projects::Own {
        let spread = apply_rate(&proxy, &sql, changes_many, todos, &mut rng).await?;
        println!(
            "   {name}.spread: {users} shapes, random todos of all: {:.0} changes/s (written in {:.2} s, applied in {:.2} s)",
            spread.rate, spread.write_secs, spread.apply_secs
        );
        Some(spread)
    } else {
        None
    };
    proxy.stop().await;

    let shapes_per_change =
        users as f64 * (PROJECTS_PER_USER * TODOS_PER_PROJECT) as f64 / todos as f64;
    if projects == Projects::Shared {
        bench.report.add(
            Figure::new(name, many.rate, "changes/s")
                .baseline(few.rate)
                .note(format!(
                    "{users} subquery shapes (one per user, {PROJECTS_PER_USER} of {project_count} projects each; ~{shapes_per_change:.1} shapes per changed row) vs {FEW}; `UPDATE todos` of random todos in transactions of {CHANGES_PER_TXN}, written while the proxy was paused, resume → applied: {changes_many} changes in {:.2} s vs {changes} in {:.2} s",
                    many.apply_secs,
                    few.apply_secs
                )),
        );
        return Ok(());
    }
    bench.report.add(
        Figure::new(name, many.rate, "changes/s")
            .baseline(few.rate)
            .target(Target::RatioAtLeast(0.5))
            .note(format!(
                "{users} subquery shapes (one per user, {PROJECTS_PER_USER} own projects each) vs {FEW}; `UPDATE todos` of random todos of users 0–{} (each in 1 shape, the same {FEW} logs in both phases) in transactions of {CHANGES_PER_TXN}, written while the proxy was paused, resume → applied: {changes_many} changes in {:.2} s vs {changes} in {:.2} s",
                FEW - 1,
                many.apply_secs,
                few.apply_secs
            )),
    );
    if let Some(spread) = spread {
        bench.report.add(
            Figure::new(format!("{name}.spread"), spread.rate, "changes/s")
                .baseline(few.rate)
                .note(format!(
                    "{users} subquery shapes as above; `UPDATE todos` of random todos of all users (each in 1 of the {users} logs: ~{CHANGES_PER_TXN} logs written per transaction) vs the {FEW}-shape rate above: {changes_many} changes in {:.2} s",
                    spread.apply_secs
                )),
        );
    }
    bench.report.add(
        Figure::new(
            format!("{name}.rss_per_shape"),
            (after.rss_kb as f64 - before.rss_kb as f64) * 1024.0 / added as f64,
            "bytes",
        )
        .target(Target::AtMost(4096.0))
        .note(format!(
            "proxy VmRSS after adding {added} subquery shapes ({} todos each) − before ({} → {} MB; peak {} MB)",
            PROJECTS_PER_USER * TODOS_PER_PROJECT,
            before.rss_kb / 1024,
            after.rss_kb / 1024,
            after.peak_kb / 1024
        )),
    );
    bench.report.add(
        Figure::new(
            format!("{name}.create_rate"),
            added as f64 / create_secs,
            "shapes/s",
        )
        .note(format!(
            "{added} subquery shapes created through HTTP (first fetch, offset=-1) by {CREATORS} clients in {create_secs:.1} s"
        )),
    );
    Ok(())
}

/// Creates the shapes of `users`, [`CREATORS`] at a time, each fetched to up-to-date.
async fn create(addr: SocketAddr, users: std::ops::Range<u64>) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(users)
        .map(|user| async move {
            let mut body = Vec::new();
            sse::fetch(addr, &shape_query(user), |b| body.extend_from_slice(b)).await?;
            let needle = br#"{"key":"#;
            let rows = body.windows(needle.len()).filter(|w| w == needle).count() as i64;
            if rows != PROJECTS_PER_USER * TODOS_PER_PROJECT {
                bail!(
                    "user {user}'s shape has {rows} rows, not {}",
                    PROJECTS_PER_USER * TODOS_PER_PROJECT
                );
            }
            Ok(())
        })
        .buffer_unordered(CREATORS)
        .collect()
        .await;
    results.into_iter().collect()
}

struct Applied {
    rate: f64,
    write_secs: f64,
    apply_secs: f64,
}

/// Writes `changes` updates of random todos while the proxy is paused, resumes it and times
/// until it applied them all.
async fn apply_rate(
    proxy: &ProxyChild,
    sql: &tokio_postgres::Client,
    changes: usize,
    todos: u64,
    rng: &mut XorShift,
) -> anyhow::Result<Applied> {
    // `todos`: changes are of ids 1..=todos.
    let transactions_before = metric(proxy.addr, "shapesync_transactions_total").await?;
    let changes_before = metric(proxy.addr, "shapesync_changes_total").await?;
    let update = sql
        .prepare("UPDATE todos SET title = 'todo ' || id || ' r' || $1::int8 WHERE id = ANY($2)")
        .await?;
    let transactions = changes.div_ceil(CHANGES_PER_TXN);
    proxy.pause();
    let started = Instant::now();
    let mut written = 0;
    for t in 0..transactions {
        let mut ids: Vec<i64> = (0..CHANGES_PER_TXN)
            .map(|_| (rng.next() % todos) as i64 + 1)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        written += sql.execute(&update, &[&(t as i64), &ids]).await? as usize;
    }
    let write_secs = started.elapsed().as_secs_f64();
    proxy.resume();
    let resumed = Instant::now();
    let deadline = resumed + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let done_transactions =
            metric(proxy.addr, "shapesync_transactions_total").await? - transactions_before;
        let done_changes = metric(proxy.addr, "shapesync_changes_total").await? - changes_before;
        if done_transactions >= transactions as f64 && done_changes >= written as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the proxy applied {done_changes} of {written} changes within 10 minutes");
        }
    }
    let apply_secs = resumed.elapsed().as_secs_f64();
    Ok(Applied {
        rate: written as f64 / apply_secs,
        write_secs,
        apply_secs,
    })
}

/// A small deterministic generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
