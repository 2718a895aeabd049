//! Shapes that can no longer be continued are rotated: after a TRUNCATE or a change of the
//! columns they read every client gets a 409 (or must-refetch), refetches a new shape and
//! converges; shapes of other tables carry on. A lost slot or a different database rotates
//! every shape.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tests::electric::ElectricClient;
use tests::proxy_process::ProxyProcess;
use tests::shape_consumer::{ConsumerOptions, ShapeConsumer, ShapeSpec};
use tests::{TestDb, shape_http, shapesync_bin, wait_for};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

async fn setup(name: &str) -> (TestDb, ProxyProcess) {
    let db = TestDb::new(name).await;
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, title text);
             CREATE TABLE keep (id int PRIMARY KEY);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5) g;
             INSERT INTO keep VALUES (1);",
        )
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    (db, proxy)
}

fn follow(proxy: &ProxyProcess, spec: ShapeSpec, stop: &CancellationToken) -> ShapeConsumer {
    let consumer = ShapeConsumer::new(&proxy.url, spec, ConsumerOptions::default());
    consumer.spawn(stop.clone());
    consumer
}

fn row(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect()
}

fn item_key(id: &str) -> String {
    format!("\"public\".\"items\"/\"{id}\"")
}

async fn wait_rows(
    what: &str,
    consumer: &ShapeConsumer,
    expected: &BTreeMap<String, Map<String, Value>>,
) {
    wait_for(what, WAIT, || async {
        let state = consumer.state();
        assert!(
            state.violations.is_empty(),
            "{what}: {:?}",
            state.violations
        );
        (state.up_to_date && state.rows == *expected).then_some(())
    })
    .await;
}

async fn up_to_date(consumers: &[&ShapeConsumer]) {
    for consumer in consumers {
        wait_for("an up-to-date", WAIT, || async {
            consumer.state().up_to_date.then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_truncate_rotates_the_tables_shapes_and_clients_refetch_and_converge() {
    let (db, proxy) = setup("rotate_truncate").await;
    let stop = CancellationToken::new();
    let items = follow(&proxy, ShapeSpec::table("items", &["id"]), &stop);
    let keep = follow(&proxy, ShapeSpec::table("keep", &["id"]), &stop);
    up_to_date(&[&items, &keep]).await;
    let first_handle = items.state().handle.unwrap();
    let mut long_poll = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items"}, "raw": true}),
    );
    let mut sse = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items"}, "raw": true, "sse": true}),
    );
    for client in [&mut long_poll, &mut sse] {
        client.wait_rows(WAIT, |rows| rows.len() == 5).await;
    }

    let sql = db.connect().await;
    sql.batch_execute("TRUNCATE items").await.unwrap();
    sql.batch_execute("INSERT INTO items VALUES (10, 'after')")
        .await
        .unwrap();
    // A truncate between other changes of one transaction.
    sql.batch_execute(
        "BEGIN; INSERT INTO items VALUES (11, 'gone'); TRUNCATE items;
         INSERT INTO items VALUES (12, 'kept'); COMMIT;",
    )
    .await
    .unwrap();
    sql.batch_execute("INSERT INTO keep VALUES (2)")
        .await
        .unwrap();

    let expected = BTreeMap::from([(item_key("12"), row(&[("id", "12"), ("title", "kept")]))]);
    wait_rows("the items consumer after the truncates", &items, &expected).await;
    let state = items.state();
    assert!(state.refetches >= 1, "the truncate must cause a 409");
    assert_ne!(state.handle.as_deref(), Some(first_handle.as_str()));
    for client in [&mut long_poll, &mut sse] {
        let rows = client
            .wait_rows(WAIT, |rows| {
                rows.len() == 1 && rows.contains_key(&item_key("12"))
            })
            .await;
        assert_eq!(rows[&item_key("12")], json!({"id": "12", "title": "kept"}));
        let refetched = client
            .messages()
            .iter()
            .any(|m| m["headers"]["control"] == "must-refetch");
        assert!(refetched, "the Electric client was told to refetch");
        let client_errors: Vec<Value> = client
            .errors()
            .into_iter()
            .filter(|e| {
                e["status"]
                    .as_u64()
                    .is_some_and(|s| (400..500).contains(&s))
            })
            .collect();
        assert!(client_errors.is_empty(), "{client_errors:?}");
    }

    let keep_rows = BTreeMap::from([
        ("\"public\".\"keep\"/\"1\"".to_owned(), row(&[("id", "1")])),
        ("\"public\".\"keep\"/\"2\"".to_owned(), row(&[("id", "2")])),
    ]);
    wait_rows("the other table's consumer", &keep, &keep_rows).await;
    assert_eq!(
        keep.state().refetches,
        0,
        "another table's shape is not rotated"
    );
    stop.cancel();
}

#[tokio::test]
async fn adding_a_column_rotates_the_shapes_of_every_column_and_refetched_rows_have_it() {
    let (db, proxy) = setup("rotate_alter").await;
    let stop = CancellationToken::new();
    let all = follow(&proxy, ShapeSpec::table("items", &["id"]), &stop);
    let narrow = follow(
        &proxy,
        ShapeSpec::table("items", &["id"]).columns("id,title"),
        &stop,
    );
    up_to_date(&[&all, &narrow]).await;
    let mut electric = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items"}, "raw": true}),
    );
    electric.wait_rows(WAIT, |rows| rows.len() == 5).await;

    let sql = db.connect().await;
    sql.batch_execute("ALTER TABLE items ADD COLUMN extra text DEFAULT 'x'")
        .await
        .unwrap();
    sql.batch_execute("UPDATE items SET title = 'changed' WHERE id = 1")
        .await
        .unwrap();

    let title = |id: i32| {
        if id == 1 {
            "changed".to_owned()
        } else {
            format!("item {id}")
        }
    };
    let wide: BTreeMap<_, _> = (1..=5)
        .map(|id| {
            let id_text = id.to_string();
            (
                item_key(&id_text),
                row(&[("id", &id_text), ("title", &title(id)), ("extra", "x")]),
            )
        })
        .collect();
    let slim: BTreeMap<_, _> = (1..=5)
        .map(|id| {
            let id_text = id.to_string();
            (
                item_key(&id_text),
                row(&[("id", &id_text), ("title", &title(id))]),
            )
        })
        .collect();
    wait_rows("the all-columns consumer", &all, &wide).await;
    wait_rows("the id,title consumer", &narrow, &slim).await;
    assert!(all.state().refetches >= 1);
    // It reads none of the changed columns (see schema_changes.rs).
    assert_eq!(narrow.state().refetches, 0);
    let rows = electric
        .wait_rows(WAIT, |rows| {
            rows.get(&item_key("1"))
                .is_some_and(|r| r["extra"] == "x" && r["title"] == "changed")
        })
        .await;
    assert_eq!(rows.len(), 5);
    stop.cancel();
}

/// The replication slot is dropped under the proxy: changes made meanwhile never reach the
/// stream, so every shape is rotated and clients refetch rows that include them.
#[tokio::test]
async fn a_lost_slot_rotates_every_shape_and_clients_converge() {
    let (db, proxy) = setup("rotate_slot_lost").await;
    let stop = CancellationToken::new();
    let items = follow(&proxy, ShapeSpec::table("items", &["id"]), &stop);
    let keep = follow(&proxy, ShapeSpec::table("keep", &["id"]), &stop);
    up_to_date(&[&items, &keep]).await;

    let sql = db.connect().await;
    wait_for("the slot dropped", WAIT, || async {
        // The proxy reconnects quickly: end its session and drop the slot in one statement.
        sql.query(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
             WHERE slot_name = 'shapesync' AND active_pid IS NOT NULL",
            &[],
        )
        .await
        .ok()?;
        sql.batch_execute(
            "SELECT pg_drop_replication_slot('shapesync')
             WHERE EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'shapesync')",
        )
        .await
        .ok()?;
        sql.batch_execute("INSERT INTO items VALUES (6, 'in the gap'); INSERT INTO keep VALUES (2)")
            .await
            .ok()
    })
    .await;

    let mut expected: BTreeMap<_, _> = (1..=5)
        .map(|id| {
            let id = id.to_string();
            let title = format!("item {id}");
            (item_key(&id), row(&[("id", &id), ("title", &title)]))
        })
        .collect();
    expected.insert(item_key("6"), row(&[("id", "6"), ("title", "in the gap")]));
    wait_rows("the items consumer after the slot loss", &items, &expected).await;
    let keep_rows = BTreeMap::from([
        ("\"public\".\"keep\"/\"1\"".to_owned(), row(&[("id", "1")])),
        ("\"public\".\"keep\"/\"2\"".to_owned(), row(&[("id", "2")])),
    ]);
    wait_rows("the keep consumer after the slot loss", &keep, &keep_rows).await;
    assert!(items.state().refetches >= 1 && keep.state().refetches >= 1);
    stop.cancel();
}

/// The proxy comes back to a database with another system identifier (a restore, a failover,
/// a pg_upgrade; here the identity it recorded is edited while it is stopped): no shape log
/// can be continued, so every shape is rotated and each old handle gets 409 with a new one.
#[tokio::test]
async fn a_changed_system_identifier_rotates_every_shape() {
    let (_db, mut proxy) = setup("rotate_identity").await;
    let http = proxy.http().clone();
    let mut handles = Vec::new();
    for table in ["items", "keep"] {
        let reply = shape_http::get(&http, &proxy.url, &format!("table={table}&offset=-1")).await;
        assert_eq!(reply.status, 200);
        handles.push((table, reply.header("electric-handle").unwrap().to_owned()));
    }
    proxy.stop().await;
    let identity_file = proxy.storage_dir().join("v1/database.json");
    let mut identity: Value =
        serde_json::from_slice(&std::fs::read(&identity_file).expect("the recorded identity"))
            .unwrap();
    assert!(identity["system_id"].is_string(), "{identity}");
    identity["system_id"] = json!("1");
    std::fs::write(&identity_file, identity.to_string()).unwrap();
    proxy.restart().await;

    for (table, old) in handles {
        let query = format!("table={table}&offset=0_0&handle={old}");
        let reply = wait_for("409 for a shape of the old database", WAIT, || async {
            let reply = shape_http::get(&http, &proxy.url, &query).await;
            (reply.status == 409).then_some(reply)
        })
        .await;
        assert_eq!(
            reply.body,
            json!([{"headers": {"control": "must-refetch"}}])
        );
        let new = reply.header("electric-handle").unwrap();
        assert_ne!(new, old, "{table}: handles are never reused");
        let fresh = shape_http::get(&http, &proxy.url, &format!("table={table}&offset=-1")).await;
        assert_eq!(fresh.status, 200);
        assert_eq!(fresh.header("electric-handle"), Some(new));
    }
    // The identity on record is the real one again: the next restart rotates nothing.
    let recorded: Value = serde_json::from_slice(&std::fs::read(&identity_file).unwrap()).unwrap();
    assert_ne!(recorded["system_id"], "1");
}
