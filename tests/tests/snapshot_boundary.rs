//! The boundary between a shape's snapshot and its log (proxy/ARCHITECTURE.md, "The
//! snapshot/stream boundary"): a transaction
//! the snapshot holds must not be sent again as log changes, whenever replication delivers it;
//! and a row prints the same texts whether it comes in the snapshot or in the log.

use std::time::Duration;

use serde_json::Value;
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

/// The snapshot query reads most types with `::text` and the rest with `format('%s')`; every
/// value must print exactly as pgoutput prints it in the log. Types whose cast to text is not
/// their output function (`bool`, `bpchar`, `"char"`, `name`, `inet`, `cidr`), domains over
/// them, user types, arrays, special values and NULLs, on a cluster outside UTC.
#[tokio::test]
async fn snapshot_rows_print_every_type_as_the_log_does() {
    let db = TestDb::with_options(
        "snapshot_texts",
        proxy::ops::local_cluster::ClusterOptions {
            settings: vec![("timezone".into(), "America/St_Johns".into())],
            ..Default::default()
        },
    )
    .await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE DOMAIN yes AS bool;
         CREATE DOMAIN positive AS int4 CHECK (VALUE > 0);
         CREATE DOMAIN code AS bpchar(4);
         CREATE TABLE typed (
             id int4 PRIMARY KEY, b bool, y yes, p positive, c bpchar(5), cd code, ch \"char\",
             n name, ip inet, net cidr, m money, x xml, iv interval, t time, tz timetz,
             ts timestamp, tstz timestamptz, d date, f4 float4, f8 float8, num numeric,
             i2 int2, i8 int8, u uuid, j json, jb jsonb, by bytea, vc varchar(10), e mood,
             flags bool[], words text[], tx text, o oid, pt point);",
    )
    .await
    .unwrap();
    let values = [
        "true, false, 7, 'ab', 'xy', 'q', 'a name', '10.0.0.1', '10.1.0.0/16', 12.5, '<a>x</a>',
         '1 day 02:03:04.5', '12:34:56.789', '12:34:56+05:30', '2024-02-29 12:34:56.789',
         '2024-02-29 12:34:56.789+01', '2024-02-29', 1.1, 0.1, 'NaN', -32768,
         9223372036854775807, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"b\": 1,  \"a\": [1]}',
         '{\"b\": 1,  \"a\": [1, \"\\u00e9\"]}', '\\xdeadbeef', 'héllo ✓', 'happy',
         '{t,f,NULL}', '{x,\"y z\",NULL}', 'quote \" and \\\\ tab\t', 42, '(1.5,2)'",
        "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         'infinity', '-infinity', NULL, '-Infinity', 'Infinity', 'Infinity', NULL, NULL, NULL,
         'null', 'null', '', '', NULL, '{}', '{}', '', NULL, NULL",
    ];
    for (id, values) in values.iter().enumerate() {
        sql.batch_execute(&format!("INSERT INTO typed VALUES ({id}, {values})"))
            .await
            .unwrap();
    }
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let consumer = ShapeConsumer::new(
        &proxy.url,
        ShapeSpec::table("typed", &["id"]),
        ConsumerOptions::default(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    consumer.spawn(stop.clone());
    wait_for("the snapshot", WAIT, || {
        let state = consumer.state();
        async move { (state.up_to_date && state.rows.len() == 2).then_some(()) }
    })
    .await;
    // The same rows again, through the log.
    for (id, values) in values.iter().enumerate() {
        sql.batch_execute(&format!("INSERT INTO typed VALUES ({}, {values})", id + 10))
            .await
            .unwrap();
    }
    let state = wait_for("the live rows", WAIT, || {
        let state = consumer.state();
        async move { (state.rows.len() == 4).then_some(state) }
    })
    .await;
    stop.cancel();
    assert_eq!(state.violations, Vec::<String>::new());
    let row = |id: usize| {
        let mut row = state.rows[&format!("\"public\".\"typed\"/\"{id}\"")].clone();
        row.remove("id");
        row
    };
    for id in 0..values.len() {
        let (snapshot, live) = (row(id), row(id + 10));
        assert_eq!(snapshot.len(), 33, "{snapshot:?}");
        for (column, text) in &snapshot {
            assert_eq!(
                Some(text),
                live.get(column),
                "column {column}: snapshot vs log"
            );
        }
    }
    // Spot checks of the forms that differ from a cast to text.
    let first = row(0);
    for (column, expected) in [
        ("b", "t"),
        ("y", "f"),
        ("c", "ab   "),
        ("cd", "xy  "),
        ("ip", "10.0.0.1"),
    ] {
        assert_eq!(first[column], Value::from(expected), "column {column}");
    }
}
