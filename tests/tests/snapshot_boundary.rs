//! The boundary between a shape's snapshot and its log (proxy/ARCHITECTURE.md, "The
//! snapshot/stream boundary"): a transaction
//! the snapshot holds must not be sent again as log changes, whenever replication delivers it.

use std::time::Duration;

use tests::proxy_process::ProxyProcess;
use tests::shape_consumer::{ConsumerOptions, ShapeConsumer, ShapeSpec};
use tests::{TestDb, shapesync_bin, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// Replication lags behind the database: while the proxy still decodes a big transaction, a
/// small one commits after it and a new shape's snapshot sees it. When the small transaction
/// finally arrives, the shape's log must skip it.
#[tokio::test]
async fn a_transaction_the_snapshot_holds_is_not_sent_again_when_replication_lags() {
    let db = TestDb::new("boundary_lag").await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE big (id int PRIMARY KEY, pad text);
         CREATE TABLE notes (id int PRIMARY KEY, title text);
         INSERT INTO notes VALUES (1, 'one');",
    )
    .await
    .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    // Both tables join the publication, and the big one's rows have a shape to be written to.
    for spec in [
        ShapeSpec::table("big", &["id"]),
        ShapeSpec::table("notes", &["id"]).filter("id < 0", &[]),
    ] {
        ShapeConsumer::new(&proxy.url, spec, ConsumerOptions::default())
            .catch_up()
            .await;
    }

    sql.batch_execute("INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 100000) g")
        .await
        .unwrap();
    // Below the small transaction's commit LSN, above the big one's.
    let before_small: String = sql
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::text", &[])
        .await
        .unwrap()
        .get(0);
    let before_small: u64 = before_small.parse().unwrap();
    sql.batch_execute("INSERT INTO notes VALUES (2, 'two')")
        .await
        .unwrap();

    let notes = ShapeConsumer::new(
        &proxy.url,
        ShapeSpec::table("notes", &["id"]),
        ConsumerOptions::default(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    notes.spawn(stop.clone());
    let state = wait_for("the notes shape past the small transaction", WAIT, || {
        let state = notes.state();
        async move { (state.up_to_date && state.global_last_seen > before_small).then_some(state) }
    })
    .await;
    stop.cancel();
    assert_eq!(
        state.violations,
        Vec::<String>::new(),
        "the snapshot saw (2, 'two'); the log must not insert it again"
    );
    assert_eq!(state.rows.len(), 2);
}
