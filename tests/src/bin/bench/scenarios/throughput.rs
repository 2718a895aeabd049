//! `throughput_big_txn` and `throughput_small_txn`: how fast the whole system carries writes
//! from Postgres to a live client, against `pg_recvlogical` on the same workload.
//!
//! - big: one `INSERT … SELECT generate_series` transaction of 200,000 rows;
//! - small: 50,000 one-row INSERT transactions with `synchronous_commit = off`, sent
//!   pipelined (64 in flight) on one connection; the last one commits with
//!   `synchronous_commit = on`, so that it flushes the WAL of all of them (walsenders send only
//!   flushed WAL) instead of waiting for the WAL writer.
//!
//! Each scenario has a database of its own and runs `--rounds` rounds (default 3; the median
//! is reported, every round in the note), each on two identical new tables in the `shapesync`
//! publication. First the baseline: `pg_recvlogical` (pgoutput v1, its own slot, live,
//! started before the workload; see [`crate::recvlogical`]) while the workload is written to
//! the first table; no proxy runs then, so no other walsender decodes it. Then a proxy is
//! started on a new slot (which begins after the baseline's writes, so it never decodes
//! them), a client takes the (empty) shape of the second table and follows it over SSE,
//! counting change messages, the same workload is written to the second table, and the proxy
//! is stopped.
//!
//! Timing, the same for both: the big transaction from its commit acknowledgement (the INSERT
//! returned) to the last row received (for `pg_recvlogical`, the last bytes read from its
//! pipe); the small ones from the start of the writes to the last row received, since they
//! stream while being written (the writer's own rate is in the note: when the two are close,
//! the writer is the limit).
//!
//! `….proxy_cpu_per_row`: the proxy's CPU time (user + system, every thread) from just
//! before the workload is written to the last row at the client, over the rows (median of the
//! rounds): what the live path costs, without the proxy's start, the shape's snapshot and its
//! stop, which the CPU printed at each stop includes.
//!
//! Catch-up (`….catch_up`): two slots created before any write are read afterwards, one by
//! `pg_recvlogical --endpos`, one by the proxy's `ReplicationStream` in this process (decode
//! and assembly, rows discarded: no shape logs, no HTTP).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use proxy::replication::{
    ReplicationEvent, ReplicationStream, StreamConfig, WalChange, ensure_publication, prepare_table,
};
use shapes::lsn::Lsn;
use shapes::schema::QualifiedName;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::Bench;
use crate::cluster::Database;
use crate::figures::{Figure, Target};
use crate::proxy_child::ProxyChild;
use crate::recvlogical::{self, LiveRecvlogical};
use crate::sse;

#[derive(Debug, Clone, Copy)]
pub enum Workload {
    /// One transaction of many rows.
    BigTxn,
    /// Many one-row transactions.
    SmallTxns,
}

const PIPELINE: usize = 64;

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::BigTxn => "throughput_big_txn",
            Workload::SmallTxns => "throughput_small_txn",
        }
    }

    /// Rows written (each a transaction of its own for small).
    fn rows(self, bench: &Bench) -> u64 {
        bench.scale.of(match self {
            Workload::BigTxn => 200_000,
            Workload::SmallTxns => 50_000,
        }) as u64
    }

    fn commits(self, rows: u64) -> u64 {
        match self {
            Workload::BigTxn => 1,
            Workload::SmallTxns => rows,
        }
    }

    /// What the rate counts: rows of the one transaction, or transactions.
    fn unit(self) -> &'static str {
        match self {
            Workload::BigTxn => "rows/s",
            Workload::SmallTxns => "tx/s",
        }
    }

    /// The ratio to `pg_recvlogical` DESIGN.md asks for.
    fn target(self) -> f64 {
        match self {
            Workload::BigTxn => 0.9,
            Workload::SmallTxns => 0.7,
        }
    }
}

/// When a workload was written.
struct Written {
    started: Instant,
    /// The last commit's acknowledgement.
    acked: Instant,
    /// The WAL insert position after the last commit.
    end: Lsn,
}

impl Written {
    /// Where the measured time starts.
    fn origin(&self, workload: Workload) -> Instant {
        match workload {
            Workload::BigTxn => self.acked,
            Workload::SmallTxns => self.started,
        }
    }
}

/// One round's measured times.
struct Round {
    baseline: Duration,
    ours: Duration,
    baseline_write: Written,
    proxied_write: Written,
    /// The proxy's CPU seconds over the workload.
    proxy_cpu: f64,
}

pub async fn run(bench: &mut Bench, workload: Workload) -> anyhow::Result<()> {
    let rows = workload.rows(bench);
    let commits = workload.commits(rows);
    let db = bench.cluster.database(workload.name()).await?;
    let mut client = db.connect().await?;
    ensure_publication(&client, "shapesync").await?;
    // Slot names are cluster-wide.
    let slot = |what: &str| format!("{}_{what}", workload.name());
    // Created before any write: they hold the first round's baseline workload for catch-up.
    recvlogical::create_slot(&client, &slot("stream_catch_up")).await?;
    recvlogical::create_slot(&client, &slot("recvlogical_catch_up")).await?;

    let mut rounds = Vec::new();
    for round in 0..bench.rounds {
        rounds.push(run_round(bench, &db, &mut client, workload, round).await?);
    }
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let median = |times: Vec<Duration>| {
        let mut rates: Vec<f64> = times.into_iter().map(rate).collect();
        crate::stats::sort(&mut rates);
        (crate::stats::quantile(&rates, 0.5), rates)
    };
    let (ours, our_rates) = median(rounds.iter().map(|r| r.ours).collect());
    let (theirs, their_rates) = median(rounds.iter().map(|r| r.baseline).collect());
    let list = |rates: &[f64]| {
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    let writer_rate = |w: &Written| rows as f64 / (w.acked - w.started).as_secs_f64();
    let size = match workload {
        Workload::BigTxn => format!("one {rows}-row transaction, commit ack → last row"),
        Workload::SmallTxns => format!(
            "{rows} one-row transactions, first write → last row; writer alone {:.0} tx/s (proxied, first round)",
            writer_rate(&rounds[0].proxied_write),
        ),
    };
    bench.report.add(
        Figure::new(workload.name(), ours, workload.unit())
            .baseline(theirs)
            .target(Target::RatioAtLeast(workload.target()))
            .note(format!(
                "live: proxy → 1 SSE client vs pg_recvlogical live; {size}; median of {} rounds (ours {}, baseline {})",
                rounds.len(),
                list(&our_rates),
                list(&their_rates)
            )),
    );

    let mut cpu_per_row: Vec<f64> = rounds
        .iter()
        .map(|r| r.proxy_cpu * 1e6 / rows as f64)
        .collect();
    crate::stats::sort(&mut cpu_per_row);
    let mut cpu = Figure::new(
        format!("{}.proxy_cpu_per_row", workload.name()),
        crate::stats::quantile(&cpu_per_row, 0.5),
        "µs",
    )
    .note(format!(
        "the proxy's CPU time (user + system) from before the writes to the last row at the SSE client, over {rows} rows; median of {} rounds ({})",
        rounds.len(),
        cpu_per_row
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join("/")
    ));
    if matches!(workload, Workload::BigTxn) {
        cpu = cpu.target(Target::AtMost(1.0));
    }
    bench.report.add(cpu);

    // Catch-up: both readers on slots that hold the first round's baseline workload.
    let stream_time = stream_catch_up(&db, &slot("stream_catch_up"), rows, commits).await?;
    let recv_time = recvlogical::catch_up(
        &bench.cluster,
        &db,
        &slot("recvlogical_catch_up"),
        rounds[0].baseline_write.end,
    )
    .await?;
    recvlogical::drop_slot(&client, &slot("stream_catch_up")).await;
    recvlogical::drop_slot(&client, &slot("recvlogical_catch_up")).await;
    bench.report.add(
        Figure::new(
            format!("{}.catch_up", workload.name()),
            rate(stream_time),
            workload.unit(),
        )
        .baseline(rate(recv_time))
        .note(
            "catch-up: the proxy's ReplicationStream (decode + assemble, no shape logs, no HTTP) \
             vs pg_recvlogical --endpos, slots read after the writes",
        ),
    );
    Ok(())
}

/// One round on tables of its own: the baseline alone, then a fresh proxy on a fresh slot.
async fn run_round(
    bench: &Bench,
    db: &Database,
    client: &mut tokio_postgres::Client,
    workload: Workload,
    round: usize,
) -> anyhow::Result<Round> {
    let rows = workload.rows(bench);
    let commits = workload.commits(rows);
    let tables = [
        format!("baseline_rows_{round}"),
        format!("proxied_rows_{round}"),
    ];
    for table in &tables {
        create_rows_table(client, table).await?;
    }
    let slot = |what: &str| format!("{}_{what}_{round}", workload.name());
    let timeout = Duration::from_secs(120);

    // The baseline, live, alone on the database.
    let live =
        LiveRecvlogical::start(&bench.cluster, db, client, &slot("recvlogical_live")).await?;
    let baseline_write = write(db, workload, &tables[0], rows).await?;
    let seen = live.wait_for(rows, commits, timeout).await?;
    live.stop(client).await;
    let baseline_end = seen
        .last_bytes_at
        .context("pg_recvlogical received nothing")?;

    // The proxy, live, with one SSE client.
    let proxy = ProxyChild::start_on_slot(db, &slot("proxy"), &[]).await?;
    let subscription = sse::fetch(proxy.addr, &format!("table={}", tables[1]), |_| {}).await?;
    let stream = sse::Live::open(proxy.addr, &subscription).await?;
    let counter = sse::count_changes(stream, rows);
    let cpu_before = proxy.cpu_seconds()?;
    let proxied_write = write(db, workload, &tables[1], rows).await?;
    let last = tokio::time::timeout(timeout, counter)
        .await
        .context("the SSE client did not receive every row in time")???
        .context("no rows")?;
    let proxy_cpu = proxy.cpu_seconds()? - cpu_before;
    proxy.stop().await;
    Ok(Round {
        baseline: elapsed(baseline_write.origin(workload), baseline_end),
        ours: elapsed(proxied_write.origin(workload), last),
        baseline_write,
        proxied_write,
        proxy_cpu,
    })
}

/// A table of the workload's rows, in the `shapesync` publication.
pub async fn create_rows_table(
    client: &mut tokio_postgres::Client,
    table: &str,
) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, title text NOT NULL, n int,
                                   at timestamptz NOT NULL DEFAULT now())"
        ))
        .await?;
    prepare_table(
        client,
        "shapesync",
        &QualifiedName::new("public", table),
        Duration::from_secs(5),
    )
    .await?;
    Ok(())
}

fn elapsed(from: Instant, to: Instant) -> Duration {
    to.saturating_duration_since(from)
        .max(Duration::from_micros(1))
}

/// Writes the workload into `table` on a connection of its own.
async fn write(
    db: &Database,
    workload: Workload,
    table: &str,
    rows: u64,
) -> anyhow::Result<Written> {
    let client = db.connect().await?;
    let rows = i32::try_from(rows)?;
    let started;
    match workload {
        Workload::BigTxn => {
            started = Instant::now();
            client
                .execute(
                    &format!(
                        "INSERT INTO {table} (id, title, n)
                         SELECT g, 'title ' || g, g FROM generate_series(1, $1) g"
                    ),
                    &[&rows],
                )
                .await?;
        }
        Workload::SmallTxns => {
            client.batch_execute("SET synchronous_commit = off").await?;
            let insert = client
                .prepare(&format!(
                    "INSERT INTO {table} (id, title, n) VALUES ($1, 'one row', $1)"
                ))
                .await?;
            started = Instant::now();
            let mut results = futures_util::stream::iter(1..rows)
                .map(|id| {
                    let (client, insert) = (&client, &insert);
                    async move { client.execute(insert, &[&id]).await }
                })
                .buffer_unordered(PIPELINE);
            while let Some(result) = results.next().await {
                result?;
            }
            // Flushes the WAL of every transaction before it.
            client.batch_execute("SET synchronous_commit = on").await?;
            client.execute(&insert, &[&rows]).await?;
        }
    }
    let acked = Instant::now();
    let row = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?;
    let end: Lsn = row
        .get::<_, String>(0)
        .parse()
        .map_err(|e| anyhow::anyhow!("bad LSN: {e:?}"))?;
    Ok(Written {
        started,
        acked,
        end,
    })
}

/// Reads `slot` with the proxy's `ReplicationStream`, discarding rows, until `rows` inserts
/// and `commits` commits have arrived.
async fn stream_catch_up(
    db: &Database,
    slot: &str,
    rows: u64,
    commits: u64,
) -> anyhow::Result<Duration> {
    let config = StreamConfig::new(db.url.clone(), slot.to_owned(), "shapesync".to_owned());
    let (events_tx, mut events) = mpsc::channel(4096);
    let (flushed_tx, flushed_rx) = watch::channel(Lsn::ZERO);
    let started = Instant::now();
    let stream = ReplicationStream::spawn(
        config,
        Lsn::ZERO,
        events_tx,
        flushed_rx,
        CancellationToken::new(),
    );
    // The consumer runs on a task of its own, as it does in the proxy.
    let consumer = tokio::spawn(async move {
        let (mut seen_rows, mut seen_commits) = (0u64, 0u64);
        while let Some(event) = events.recv().await {
            match event {
                ReplicationEvent::Change(WalChange::Insert { new, .. }) => {
                    seen_rows += 1;
                    std::hint::black_box(new);
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    seen_commits += 1;
                    flushed_tx.send_replace(end_lsn);
                    if seen_rows >= rows && seen_commits >= commits {
                        break;
                    }
                }
                _ => {}
            }
        }
        (seen_rows, seen_commits)
    });
    let (seen_rows, seen_commits) = tokio::time::timeout(Duration::from_secs(120), consumer)
        .await
        .context("the replication stream did not catch up in time")??;
    let elapsed = started.elapsed();
    stream.shutdown().await?;
    if seen_rows < rows || seen_commits < commits {
        bail!("the replication stream ended after {seen_rows} rows and {seen_commits} commits");
    }
    Ok(elapsed)
}
