//! How local writes settle, against a scripted server that answers each mutation request when
//! the test says so and serves exactly the live batches the test hands it, so every ordering
//! is forced rather than raced: an up-to-date whose `global_last_seen_lsn` passes the write's
//! LSN (the only way a write to a row outside every shape settles); the echo arriving before
//! the answer; an answer without an LSN (the `ack_grace` sweep, on the client's clock); `rejected` results and a batch
//! refused as a whole (rolled back, one conflict and one event per write); `aborted` answers
//! (sent again after a backoff, not in a tight loop).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use client_sqlite::{Client, ClientConfig, ClientEvent, Clock, ShapeSpec, SyncOptions, SyncState};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

const SCHEMA: &str =
    r#"{"id":{"type":"int4","pk_index":0,"not_null":true},"title":{"type":"text"}}"#;
const WAIT: Duration = Duration::from_secs(20);

/// A live batch: one Postgres transaction's messages, committed at `lsn` (the up-to-date that
/// ends it carries `global_last_seen_lsn = lsn`).
#[derive(Clone)]
struct Batch {
    lsn: u64,
    messages: Vec<Value>,
}

/// A mutation request held by the server until the test answers it.
struct Push {
    body: Value,
    at: Instant,
    answer: oneshot::Sender<(StatusCode, Value)>,
}

impl Push {
    fn ids(&self) -> Vec<String> {
        self.body["mutations"]
            .as_array()
            .expect("mutations")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// Answers every mutation with `status`, as one transaction (`txid`, `lsn`).
    fn answer_all(self, status: &str, txid: Option<u64>, lsn: Option<&str>) {
        let results: Vec<Value> = self
            .ids()
            .into_iter()
            .map(|id| json!({"id": id, "status": status}))
            .collect();
        self.answer_with(json!({"txid": txid, "lsn": lsn, "results": results}));
    }

    fn answer_with(self, body: Value) {
        self.answer
            .send((StatusCode::OK, body))
            .expect("the request is still waiting");
    }
}

#[derive(Clone)]
struct Script {
    /// Every live batch so far, in LSN order; a request at offset `<tx>_…` gets the first one
    /// after `tx` (so a request the client dropped loses nothing).
    log: watch::Sender<Vec<Batch>>,
    pushes: mpsc::UnboundedSender<Push>,
}

/// The scripted server and the test's end of it.
struct Server {
    url: String,
    log: watch::Sender<Vec<Batch>>,
    pushes: Mutex<mpsc::UnboundedReceiver<Push>>,
}

impl Server {
    async fn start() -> Self {
        let (pushes_tx, pushes) = mpsc::unbounded_channel();
        let script = Script {
            log: watch::Sender::new(Vec::new()),
            pushes: pushes_tx,
        };
        let log = script.log.clone();
        let app = Router::new()
            .route("/v1/shape", axum::routing::get(shape))
            .route("/v1/mutations", axum::routing::post(mutations))
            .with_state(Arc::new(script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}"),
            log,
            pushes: Mutex::new(pushes),
        }
    }

    /// Makes a live batch available to the shape's next request.
    fn send(&self, lsn: u64, messages: Vec<Value>) {
        self.log
            .send_modify(|log| log.push(Batch { lsn, messages }));
    }

    /// The next mutation request the client makes.
    async fn next_push(&self) -> Push {
        tokio::time::timeout(WAIT, self.pushes.lock().await.recv())
            .await
            .expect("the client sends its writes")
            .expect("server running")
    }
}

/// `/v1/shape`: rows 1 (`a`) and 2 (`b`) as the snapshot, then the scripted batches; a live
/// request waits for the next one as long as it takes (no long-poll timeout, so no up-to-date
/// the test did not ask for).
async fn shape(
    State(script): State<Arc<Script>>,
    Query(params): Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let offset = get("offset").cloned().unwrap_or_default();
    let live = get("live").is_some();
    let mut headers = HeaderMap::new();
    headers.insert("electric-handle", HeaderValue::from_static("h-1"));
    headers.insert("electric-schema", HeaderValue::from_static(SCHEMA));
    headers.insert("electric-cursor", HeaderValue::from_static("1"));
    if offset == "-1" {
        headers.insert("electric-offset", HeaderValue::from_static("0_0"));
        let body = json!([change("insert", 1, Some("a"), None),
            change("insert", 2, Some("b"), None),
            {"headers": {"control": "snapshot-end", "xmin": "1", "xmax": "1", "xip_list": []}}]);
        return (StatusCode::OK, headers, body.to_string());
    }
    let after: u64 = offset
        .split('_')
        .next()
        .and_then(|tx| tx.parse().ok())
        .unwrap_or(0);
    let next = |log: &Vec<Batch>| log.iter().find(|b| b.lsn > after).cloned();
    let batch = if live {
        let mut log = script.log.subscribe();
        let waited = log.wait_for(|log| next(log).is_some()).await;
        waited.ok().and_then(|log| next(&log))
    } else {
        next(&script.log.borrow())
    };
    // Nothing new (a catch-up request): up to date where the client is.
    let seen = script.log.borrow().last().map_or(100, |b| b.lsn).max(after);
    let (lsn, position, mut messages) = match batch {
        Some(batch) => (batch.lsn, batch.lsn, batch.messages),
        None => (seen, after, Vec::new()),
    };
    messages.push(
        json!({"headers": {"control": "up-to-date", "global_last_seen_lsn": lsn.to_string()}}),
    );
    headers.insert(
        "electric-offset",
        HeaderValue::from_str(&format!("{position}_0")).expect("offset"),
    );
    headers.insert("electric-up-to-date", HeaderValue::from_static(""));
    (StatusCode::OK, headers, Value::Array(messages).to_string())
}

/// `/v1/mutations`: handed to the test, answered when it says.
async fn mutations(State(script): State<Arc<Script>>, body: String) -> impl IntoResponse {
    let (answer, answered) = oneshot::channel();
    let body: Value = serde_json::from_str(&body).expect("a JSON batch");
    let push = Push {
        body,
        at: Instant::now(),
        answer,
    };
    if script.pushes.send(push).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned());
    }
    match answered.await {
        Ok((status, body)) => (status, body.to_string()),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned()),
    }
}

/// A log message for row `id` (`title` when it carries one).
fn change(op: &str, id: i64, title: Option<&str>, txid: Option<u64>) -> Value {
    let mut value = json!({"id": id.to_string()});
    if let Some(title) = title {
        value["title"] = json!(title);
    }
    let mut headers = json!({"operation": op, "relation": ["public", "t"]});
    if let Some(txid) = txid {
        headers["txids"] = json!([txid]);
    }
    json!({"key": format!("\"public\".\"t\"/\"{id}\""), "value": value, "headers": headers})
}

/// A client of the shape `t` on the scripted server, synced.
async fn client(server: &Server, dir: &tempfile::TempDir, ack_grace: Duration) -> Client {
    client_with_clock(server, dir, ack_grace, None).await
}

async fn client_with_clock(
    server: &Server,
    dir: &tempfile::TempDir,
    ack_grace: Duration,
    clock: Option<Clock>,
) -> Client {
    let mut config = ClientConfig::new(&server.url, dir.path().join("s.db"));
    config.shapes.push(ShapeSpec::table("t"));
    config.sync = SyncOptions {
        sse: false,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        ..SyncOptions::default()
    };
    config.ack_grace = ack_grace;
    config.clock = clock;
    let client = Client::open(config).await.expect("open");
    client.wait_synced(WAIT).await.expect("synced");
    client
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

async fn query_i64(client: &Client, sql: &'static str) -> i64 {
    client
        .read(move |c| c.query_row(sql, [], |r| r.get(0)))
        .await
        .expect(sql)
}

/// The title the app reads for row `id` (`None`: no such row).
async fn title(client: &Client, id: i64) -> Option<String> {
    client
        .read(move |c| {
            use client_sqlite::rusqlite::OptionalExtension;
            c.query_row("SELECT title FROM t WHERE id = ?1", [id], |r| r.get(0))
                .optional()
        })
        .await
        .expect("read t")
}

/// The `global_last_seen_lsn` the store has committed for the shape.
async fn global_lsn(client: &Client) -> i64 {
    query_i64(
        client,
        "SELECT global_lsn FROM _shapesync_shapes WHERE name = 't'",
    )
    .await
}

/// Overlay entries, outbox entries, answered writes waiting for their echo, shadow rows.
async fn leftovers(client: &Client) -> [i64; 4] {
    [
        query_i64(client, "SELECT count(*) FROM _shapesync_overlays").await,
        query_i64(client, "SELECT count(*) FROM _shapesync_outbox").await,
        query_i64(client, "SELECT count(*) FROM _shapesync_acked").await,
        query_i64(client, "SELECT count(*) FROM _shapesync_shadow_t").await,
    ]
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn next_conflict(
    events: &mut tokio::sync::broadcast::Receiver<ClientEvent>,
) -> client_sqlite::Conflict {
    loop {
        // Readiness events (ClientEvent::PriorityReady) come too; this waits for a conflict.
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("an event")
            .expect("event");
        if let ClientEvent::Conflict(conflict) = event {
            return conflict;
        }
    }
}

#[tokio::test]
async fn a_write_outside_every_shape_keeps_its_overlay_until_an_up_to_date_passes_its_lsn() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().expect("dir");
    // A long grace: only the LSN can settle the write.
    let client = client(&server, &dir, Duration::from_secs(600)).await;
    client
        .insert("t", object(json!({"id": 7, "title": "local"})))
        .await
        .expect("queued");
    let push = server.next_push().await;
    assert_eq!(push.body["mutations"][0]["op"], "insert");
    push.answer_all("applied", Some(900), Some("500"));
    eventually("the answer is recorded", || async {
        client.status().pending == 0
    })
    .await;
    assert_eq!(title(&client, 7).await.as_deref(), Some("local"));
    assert_eq!(
        query_i64(&client, "SELECT lsn FROM _shapesync_acked").await,
        500
    );

    // The shape moves on, but not yet past the write's commit: the overlay stays.
    server.send(499, vec![change("update", 2, Some("b2"), Some(899))]);
    eventually("the batch at 499 is committed", || async {
        global_lsn(&client).await == 499
    })
    .await;
    assert_eq!(title(&client, 2).await.as_deref(), Some("b2"));
    assert_eq!(
        title(&client, 7).await.as_deref(),
        Some("local"),
        "settled before its LSN was reached"
    );
    assert_eq!(leftovers(&client).await[2], 1);

    // An up-to-date at the write's LSN, with no change of row 7 (it is in no shape): the
    // write's effects have all been sent, so its overlay goes, and with it the row.
    server.send(500, Vec::new());
    eventually("the overlay is dropped", || async {
        title(&client, 7).await.is_none()
    })
    .await;
    assert_eq!(leftovers(&client).await, [0, 0, 0, 0]);
    assert_eq!(client.status().state, SyncState::UpToDate);
    client.close().await;
}

#[tokio::test]
async fn an_echo_before_the_answer_settles_the_overlay_when_the_answer_comes() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let client = client(&server, &dir, Duration::from_secs(600)).await;
    set_title(&client, 1, "local").await;
    let push = server.next_push().await;
    // The write's transaction comes back through the shape before its answer does.
    server.send(500, vec![change("update", 1, Some("local"), Some(900))]);
    eventually("the echo is committed", || async {
        global_lsn(&client).await == 500
    })
    .await;
    assert_eq!(title(&client, 1).await.as_deref(), Some("local"));
    assert_eq!(
        leftovers(&client).await,
        [1, 1, 0, 1],
        "unanswered: the overlay, the outbox entry and the shadow stay"
    );
    let shadow: String = client
        .read(|c| c.query_row("SELECT title FROM _shapesync_shadow_t", [], |r| r.get(0)))
        .await
        .expect("shadow");
    assert_eq!(shadow, "local", "the echo went under the overlay");

    // No up-to-date follows (the server sends nothing more): the answer alone must settle it,
    // because the shape has already passed its LSN.
    push.answer_all("applied", Some(900), Some("500"));
    eventually("settled by the answer", || async {
        leftovers(&client).await == [0, 0, 0, 0]
    })
    .await;
    assert_eq!(title(&client, 1).await.as_deref(), Some("local"));
    client.close().await;
}

#[tokio::test]
async fn an_answer_without_an_lsn_keeps_the_overlay_for_the_grace_period() {
    // The grace is measured on the client's clock, which the test moves by hand: long enough
    // that the machine's clock can never end it during the test.
    let grace = Duration::from_secs(600);
    let clock = ManualClock::starting_now();
    let server = Server::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let client = client_with_clock(&server, &dir, grace, Some(clock.clock())).await;
    set_title(&client, 1, "local").await;
    let push = server.next_push().await;
    push.answer_all("applied", Some(900), None);
    eventually("the answer is recorded", || async {
        client.status().pending == 0
    })
    .await;
    // The row changes in another transaction (not this write's txid); its up-to-date passes
    // any LSN, but the write has none, so only the grace period can settle it. Each committed
    // batch sweeps in the same transaction, so once it is visible the sweep has run.
    server.send(500, vec![change("update", 1, Some("local"), Some(901))]);
    eventually("the batch is committed", || async {
        global_lsn(&client).await == 500
    })
    .await;
    assert_eq!(
        leftovers(&client).await,
        [1, 0, 1, 1],
        "within the grace period"
    );

    clock.advance(grace - Duration::from_millis(100));
    server.send(501, Vec::new());
    eventually("the batch at 501 is committed", || async {
        global_lsn(&client).await == 501
    })
    .await;
    assert_eq!(
        leftovers(&client).await,
        [1, 0, 1, 1],
        "settled 100 ms before the grace ended"
    );

    clock.advance(Duration::from_millis(200));
    server.send(502, Vec::new());
    eventually("the batch at 502 is committed", || async {
        global_lsn(&client).await == 502
    })
    .await;
    assert_eq!(
        leftovers(&client).await,
        [0, 0, 0, 0],
        "not settled 100 ms after the grace ended"
    );
    assert_eq!(title(&client, 1).await.as_deref(), Some("local"));
    client.close().await;
}

/// A clock the test moves: µs since the epoch, one more on every reading (as the client's
/// own clock never repeats a value).
#[derive(Clone)]
struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    fn starting_now() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        Self(Arc::new(AtomicI64::new(
            i64::try_from(now.as_micros()).expect("µs fit"),
        )))
    }

    fn advance(&self, by: Duration) {
        let micros = i64::try_from(by.as_micros()).expect("µs fit");
        self.0.fetch_add(micros, Ordering::SeqCst);
    }

    fn clock(&self) -> Clock {
        let now = self.0.clone();
        Arc::new(move || now.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

#[tokio::test]
async fn a_rejected_write_is_rolled_back_with_one_conflict_and_one_event() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let client = client(&server, &dir, Duration::from_secs(600)).await;
    let mut events = client.events();
    let queued = client
        .update(
            "t",
            object(json!({"id": 1})),
            object(json!({"title": "bad"})),
        )
        .await
        .expect("queued");
    assert_eq!(title(&client, 1).await.as_deref(), Some("bad"));
    let push = server.next_push().await;
    push.answer_with(json!({"txid": 900, "lsn": "500", "results": [{
        "id": queued.mutation_id, "status": "rejected",
        "error": {"code": "check_violation", "column": "title", "message": "violates check"}}]}));
    let conflict = next_conflict(&mut events).await;
    assert_eq!(conflict.status, "rejected");
    assert_eq!(conflict.mutation_id, queued.mutation_id);
    assert!(
        conflict.reason.contains("check_violation"),
        "{}",
        conflict.reason
    );
    assert!(conflict.reason.contains("title"), "{}", conflict.reason);
    assert_eq!(conflict.local["values"]["title"], "bad");
    assert_eq!(
        conflict.server["title"], "a",
        "the server's row, from the shadow"
    );
    eventually("rolled back", || async {
        title(&client, 1).await.as_deref() == Some("a")
    })
    .await;
    assert_eq!(leftovers(&client).await, [0, 0, 0, 0]);
    assert_eq!(
        query_i64(&client, "SELECT count(*) FROM _shapesync_conflicts").await,
        1
    );
    assert_eq!(client.status().state, SyncState::Conflicts(1));
    assert!(events.try_recv().is_err(), "one event");
    client.close().await;
}

#[tokio::test]
async fn a_batch_refused_as_a_whole_rolls_back_each_write_with_a_conflict_of_its_own() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let client = client(&server, &dir, Duration::from_secs(600)).await;
    let mut events = client.events();
    // Offline, so both writes go in one request.
    client.set_online(false);
    client
        .update("t", object(json!({"id": 1})), object(json!({"title": "x"})))
        .await
        .expect("queued");
    client
        .insert("t", object(json!({"id": 7, "title": "new"})))
        .await
        .expect("queued");
    assert_eq!(title(&client, 7).await.as_deref(), Some("new"));
    client.set_online(true);
    let push = server.next_push().await;
    assert_eq!(push.ids().len(), 2);
    push.answer
        .send((
            StatusCode::BAD_REQUEST,
            json!({"message": "Invalid request", "errors": {"mutations": ["refused"]}}),
        ))
        .expect("waiting");
    let first = next_conflict(&mut events).await;
    let second = next_conflict(&mut events).await;
    for conflict in [&first, &second] {
        assert_eq!(conflict.status, "rejected");
        assert!(conflict.reason.contains("http_400"), "{}", conflict.reason);
    }
    assert_eq!(first.row_key, "[1]");
    assert_eq!(second.row_key, "[7]");
    eventually("both rolled back", || async {
        title(&client, 1).await.as_deref() == Some("a") && title(&client, 7).await.is_none()
    })
    .await;
    assert_eq!(leftovers(&client).await, [0, 0, 0, 0]);
    assert_eq!(
        query_i64(&client, "SELECT count(*) FROM _shapesync_conflicts").await,
        2
    );
    assert!(events.try_recv().is_err(), "one event per write");

    // The queue is not stuck behind the refused batch.
    set_title(&client, 2, "ok").await;
    server
        .next_push()
        .await
        .answer_all("applied", Some(901), Some("600"));
    server.send(600, vec![change("update", 2, Some("ok"), Some(901))]);
    eventually("the next write settles", || async {
        leftovers(&client).await == [0, 0, 0, 0] && client.status().pending == 0
    })
    .await;
    assert_eq!(title(&client, 2).await.as_deref(), Some("ok"));
    client.close().await;
}

#[tokio::test]
async fn aborted_answers_are_sent_again_after_a_backoff_not_in_a_tight_loop() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let client = client(&server, &dir, Duration::from_secs(600)).await;
    let queued = client
        .update(
            "t",
            object(json!({"id": 1})),
            object(json!({"title": "local"})),
        )
        .await
        .expect("queued");
    let mut times = Vec::new();
    for _ in 0..4 {
        let push = server.next_push().await;
        assert_eq!(
            push.ids(),
            vec![queued.mutation_id.clone()],
            "the same id again"
        );
        times.push(push.at);
        push.answer_all("aborted", None, None);
    }
    let push = server.next_push().await;
    times.push(push.at);
    push.answer_all("applied", Some(900), Some("500"));
    server.send(500, vec![change("update", 1, Some("local"), Some(900))]);
    eventually("applied and settled", || async {
        leftovers(&client).await == [0, 0, 0, 0]
    })
    .await;
    // Backoff base 100 ms with equal jitter: every pause is at least 50 ms.
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(50)),
        "resent without pausing: {gaps:?}"
    );
    assert_eq!(
        query_i64(&client, "SELECT count(*) FROM _shapesync_conflicts").await,
        0
    );
    assert_eq!(title(&client, 1).await.as_deref(), Some("local"));
    client.close().await;
}

/// Queues a local update of row `id`'s title.
async fn set_title(client: &Client, id: i64, title: &str) {
    client
        .update(
            "t",
            object(json!({"id": id})),
            object(json!({"title": title})),
        )
        .await
        .expect("queued");
}
