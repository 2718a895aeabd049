//! An fsync error is final for the logs it touched (Linux may drop the dirty pages and
//! report success on a retry): the proxy never confirms past an unsynced commit on their
//! account, rotates their shapes, and says so. After a `kill -9` and a restart nothing is lost
//! and nothing doubled.
//!
//! The test build of the program (`test-shapesync`) fails one fsync on request, cutting the
//! log back to what its last fsync covered, as the kernel can; or records what each fsync
//! covered, so that a test can play a power loss after `kill -9`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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

/// Simulates a power loss after `kill -9`: every shape log loses what no fsync covered (the
/// test build records, in `record`, each log's length whenever an fsync of it is made).
fn lose_unsynced_writes(storage_dir: &Path, record: &Path) {
    let mut synced: BTreeMap<PathBuf, u64> = BTreeMap::new();
    for line in std::fs::read_to_string(record).unwrap_or_default().lines() {
        let (len, path) = line.split_once(' ').expect("<len> <path>");
        synced.insert(PathBuf::from(path), len.parse().expect("a length"));
    }
    for dir in std::fs::read_dir(storage_dir.join("v1/shapes")).expect("shapes directory") {
        let log = dir.expect("a shape directory").path().join("changes.log");
        let keep = synced.get(&log).copied().unwrap_or(0);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .expect("open a shape log")
            .set_len(keep)
            .expect("cut a shape log");
    }
}

/// The transactions captured while a new shape's snapshot ran were confirmed to Postgres as
/// they came: a capture needs no fsync, since a shape whose snapshot never completed is
/// dropped at a restart. When the snapshot is done they move into the shape's log, and they
/// must be durable there before `shape.json` says the shape is complete: a power loss right
/// after must not take them away, as Postgres will not send them again.
#[tokio::test]
async fn a_new_shape_keeps_the_transactions_captured_during_its_snapshot_across_a_power_loss() {
    let db = TestDb::new("fsync_capture").await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50000) g;",
    )
    .await
    .unwrap();
    let files = tempfile::tempdir().unwrap();
    let record = files.path().join("synced");
    let record_env = record.display().to_string();
    let mut proxy = ProxyProcess::start_logging_with_env(
        shapesync_bin!(),
        &db,
        &[],
        &[("SHAPESYNC_TEST_FSYNC_RECORD", &record_env)],
    )
    .await;
    let options = ConsumerOptions {
        live: false,
        ..Default::default()
    };
    // The table joins the publication through a shape that none of the rows below reach.
    ShapeConsumer::new(
        &proxy.url,
        ShapeSpec::table("items", &["id"]).filter("id < 0", &[]),
        options.clone(),
    )
    .catch_up()
    .await;

    // A transaction in progress when the snapshot is taken (so the snapshot lacks it) holds
    // the table until it commits, so the snapshot's query starts reading the table only then:
    // the stream delivers the commit while the rows are read, and it is captured.
    let held = db.connect().await;
    held.batch_execute(
        "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE;
         INSERT INTO items VALUES (0, 'captured')",
    )
    .await
    .unwrap();
    let items = ShapeConsumer::new(&proxy.url, ShapeSpec::table("items", &["id"]), options);
    let creating = tokio::spawn({
        let items = items.clone();
        async move { items.catch_up().await }
    });
    wait_for("the snapshot waiting for the table", WAIT, || async {
        let waiting: i64 = sql
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'shapesync-snapshot' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (waiting > 0).then_some(())
    })
    .await;
    held.batch_execute("COMMIT").await.unwrap();
    creating.await.expect("the new shape is served");
    assert_eq!(
        mirrored(&items.state()).get("0").map(String::as_str),
        Some("captured")
    );
    let handle = items.state().handle.unwrap();

    proxy.kill9().await;
    lose_unsynced_writes(&proxy.storage_dir(), &record);
    proxy.restart().await;

    let want = in_postgres(&sql, "items").await;
    let again = ShapeConsumer::new(
        &proxy.url,
        ShapeSpec::table("items", &["id"]),
        ConsumerOptions {
            live: false,
            ..Default::default()
        },
    );
    again.catch_up().await;
    let state = again.state();
    assert!(state.violations.is_empty(), "{:?}", state.violations);
    assert_eq!(
        state.handle.as_deref(),
        Some(handle.as_str()),
        "the shape was restored"
    );
    let rows = mirrored(&state);
    assert_eq!(
        rows.get("0").map(String::as_str),
        Some("captured"),
        "the transaction captured during the snapshot, after the power loss"
    );
    assert!(
        rows == want,
        "{} rows, Postgres has {}",
        rows.len(),
        want.len()
    );
}
