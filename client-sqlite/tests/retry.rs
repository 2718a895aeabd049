//! Against scripted servers: a 503 with `retry-after` is waited out (longer than the backoff
//! would wait); a refused event stream falls back to long-polling.

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

/// Serves `app` on a free loopback port.
async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn a_503_with_retry_after_is_waited_out_then_the_shape_syncs() {
    let log: Log = Arc::default();
    let addr = serve(
        Router::new()
            .route("/v1/shape", axum::routing::get(shape))
            .with_state(log.clone()),
    )
    .await;

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

/// A server whose SSE requests are refused (as by a proxy that does not pass event streams):
/// the client falls back to long-polling and still gets live changes.
async fn no_sse(
    State(log): State<Log>,
    Query(params): Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let offset = get("offset").unwrap_or_default();
    let sse = get("live_sse").is_some();
    let live = get("live").is_some();
    let previous = {
        let mut log = log.lock().expect("log");
        let seen = log.iter().filter(|(_, o)| o.starts_with("poll")).count();
        let kind = match (sse, live) {
            (true, _) => "sse".to_owned(),
            (false, true) => format!("poll {offset}"),
            (false, false) => offset.clone(),
        };
        log.push((Instant::now(), kind));
        seen
    };
    let mut headers = HeaderMap::new();
    if sse {
        return (
            StatusCode::BAD_REQUEST,
            headers,
            "{\"message\":\"no SSE here\"}".to_owned(),
        );
    }
    headers.insert("electric-handle", HeaderValue::from_static("h-1"));
    headers.insert("electric-schema", HeaderValue::from_static(SCHEMA));
    headers.insert("electric-cursor", HeaderValue::from_static("1"));
    let body = match (offset.as_str(), live) {
        ("-1", _) => {
            headers.insert("electric-offset", HeaderValue::from_static("0_0"));
            "[]".to_owned()
        }
        (_, true) if previous == 0 => {
            headers.insert("electric-offset", HeaderValue::from_static("200_0"));
            headers.insert("electric-up-to-date", HeaderValue::from_static(""));
            r#"[{"key":"k","value":{"id":"2","title":"live"},"headers":{"operation":"insert","txids":[7],"lsn":"200","op_position":0,"last":true}},
                {"headers":{"control":"up-to-date","global_last_seen_lsn":"200"}}]"#
                .to_owned()
        }
        _ => {
            if live {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            headers.insert(
                "electric-offset",
                HeaderValue::from_str(&offset).expect("offset"),
            );
            headers.insert("electric-up-to-date", HeaderValue::from_static(""));
            r#"[{"headers":{"control":"up-to-date","global_last_seen_lsn":"200"}}]"#.to_owned()
        }
    };
    (StatusCode::OK, headers, body)
}

#[tokio::test]
async fn a_refused_event_stream_falls_back_to_long_polling() {
    let log: Log = Arc::default();
    let addr = serve(
        Router::new()
            .route("/v1/shape", axum::routing::get(no_sse))
            .with_state(log.clone()),
    )
    .await;

    let dir = tempfile::tempdir().expect("dir");
    let mut config = ClientConfig::new(&format!("http://{addr}"), dir.path().join("s.db"));
    config.shapes.push(ShapeSpec::table("t"));
    let client = Client::open(config).await.expect("open");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows: i64 = client
            .read(|c| {
                c.query_row("SELECT count(*) FROM t WHERE title = 'live'", [], |r| {
                    r.get(0)
                })
            })
            .await
            .unwrap_or(0); // no table before the first sync
        if rows == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the live row never came: {:?}",
            log.lock().expect("log")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kinds: Vec<String> = log
        .lock()
        .expect("log")
        .iter()
        .map(|(_, k)| k.clone())
        .collect();
    let sse = kinds
        .iter()
        .position(|k| k == "sse")
        .expect("SSE was tried first");
    assert!(
        kinds[sse + 1..].iter().all(|k| k != "sse"),
        "no SSE after the refusal: {kinds:?}"
    );
    assert!(
        kinds[sse + 1..].iter().any(|k| k.starts_with("poll")),
        "{kinds:?}"
    );
    client.close().await;
}
