//! The setup helpers against a real Postgres: preparing a table takes a lock it may not get
//! in time (transient), and needs ownership an application role may lack (definite, with
//! the statements to run).

use std::time::Duration;

use proxy::replication::{SetupError, ensure_publication, prepare_table};
use shapes::schema::QualifiedName;
use tests::TestDb;

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
    let mut app = proxy::database::connect(&url).await.unwrap();
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
