//! A server (or a proxy in between) that sends a 100 MB message — one event-stream line
//! without an end, or one JSON element — over a real socket: the client stops at its limit
//! (`SyncOptions::max_message_bytes`) with a definite error that names it, instead of
//! buffering until memory runs out.

use std::net::SocketAddr;
use std::time::Duration;

use client_sqlite::{Client, ClientConfig, ShapePhase, ShapeSpec, SyncOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const SCHEMA: &str =
    r#"{"id":{"type":"int4","pk_index":0,"not_null":true},"title":{"type":"text"}}"#;
const WAIT: Duration = Duration::from_secs(60);
const HUGE: usize = 100 * 1024 * 1024;

/// Which response carries the huge message.
#[derive(Clone, Copy)]
enum Huge {
    /// The first (catch-up) response: one JSON element of 100 MB.
    JsonElement,
    /// The live event stream: one `data:` line of 100 MB with no end.
    SseLine,
}

/// A minimal HTTP/1.1 server: one request per connection, answered and closed.
async fn serve(huge: Huge) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, huge));
        }
    });
    addr
}

async fn answer(mut stream: TcpStream, huge: Huge) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or_default();
    let sse = target.contains("live_sse=true");
    let (content_type, prefix) = match (huge, sse) {
        (Huge::JsonElement, false) => (
            "application/json",
            r#"[{"key":"\"public\".\"t\"/\"1\"","headers":{"operation":"insert"},"value":{"id":"1","title":""#,
        ),
        (Huge::SseLine, true) => ("text/event-stream", "data: "),
        _ => {
            // Caught up: one up-to-date (a live request after it never comes in these tests
            // except as SSE).
            let body = r#"[{"headers":{"control":"up-to-date","global_last_seen_lsn":"100"}}]"#;
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         electric-handle: h-1\r\nelectric-offset: 100_0\r\n\
                         electric-schema: {SCHEMA}\r\nelectric-cursor: 1\r\n\
                         electric-up-to-date: \r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
            return;
        }
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nelectric-handle: h-1\r\n\
         electric-offset: 100_0\r\nelectric-schema: {SCHEMA}\r\nelectric-cursor: 1\r\n\
         connection: close\r\n\r\n{prefix}"
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let block = vec![b'x'; 1 << 20];
    for _ in 0..HUGE / block.len() {
        // The client hangs up at its limit: the rest is never read.
        if stream.write_all(&block).await.is_err() {
            return;
        }
    }
    let _ = stream.shutdown().await;
}

/// Opens a client of shape `t` on the server and waits for the shape's definite error.
async fn error_of_shape(addr: SocketAddr) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = ClientConfig::new(&format!("http://{addr}"), dir.path().join("o.db"));
    config.shapes.push(ShapeSpec::table("t"));
    config.sync = SyncOptions {
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..SyncOptions::default()
    };
    let client = Client::open(config).await.expect("open");
    let mut status = client.watch_status();
    let status = tokio::time::timeout(
        WAIT,
        status.wait_for(|s| matches!(s.shapes.get("t"), Some(ShapePhase::Error(_)))),
    )
    .await
    .expect("the shape shows an error")
    .expect("status")
    .clone();
    client.close().await;
    match status.shapes.get("t") {
        Some(ShapePhase::Error(message)) => message.clone(),
        other => panic!("not an error: {other:?}"),
    }
}

fn assert_names_the_limit(message: &str) {
    let limit = SyncOptions::default().max_message_bytes;
    assert!(limit < HUGE, "the test's message must pass the limit");
    assert!(
        message.contains(&format!("more than {limit} bytes"))
            && message.contains("max_message_bytes"),
        "{message}"
    );
}

#[tokio::test]
async fn a_100_mb_event_stream_line_is_a_clear_error_at_the_limit() {
    let message = error_of_shape(serve(Huge::SseLine).await).await;
    assert_names_the_limit(&message);
    assert!(message.contains("event stream"), "{message}");
}

#[tokio::test]
async fn a_100_mb_json_element_is_a_clear_error_at_the_limit() {
    let message = error_of_shape(serve(Huge::JsonElement).await).await;
    assert_names_the_limit(&message);
    assert!(message.contains("response body"), "{message}");
}
