//! An fsync error is final for the logs it touched (Linux may drop the dirty pages and
//! report success on a retry): the proxy never confirms past an unsynced commit on their
//! account, rotates their shapes, and says so. After a `kill -9` and a restart nothing is lost
//! and nothing doubled.
//!
//! The test build of the program (`test-shapesync`) fails one fsync on request, cutting the
//! log back to what its last fsync covered, as the kernel can.

use std::collections::BTreeMap;
use std::time::Duration;

use tests::proxy_process::ProxyProcess;
use tests::shape_consumer::{ConsumerOptions, ConsumerState, ShapeConsumer, ShapeSpec};
use tests::{TestDb, shapesync_bin, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// id → title, as the client mirrors it.
fn mirrored(state: &ConsumerState) -> BTreeMap<String, String> {
    state
        .rows
        .values()
        .map(|row| {
            let text = |c: &str| row.get(c).and_then(|v| v.as_str()).unwrap_or("").to_owned();
            (text("id"), text("title"))
        })
        .collect()
}

async fn in_postgres(sql: &tokio_postgres::Client, table: &str) -> BTreeMap<String, String> {
    sql.query(&format!("SELECT id::text, title FROM {table}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_failed_fsync_rotates_its_shape_and_nothing_is_lost_or_doubled_after_a_crash() {
    let db = TestDb::new("fsync_failure").await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text);
         CREATE TABLE other (id int PRIMARY KEY, title text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5) g;
         INSERT INTO other SELECT g, 'other ' || g FROM generate_series(1, 5) g;",
    )
    .await
    .unwrap();
    let trigger = tempfile::tempdir().unwrap();
    let trigger = trigger.path().join("fail-next-fsync");
    let trigger_env = trigger.display().to_string();
    let mut proxy = ProxyProcess::start_logging_with_env(
        shapesync_bin!(),
        &db,
        &[],
        &[("SHAPESYNC_TEST_FSYNC_FAULT", &trigger_env)],
    )
    .await;
    let options = ConsumerOptions {
        live: false,
        ..Default::default()
    };
    let items = ShapeConsumer::new(
        &proxy.url,
        ShapeSpec::table("items", &["id"]),
        options.clone(),
    );
    let other = ShapeConsumer::new(&proxy.url, ShapeSpec::table("other", &["id"]), options);
    items.catch_up().await;
    other.catch_up().await;
    let items_handle = items.state().handle.unwrap();
    let other_handle = other.state().handle.unwrap();
    // An update already synced, then the one whose fsync fails.
    sql.batch_execute("UPDATE items SET title = 'synced' WHERE id = 1")
        .await
        .unwrap();
    wait_for("the synced update", WAIT, || async {
        items.catch_up().await;
        (mirrored(&items.state())["1"] == "synced").then_some(())
    })
    .await;

    std::fs::write(&trigger, b"").unwrap();
    sql.batch_execute("INSERT INTO items VALUES (6, 'lost by the disk')")
        .await
        .unwrap();
    wait_for("the injected fsync failure", WAIT, || async {
        (!trigger.exists()).then_some(())
    })
    .await;
    // Later transactions: each fsync succeeds, and the slot moves on past the failed one.
    sql.batch_execute(
        "UPDATE items SET title = 'after' WHERE id = 2;
         INSERT INTO other VALUES (6, 'after');",
    )
    .await
    .unwrap();
    // Wait until `other`'s shape has the later insert: everything has been processed.
    wait_for("the later insert into other", WAIT, || async {
        other.catch_up().await;
        mirrored(&other.state()).contains_key("6").then_some(())
    })
    .await;

    // And until the slot has confirmed everything written so far: the crash comes after.
    let written: String = sql
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    wait_for(
        "the slot to confirm the later transactions",
        WAIT,
        || async {
            sql.query_one(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots
             WHERE slot_name = 'shapesync'",
                &[&written],
            )
            .await
            .ok()
            .and_then(|row| row.get::<_, Option<bool>>(0))
            .filter(|confirmed| *confirmed)
        },
    )
    .await;
    proxy.kill9().await;
    proxy.restart().await;

    let want_items = in_postgres(&sql, "items").await;
    let want_other = in_postgres(&sql, "other").await;
    // Converged, or (the defect) stuck short of Postgres: compare after the wait either way.
    let _ = tokio::time::timeout(WAIT, async {
        loop {
            items.catch_up().await;
            other.catch_up().await;
            if mirrored(&items.state()) == want_items && mirrored(&other.state()) == want_other {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let items_state = items.state();
    let other_state = other.state();
    assert!(
        items_state.violations.is_empty(),
        "{:?}",
        items_state.violations
    );
    assert!(
        other_state.violations.is_empty(),
        "{:?}",
        other_state.violations
    );
    assert_eq!(mirrored(&items_state), want_items);
    assert_eq!(mirrored(&other_state), want_other);
    assert_eq!(
        items_state.refetches, 1,
        "the shape whose fsync failed is rebuilt once"
    );
    assert_ne!(items_state.handle.as_deref(), Some(items_handle.as_str()));
    assert_eq!(
        other_state.refetches, 0,
        "an unaffected shape keeps its log"
    );
    assert_eq!(other_state.handle.as_deref(), Some(other_handle.as_str()));
    let log = proxy.log();
    assert!(
        log.contains("ERROR")
            && log.contains("fsync of a shape log failed")
            && log.contains("rotating shape: its log's fsync failed"),
        "{log}"
    );
    assert!(
        log.contains(&items_handle),
        "names the rotated shape: {log}"
    );
}
