//! A shape asked with `moves=events`, against a scripted server speaking Electric 1.7's wire:
//! rows leave on `move-out` events (no deletes), come back after `move-in` events as inserts,
//! over long-poll and over SSE, and a client opened again still knows which rows a later
//! move-out takes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use client_sqlite::{Client, ClientConfig, ShapeSpec, SyncOptions};
use serde_json::{Value, json};
use tokio::sync::watch;

const SCHEMA: &str =
    r#"{"id":{"type":"int4","pk_index":0,"not_null":true},"project_id":{"type":"int4"}}"#;
const WAIT: Duration = Duration::from_secs(20);

/// The live batches so far, by LSN: a request at offset `<tx>_…` gets the first after `tx`.
type Log = watch::Sender<Vec<(u64, Vec<Value>)>>;

async fn start_server(log: Log) -> String {
    let app = Router::new()
        .route("/v1/shape", axum::routing::get(shape))
        .with_state(Arc::new(log));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The tag of a row of project `p`.
fn hash(project: i64) -> String {
    format!("{project:032x}")
}

fn insert(id: i64, project: i64, move_in: bool) -> Value {
    let mut headers = json!({"operation": "insert", "relation": ["public", "todos"],
        "tags": [hash(project)], "active_conditions": [true]});
    if move_in {
        headers["is_move_in"] = json!(true);
    }
    json!({"key": format!("\"public\".\"todos\"/\"{id}\""),
        "value": {"id": id.to_string(), "project_id": project.to_string()}, "headers": headers})
}

fn event(kind: &str, project: i64, txid: u64) -> Value {
    json!({"headers": {"event": kind, "patterns": [{"pos": 0, "value": hash(project)}],
        "txids": [txid]}})
}

/// `/v1/shape`: todos 1 and 3 of project 1, 2 of project 2, then the log; refused without
/// `moves=events`.
async fn shape(
    State(log): State<Arc<Log>>,
    Query(params): Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut headers = HeaderMap::new();
    if get("moves") != Some("events") {
        return (
            StatusCode::BAD_REQUEST,
            headers,
            "moves=events expected".into(),
        );
    }
    headers.insert("electric-handle", HeaderValue::from_static("h-1"));
    headers.insert("electric-schema", HeaderValue::from_static(SCHEMA));
    headers.insert("electric-cursor", HeaderValue::from_static("1"));
    let offset = get("offset").unwrap_or_default();
    if offset == "-1" {
        headers.insert("electric-offset", HeaderValue::from_static("0_0"));
        let mut body = vec![
            insert(1, 1, false),
            insert(2, 2, false),
            insert(3, 1, false),
        ];
        body.push(json!({"headers": {"control": "up-to-date", "global_last_seen_lsn": "100"}}));
        return (StatusCode::OK, headers, Value::Array(body).to_string());
    }
    let after: u64 = offset
        .split('_')
        .next()
        .and_then(|tx| tx.parse().ok())
        .unwrap_or(0);
    let next = |log: &Vec<(u64, Vec<Value>)>| log.iter().find(|(lsn, _)| *lsn > after).cloned();
    let batch = if get("live").is_some() {
        let mut log = log.subscribe();
        let waited = log.wait_for(|log| next(log).is_some()).await;
        waited.ok().and_then(|log| next(&log))
    } else {
        next(&log.borrow())
    };
    let (lsn, mut messages) = batch.unwrap_or((after.max(100), Vec::new()));
    messages.push(
        json!({"headers": {"control": "up-to-date", "global_last_seen_lsn": lsn.to_string()}}),
    );
    if get("live_sse").is_some() {
        headers.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        let body: String = messages.iter().map(|m| format!("data: {m}\n\n")).collect();
        return (StatusCode::OK, headers, body);
    }
    let position = HeaderValue::from_str(&format!("{lsn}_0")).expect("offset");
    headers.insert("electric-offset", position);
    headers.insert("electric-up-to-date", HeaderValue::from_static(""));
    (StatusCode::OK, headers, Value::Array(messages).to_string())
}

fn config(url: &str, dir: &tempfile::TempDir, sse: bool) -> ClientConfig {
    let spec = ShapeSpec::new("todos", "todos")
        .with_where("project_id IN (SELECT project_id FROM members WHERE user_id = 'u1')")
        .moves_as_events();
    let mut config = ClientConfig::new(url, dir.path().join("m.db")).shape(spec);
    config.sync = SyncOptions {
        sse,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..SyncOptions::default()
    };
    config
}

async fn ids(client: &Client) -> Vec<i64> {
    client
        .read(|c| {
            c.prepare("SELECT id FROM todos ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .await
        .expect("read todos")
}

async fn wait_ids(client: &Client, want: &[i64], step: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = ids(client).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{step}: {got:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[rstest::rstest]
#[case::long_poll(false)]
#[case::sse(true)]
#[tokio::test]
async fn rows_leave_on_move_out_events_and_come_back_after_move_ins(#[case] sse: bool) {
    let log: Log = watch::Sender::new(Vec::new());
    let url = start_server(log.clone()).await;
    let dir = tempfile::tempdir().expect("dir");
    let client = Client::open(config(&url, &dir, sse)).await.expect("open");
    client.wait_synced(WAIT).await.expect("synced");
    assert_eq!(ids(&client).await, [1, 2, 3], "the snapshot");

    log.send_modify(|log| log.push((200, vec![event("move-out", 1, 700)])));
    wait_ids(&client, &[2], "project 1 left").await;

    let snapshot_end =
        json!({"headers": {"control": "snapshot-end", "xmin": "1", "xmax": "2", "xip_list": []}});
    log.send_modify(|log| {
        log.push((
            300,
            vec![event("move-in", 1, 701), insert(1, 1, true), snapshot_end],
        ))
    });
    wait_ids(&client, &[1, 2], "project 1 back with todo 1").await;
    client.close().await;

    // Opened again, it resumes where it was and still knows the rows of project 2.
    log.send_modify(|log| log.push((400, vec![event("move-out", 2, 702)])));
    let client = Client::open(config(&url, &dir, sse))
        .await
        .expect("open again");
    wait_ids(&client, &[1], "project 2 left while closed").await;
    assert_eq!(client.status().refetches, 0);
    client.close().await;
}
