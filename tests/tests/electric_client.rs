//! Protocol conformance with the official `@electric-sql/client` from npm: what an Electric
//! user's app would see when pointed at shapesync.

use std::time::Duration;

use serde_json::{Map, Value, json};
use tests::electric::ElectricClient;
use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

const WAIT: Duration = Duration::from_secs(30);

async fn setup(name: &str, sql: &str) -> (TestDb, ProxyProcess) {
    let db = TestDb::new(name).await;
    db.connect().await.batch_execute(sql).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    (db, proxy)
}

const ITEMS: &str = "CREATE TABLE items (id int PRIMARY KEY, title text NOT NULL, owner text);
     INSERT INTO items VALUES (1, 'one', 'ann'), (2, 'two', 'bob');";

fn titles(rows: &Map<String, Value>) -> Vec<String> {
    let mut t: Vec<String> = rows
        .values()
        .map(|r| r["title"].as_str().unwrap_or_default().to_owned())
        .collect();
    t.sort();
    t
}

async fn live_insert_update_delete(sse: bool) {
    let (db, proxy) = setup(if sse { "ec_crud_sse" } else { "ec_crud_lp" }, ITEMS).await;
    let mut client = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items"}, "sse": sse, "raw": true}),
    );
    let rows = client.wait_rows(WAIT, |rows| rows.len() == 2).await;
    assert_eq!(titles(&rows), ["one", "two"]);

    let sql = db.connect().await;
    sql.batch_execute("INSERT INTO items VALUES (3, 'three', 'ann')")
        .await
        .unwrap();
    client.wait_rows(WAIT, |rows| rows.len() == 3).await;
    sql.batch_execute("UPDATE items SET title = 'ONE' WHERE id = 1")
        .await
        .unwrap();
    let rows = client
        .wait_rows(WAIT, |rows| titles(rows).contains(&"ONE".to_owned()))
        .await;
    assert_eq!(
        rows["\"public\".\"items\"/\"1\""]["owner"], "ann",
        "update keeps other columns"
    );
    sql.batch_execute("DELETE FROM items WHERE id = 2")
        .await
        .unwrap();
    let rows = client.wait_rows(WAIT, |rows| rows.len() == 2).await;
    assert_eq!(titles(&rows), ["ONE", "three"]);
    assert!(client.errors().is_empty(), "{:?}", client.errors());
}

#[tokio::test]
async fn long_poll_client_follows_inserts_updates_and_deletes() {
    live_insert_update_delete(false).await;
}

#[tokio::test]
async fn sse_client_follows_inserts_updates_and_deletes() {
    live_insert_update_delete(true).await;
}

#[tokio::test]
async fn rows_move_in_and_out_of_a_where_shape() {
    let (db, proxy) = setup("ec_where", ITEMS).await;
    let mut client = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items", "where": "owner = $1", "params": {"1": "ann"}}, "raw": true}),
    );
    let rows = client.wait_rows(WAIT, |rows| rows.len() == 1).await;
    assert_eq!(titles(&rows), ["one"]);
    let sql = db.connect().await;
    sql.batch_execute("UPDATE items SET owner = 'ann' WHERE id = 2")
        .await
        .unwrap();
    let rows = client.wait_rows(WAIT, |rows| rows.len() == 2).await;
    assert_eq!(titles(&rows), ["one", "two"]);
    sql.batch_execute("UPDATE items SET owner = 'cid' WHERE id = 1")
        .await
        .unwrap();
    let rows = client.wait_rows(WAIT, |rows| rows.len() == 1).await;
    assert_eq!(titles(&rows), ["two"]);
    let moved_out = client.messages().into_iter().find(|m| {
        m["key"] == "\"public\".\"items\"/\"1\"" && m["headers"]["operation"] == "delete"
    });
    assert!(
        moved_out.is_some(),
        "a row leaving the shape arrives as a delete"
    );
}

#[tokio::test]
async fn selected_columns_and_replica_full_are_honoured() {
    let (db, proxy) = setup("ec_columns", ITEMS).await;
    let mut narrow = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items", "columns": "id,title"}, "raw": true}),
    );
    let rows = narrow.wait_rows(WAIT, |rows| rows.len() == 2).await;
    for row in rows.values() {
        let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "title"]);
    }
    let mut full = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items", "replica": "full"}, "raw": true}),
    );
    full.wait_rows(WAIT, |rows| rows.len() == 2).await;
    db.connect()
        .await
        .batch_execute("UPDATE items SET title = 'uno' WHERE id = 1")
        .await
        .unwrap();
    let update = full
        .wait_message(WAIT, |m| m["headers"]["operation"] == "update")
        .await;
    assert_eq!(
        update["value"],
        json!({"id": "1", "title": "uno", "owner": "ann"})
    );
    assert_eq!(update["old_value"], json!({"title": "one"}));
}

#[tokio::test]
async fn a_deleted_shape_makes_the_client_refetch() {
    let (db, proxy) = setup("ec_refetch", ITEMS).await;
    let mut client = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items"}, "raw": true}),
    );
    client.wait_rows(WAIT, |rows| rows.len() == 2).await;
    let handle = client
        .history
        .iter()
        .rev()
        .find_map(|e| e["handle"].as_str().map(str::to_owned))
        .unwrap();
    let deleted = proxy
        .http()
        .delete(format!("{}/v1/shape?handle={handle}", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    db.connect()
        .await
        .batch_execute("INSERT INTO items VALUES (4, 'four', 'dan')")
        .await
        .unwrap();
    let rows = client.wait_rows(WAIT, |rows| rows.len() == 3).await;
    assert_eq!(titles(&rows), ["four", "one", "two"]);
    let new_handle = client
        .history
        .iter()
        .rev()
        .find_map(|e| e["handle"].as_str().map(str::to_owned))
        .unwrap();
    assert_ne!(new_handle, handle);
}

#[tokio::test]
async fn a_client_resumes_after_a_proxy_restart_without_refetching() {
    let (db, mut proxy) = setup("ec_restart", ITEMS).await;
    let mut client = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items"}, "raw": true}),
    );
    client.wait_rows(WAIT, |rows| rows.len() == 2).await;
    proxy.restart().await;
    db.connect()
        .await
        .batch_execute("INSERT INTO items VALUES (5, 'five', 'eve')")
        .await
        .unwrap();
    client.wait_rows(WAIT, |rows| rows.len() == 3).await;
    let refetched = client
        .messages()
        .iter()
        .any(|m| m["headers"]["control"] == "must-refetch");
    assert!(!refetched, "a restart must not force a refetch");
}

/// Every type the client parses, on a cluster whose time zone is not UTC: snapshot rows and
/// live changes must print values identically.
#[tokio::test]
async fn types_arrive_identically_through_snapshot_and_stream() {
    let db = TestDb::with_options(
        "ec_types",
        proxy::ops::local_cluster::ClusterOptions {
            settings: vec![("timezone".into(), "America/St_Johns".into())],
            ..Default::default()
        },
    )
    .await;
    db.connect()
        .await
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
             CREATE TABLE typed (
                 id int8 PRIMARY KEY, price numeric(12,3), flag bool, doc jsonb, tags text[],
                 at timestamptz, day date, uid uuid, m mood, raw bytea, note text, ratio float8);",
        )
        .await
        .unwrap();
    let insert = |id: i64| {
        format!(
            "INSERT INTO typed VALUES ({id}, 12345.678, true, '{{\"a\": [1, 2]}}', '{{x,\"y z\",NULL}}',
                '2024-02-29 12:34:56.789+01', '2024-02-29', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
                'happy', '\\xdeadbeef', 'héllo ✓ 日本', 0.1)"
        )
    };
    db.connect().await.batch_execute(&insert(1)).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let mut client = ElectricClient::start(&proxy.url, json!({"params": {"table": "typed"}}));
    client.wait_rows(WAIT, |rows| rows.len() == 1).await;
    db.connect().await.batch_execute(&insert(2)).await.unwrap();
    let rows = client.wait_rows(WAIT, |rows| rows.len() == 2).await;
    let snap = &rows["\"public\".\"typed\"/\"1\""];
    let live = &rows["\"public\".\"typed\"/\"2\""];
    assert_eq!(snap["id"], json!({"bigint": "1"}), "int8 parses as BigInt");
    for (column, expected) in [
        ("price", json!("12345.678")),
        ("flag", json!(true)),
        ("doc", json!({"a": [1, 2]})),
        ("tags", json!(["x", "y z", null])),
        ("at", json!("2024-02-29 11:34:56.789+00")),
        ("day", json!("2024-02-29")),
        ("uid", json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
        ("m", json!("happy")),
        ("raw", json!("\\xdeadbeef")),
        ("note", json!("héllo ✓ 日本")),
        ("ratio", json!(0.1)),
    ] {
        assert_eq!(snap[column], expected, "snapshot {column}");
        assert_eq!(live[column], expected, "stream {column}");
    }
}
