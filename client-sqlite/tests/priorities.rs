//! Sync priorities against a real proxy (in this process, on a real socket) and a throwaway
//! Postgres: a small priority-0 shape is ready, and readable by another SQLite connection,
//! while a large priority-3 shape listed first cannot have finished its initial sync: the test
//! holds a lock on the large table until the small one is ready, so the order is decided by
//! the client, not by timing.

use std::time::Duration;

use client_sqlite::rusqlite::Connection;
use client_sqlite::{Client, ClientConfig, ClientEvent, ShapeSpec, SyncOptions};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);
const BIG_ROWS: i64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_shape_is_ready_and_readable_before_a_large_low_one_starts() {
    let db = tests::TestDb::new("client_priorities").await;
    let pg = db.connect().await;
    pg.batch_execute(&format!(
        "CREATE TABLE settings (id int PRIMARY KEY, v text);
         INSERT INTO settings SELECT g, 'setting ' || g FROM generate_series(1, 10) g;
         CREATE TABLE notes_big (id int PRIMARY KEY, body text);
         INSERT INTO notes_big SELECT g, repeat('n', 200) FROM generate_series(1, {BIG_ROWS}) g;"
    ))
    .await
    .expect("schema");
    let storage = tempfile::tempdir().expect("storage");
    let mut config = proxy::config::ServeConfig::new(
        db.url.clone(),
        "127.0.0.1:0".parse().expect("address"),
        storage.path().to_owned(),
    );
    config.long_poll_timeout = Duration::from_secs(2);
    let shutdown = CancellationToken::new();
    let (bound_tx, bound) = tokio::sync::oneshot::channel();
    tokio::spawn(proxy::serve::run(config, shutdown.clone(), Some(bound_tx)));
    let addr = bound.await.expect("the proxy listens");

    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("app.db");
    let mut config = ClientConfig::new(&format!("http://{addr}"), &path);
    // Listed first, and the default priority (3, the last).
    config.shapes = vec![
        "notes_big".parse().expect("spec"),
        "settings=settings?priority=0".parse().expect("spec"),
    ];
    config.sync = SyncOptions {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..SyncOptions::default()
    };
    // Offline until the events are subscribed, so none is missed.
    config.online = false;
    // The big table cannot be read (so its shape cannot be synced) until the test lets go.
    let mut locker = db.connect().await;
    let mut lock = Some(locker.transaction().await.expect("begin"));
    lock.as_ref()
        .expect("just begun")
        .batch_execute("LOCK TABLE notes_big IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let client = Client::open(config).await.expect("open");
    let mut events = client.events();
    assert_eq!(
        client.status().priorities,
        [(0, false), (3, false)].into(),
        "nothing is ready before the first sync"
    );
    client.set_online(true);

    let mut ready = Vec::new();
    while ready.len() < 2 {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("a readiness event")
            .expect("event");
        let ClientEvent::PriorityReady { priority, .. } = event else {
            continue;
        };
        ready.push(priority);
        if priority == 0 {
            // The big table is still locked: its initial sync cannot have ended.
            assert!(
                !client.status().priorities[&3],
                "the big shape is not ready"
            );
            // Another connection reads the committed settings.
            let other = Connection::open(&path).expect("a second connection");
            let settings: i64 = other
                .query_row("SELECT count(*) FROM settings", [], |r| r.get(0))
                .expect("settings are readable");
            assert_eq!(settings, 10);
            lock.take()
                .expect("held once")
                .commit()
                .await
                .expect("release the lock");
        }
    }
    assert_eq!(
        ready,
        [0, 3],
        "priority 0 is ready first, the big shape after the lock is released"
    );
    let status = client.status();
    assert_eq!(status.priorities, [(0, true), (3, true)].into());
    let big: i64 = client
        .read(|c| c.query_row("SELECT count(*) FROM notes_big", [], |r| r.get(0)))
        .await
        .expect("count");
    assert_eq!(big, BIG_ROWS);
    // A second start from the same file: both shapes are ready from their stored positions.
    client.close().await;
    let mut config = ClientConfig::new(&format!("http://{addr}"), &path);
    config.shapes = vec![
        ShapeSpec::table("notes_big"),
        ShapeSpec::table("settings").with_priority(0),
    ];
    config.online = false;
    let reopened = Client::open(config).await.expect("reopen");
    assert_eq!(reopened.status().priorities, [(0, true), (3, true)].into());
    reopened.close().await;
    shutdown.cancel();
}
