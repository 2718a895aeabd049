//! How fast the replication stream reads, against `pg_recvlogical` on the same cluster.
//!
//! ```text
//! cargo run --release -p tests --bin replication_bench [-- --rounds 3]
//! ```
//!
//! Two workloads, each written once and then read by every reader from a slot of its own
//! created before the writes (catch-up: the WAL is all there, the server decodes as fast as
//! the reader takes it):
//!
//! - one INSERT transaction of 200,000 rows;
//! - 20,000 one-row INSERT transactions (`synchronous_commit = off`).
//!
//! Readers: `ReplicationStream` (pgoutput decoded and assembled into rows, consumer
//! discarding them) and `pg_recvlogical` (pgoutput protocol 1, writing to /dev/null,
//! stopping at the LSN the last commit ended at). Rounds alternate the order; the median
//! is reported. This is a measurement, not a test: it asserts nothing.

use std::time::{Duration, Instant};

use proxy::local_cluster::ClusterOptions;
use proxy::replication::{
    ReplicationEvent, ReplicationStream, StreamConfig, WalChange, ensure_publication, prepare_table,
};
use shapes::lsn::Lsn;
use shapes::schema::QualifiedName;
use tests::TestDb;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const BIG_ROWS: i32 = 200_000;
const SMALL_TXS: i32 = 20_000;

#[derive(Debug, Clone, Copy)]
enum Workload {
    /// One transaction of this many rows.
    Big,
    /// This many one-row transactions.
    Small,
}

impl Workload {
    fn units(self) -> (u64, &'static str) {
        match self {
            Workload::Big => (BIG_ROWS as u64, "rows/s"),
            Workload::Small => (SMALL_TXS as u64, "tx/s"),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(3usize);
    let options = ClusterOptions {
        settings: vec![("synchronous_commit".into(), "off".into())],
        ..ClusterOptions::default()
    };
    let db = TestDb::with_options("bench", options).await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE bench (id int PRIMARY KEY, title text NOT NULL, n int,
                                 at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .expect("create table");
    ensure_publication(&client, "shapesync")
        .await
        .expect("publication");
    prepare_table(
        &mut client,
        "shapesync",
        &QualifiedName::new("public", "bench"),
        Duration::from_secs(5),
    )
    .await
    .expect("prepare table");

    println!("replication_bench: {rounds} rounds per reader, catch-up, median reported");
    for workload in [Workload::Big, Workload::Small] {
        let slots = create_slots(&client, rounds).await;
        let end = write(&client, workload).await;
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for (round, (our_slot, their_slot)) in slots.iter().enumerate() {
            // Alternate who reads first, so that neither always finds the WAL cached.
            if round % 2 == 0 {
                theirs.push(run_recvlogical(&db, their_slot, end).await);
                ours.push(run_stream(&db, our_slot, workload).await);
            } else {
                ours.push(run_stream(&db, our_slot, workload).await);
                theirs.push(run_recvlogical(&db, their_slot, end).await);
            }
        }
        report(workload, &mut ours, &mut theirs);
    }
}

/// One slot per reader and round, created before the writes.
async fn create_slots(client: &tokio_postgres::Client, rounds: usize) -> Vec<(String, String)> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut slots = Vec::new();
    for _ in 0..rounds {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pair = (format!("stream_{n}"), format!("recvlogical_{n}"));
        for slot in [&pair.0, &pair.1] {
            client
                .execute(
                    "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[slot],
                )
                .await
                .expect("create slot");
        }
        slots.push(pair);
    }
    slots
}

/// Writes the workload; returns the WAL insert position after its last commit.
async fn write(client: &tokio_postgres::Client, workload: Workload) -> Lsn {
    let started = Instant::now();
    match workload {
        Workload::Big => {
            client
                .execute(
                    "INSERT INTO bench (id, title, n)
                     SELECT g, 'title ' || g, g FROM generate_series(1, $1) g",
                    &[&BIG_ROWS],
                )
                .await
                .expect("big insert");
        }
        Workload::Small => {
            let insert = client
                .prepare("INSERT INTO bench (id, title, n) VALUES ($1, 'one row', $1)")
                .await
                .expect("prepare");
            for id in BIG_ROWS + 1..=BIG_ROWS + SMALL_TXS {
                client.execute(&insert, &[&id]).await.expect("insert");
            }
        }
    }
    let row = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .expect("lsn");
    let end: Lsn = row.get::<_, String>(0).parse().expect("an LSN");
    // With synchronous_commit = off the WAL writer flushes a little later, and walsenders
    // send only flushed WAL: wait for it, so that the first reader does not pay for it.
    while flushed_lsn(client).await < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "  wrote {workload:?} in {:.2?} (WAL up to {end})",
        started.elapsed()
    );
    end
}

async fn flushed_lsn(client: &tokio_postgres::Client) -> Lsn {
    let row = client
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .await
        .expect("flush lsn");
    row.get::<_, String>(0).parse().expect("an LSN")
}

/// Reads the workload through a `ReplicationStream`, the consumer counting and discarding.
async fn run_stream(db: &TestDb, slot: &str, workload: Workload) -> Duration {
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
    let (want_rows, want_commits) = match workload {
        Workload::Big => (i64::from(BIG_ROWS), 1),
        Workload::Small => (i64::from(SMALL_TXS), i64::from(SMALL_TXS)),
    };
    // The consumer runs on a task of its own, as it would in the proxy.
    let consumer = tokio::spawn(async move {
        let (mut rows, mut commits) = (0i64, 0i64);
        while let Some(event) = events.recv().await {
            match event {
                ReplicationEvent::Change(WalChange::Insert { new, .. }) => {
                    rows += 1;
                    std::hint::black_box(new);
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    commits += 1;
                    flushed_tx.send_replace(end_lsn);
                    if rows >= want_rows && commits >= want_commits {
                        break;
                    }
                }
                _ => {}
            }
        }
        (rows, commits)
    });
    let (rows, commits) = consumer.await.expect("consumer");
    let elapsed = started.elapsed();
    stream.shutdown().await.expect("stream stops");
    assert_eq!((rows, commits), (want_rows, want_commits));
    elapsed
}

/// Reads the workload with `pg_recvlogical`, to /dev/null, until `end`.
async fn run_recvlogical(db: &TestDb, slot: &str, end: Lsn) -> Duration {
    let mut command = db.cluster.program_command("pg_recvlogical");
    command.args([
        "-d",
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname={}",
            db.cluster.port(),
            db.name
        ),
        &format!("--slot={slot}"),
        "--start",
        "-o",
        "proto_version=1",
        "-o",
        "publication_names=shapesync",
        "-o",
        "messages=true",
        &format!("--endpos={end}"),
        "--no-loop",
        "--fsync-interval=0",
        "-f",
        "/dev/null",
    ]);
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run pg_recvlogical");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "pg_recvlogical failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

fn report(workload: Workload, ours: &mut [Duration], theirs: &mut [Duration]) {
    let (units, unit) = workload.units();
    let rate = |d: Duration| units as f64 / d.as_secs_f64();
    ours.sort();
    theirs.sort();
    let (our, their) = (ours[ours.len() / 2], theirs[theirs.len() / 2]);
    let list = |ds: &[Duration]| {
        ds.iter()
            .map(|d| format!("{:.0}", rate(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("{workload:?}: {units} units");
    println!(
        "  ReplicationStream: {:>9.0} {unit} ({our:.2?})   all rounds: {}",
        rate(our),
        list(ours)
    );
    println!(
        "  pg_recvlogical:    {:>9.0} {unit} ({their:.2?})   all rounds: {}",
        rate(their),
        list(theirs)
    );
    println!(
        "  ratio stream / pg_recvlogical: {:.2}",
        rate(our) / rate(their)
    );
}
