//! How shapes are served, behaviour by behaviour: chunked logs whose URLs are the same for
//! every client, `offset=now`, `log=changes_only`, offsets beyond the log, SSE keep-alives
//! and timeouts, compression, and tombstones.

use std::collections::HashSet;
use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::proxy_process::ProxyProcess;
use tests::shape_consumer::{ConsumerOptions, ShapeConsumer, ShapeSpec};
use tests::shape_http::{self, Event, EventStream};
use tests::{TestDb, shapesync_bin, wait_for};

const WAIT: Duration = Duration::from_secs(30);

async fn setup(name: &str, rows: i32, flags: &[&str]) -> (TestDb, ProxyProcess) {
    let db = TestDb::new(name).await;
    db.connect()
        .await
        .batch_execute(&format!(
            "CREATE TABLE items (id int PRIMARY KEY, title text);
             INSERT INTO items SELECT g, 'item number ' || g FROM generate_series(1, {rows}) g;"
        ))
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, flags).await;
    (db, proxy)
}

fn items() -> ShapeSpec {
    ShapeSpec::table("items", &["id"])
}

/// The commit LSN of the last transaction, once written: `pg_current_wal_insert_lsn()` right
/// after it is above its commit LSN.
async fn wal_position(client: &tokio_postgres::Client) -> u64 {
    let text: String = client
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::text", &[])
        .await
        .unwrap()
        .get(0);
    text.parse().unwrap()
}

/// With small chunks, a response stops at the end of its chunk whatever offset it starts
/// from, so every client walking the log asks the same URLs: two clients catching up later
/// get the same sequence of offsets, a client that followed live passed every chunk end they
/// stop at, and a request from the middle of a chunk ends where the chunk ends.
#[tokio::test]
async fn responses_stop_at_chunk_ends_so_every_client_asks_the_same_offsets() {
    let (db, proxy) = setup("serve_chunks", 100, &["--chunk-bytes", "2048"]).await;
    let live = ShapeConsumer::new(&proxy.url, items(), ConsumerOptions::default());
    let stop = tokio_util::sync::CancellationToken::new();
    live.spawn(stop.clone());
    wait_for("the live client up to date", WAIT, || async {
        live.state().up_to_date.then_some(())
    })
    .await;

    let sql = db.connect().await;
    for t in 0..60 {
        let rows = 1 + t % 5;
        let first = 1000 + t * 10;
        sql.batch_execute(&format!(
            "INSERT INTO items SELECT g, 'transaction {t} row ' || g
             FROM generate_series({first}, {first} + {rows} - 1) g"
        ))
        .await
        .unwrap();
        if t % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    wait_for("the live client past the last write", WAIT, || async {
        (live.state().rows.len() == 100 + 180).then_some(())
    })
    .await;
    stop.cancel();

    let walk = || async {
        let consumer = ShapeConsumer::new(
            &proxy.url,
            items(),
            ConsumerOptions {
                live: false,
                ..Default::default()
            },
        );
        consumer.catch_up().await;
        let state = consumer.state();
        assert!(state.violations.is_empty(), "{:?}", state.violations);
        assert_eq!(state.rows.len(), 280);
        state
            .exchanges
            .iter()
            .map(|e| (e.request_offset.clone(), e.response_offset.clone()))
            .collect::<Vec<_>>()
    };
    let first = walk().await;
    let second = walk().await;
    assert_eq!(
        first, second,
        "two clients catching up asked different URLs"
    );
    let snapshot_chunks = first.iter().filter(|(_, r)| r.starts_with("0_")).count();
    let log_chunks = first.len() - snapshot_chunks;
    assert!(
        snapshot_chunks >= 3 && log_chunks >= 4,
        "2 KB chunks: {snapshot_chunks} snapshot and {log_chunks} log responses: {first:?}"
    );

    let live_state = live.state();
    assert!(
        live_state.violations.is_empty(),
        "{:?}",
        live_state.violations
    );
    let live_ends: HashSet<&String> = live_state
        .exchanges
        .iter()
        .map(|e| &e.response_offset)
        .collect();
    let handle = live_state.handle.clone().unwrap();
    for (request, chunk_end) in first.iter().filter(|(_, r)| !r.starts_with("0_")) {
        assert!(
            live_ends.contains(chunk_end),
            "the live client never stopped at the chunk end {chunk_end}"
        );
        // From the middle of the chunk: the same end.
        let whole = shape_http::get(
            &proxy.http().clone(),
            &proxy.url,
            &format!("table=items&handle={handle}&offset={request}"),
        )
        .await;
        let changes = whole.changes();
        if changes.len() < 2 {
            continue;
        }
        let middle = &changes[changes.len() / 2]["headers"];
        let middle = format!(
            "{}_{}",
            middle["lsn"].as_str().unwrap(),
            middle["op_position"]
        );
        let part = shape_http::get(
            &proxy.http().clone(),
            &proxy.url,
            &format!("table=items&handle={handle}&offset={middle}"),
        )
        .await;
        assert_eq!(
            part.header("electric-offset"),
            Some(chunk_end.as_str()),
            "a request from {middle}, inside the chunk ending at {chunk_end}"
        );
        assert_eq!(part.changes()[..], changes[changes.len() / 2 + 1..]);
    }
}

/// `offset=now`: no rows, the latest offset, up-to-date; then only what comes after.
#[tokio::test]
async fn offset_now_skips_to_the_end_and_then_follows() {
    let (db, proxy) = setup("serve_now", 3, &[]).await;
    let http = proxy.http().clone();
    let now = shape_http::get(&http, &proxy.url, "table=items&offset=now").await;
    assert_eq!(now.status, 200, "{:?}", now.body);
    assert_eq!(now.controls(), ["up-to-date"]);
    assert!(now.changes().is_empty());
    assert_eq!(now.header("electric-up-to-date"), Some(""));
    assert!(now.header("electric-schema").is_some());
    let handle = now.header("electric-handle").unwrap().to_owned();
    let offset = now.header("electric-offset").unwrap().to_owned();
    assert!(offset.starts_with("0_"), "no log yet: {offset}");

    db.connect()
        .await
        .batch_execute("INSERT INTO items VALUES (4, 'four')")
        .await
        .unwrap();
    let next = shape_http::get(
        &http,
        &proxy.url,
        &format!("table=items&handle={handle}&offset={offset}&live=true"),
    )
    .await;
    let changes = next.changes();
    assert_eq!(changes.len(), 1, "{:?}", next.body);
    assert_eq!(changes[0]["value"], json!({"id": "4", "title": "four"}));

    // Later, `now` is the last change's offset.
    let later = shape_http::get(&http, &proxy.url, "table=items&offset=now").await;
    assert_eq!(later.header("electric-handle"), Some(handle.as_str()));
    assert_eq!(
        later.header("electric-offset"),
        next.header("electric-offset")
    );

    let refused = shape_http::get(&http, &proxy.url, "table=items&offset=now&live=true").await;
    assert_eq!(refused.status, 400);
}

/// `log=changes_only`: the snapshot holds no rows (only snapshot-end), changes follow; it is
/// a shape of its own.
#[tokio::test]
async fn changes_only_shapes_start_empty_and_carry_later_changes() {
    let (db, proxy) = setup("serve_changes_only", 3, &[]).await;
    let http = proxy.http().clone();
    let full = shape_http::get(&http, &proxy.url, "table=items&offset=-1").await;
    let first = shape_http::get(&http, &proxy.url, "table=items&offset=-1&log=changes_only").await;
    assert_eq!(first.status, 200);
    assert!(first.changes().is_empty(), "{:?}", first.body);
    assert_eq!(first.controls(), ["snapshot-end"]);
    let handle = first.header("electric-handle").unwrap().to_owned();
    assert_ne!(Some(handle.as_str()), full.header("electric-handle"));

    db.connect()
        .await
        .batch_execute(
            "INSERT INTO items VALUES (4, 'four'); UPDATE items SET title = 'ONE' WHERE id = 1",
        )
        .await
        .unwrap();
    let changes = wait_for("the changes", WAIT, || async {
        let reply = shape_http::get(
            &http,
            &proxy.url,
            &format!("table=items&log=changes_only&handle={handle}&offset=0_0"),
        )
        .await;
        let changes = reply.changes();
        (changes.len() == 2).then_some(changes)
    })
    .await;
    assert_eq!(changes[0]["headers"]["operation"], "insert");
    assert_eq!(changes[0]["value"], json!({"id": "4", "title": "four"}));
    assert_eq!(changes[1]["headers"]["operation"], "update");
    assert_eq!(changes[1]["value"], json!({"id": "1", "title": "ONE"}));
}

/// An offset past everything the proxy has seen waits like a live request: it is answered when
/// the WAL reaches it, and is a 400 if it has not after the long-poll timeout.
#[tokio::test]
async fn an_offset_beyond_the_log_is_out_of_bounds_after_the_long_poll_timeout() {
    let (db, proxy) = setup("serve_bounds", 3, &["--long-poll-timeout", "1s"]).await;
    let http = proxy.http().clone();
    let first = shape_http::get(&http, &proxy.url, "table=items&offset=-1").await;
    let handle = first.header("electric-handle").unwrap().to_owned();
    let sql = db.connect().await;
    let far = wal_position(&sql).await + 1_000_000_000;
    for live in ["&live=true", ""] {
        let started = Instant::now();
        let reply = shape_http::get(
            &http,
            &proxy.url,
            &format!("table=items&handle={handle}&offset={far}_0{live}"),
        )
        .await;
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        assert_eq!(
            reply.body,
            json!({"message":"Invalid request","errors":{"offset":["out of bounds for this shape"]}})
        );
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
            "answered after {waited:?}"
        );
    }

    // Just past the end: valid as soon as the next transaction commits.
    let near = wal_position(&sql).await + 1;
    let request = {
        let http = http.clone();
        let url = proxy.url.clone();
        tokio::spawn(async move {
            shape_http::get(
                &http,
                &url,
                &format!("table=items&handle={handle}&offset={near}_0&live=true"),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    sql.batch_execute("INSERT INTO items VALUES (4, 'four')")
        .await
        .unwrap();
    let reply = request.await.unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.changes().len(), 1);
}

/// SSE: events as they come, each batch ending with up-to-date; a keep-alive comment after
/// 21 s without news; closed after `--sse-timeout`; never compressed; `X-Accel-Buffering: no`.
#[tokio::test]
async fn sse_streams_batches_keeps_alive_and_closes_after_the_sse_timeout() {
    let (db, proxy) = setup("serve_sse", 3, &["--sse-timeout", "25s"]).await;
    let http = reqwest::Client::builder().no_gzip().build().unwrap();
    let first = shape_http::get(&http, &proxy.url, "table=items&offset=-1").await;
    let handle = first.header("electric-handle").unwrap().to_owned();
    let query = format!("table=items&handle={handle}&offset=0_0&live=true&live_sse=true");
    let opened = Instant::now();
    let response = http
        .get(format!("{}/v1/shape?{query}", proxy.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    assert_eq!(response.headers()["cache-control"], "public, max-age=59");
    assert!(response.headers().get("content-encoding").is_none());
    assert!(response.headers().get("electric-cursor").is_some());
    drop(response);

    // The client is up to date at 0_0: the first up-to-date comes with the first change.
    let mut stream = EventStream::open(&http, &proxy.url, &query).await;
    db.connect()
        .await
        .batch_execute("INSERT INTO items VALUES (4, 'four')")
        .await
        .unwrap();
    let messages = stream.until_up_to_date(WAIT).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["value"]["id"], "4");
    match stream.next(Duration::from_secs(23)).await {
        Event::Comment(text) => assert_eq!(text, "keep-alive"),
        other => panic!("expected a keep-alive, got {other:?}"),
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(20),
        "keep-alive after {:?}",
        opened.elapsed()
    );
    assert_eq!(stream.next(Duration::from_secs(10)).await, Event::Closed);
    let lasted = opened.elapsed();
    assert!(
        lasted >= Duration::from_secs(24) && lasted < Duration::from_secs(30),
        "closed after {lasted:?}"
    );
}

/// SSE on an empty shape, as the Electric client walks it: `-1` (snapshot-end), a catch-up
/// (one up-to-date), then a live SSE stream that sends nothing but its opening keep-alive
/// comment while nothing changes (no event: Electric sends keep-alive comments only), and
/// closes after a short `--sse-timeout` on time.
#[tokio::test]
async fn an_idle_sse_stream_sends_nothing_and_closes_after_a_short_sse_timeout_and_behind_a_proxy_opens_with_a_comment()
 {
    let (_db, proxy) = setup("serve_sse_short", 0, &["--sse-timeout", "1s"]).await;
    let http = proxy.http().clone();
    let first = shape_http::get(&http, &proxy.url, "table=items&offset=-1").await;
    assert_eq!(first.controls(), ["snapshot-end"]);
    let handle = first.header("electric-handle").unwrap().to_owned();
    let offset = first.header("electric-offset").unwrap().to_owned();
    let catch_up = shape_http::get(
        &http,
        &proxy.url,
        &format!("table=items&handle={handle}&offset={offset}"),
    )
    .await;
    assert_eq!(catch_up.controls(), ["up-to-date"]);
    let opened = Instant::now();
    let mut stream = EventStream::open(
        &http,
        &proxy.url,
        &format!("table=items&handle={handle}&offset={offset}&live=true&live_sse=true"),
    )
    .await;
    assert_eq!(stream.status, 200);
    // Nothing at all, as from Electric: no event, no comment.
    assert_eq!(stream.next(Duration::from_secs(10)).await, Event::Closed);
    let lasted = opened.elapsed();
    assert!(
        lasted >= Duration::from_millis(900) && lasted < Duration::from_secs(5),
        "closed after {lasted:?}"
    );

    // Through an HTTP proxy it opens with a keep-alive comment (an HTTP/2 edge sends the
    // response head only with the first body byte).
    let mut response = http
        .get(format!(
            "{}/v1/shape?table=items&handle={handle}&offset={offset}&live=true&live_sse=true",
            proxy.url
        ))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .expect("a first chunk at once")
        .unwrap()
        .expect("a chunk before the end");
    assert_eq!(&first[..], b": keep-alive\n\n");
}

/// `--cache-max-age` and `--cache-stale-age` set the `cache-control` of non-live responses
/// after the first; `offset=-1` and live responses keep Electric's own values.
#[tokio::test]
async fn cache_ages_are_configurable_for_non_live_responses() {
    let (_db, proxy) = setup(
        "serve_cache_ages",
        3,
        &[
            "--cache-max-age",
            "7",
            "--cache-stale-age",
            "2m",
            "--long-poll-timeout",
            "1s",
        ],
    )
    .await;
    let http = proxy.http().clone();
    let first = shape_http::get(&http, &proxy.url, "table=items&offset=-1").await;
    assert_eq!(
        first.header("cache-control"),
        Some("public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746")
    );
    let handle = first.header("electric-handle").unwrap().to_owned();
    let query = format!("table=items&handle={handle}&offset=0_0");
    let catch_up = shape_http::get(&http, &proxy.url, &query).await;
    assert_eq!(catch_up.status, 200);
    assert_eq!(
        catch_up.header("cache-control"),
        Some("public, max-age=7, stale-while-revalidate=120")
    );
    let live = shape_http::get(&http, &proxy.url, &format!("{query}&live=true")).await;
    assert_eq!(
        live.header("cache-control"),
        Some("public, max-age=5, stale-while-revalidate=5")
    );

    // Without the flags: Electric's defaults.
    let (_db, proxy) = setup("serve_cache_default", 3, &[]).await;
    let first = shape_http::get(&http, &proxy.url, "table=items&offset=-1").await;
    let handle = first.header("electric-handle").unwrap().to_owned();
    let catch_up = shape_http::get(
        &http,
        &proxy.url,
        &format!("table=items&handle={handle}&offset=0_0"),
    )
    .await;
    assert_eq!(
        catch_up.header("cache-control"),
        Some("public, max-age=60, stale-while-revalidate=300")
    );
}

/// Bodies are gzipped when the client accepts it.
#[tokio::test]
async fn responses_are_gzipped_when_accepted() {
    let (_db, proxy) = setup("serve_gzip", 200, &[]).await;
    let http = reqwest::Client::builder().no_gzip().build().unwrap();
    let url = format!("{}/v1/shape?table=items&offset=-1", proxy.url);
    let plain = http.get(&url).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain: Value = plain.json().await.unwrap();
    let zipped = http
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let bytes = zipped.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    let unzipped: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(unzipped, plain);
    assert!(
        bytes.len() * 3 < text.len(),
        "gzip saves: {} of {}",
        bytes.len(),
        text.len()
    );
}

/// On a table in `--tombstones`, a row whose tombstone column is set is absent: the snapshot
/// skips it, the update that sets it is a `delete`, updates while it is set send nothing, and
/// the update that clears it is an `insert` of the whole row.
#[tokio::test]
async fn setting_a_tombstone_is_a_delete_and_clearing_it_an_insert() {
    let db = TestDb::new("serve_tombstones").await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE notes (id int PRIMARY KEY, title text, deleted_at timestamptz);
         INSERT INTO notes VALUES (1, 'a', NULL), (2, 'b', now()), (3, 'c', NULL);",
    )
    .await
    .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &["--tombstones", "notes"]).await;
    let http = proxy.http().clone();
    let first = shape_http::get(&http, &proxy.url, "table=notes&offset=-1").await;
    assert_eq!(first.status, 200);
    let ids: Vec<Value> = first
        .changes()
        .iter()
        .map(|m| m["value"]["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [json!("1"), json!("3")],
        "the tombstoned row is absent"
    );
    let handle = first.header("electric-handle").unwrap().to_owned();

    for statement in [
        "UPDATE notes SET deleted_at = now() WHERE id = 1",
        "UPDATE notes SET title = 'A' WHERE id = 1",
        "UPDATE notes SET deleted_at = NULL WHERE id = 2",
        "UPDATE notes SET title = 'C' WHERE id = 3",
    ] {
        sql.batch_execute(statement).await.unwrap();
    }
    let changes = wait_for("the changes", WAIT, || async {
        let reply = shape_http::get(
            &http,
            &proxy.url,
            &format!("table=notes&handle={handle}&offset=0_0"),
        )
        .await;
        let changes = reply.changes();
        (changes.len() >= 3).then_some(changes)
    })
    .await;
    let seen: Vec<(&str, &Value)> = changes
        .iter()
        .map(|m| (m["headers"]["operation"].as_str().unwrap(), &m["value"]))
        .collect();
    assert_eq!(
        seen,
        [
            ("delete", &json!({"id": "1"})),
            (
                "insert",
                &json!({"id": "2", "title": "b", "deleted_at": null})
            ),
            ("update", &json!({"id": "3", "title": "C"})),
        ],
        "{changes:?}"
    );
}
