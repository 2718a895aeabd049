//! Against a scripted server: a 503 with `retry-after` is waited out (longer than the backoff
//! would wait), then the shape syncs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use client_sqlite::{Client, ClientConfig, ShapeSpec, SyncOptions};

type Log = Arc<Mutex<Vec<(Instant, String)>>>;

const SCHEMA: &str =
    r#"{"id":{"type":"int4","pk_index":0,"not_null":true},"title":{"type":"text"}}"#;

async fn shape(
    State(log): State<Log>,
    Query(params): Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    let offset = params
        .iter()
        .find(|(k, _)| k == "offset")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let first = {
        let mut log = log.lock().expect("log");
        log.push((Instant::now(), offset.clone()));
        log.len() == 1
    };
    let mut headers = HeaderMap::new();
    if first {
        headers.insert("retry-after", HeaderValue::from_static("1"));
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            headers,
            "{\"message\":\"starting\"}".to_owned(),
        );
    }
    headers.insert("electric-handle", HeaderValue::from_static("h-1"));
    headers.insert("electric-schema", HeaderValue::from_static(SCHEMA));
    headers.insert("electric-cursor", HeaderValue::from_static("1"));
    let body = if offset == "-1" {
        headers.insert("electric-offset", HeaderValue::from_static("0_0"));
        r#"[{"key":"\"public\".\"t\"/\"1\"","value":{"id":"1","title":"a"},"headers":{"operation":"insert","relation":["public","t"]}},
            {"headers":{"control":"snapshot-end","xmin":"1","xmax":"1","xip_list":[]}}]"#
    } else {
        headers.insert("electric-offset", HeaderValue::from_static("0_0"));
        headers.insert("electric-up-to-date", HeaderValue::from_static(""));
        r#"[{"headers":{"control":"up-to-date","global_last_seen_lsn":"100"}}]"#
    };
    (StatusCode::OK, headers, body.to_owned())
}

#[tokio::test]
async fn a_503_with_retry_after_is_waited_out_then_the_shape_syncs() {
    let log: Log = Arc::default();
    let app = Router::new()
        .route("/v1/shape", axum::routing::get(shape))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("dir");
    let mut config = ClientConfig::new(&format!("http://{addr}"), dir.path().join("r.db"));
    config.shapes.push(ShapeSpec::table("t"));
    config.sync = SyncOptions {
        sse: false,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(20),
        ..SyncOptions::default()
    };
    let client = Client::open(config).await.expect("open");
    let mut status = client.watch_status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.all_up_to_date()),
    )
    .await
    .expect("up to date")
    .expect("status");
    let title: String = client
        .read(|c| c.query_row("SELECT title FROM t WHERE id = 1", [], |r| r.get(0)))
        .await
        .expect("row");
    assert_eq!(title, "a");
    let log = log.lock().expect("log").clone();
    assert_eq!(log[0].1, "-1");
    assert_eq!(log[1].1, "-1", "the refused request is made again");
    let waited = log[1].0 - log[0].0;
    assert!(
        waited >= Duration::from_millis(950),
        "waited {waited:?}, not retry-after"
    );
    client.close().await;
}
