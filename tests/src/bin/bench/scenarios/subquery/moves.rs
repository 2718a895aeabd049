//! `moves_in_10k` and `moves_out_10k`: one `members` row moving 10,000 rows into and out of a
//! live subquery shape.
//!
//! Project 1 has 10,000 todos (project 2 has 10, and user 1 is always a member of it, so the
//! shape is never empty). User 1's shape (`project_id IN (SELECT project_id FROM members WHERE
//! user_id = $1)`, `$1` = 1) is fetched to up-to-date and followed over SSE by one client in
//! this process. Each round then:
//!
//! - grants project 1 (`INSERT INTO members`): `moves_in_10k` is the commit acknowledgement →
//!   the read that carried the last of the 10,000 inserts to the client;
//! - revokes it (`DELETE FROM members`): `moves_out_10k` is the acknowledgement → the read that
//!   carried the 10,000th delete (the client removes each row as it reads its delete).
//!
//! Rounds: 5 (`--quick`: 1, with 1,000 rows); the median and the slowest round are reported.
//! `moves_out_10k.log_bytes_per_move`: how much the shape's `changes.log` grew with one revoke
//! (the wire carries one delete per row that leaves), and per row moved out; the note has the
//! same for a grant (the rows themselves, as inserts).
//!
//! `moves_out_10k.events.*`: the same with the shape asked `moves=events` (Electric's wire):
//! a revoke is one `move-out` event, and the time is the acknowledgement → the read that
//! carried it (a client following tags drops the 10,000 rows itself); a grant is a `move-in`
//! event and the rows as inserts.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use super::{Op, Received, SCHEMA, file_len, forward_changes, shape_dir, shape_query_moving};
use crate::Bench;
use crate::figures::{Figure, Target};
use crate::proxy_child::ProxyChild;
use crate::scenarios::latency::signed_ms;
use crate::sse;
use crate::stats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// One round's timings and log growth.
struct Round {
    in_ms: f64,
    out_ms: f64,
    in_bytes: u64,
    out_bytes: u64,
}

pub async fn run(bench: &mut Bench, direction: Direction) -> anyhow::Result<()> {
    measure(bench, direction, false).await?;
    if direction == Direction::Out {
        measure(bench, direction, true).await?;
    }
    Ok(())
}

/// One scenario, its moves as rows or (`events`) as Electric's events.
async fn measure(bench: &mut Bench, direction: Direction, events: bool) -> anyhow::Result<()> {
    let name = match (direction, events) {
        (Direction::In, _) => "moves_in_10k",
        (Direction::Out, false) => "moves_out_10k",
        (Direction::Out, true) => "moves_out_10k.events",
    };
    let rows = bench.scale.of(10_000) as i64;
    let rounds = if bench.scale.quick { 1 } else { 5 };
    let db = bench.cluster.database(&name.replace('.', "_")).await?;
    let sql = db.connect().await?;
    sql.batch_execute(SCHEMA).await?;
    sql.execute("INSERT INTO projects VALUES (1, 'big'), (2, 'small')", &[])
        .await?;
    sql.execute(
        "INSERT INTO todos SELECT g, CASE WHEN g <= $1::int8 THEN 1 ELSE 2 END, 'todo number ' || g, g % 3 = 0
         FROM generate_series(1::int8, $1::int8 + 10) g",
        &[&rows],
    )
    .await?;
    sql.batch_execute("INSERT INTO members VALUES (2, 1)")
        .await?;
    sql.batch_execute("VACUUM ANALYZE").await?;
    let proxy = ProxyChild::start(&db, &[]).await?;
    let query = shape_query_moving(1, if events { "events" } else { "rows" });
    let subscription = sse::fetch(proxy.addr, &query, |_| {}).await?;
    let log = shape_dir(proxy.storage_dir(), &subscription.handle).join("changes.log");
    let live = sse::Live::open(proxy.addr, &subscription).await?;
    let (tx, mut received) = mpsc::unbounded_channel();
    let task = forward_changes(live, tx);

    let grant = sql
        .prepare("INSERT INTO members (project_id, user_id) VALUES (1, 1)")
        .await?;
    let revoke = sql
        .prepare("DELETE FROM members WHERE project_id = 1 AND user_id = 1")
        .await?;
    let mut results = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let before = file_len(&log);
        sql.execute(&grant, &[]).await?;
        let acked = Instant::now();
        let last = wait_for(&mut received, Op::Insert, rows as usize)
            .await
            .with_context(|| format!("round {round}: moving in"))?;
        let in_ms = signed_ms(acked, last);
        let granted = file_len(&log);
        // Let the writes and the client settle between the two moves.
        tokio::time::sleep(Duration::from_millis(200)).await;
        sql.execute(&revoke, &[]).await?;
        let acked = Instant::now();
        let (op, count) = if events {
            (Op::MoveOut, 1)
        } else {
            (Op::Delete, rows as usize)
        };
        let last = wait_for(&mut received, op, count)
            .await
            .with_context(|| format!("round {round}: moving out"))?;
        let out_ms = signed_ms(acked, last);
        let revoked = file_len(&log);
        println!(
            "   round {round}: {rows} rows in {in_ms:.1} ms (+{} log bytes), out {out_ms:.1} ms (+{} log bytes)",
            granted - before,
            revoked - granted
        );
        results.push(Round {
            in_ms,
            out_ms,
            in_bytes: granted - before,
            out_bytes: revoked - granted,
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    task.abort();
    proxy.stop().await;

    let rounds_note = |pick: fn(&Round) -> f64| {
        results
            .iter()
            .map(|r| format!("{:.1}", pick(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (pick, target): (fn(&Round) -> f64, f64) = match direction {
        Direction::In => (|r| r.in_ms, 500.0),
        Direction::Out => (|r| r.out_ms, 100.0),
    };
    let mut times: Vec<f64> = results.iter().map(pick).collect();
    stats::sort(&mut times);
    let what = match (direction, events) {
        (Direction::In, _) => {
            "INSERT INTO members (grant) commit ack → the last of the rows inserted at an SSE client"
        }
        (Direction::Out, false) => {
            "DELETE FROM members (revoke) commit ack → the last of the rows deleted at an SSE client"
        }
        (Direction::Out, true) => {
            "moves=events: DELETE FROM members (revoke) commit ack → the move-out event at an SSE client (which drops the rows by their tags)"
        }
    };
    let note = format!(
        "{what}; {rows} rows, {rounds} round(s): {} ms",
        rounds_note(pick)
    );
    for (label, value) in [
        ("p50", stats::quantile(&times, 0.5)),
        ("max", stats::quantile(&times, 1.0)),
    ] {
        bench.report.add(
            Figure::new(format!("{name}.{label}"), value, "ms")
                .target(Target::AtMost(target))
                .note(note.clone()),
        );
    }
    if direction == Direction::Out {
        let out_bytes = results.iter().map(|r| r.out_bytes).sum::<u64>() as f64 / rounds as f64;
        let in_bytes = results.iter().map(|r| r.in_bytes).sum::<u64>() as f64 / rounds as f64;
        bench.report.add(
            Figure::new(format!("{name}.log_bytes_per_move"), out_bytes, "bytes").note(format!(
                "growth of the shape's changes.log per revoke of {rows} rows ({}; mean of {rounds}); a grant of them adds {in_bytes:.0} bytes (the rows, as inserts)",
                if events { "one move-out event" } else { "one delete message per row" }
            )),
        );
        bench.report.add(
            Figure::new(
                format!("{name}.log_bytes_per_row"),
                out_bytes / rows as f64,
                "bytes",
            )
            .note(format!(
                "changes.log bytes per row moved out (a grant: {:.0} bytes per row moved in)",
                in_bytes / rows as f64
            )),
        );
    }
    Ok(())
}

/// Waits until `count` changes of kind `op` arrived (any other change is an error); when the
/// read that carried the last one returned.
async fn wait_for(
    received: &mut mpsc::UnboundedReceiver<Received>,
    op: Op,
    count: usize,
) -> anyhow::Result<Instant> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    let mut last = Instant::now();
    while seen < count {
        match tokio::time::timeout_at(deadline, received.recv()).await {
            Ok(Some((got, id, at))) => {
                // The event before moved-in rows is not what is counted.
                if got == Op::MoveIn && op != Op::MoveIn {
                    continue;
                }
                if got != op {
                    bail!("expected {op:?}s, got a {got:?} of row {id}");
                }
                seen += 1;
                last = at;
            }
            Ok(None) => bail!("the live stream ended after {seen} of {count} {op:?}s"),
            Err(_) => bail!("only {seen} of {count} {op:?}s within 120 s"),
        }
    }
    Ok(last)
}
