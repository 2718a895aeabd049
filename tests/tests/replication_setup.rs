//! Preparing a table for replication against a real Postgres, through the setup helpers and
//! over HTTP: it takes a lock it may not get in time (transient: 503 with `retry-after`), and
//! needs ownership an application role may lack (definite: 403 naming the statements an
//! administrator must run, never a 503 that clients would retry forever).

use std::time::Duration;

use proxy::replication::{SetupError, ensure_publication, prepare_table};
use shapes::schema::QualifiedName;
use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shape_http, shapesync_bin};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn preparing_a_table_one_does_not_own_names_the_statements_to_run() {
    let db = TestDb::new("owner").await;
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE todos (id int PRIMARY KEY);
             CREATE ROLE app LOGIN PASSWORD 'app-secret';
             GRANT SELECT ON todos TO app;
             CREATE PUBLICATION shapesync",
        )
        .await
        .unwrap();
    let url = format!(
        "postgres://app:app-secret@127.0.0.1:{}/owner",
        db.cluster.port()
    );
    let mut app = proxy::postgres::connect(&url).await.unwrap();
    let err = prepare_table(
        &mut app,
        "shapesync",
        &QualifiedName::new("public", "todos"),
        SECOND,
    )
    .await
    .expect_err("not the owner");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(matches!(err, SetupError::MissingPrivilege { .. }), "{text}");
    assert!(
        text.contains(
            "ALTER TABLE \"public\".\"todos\" REPLICA IDENTITY FULL; \
             ALTER PUBLICATION \"shapesync\" ADD TABLE \"public\".\"todos\";"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn preparing_a_locked_table_times_out_as_a_transient_error() {
    let db = TestDb::new("locked").await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE todos (id int PRIMARY KEY)")
        .await
        .unwrap();
    ensure_publication(&client, "shapesync").await.unwrap();
    let mut holder = db.connect().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE todos IN ACCESS SHARE MODE")
        .await
        .unwrap();
    let todos = QualifiedName::new("public", "todos");
    let err = prepare_table(&mut client, "shapesync", &todos, Duration::from_millis(100))
        .await
        .expect_err("the lock is held");
    assert!(matches!(err, SetupError::LockTimeout { .. }), "{err:?}");
    assert!(err.is_transient());
    tx.rollback().await.unwrap();

    let done = prepare_table(&mut client, "shapesync", &todos, SECOND)
        .await
        .unwrap();
    assert!(done.added_to_publication && done.replica_identity_set);
    let again = prepare_table(&mut client, "shapesync", &todos, SECOND)
        .await
        .unwrap();
    assert!(!again.added_to_publication && !again.replica_identity_set);
}

#[tokio::test]
async fn a_table_locked_past_the_lock_timeout_gets_503_with_retry_after() {
    let db = TestDb::new("locked_http").await;
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE todos (id int PRIMARY KEY); INSERT INTO todos VALUES (1)")
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &["--lock-timeout", "200ms"]).await;
    let mut holder = db.connect().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE todos IN ACCESS SHARE MODE")
        .await
        .unwrap();

    let reply = shape_http::get(proxy.http(), &proxy.url, "table=todos&offset=-1").await;
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("2"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("could not lock table \"public\".\"todos\" within 200ms"),
        "{message}"
    );
    assert!(reply.body["code"].is_string());

    tx.rollback().await.unwrap();
    let reply = shape_http::get(proxy.http(), &proxy.url, "table=todos&offset=-1").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.changes().len(), 1);
}

#[tokio::test]
async fn a_role_that_may_not_alter_the_table_gets_403_naming_the_statements_to_run() {
    let db = TestDb::new("owner_http").await;
    let admin = db.connect().await;
    admin
        .batch_execute(
            "CREATE TABLE todos (id int PRIMARY KEY);
             INSERT INTO todos VALUES (1);
             CREATE ROLE app LOGIN REPLICATION PASSWORD 'app-secret';
             GRANT SELECT ON todos TO app;
             GRANT CREATE ON DATABASE owner_http TO app;",
        )
        .await
        .unwrap();
    let url = format!(
        "postgres://app:app-secret@127.0.0.1:{}/owner_http",
        db.cluster.port()
    );
    let proxy = ProxyProcess::start_as(shapesync_bin!(), &url, &[]).await;

    let statements = "ALTER TABLE \"public\".\"todos\" REPLICA IDENTITY FULL; \
                      ALTER PUBLICATION \"shapesync\" ADD TABLE \"public\".\"todos\";";
    for _ in 0..2 {
        let reply = shape_http::get(proxy.http(), &proxy.url, "table=todos&offset=-1").await;
        assert_eq!(reply.status, 403, "{:?}", reply.body);
        assert_eq!(reply.header("retry-after"), None);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.contains("role app may not"), "{message}");
        assert!(message.contains(statements), "{message}");
    }

    // Once an administrator has run them, the same request is served.
    admin.batch_execute(statements).await.unwrap();
    let reply = shape_http::get(proxy.http(), &proxy.url, "table=todos&offset=-1").await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        reply.changes()[0]["value"],
        serde_json::json!({"id": "1"}),
        "{:?}",
        reply.body
    );
}
