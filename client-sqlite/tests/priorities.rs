//! Sync priorities against a real proxy (in this process, on a real socket) and a throwaway
//! Postgres, through a relay that records, for every shape request as the server sees it,
//! whether priority 0 was ready when it arrived. The test locks the small priority-0 table, so
//! that shape cannot become ready, until the large priority-3 shape (listed first) either says
//! it waits (`ShapePhase::Waiting`) or has been requested: without the waiting the big shape
//! is requested, and synced, while priority 0 cannot be ready, every time; the order is decided
//! by the client and the lock, not by timing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use client_sqlite::rusqlite::Connection;
use client_sqlite::{
    Client, ClientConfig, ClientEvent, ShapePhase, ShapeSpec, Status, SyncOptions,
};
use tests::in_process::InProcessProxy;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(60);
const BIG_ROWS: i64 = 20_000;

/// What the relay saw: each shape request's `table`, and whether priority 0 was ready (in the
/// client's status) when the request reached the relay.
#[derive(Clone, Default)]
struct Relay {
    upstream: String,
    http: reqwest::Client,
    status: Arc<Mutex<Option<watch::Receiver<Status>>>>,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Relay {
    fn seen(&self) -> Vec<(String, bool)> {
        self.seen.lock().expect("relay log").clone()
    }
}

/// Forwards one request to the proxy, after noting it.
async fn forward(
    State(relay): State<Relay>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> axum::response::Response {
    if uri.path() == "/v1/shape" {
        let table = url_table(&uri);
        let ready = relay
            .status
            .lock()
            .expect("relay status")
            .as_ref()
            .is_some_and(|s| s.borrow().priorities.get(&0) == Some(&true));
        relay.seen.lock().expect("relay log").push((table, ready));
    }
    let url = format!("{}{}", relay.upstream, uri);
    let answer = relay.http.request(method, url).body(body).send().await;
    let Ok(answer) = answer else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "content-encoding" | "connection"
        ) {
            headers.insert(name.clone(), value.clone());
        }
    }
    match answer.bytes().await {
        Ok(bytes) => (status, headers, bytes).into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

fn url_table(uri: &Uri) -> String {
    let url = reqwest::Url::parse(&format!("http://relay{uri}")).expect("a request URI");
    url.query_pairs()
        .find(|(k, _)| k == "table")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_low_priority_shape_is_requested_only_once_the_high_one_is_ready() {
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
    let proxy = InProcessProxy::start(&db.url, |config| {
        // Adding the locked table to the publication waits for the test's lock, however long.
        config.lock_timeout = WAIT;
    })
    .await;
    let relay = Relay {
        upstream: proxy.url.clone(),
        ..Relay::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("relay bind");
    let relay_addr = listener.local_addr().expect("relay address");
    let app = Router::new().fallback(forward).with_state(relay.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("app.db");
    let mut config = ClientConfig::new(&format!("http://{relay_addr}"), &path);
    // Listed first, and the default priority (3, the last).
    config.shapes = vec![
        "notes_big".parse().expect("spec"),
        "settings=settings?priority=0".parse().expect("spec"),
    ];
    config.sync = SyncOptions {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        // Long-polls, which the relay forwards whole.
        sse: false,
        ..SyncOptions::default()
    };
    // Offline until the events are subscribed, so none is missed.
    config.online = false;
    // The settings table cannot be read (so priority 0 cannot be ready) until the test lets go.
    let mut locker = db.connect().await;
    let mut lock = Some(locker.transaction().await.expect("begin"));
    lock.as_ref()
        .expect("just begun")
        .batch_execute("LOCK TABLE settings IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let client = Client::open(config).await.expect("open");
    *relay.status.lock().expect("relay status") = Some(client.watch_status());
    let mut events = client.events();
    assert_eq!(
        client.status().priorities,
        [(0, false), (3, false)].into(),
        "nothing is ready before the first sync"
    );
    client.set_online(true);

    // The big shape either says it waits, or (without the waiting) gets synced.
    let mut watch = client.watch_status();
    let held = tokio::time::timeout(
        WAIT,
        watch.wait_for(|s| {
            s.shapes.get("notes_big") == Some(&ShapePhase::Waiting) || s.ready.contains("notes_big")
        }),
    )
    .await
    .expect("the big shape waits or syncs")
    .expect("status")
    .clone();
    assert_eq!(
        held.shapes.get("notes_big"),
        Some(&ShapePhase::Waiting),
        "the big shape waits while priority 0 is not ready: {held:?}"
    );
    let early: Vec<_> = relay
        .seen()
        .into_iter()
        .filter(|(t, _)| t == "notes_big")
        .collect();
    assert_eq!(early, [], "no request for the big shape yet");

    let mut ready = Vec::new();
    lock.take()
        .expect("held once")
        .commit()
        .await
        .expect("release the lock");
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
            // Another connection reads the committed settings.
            let other = Connection::open(&path).expect("a second connection");
            let settings: i64 = other
                .query_row("SELECT count(*) FROM settings", [], |r| r.get(0))
                .expect("settings are readable");
            assert_eq!(settings, 10);
        }
    }
    assert_eq!(
        ready,
        [0, 3],
        "priority 0 is ready first, then the big shape"
    );
    // As the server saw it: the big shape was first requested once priority 0 was ready.
    let seen = relay.seen();
    let big: Vec<bool> = seen
        .iter()
        .filter(|(t, _)| t == "notes_big")
        .map(|(_, ready)| *ready)
        .collect();
    assert!(!big.is_empty(), "{seen:?}");
    assert!(
        big.iter().all(|ready| *ready),
        "every request of the big shape came after priority 0 was ready: {seen:?}"
    );
    assert!(
        seen.iter().any(|(t, ready)| t == "settings" && !ready),
        "the settings shape was requested before it was ready: {seen:?}"
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
    let mut config = ClientConfig::new(&format!("http://{relay_addr}"), &path);
    config.shapes = vec![
        ShapeSpec::table("notes_big"),
        ShapeSpec::table("settings").with_priority(0),
    ];
    config.online = false;
    let reopened = Client::open(config).await.expect("reopen");
    assert_eq!(reopened.status().priorities, [(0, true), (3, true)].into());
    reopened.close().await;
    drop(proxy);
}
