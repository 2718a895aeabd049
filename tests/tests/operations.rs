//! Operator commands: `shapesync prepare` and `shapesync uninstall`.

use std::io::Write;
use std::process::{Command, Stdio};

use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

fn shapesync(args: &[&str], url: &str, stdin: &str) -> (bool, String) {
    let mut child = Command::new(shapesync_bin!())
        .args(args)
        .env("DATABASE_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn prepare_adds_tables_to_the_publication_with_full_replica_identity() {
    let db = TestDb::new("ops_prepare").await;
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE \"B b\" (id int PRIMARY KEY)",
        )
        .await
        .unwrap();
    let (ok, text) = shapesync(&["prepare", "a", "\"B b\""], &db.url, "");
    assert!(ok, "{text}");
    assert!(text.contains("prepared \"public\".\"a\""), "{text}");
    let rows = client
        .query(
            "SELECT c.relname::text, c.relreplident::text FROM pg_publication_tables p
             JOIN pg_class c ON c.relname = p.tablename WHERE p.pubname = 'shapesync' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [
            ("B b".to_owned(), "f".to_owned()),
            ("a".to_owned(), "f".to_owned())
        ]
    );

    let (ok, text) = shapesync(&["prepare", "missing"], &db.url, "");
    assert!(!ok);
    assert!(text.contains("missing"), "{text}");
}

#[tokio::test]
async fn uninstall_removes_slot_publication_and_schema_once_the_proxy_is_stopped() {
    let db = TestDb::new("ops_uninstall").await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE a (id int PRIMARY KEY)")
        .await
        .unwrap();
    // The example app, whose LWW trigger calls the proxy's shapesync.note_plain_write.
    proxy::ops::migrations::apply(&mut client, &proxy::ops::migrations::embedded())
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO todos (owner_id, title) VALUES ('o', 'before')")
        .await
        .unwrap();
    let mut proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let shape = proxy
        .http()
        .get(format!("{}/v1/shape?table=a&offset=-1", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(shape.status(), 200);

    let (ok, text) = shapesync(&["uninstall", "--yes"], &db.url, "");
    assert!(!ok, "a running proxy's slot is not dropped");
    assert!(text.contains("in use"), "{text}");

    proxy.stop().await;
    let (ok, text) = shapesync(&["uninstall"], &db.url, "no\n");
    assert!(!ok && text.contains("cancelled"), "{text}");
    let (ok, text) = shapesync(&["uninstall"], &db.url, "yes\n");
    assert!(ok, "{text}");
    assert!(
        text.contains("removed: slot yes, publication yes, schema shapesync yes"),
        "{text}"
    );
    let left: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots)
                  + (SELECT count(*) FROM pg_publication)
                  + (SELECT count(*) FROM pg_namespace WHERE nspname = 'shapesync')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // The application's trigger outlives the schema: plain SQL writes still work.
    let moved: bool = client
        .query_one(
            "WITH old AS (SELECT id, updated_at FROM todos WHERE title = 'before')
             UPDATE todos t SET title = 'after uninstall' FROM old WHERE t.id = old.id
             RETURNING t.updated_at > old.updated_at",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(moved, "the trigger still dates plain writes");
}
