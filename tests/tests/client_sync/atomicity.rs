//! Readers never see half a batch: a second SQLite connection polls the mirror while an initial
//! snapshot arrives in many responses and while big Postgres transactions arrive in several
//! (the proxy's log chunks are 4 KiB here, and a chunk ends inside a transaction) and are
//! applied in many small steps, live over SSE and over long-polls.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use client_sqlite::rusqlite::{Connection, OpenFlags};
use client_sqlite::{Client, ShapePhase};

use crate::gate::{Hold, gated_todos_client};
use crate::support::{CLIENT_TODOS, PG_TODOS, WAIT, count, env, eventually, rows, todos};

const ROWS: i64 = 2000;
const ADDED_PER_GENERATION: i64 = 100;
const GENERATIONS: i64 = 4;

/// What one poll of the mirror saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// The table does not exist yet (the first snapshot has not committed).
    NoTable,
    /// Row count, distinct titles, the (lowest) title.
    Rows(i64, i64, Option<String>),
}

/// The reader on its own thread and connection, and what it tells the test.
struct Reader {
    stop: Arc<AtomicBool>,
    /// The newest generation seen (`gen k` titles), −1 before any.
    generation: Arc<AtomicI64>,
    /// Polls that saw no table while the client reported the snapshot as in progress.
    polls_mid_snapshot: Arc<AtomicU64>,
    snapshot_in_progress: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<Seen>)>,
}

impl Reader {
    fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicI64::new(-1));
        let polls_mid_snapshot = Arc::new(AtomicU64::new(0));
        let snapshot_in_progress = Arc::new(AtomicBool::new(false));
        let (stop2, generation2, mid2, in_progress2) = (
            stop.clone(),
            generation.clone(),
            polls_mid_snapshot.clone(),
            snapshot_in_progress.clone(),
        );
        let thread = std::thread::spawn(move || {
            let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("a second connection");
            let mut polls = 0;
            let mut seen: Vec<Seen> = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                let now = poll(&conn);
                polls += 1;
                if now == Seen::NoTable && in_progress2.load(Ordering::SeqCst) {
                    mid2.fetch_add(1, Ordering::SeqCst);
                }
                if let Seen::Rows(_, _, Some(title)) = &now
                    && let Some(k) = title.strip_prefix("gen ").and_then(|k| k.parse().ok())
                {
                    generation2.fetch_max(k, Ordering::SeqCst);
                }
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
            }
            (polls, seen)
        });
        Self {
            stop,
            generation,
            polls_mid_snapshot,
            snapshot_in_progress,
            thread,
        }
    }

    fn finish(self) -> (u64, Vec<Seen>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the reader thread")
    }
}

fn poll(conn: &Connection) -> Seen {
    let result = conn.query_row(
        "SELECT count(*), count(DISTINCT title), min(title) FROM todos",
        [],
        |r| Ok(Seen::Rows(r.get(0)?, r.get(1)?, r.get(2)?)),
    );
    match result {
        Ok(seen) => seen,
        Err(err) if err.to_string().contains("no such table") => Seen::NoTable,
        Err(err) => panic!("the second connection failed: {err}"),
    }
}

/// Every state a reader may see: no table, or generation k whole (all its rows, one title).
fn whole(seen: &Seen) -> bool {
    match seen {
        Seen::NoTable => true,
        Seen::Rows(count, 1, Some(title)) => title
            .strip_prefix("gen ")
            .and_then(|k| k.parse::<i64>().ok())
            .is_some_and(|k| *count == ROWS + k * ADDED_PER_GENERATION),
        Seen::Rows(..) => false,
    }
}

#[tokio::test]
async fn a_second_connection_never_sees_half_a_snapshot_or_half_a_transaction_over_sse() {
    never_half_a_batch("client_atomicity_sse", true).await;
}

#[tokio::test]
async fn a_second_connection_never_sees_half_a_snapshot_or_half_a_transaction_over_long_polls() {
    never_half_a_batch("client_atomicity_long_poll", false).await;
}

/// In how many responses of a walk of the shape `spec` (from `-1` to up-to-date) each
/// transaction, by LSN, came.
async fn responses_per_transaction(
    base_url: &str,
    spec: &client_sqlite::ShapeSpec,
) -> std::collections::BTreeMap<String, usize> {
    let http = reqwest::Client::new();
    let mut per_lsn = std::collections::BTreeMap::new();
    let (mut handle, mut offset) = (None::<String>, "-1".to_owned());
    loop {
        let mut url = reqwest::Url::parse(&format!("{base_url}/v1/shape")).unwrap();
        url.query_pairs_mut()
            .extend_pairs(spec.query_pairs())
            .append_pair("offset", &offset);
        if let Some(handle) = &handle {
            url.query_pairs_mut().append_pair("handle", handle);
        }
        let response = http.get(url).send().await.expect("shape request");
        assert_eq!(response.status(), 200);
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        (handle, offset) = (Some(header("electric-handle")), header("electric-offset"));
        let up_to_date = response.headers().contains_key("electric-up-to-date");
        let messages: Vec<serde_json::Value> = response.json().await.expect("JSON");
        let lsns: std::collections::BTreeSet<String> = messages
            .iter()
            .filter_map(|m| m["headers"]["lsn"].as_str().map(str::to_owned))
            .collect();
        for lsn in lsns {
            *per_lsn.entry(lsn).or_default() += 1;
        }
        if up_to_date {
            return per_lsn;
        }
    }
}

async fn never_half_a_batch(name: &str, sse: bool) {
    let env = env(name).await;
    env.sql(&format!(
        "INSERT INTO todos (id, owner_id, title, position)
         SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'alice', 'gen 0', g
         FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    let mut config = env.config("a.db", &[todos()]);
    config.online = false; // the reader starts before the first byte arrives
    config.sync.chunk_rows = 50; // each batch is applied in many steps
    config.sync.sse = sse;
    let client = Client::open(config).await.expect("open");
    let reader = Reader::start(env.dir.path().join("a.db"));
    let mut status = client.watch_status();
    let in_progress = reader.snapshot_in_progress.clone();
    let watcher = tokio::spawn(async move {
        let _ = status
            .wait_for(|s| {
                let phase = s.shapes.get("todos");
                in_progress.store(phase == Some(&ShapePhase::Syncing), Ordering::SeqCst);
                phase == Some(&ShapePhase::UpToDate)
            })
            .await;
        in_progress.store(false, Ordering::SeqCst);
    });
    client.set_online(true);
    client.wait_synced(WAIT).await.expect("synced");
    watcher.await.expect("status watcher");
    let mid_snapshot = reader.polls_mid_snapshot.load(Ordering::SeqCst);

    // Transactions that rewrite every row and add more, one at a time: each starts once the
    // reader has seen the one before, so it polls throughout every transaction's arrival.
    for k in 1..=GENERATIONS {
        let seen = reader.generation.clone();
        eventually("the reader sees the previous generation", || {
            let seen = seen.clone();
            async move { seen.load(Ordering::SeqCst) == k - 1 }
        })
        .await;
        env.sql(&format!(
            "BEGIN;
             UPDATE todos SET title = 'gen {k}', position = position + 1;
             INSERT INTO todos (id, owner_id, title, position)
             SELECT ('00000000-0000-4000-9000-' || lpad(g::text, 12, '0'))::uuid, 'alice', 'gen {k}', g
             FROM generate_series({first}, {last}) g;
             COMMIT;",
            first = (k - 1) * ADDED_PER_GENERATION + 1,
            last = k * ADDED_PER_GENERATION,
        ))
        .await;
    }
    let seen = reader.generation.clone();
    eventually("the reader sees the last generation", || {
        let seen = seen.clone();
        async move { seen.load(Ordering::SeqCst) == GENERATIONS }
    })
    .await;
    let (polls, observed) = reader.finish();

    let partial: Vec<&Seen> = observed.iter().filter(|s| !whole(s)).collect();
    assert!(partial.is_empty(), "partial states seen: {partial:?}");
    assert_eq!(observed.first(), Some(&Seen::NoTable));
    let generations: Vec<&Seen> = observed
        .iter()
        .filter(|s| matches!(s, Seen::Rows(..)))
        .collect();
    assert_eq!(
        generations.len() as i64,
        GENERATIONS + 1,
        "each generation seen once, in order: {generations:?}"
    );
    assert!(
        mid_snapshot > 0,
        "the reader polled while the snapshot was arriving ({polls} polls in all)"
    );
    assert_eq!(
        rows(&client, CLIENT_TODOS).await,
        env.pg_rows(PG_TODOS).await
    );
    // Each generation's transaction came in several responses: the client did hold a batch
    // open across them.
    let spread = responses_per_transaction(&env.proxy.url, &todos()).await;
    assert_eq!(spread.len() as i64, GENERATIONS, "{spread:?}");
    assert!(spread.values().all(|n| *n >= 10), "{spread:?}");
}

/// A transaction that takes longer to stream than one SSE response lasts comes over several
/// streams, each going on from the last change the one before delivered, and is committed
/// whole. Here a gate ends every SSE response after 64 KiB, as the proxy does at its SSE
/// timeout: rolling back at the end of each stream would start every one from the same
/// offset, forever.
#[tokio::test]
async fn a_transaction_longer_than_one_sse_stream_goes_on_in_the_next() {
    const TODOS: i64 = 5_000;
    let env = env("client_sse_resume").await;
    let (gate, client) = gated_todos_client(&env, Hold::Nothing, |_| {}).await;
    gate.cut_sse_after(64 * 1024);
    env.sql(&format!(
        "INSERT INTO todos (id, owner_id, title, position)
         SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'alice', 'big', g
         FROM generate_series(1, {TODOS}) g"
    ))
    .await;
    eventually("the whole transaction", || async {
        count(&client, "SELECT count(*) FROM todos").await == TODOS
    })
    .await;
    assert_eq!(
        rows(&client, CLIENT_TODOS).await,
        env.pg_rows(PG_TODOS).await
    );
    assert_eq!(client.status().refetches, 0);
}
