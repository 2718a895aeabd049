//! Shapes across proxy restarts: the same handles and offsets, nothing served twice, deleted
//! shapes gone for good, and clients resuming where they were without a refetch.

use std::time::Duration;

use tests::proxy_process::ProxyProcess;
use tests::shape_consumer::{ConsumerOptions, ShapeConsumer, ShapeSpec};
use tests::shape_http::{self, EventStream};
use tests::{TestDb, shapesync_bin, wait_for};

const WAIT: Duration = Duration::from_secs(30);

async fn setup(name: &str, flags: &[&str]) -> (TestDb, ProxyProcess) {
    let db = TestDb::new(name).await;
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, title text);
             CREATE TABLE other (id int PRIMARY KEY);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, flags).await;
    (db, proxy)
}

fn catch_up_consumer(proxy: &ProxyProcess, spec: ShapeSpec) -> ShapeConsumer {
    ShapeConsumer::new(
        &proxy.url,
        spec,
        ConsumerOptions {
            live: false,
            ..Default::default()
        },
    )
}

/// Before a restart a client got offset `L_0` (its last change) and, from an up-to-date, a
/// `global_last_seen_lsn` G above it (a later transaction touched no shape). Right after the
/// restart, with nothing written since, both must still be valid positions: a long-poll at
/// `L_0` times out normally, and an SSE stream at `G_0` (what the Electric client continues
/// from) says up-to-date at G or later, never earlier.
#[tokio::test]
async fn after_a_restart_known_offsets_are_served_and_global_last_seen_never_goes_back() {
    let (db, mut proxy) = setup("restart_offsets", &["--long-poll-timeout", "1s"]).await;
    let items = ShapeSpec::table("items", &["id"]);
    let consumer = catch_up_consumer(&proxy, items.clone());
    consumer.catch_up().await;
    // `other` joins the publication; its rows are in no shape.
    catch_up_consumer(
        &proxy,
        ShapeSpec::table("other", &["id"]).filter("id < 0", &[]),
    )
    .catch_up()
    .await;
    let sql = db.connect().await;
    sql.batch_execute("UPDATE items SET title = 'changed' WHERE id = 1")
        .await
        .unwrap();
    sql.batch_execute("INSERT INTO other VALUES (5)")
        .await
        .unwrap();
    let handle = consumer.state().handle.unwrap();
    let before_restart = wait_for("the update, and then the insert's LSN", WAIT, || async {
        consumer.catch_up().await;
        let state = consumer.state();
        let offset = state.offset.clone()?;
        let lsn: u64 = offset.split('_').next()?.parse().ok()?;
        (state.changes == 1 && state.global_last_seen > lsn)
            .then_some((offset, state.global_last_seen))
    })
    .await;
    let (offset, global) = before_restart;

    proxy.restart().await;

    let http = proxy.http().clone();
    let reply = shape_http::get(
        &http,
        &proxy.url,
        &format!("table=items&handle={handle}&offset={offset}&live=true"),
    )
    .await;
    assert_eq!(
        reply.status, 200,
        "a live request at the offset of a change the restarted proxy holds: {:?}",
        reply.body
    );
    assert_eq!(reply.header("electric-has-data"), Some("false"));
    assert_eq!(reply.header("electric-offset"), Some(offset.as_str()));
    let after = shape_http::global_last_seen(reply.body.as_array().unwrap()).unwrap();
    assert!(
        after >= global,
        "global_last_seen_lsn went back from {global} to {after}"
    );

    // At `G_0` the client is up to date: the stream says nothing until the next change, and
    // then carries that change alone (nothing before G again).
    let mut stream = EventStream::open(
        &http,
        &proxy.url,
        &format!("table=items&handle={handle}&offset={global}_0&live=true&live_sse=true"),
    )
    .await;
    assert_eq!(stream.status, 200);
    sql.batch_execute("UPDATE items SET title = 'after the restart' WHERE id = 2")
        .await
        .unwrap();
    let messages = stream.until_up_to_date(WAIT).await;
    assert_eq!(messages.len(), 2, "the new change only: {messages:?}");
    assert_eq!(messages[0]["value"]["title"], "after the restart");
    let after = shape_http::global_last_seen(&messages).unwrap();
    assert!(
        after > global,
        "SSE up-to-date at {after} after the client had {global}"
    );
}

fn shape_dirs(proxy: &ProxyProcess) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(proxy.storage_dir().join("v1/shapes"))
        .expect("shapes directory")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    dirs
}

/// A restart keeps every shape under its handle, and a client walking it from `-1` asks the
/// same offsets as before; a deleted shape's directory is gone and its handle gets a 409.
#[tokio::test]
async fn a_restarted_proxy_keeps_handles_and_offsets_and_forgets_deleted_shapes() {
    let (db, mut proxy) = setup("restart_keep", &["--chunk-bytes", "1024"]).await;
    let sql = db.connect().await;
    for t in 0..20 {
        sql.batch_execute(&format!(
            "INSERT INTO items VALUES ({}, 'later {t}'); UPDATE items SET title = 'u{t}' WHERE id = {}",
            100 + t,
            1 + t % 20
        ))
        .await
        .unwrap();
    }
    let kept = ShapeSpec::table("items", &["id"]);
    let deleted = ShapeSpec::table("items", &["id"]).filter("id > 10", &[]);
    let proxy_url = proxy.url.clone();
    let walk = |spec: ShapeSpec| {
        let proxy_url = proxy_url.clone();
        async move {
            let consumer = ShapeConsumer::new(
                &proxy_url,
                spec,
                ConsumerOptions {
                    live: false,
                    ..Default::default()
                },
            );
            consumer.catch_up().await;
            consumer.state()
        }
    };
    let before = walk(kept.clone()).await;
    let gone = walk(deleted.clone()).await;
    assert!(before.violations.is_empty(), "{:?}", before.violations);
    assert!(
        before.exchanges.len() > 3,
        "several chunks: {:?}",
        before.exchanges
    );
    let kept_handle = before.handle.clone().unwrap();
    let gone_handle = gone.handle.clone().unwrap();
    assert_eq!(shape_dirs(&proxy).len(), 2);

    let http = proxy.http().clone();
    let deletion = http
        .delete(format!("{}/v1/shape?handle={gone_handle}", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(deletion.status(), 202);
    proxy.restart().await;

    assert_eq!(shape_dirs(&proxy), std::slice::from_ref(&kept_handle));
    let after = walk(kept).await;
    assert!(after.violations.is_empty(), "{:?}", after.violations);
    assert_eq!(after.handle.as_deref(), Some(kept_handle.as_str()));
    assert_eq!(
        after.exchanges, before.exchanges,
        "the same URLs after the restart"
    );
    assert_eq!(after.rows, before.rows);

    let reply = shape_http::get(
        &http,
        &proxy.url,
        &format!(
            "table=items&where=id%20%3E%2010&handle={gone_handle}&offset={}",
            gone.offset.unwrap()
        ),
    )
    .await;
    assert_eq!(reply.status, 409, "{:?}", reply.body);
    assert_ne!(reply.header("electric-handle"), Some(gone_handle.as_str()));
}

/// A kill -9 while the proxy writes a 40k-row transaction to a shape log: after the restart
/// the log holds the transaction whole, once (the torn part is cut off, Postgres sends the
/// transaction again), and a client that had the earlier changes resumes without a refetch.
#[tokio::test]
async fn a_proxy_killed_in_the_middle_of_a_big_transaction_serves_it_whole_and_once() {
    let (db, mut proxy) = setup("restart_torn", &[]).await;
    let follower = ShapeConsumer::new(
        &proxy.url,
        ShapeSpec::table("items", &["id"]),
        ConsumerOptions::default(),
    );
    follower.catch_up().await;
    let handle = follower.state().handle.unwrap();
    let log = proxy
        .storage_dir()
        .join("v1/shapes")
        .join(&handle)
        .join("changes.log");
    let sql = db.connect().await;
    sql.batch_execute(
        "INSERT INTO items SELECT g, 'bulk ' || g FROM generate_series(1000, 40999) g",
    )
    .await
    .unwrap();
    wait_for("the proxy writing the transaction", WAIT, || async {
        let len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        (len > 1_000_000).then_some(())
    })
    .await;
    proxy.kill9().await;
    let torn = std::fs::metadata(&log).unwrap().len();
    proxy.restart().await;

    let stop = tokio_util::sync::CancellationToken::new();
    follower.spawn(stop.clone());
    let state = wait_for("the follower with every row", WAIT, || async {
        let state = follower.state();
        (state.rows.len() == 40_020).then_some(state)
    })
    .await;
    stop.cancel();
    assert!(
        state.violations.is_empty(),
        "{:?}",
        &state.violations[..3.min(state.violations.len())]
    );
    assert_eq!(state.refetches, 0, "a restart must not force a refetch");
    assert_eq!(state.changes, 40_000, "every insert once");
    assert_eq!(state.handle.as_deref(), Some(handle.as_str()));
    let whole = std::fs::metadata(&log).unwrap().len();
    assert!(
        whole > torn,
        "the log was {torn} bytes at the kill, {whole} after"
    );
}

/// Whether a consumer holds the row of `items` with this id.
fn holds_item(consumer: &ShapeConsumer, id: i32) -> bool {
    let id = id.to_string();
    consumer
        .state()
        .rows
        .values()
        .any(|row| row.get("id").and_then(|v| v.as_str()) == Some(id.as_str()))
}

/// A transaction that wrote its rows earlier and commits right after the last one the proxy
/// made durable has its commit record start exactly at `resume.lsn` (that one's end LSN).
/// Postgres sends it after the restart (it skips only commits that start before the position
/// asked for), and it must reach the shape: it used to be taken for a re-send and skipped,
/// while the confirmed position moved past it (found by the kill -9 convergence test).
#[tokio::test]
async fn a_transaction_committing_exactly_at_the_resume_position_reaches_its_shapes() {
    let (db, mut proxy) = setup("restart_at_resume", &[]).await;
    let consumer = catch_up_consumer(&proxy, ShapeSpec::table("items", &["id"]));
    consumer.catch_up().await;
    let sql = db.connect().await;
    let held = db.connect().await;
    let resume_file = proxy.storage_dir().join("v1/resume.lsn");
    // Anything else that reaches the WAL between the two commits (a checkpoint, Postgres'
    // periodic running-transactions record) moves the second commit off the resume position;
    // then the setup is made again.
    let mut held_id = 1000;
    for attempt in 1.. {
        assert!(
            attempt <= 5,
            "the second commit never started at the resume position"
        );
        held_id = 1000 + attempt;
        held.batch_execute(&format!(
            "BEGIN; INSERT INTO items VALUES ({held_id}, 'held')"
        ))
        .await
        .unwrap();
        let first_id = 2000 + attempt;
        sql.batch_execute(&format!("INSERT INTO items VALUES ({first_id}, 'first')"))
            .await
            .unwrap();
        wait_for("the proxy applying the first commit", WAIT, || async {
            consumer.catch_up().await;
            holds_item(&consumer, first_id).then_some(())
        })
        .await;
        // A clean stop saves the end of the first commit as the resume position.
        proxy.stop().await;
        let resume = std::fs::read_to_string(&resume_file).expect("resume.lsn");
        let insert_at: String = sql
            .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::text", &[])
            .await
            .unwrap()
            .get(0);
        let at_resume = resume.trim() == insert_at;
        held.batch_execute(if at_resume { "COMMIT" } else { "ROLLBACK" })
            .await
            .unwrap();
        proxy.restart().await;
        if at_resume {
            break;
        }
    }
    sql.batch_execute("INSERT INTO items VALUES (3000, 'after the restart')")
        .await
        .unwrap();
    wait_for("the insert made after the restart", WAIT, || async {
        consumer.catch_up().await;
        holds_item(&consumer, 3000).then_some(())
    })
    .await;
    let state = consumer.state();
    assert!(state.violations.is_empty(), "{:?}", state.violations);
    assert!(
        holds_item(&consumer, held_id),
        "the transaction committed at the resume position is missing from the shape"
    );
}
