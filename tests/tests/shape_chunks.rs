//! Chunks of about `--chunk-bytes`, in the snapshot and in the log, also inside a transaction:
//! every response but the last of a walk is within 20% of `--chunk-bytes`, a big transaction
//! comes in many responses (only the last carries up-to-date, where clients apply it), and a
//! proxy killed while it writes one loses nothing and duplicates nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tests::proxy_process::ProxyProcess;
use tests::shape_consumer::{ConsumerOptions, ShapeConsumer, ShapeSpec};
use tests::{TestDb, shapesync_bin, wait_for};

/// Generous: the tests' proxy is a debug build, on a machine shared with other builds.
const WAIT: Duration = Duration::from_secs(180);

async fn setup(name: &str, flags: &[&str]) -> (TestDb, ProxyProcess, tokio_postgres::Client) {
    let db = TestDb::new(name).await;
    let sql = db.connect().await;
    sql.batch_execute("CREATE TABLE items (id int PRIMARY KEY, title text)")
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, flags).await;
    (db, proxy, sql)
}

/// One response: its body's size in bytes as sent, its messages and headers.
#[derive(Debug)]
struct Response {
    bytes: usize,
    messages: Vec<Value>,
    offset: String,
    handle: String,
    up_to_date: bool,
}

impl Response {
    fn changes(&self) -> impl Iterator<Item = &Value> {
        self.messages.iter().filter(|m| m.get("key").is_some())
    }

    fn has_control(&self, control: &str) -> bool {
        self.messages
            .iter()
            .any(|m| m["headers"]["control"] == control)
    }
}

async fn get(http: &reqwest::Client, proxy: &ProxyProcess, query: &str) -> Response {
    let response = http
        .get(format!("{}/v1/shape?table=items&{query}", proxy.url))
        .send()
        .await
        .expect("shape request");
    assert_eq!(response.status(), 200, "{query}");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (offset, handle) = (header("electric-offset"), header("electric-handle"));
    let up_to_date = response.headers().contains_key("electric-up-to-date");
    let body = response.bytes().await.expect("body");
    let messages: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
    Response {
        bytes: body.len(),
        messages,
        offset,
        handle,
        up_to_date,
    }
}

/// Non-live requests from `offset` until a response `ends` the walk.
async fn walk(
    http: &reqwest::Client,
    proxy: &ProxyProcess,
    handle: &str,
    mut offset: String,
    ends: impl Fn(&Response) -> bool,
) -> Vec<Response> {
    let mut responses = Vec::new();
    loop {
        let response = get(http, proxy, &format!("handle={handle}&offset={offset}")).await;
        offset = response.offset.clone();
        let done = ends(&response);
        responses.push(response);
        if done {
            return responses;
        }
    }
}

/// Every response but the last is within 20% of `chunk_bytes`.
fn assert_chunk_sizes(responses: &[Response], chunk_bytes: usize, what: &str) {
    let (low, high) = (chunk_bytes * 8 / 10, chunk_bytes * 12 / 10);
    let sizes: Vec<usize> = responses.iter().map(|r| r.bytes).collect();
    for (i, response) in responses[..responses.len() - 1].iter().enumerate() {
        assert!(
            (low..=high).contains(&response.bytes),
            "{what}: response {i} of {} has {} bytes, not within 20% of {chunk_bytes}: {sizes:?}",
            responses.len(),
            response.bytes
        );
        assert!(
            !response.up_to_date,
            "{what}: a non-final response is up-to-date"
        );
    }
}

/// `(id, lsn, op_position, last)` of every change, in order.
fn changes(responses: &[Response]) -> Vec<(i64, String, u64, bool)> {
    responses
        .iter()
        .flat_map(Response::changes)
        .map(|c| {
            (
                c["value"]["id"].as_str().unwrap().parse().unwrap(),
                c["headers"]["lsn"].as_str().unwrap().to_owned(),
                c["headers"]["op_position"].as_u64().unwrap(),
                c["headers"]["last"] == true,
            )
        })
        .collect()
}

/// The changes of one transaction of `rows` inserts with ids from `first`: each once, in order,
/// one LSN, `last` on the final one only.
fn assert_one_transaction(changes: &[(i64, String, u64, bool)], first: i64, rows: i64) {
    let ids: Vec<i64> = changes.iter().map(|c| c.0).collect();
    assert_eq!(ids, (first..first + rows).collect::<Vec<_>>());
    let lsns: BTreeSet<&String> = changes.iter().map(|c| &c.1).collect();
    assert_eq!(lsns.len(), 1, "one transaction: {lsns:?}");
    let ops: Vec<u64> = changes.iter().map(|c| c.2).collect();
    assert_eq!(ops, (0..rows as u64).map(|i| i * 2).collect::<Vec<_>>());
    let lasts: Vec<usize> = (0..changes.len()).filter(|&i| changes[i].3).collect();
    assert_eq!(lasts, [changes.len() - 1]);
}

/// Electric's chunking, from outside: the snapshot of 300 rows of 1 kB and a single live
/// transaction of 35 such rows, served with `--chunk-bytes 10000`, come in responses of
/// 10 kB ± 20% (the last of each excepted); the live client gets the transaction's first chunk,
/// not one 35 kB response.
#[tokio::test]
async fn snapshot_and_log_responses_are_within_a_fifth_of_chunk_bytes_inside_a_transaction() {
    let (_db, proxy, sql) = setup("chunks_sizes", &["--chunk-bytes", "10000"]).await;
    sql.batch_execute(
        "INSERT INTO items SELECT g, repeat(chr(97 + g % 26), 1000) FROM generate_series(1, 300) g",
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let first = get(&http, &proxy, "offset=-1").await;
    let handle = first.handle.clone();
    let offset = first.offset.clone();
    let mut snapshot = vec![first];
    if !snapshot[0].has_control("snapshot-end") {
        snapshot.extend(
            walk(&http, &proxy, &handle, offset, |r| {
                r.has_control("snapshot-end")
            })
            .await,
        );
    }
    assert!(snapshot.len() >= 25, "{} snapshot chunks", snapshot.len());
    assert_chunk_sizes(&snapshot, 10_000, "snapshot");
    let rows: usize = snapshot.iter().map(|r| r.changes().count()).sum();
    assert_eq!(rows, 300);
    let end = get(
        &http,
        &proxy,
        &format!("handle={handle}&offset={}", snapshot.last().unwrap().offset),
    )
    .await;
    assert!(end.up_to_date && end.changes().count() == 0);

    // A live client waits at the end; one transaction of 35 rows of 1 kB commits.
    let live = {
        let (http, url) = (http.clone(), proxy.url.clone());
        let query = format!(
            "table=items&handle={handle}&offset={}&live=true",
            end.offset
        );
        tokio::spawn(async move {
            loop {
                let response = http
                    .get(format!("{url}/v1/shape?{query}"))
                    .send()
                    .await
                    .unwrap();
                // A long-poll timeout answers up-to-date alone: ask again.
                if response.headers()["electric-has-data"] == "false" {
                    continue;
                }
                let up_to_date = response.headers().contains_key("electric-up-to-date");
                let offset = response.headers()["electric-offset"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                return (up_to_date, offset, response.bytes().await.unwrap().len());
            }
        })
    };
    sql.batch_execute(
        "INSERT INTO items SELECT g, repeat('t', 1000) FROM generate_series(1001, 1035) g",
    )
    .await
    .unwrap();
    let (live_up_to_date, live_offset, live_bytes) = live.await.unwrap();
    assert!(
        !live_up_to_date && (8_000..=12_000).contains(&live_bytes),
        "the live response: {live_bytes} bytes, up-to-date {live_up_to_date}"
    );

    let log = walk(&http, &proxy, &handle, end.offset.clone(), |r| r.up_to_date).await;
    assert!(log.len() >= 4, "35 kB in {} responses", log.len());
    assert_chunk_sizes(&log, 10_000, "the transaction");
    assert_eq!(log[0].offset, live_offset, "the live client's chunk end");
    assert_one_transaction(&changes(&log), 1001, 35);
}

/// A transaction of 100,000 rows (about 20 MB of messages) with `--chunk-bytes 1048576`: a
/// live client gets 1 MiB, and the whole comes in at least 15 responses of 1 MiB ± 20%.
#[tokio::test]
async fn a_transaction_of_100k_rows_comes_in_many_responses() {
    let (_db, proxy, sql) = setup("chunks_100k", &["--chunk-bytes", "1048576"]).await;
    let http = reqwest::Client::new();
    let first = get(&http, &proxy, "offset=-1").await;
    let handle = first.handle.clone();
    let end = get(
        &http,
        &proxy,
        &format!("handle={handle}&offset={}", first.offset),
    )
    .await;
    assert!(end.up_to_date);
    sql.batch_execute(
        "INSERT INTO items SELECT g, 'row number ' || g FROM generate_series(1, 100000) g",
    )
    .await
    .unwrap();
    // Long-polls until the transaction is there (a long-poll timeout answers up-to-date alone).
    let live = loop {
        let live = get(
            &http,
            &proxy,
            &format!("handle={handle}&offset={}&live=true", end.offset),
        )
        .await;
        if live.changes().count() > 0 {
            break live;
        }
    };
    assert!(
        !live.up_to_date && live.bytes <= 1_048_576 * 12 / 10,
        "the live response: {} bytes, up-to-date {}",
        live.bytes,
        live.up_to_date
    );
    let log = walk(&http, &proxy, &handle, end.offset.clone(), |r| r.up_to_date).await;
    let total: usize = log.iter().map(|r| r.bytes).sum();
    assert!(log.len() >= 15, "{total} bytes in {} responses", log.len());
    assert_chunk_sizes(&log, 1_048_576, "100k rows");
    assert_one_transaction(&changes(&log), 1, 100_000);
}

/// The shape's log file, and its length.
fn changes_log(storage: &Path) -> PathBuf {
    let shapes = storage.join("v1/shapes");
    let dir = std::fs::read_dir(&shapes)
        .expect("shapes directory")
        .filter_map(Result::ok)
        .find(|e| e.path().join("changes.log").exists())
        .expect("a shape directory");
    dir.path().join("changes.log")
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// `kill -9` while the proxy writes a transaction of 30,000 rows (6 MB) into a shape log with
/// chunk ends inside it: the restarted proxy cuts the half-written transaction off, Postgres
/// sends it again, and a client that followed the shape throughout (and one catching up
/// afterwards) gets every row exactly once, at the same offsets.
#[tokio::test]
async fn a_proxy_killed_while_writing_a_big_transaction_loses_and_duplicates_nothing() {
    const ROWS: i64 = 30_000;
    let (_db, mut proxy, sql) = setup("chunks_kill9", &["--chunk-bytes", "65536"]).await;
    sql.batch_execute("INSERT INTO items SELECT g, 'before ' || g FROM generate_series(1, 20) g")
        .await
        .unwrap();
    let spec = ShapeSpec::table("items", &["id"]);
    let follower = ShapeConsumer::new(&proxy.url, spec.clone(), ConsumerOptions::default());
    let stop = tokio_util::sync::CancellationToken::new();
    follower.spawn(stop.clone());
    wait_for("the follower up to date", WAIT, || async {
        follower.state().up_to_date.then_some(())
    })
    .await;
    let log = changes_log(&proxy.storage_dir());
    let mut next_id = 1000;
    let mut killed_mid_transaction = false;
    // The window is the time the proxy takes to write one transaction: try again (with a new
    // transaction) when the kill came after its commit record.
    for attempt in 0..5 {
        let before = len(&log);
        let first = next_id;
        next_id += ROWS;
        sql.batch_execute(&format!(
            "INSERT INTO items SELECT g, 'attempt {attempt} row ' || g
             FROM generate_series({first}, {first} + {ROWS} - 1) g"
        ))
        .await
        .unwrap();
        // Written through in 256 KiB pieces before the commit record makes it visible.
        let deadline = tokio::time::Instant::now() + WAIT;
        while len(&log) < before + 1_000_000 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the proxy did not write the transaction"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        proxy.kill9().await;
        let killed_at = len(&log);
        // What a restart does first: open the log, cutting it back to its last commit.
        let dir = proxy::storage::shape_dir::ShapeDir::at(log.parent().unwrap());
        let reopened =
            proxy::storage::shape_log::ShapeLog::open(&dir, 65536).expect("the killed log opens");
        drop(reopened);
        let cut = len(&log);
        eprintln!("attempt {attempt}: killed at {killed_at} bytes, cut back to {cut}");
        proxy.restart().await;
        wait_for("the transaction again", WAIT, || async {
            follower
                .state()
                .rows
                .contains_key(&format!("\"public\".\"items\"/\"{}\"", first + ROWS - 1))
                .then_some(())
        })
        .await;
        if cut < killed_at {
            killed_mid_transaction = true;
            break;
        }
    }
    assert!(
        killed_mid_transaction,
        "every kill came after the commit record"
    );
    let sql_rows: i64 = sql
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    wait_for("the follower has every row", WAIT, || async {
        (follower.state().rows.len() as i64 == sql_rows).then_some(())
    })
    .await;
    stop.cancel();
    let followed = follower.state();
    assert!(followed.violations.is_empty(), "{:?}", followed.violations);
    assert_eq!(followed.refetches, 0, "resumed without a refetch");
    assert_eq!(followed.changes as i64, sql_rows - 20, "each change once");

    let late = ShapeConsumer::new(
        &proxy.url,
        spec,
        ConsumerOptions {
            live: false,
            ..Default::default()
        },
    );
    late.catch_up().await;
    let caught_up = late.state();
    assert!(
        caught_up.violations.is_empty(),
        "{:?}",
        caught_up.violations
    );
    assert_eq!(caught_up.rows, followed.rows);
    assert_eq!(caught_up.handle, followed.handle);
}
