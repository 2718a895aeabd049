//! `shapesync-client` as users run it: the binary, against a real proxy (in this process, on a
//! real socket) and a throwaway Postgres with the example app.

mod common;

use std::process::Output;
use std::time::Duration;

use common::run;
use tests::in_process::InProcessProxy;

struct Server {
    _db: tests::TestDb,
    pg: tokio_postgres::Client,
    url: String,
    _proxy: InProcessProxy,
}

async fn server(name: &str) -> Server {
    let db = tests::TestDb::new(name).await;
    let mut pg = db.connect().await;
    proxy::ops::migrations::apply(&mut pg, &proxy::ops::migrations::embedded())
        .await
        .expect("example migrations");
    let proxy = InProcessProxy::start(&db.url, |config| {
        config.tombstones = ["todos", "notes"]
            .iter()
            .map(|t| t.parse().expect("tombstone spec"))
            .collect();
        config.writes = proxy::mutations::WriteConfig::dev();
    })
    .await;
    Server {
        _db: db,
        pg,
        url: proxy.url.clone(),
        _proxy: proxy,
    }
}

/// `sync --once` of one shape; asserts success.
async fn sync_once(url: &str, db: &str, shape: &str) -> Output {
    let output = run(&["sync", "--url", url, "--db", db, "--shape", shape, "--once"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn help_explains_every_command() {
    let help = stdout(&run(&["--help"]).await);
    for command in ["sync", "status", "write", "conflicts", "export"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
    let sync = stdout(&run(&["sync", "--help"]).await);
    for flag in ["--url", "--db", "--shape", "--once", "NAME=TABLE"] {
        assert!(sync.contains(flag), "{flag} missing from:\n{sync}");
    }
}

#[tokio::test]
async fn sync_once_then_offline_write_status_export_and_push() {
    let server = server("cli_sync").await;
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("app.db");
    let db = db.to_str().expect("utf-8 path");
    let shape = "mine=todos?where=owner_id = 'alice'";
    sync_once(&server.url, db, shape).await;

    let exported = run(&["export", "--db", db, "--format", "json"]).await;
    assert!(exported.status.success(), "{}", stderr(&exported));
    let data: serde_json::Value = serde_json::from_slice(&exported.stdout).expect("json");
    let titles: Vec<&str> = data["mine"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["title"].as_str())
        .collect();
    assert_eq!(titles, ["Buy milk", "Water the plants"]);

    let id = "8f1d7a0e-0c1e-4a53-9a55-0a4f6f0b0001";
    let write =
        format!(r#"{{"op":"update","key":{{"id":"{id}"}},"values":{{"title":"Buy oat milk"}}}}"#);
    let queued = run(&["write", "--db", db, "--shape", "mine", &write]).await;
    assert!(queued.status.success(), "{}", stderr(&queued));
    let status = stdout(&run(&["status", "--db", db]).await);
    assert!(status.contains("pending(1)"), "{status}");
    let exported = stdout(&run(&["export", "--db", db]).await);
    assert!(
        exported.contains("Buy oat milk"),
        "the local write shows at once: {exported}"
    );

    sync_once(&server.url, db, shape).await;
    let status = stdout(&run(&["status", "--db", db, "--json"]).await);
    let status: serde_json::Value = serde_json::from_str(&status).expect("json status");
    assert_eq!(status["pending"], 0);
    assert_eq!(status["shapes"][0]["rows"], 2);
    let row = server
        .pg
        .query_one("SELECT title FROM todos WHERE id = $1::text::uuid", &[&id])
        .await
        .expect("row");
    assert_eq!(row.get::<_, String>(0), "Buy oat milk");
    let conflicts = run(&["conflicts", "--db", db]).await;
    assert!(conflicts.status.success() && conflicts.stdout.is_empty());
}

#[tokio::test]
async fn bad_input_is_refused_with_a_message() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("app.db");
    let db = db.to_str().expect("utf-8 path");
    let refused = run(&[
        "write",
        "--db",
        db,
        "--shape",
        "todos",
        "{\"op\":\"update\"}",
    ])
    .await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not subscribed"),
        "{}",
        stderr(&refused)
    );
    let refused = run(&["write", "--db", db, "not json"]).await;
    assert!(
        stderr(&refused).contains("not valid JSON"),
        "{}",
        stderr(&refused)
    );
    let refused = run(&[
        "sync",
        "--url",
        "http://127.0.0.1:1",
        "--db",
        db,
        "--shape",
        "_shapesync_x=todos",
    ])
    .await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("must not start with"),
        "{}",
        stderr(&refused)
    );
}

#[tokio::test]
async fn sync_once_fails_at_once_when_the_server_refuses_a_shape() {
    // A server that refuses the shape as shapesync does a bad `where`.
    let app = axum::Router::new().route(
        "/v1/shape",
        axum::routing::get(|| async {
            (
                axum::http::StatusCode::BAD_REQUEST,
                r#"{"message":"Invalid request","errors":{"where":["unknown column nope"]}}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("app.db");
    let started = std::time::Instant::now();
    // The default --timeout (10 minutes) is what it would otherwise wait.
    let refused = run(&[
        "sync",
        "--url",
        &url,
        "--db",
        db.to_str().expect("utf-8 path"),
        "--shape",
        "mine=todos?where=nope = 1",
        "--once",
    ])
    .await;
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(message.contains("shape \"mine\""), "{message}");
    assert!(message.contains("HTTP 400"), "{message}");
    assert!(message.contains("unknown column nope"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
