//! The replication stream against a real Postgres: decoded changes and their commit LSNs,
//! TOAST, transactions, reconnection after restarts and terminated walsenders, keepalive
//! acknowledgements, slot invalidation, and the errors an administrator has to act on.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use proxy::ops::local_cluster::ClusterOptions;
use proxy::replication::{
    ReplicaIdentity, ReplicationError, ReplicationEvent, StreamStatus, WalChange,
    ensure_publication, prepare_table,
};
use shapes::lsn::Lsn;
use shapes::schema::QualifiedName;
use tests::TestDb;
use tests::replication::{Consumer, start_stream, stop_stream};

const SECOND: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(30);

fn s(value: &str) -> Option<String> {
    Some(value.to_owned())
}

fn items() -> QualifiedName {
    QualifiedName::new("public", "items")
}

/// A test database with `items` prepared for replication in publication `shapesync`.
async fn prepared_db(name: &str, options: ClusterOptions) -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::with_options(name, options).await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, title text, body text, n int,
                                 at timestamptz);
             CREATE TABLE unpublished (id serial PRIMARY KEY, v text)",
        )
        .await
        .unwrap();
    ensure_publication(&client, "shapesync").await.unwrap();
    let prepared = prepare_table(&mut client, "shapesync", &items(), SECOND)
        .await
        .unwrap();
    assert!(prepared.added_to_publication && prepared.replica_identity_set);
    (db, client)
}

/// Runs `sql` in one transaction; returns (insert LSN just before COMMIT, insert LSN after
/// it, the transaction's 32-bit xid).
async fn commit_bracketed(client: &mut tokio_postgres::Client, sql: &str) -> (Lsn, Lsn, u32) {
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(sql).await.unwrap();
    let row = tx
        .query_one(
            "SELECT pg_current_wal_insert_lsn()::text, txid_current()",
            &[],
        )
        .await
        .unwrap();
    let before: Lsn = row.get::<_, String>(0).parse().unwrap();
    let xid = (row.get::<_, i64>(1) & 0xffff_ffff) as u32;
    tx.commit().await.unwrap();
    (before, current_lsn(client).await, xid)
}

async fn current_lsn(client: &tokio_postgres::Client) -> Lsn {
    let row = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap();
    row.get::<_, String>(0).parse().unwrap()
}

async fn slot_restart_lsn(client: &tokio_postgres::Client) -> Option<Lsn> {
    let row = client
        .query_opt(
            "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'shapesync'",
            &[],
        )
        .await
        .unwrap()?;
    row.get::<_, Option<String>>(0)?.parse().ok()
}

async fn slot_row(client: &tokio_postgres::Client) -> Option<(Option<Lsn>, String, Option<i32>)> {
    client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, coalesce(wal_status, ''), active_pid
             FROM pg_replication_slots WHERE slot_name = 'shapesync'",
            &[],
        )
        .await
        .unwrap()
        .map(|row| {
            (
                row.get::<_, Option<String>>(0).and_then(|t| t.parse().ok()),
                row.get(1),
                row.get(2),
            )
        })
}

#[tokio::test]
async fn changes_arrive_decoded_with_their_commit_lsn_and_the_system_identity() {
    let (db, mut client) = prepared_db("changes", ClusterOptions::default()).await;
    let (stream, mut consumer, shutdown) = start_stream(&db.url, Lsn::ZERO, 64, |_| {});
    consumer
        .until("connected", WAIT, |c| !c.sessions.is_empty())
        .await;

    let (before, after, xid) = commit_bracketed(
        &mut client,
        "INSERT INTO items (id, title, n) VALUES (1, 'one', 10), (2, 'two', NULL)",
    )
    .await;
    commit_bracketed(&mut client, "UPDATE items SET title = 'uno' WHERE id = 1").await;
    commit_bracketed(&mut client, "DELETE FROM items WHERE id = 2").await;
    commit_bracketed(&mut client, "TRUNCATE items").await;
    consumer
        .until("four transactions", WAIT, |c| c.transactions.len() == 4)
        .await;

    let first = &consumer.transactions[0];
    assert_eq!(first.xid, xid);
    assert!(
        before <= first.commit_lsn && first.commit_lsn < first.end_lsn && first.end_lsn <= after,
        "{before} <= {} < {} <= {after}",
        first.commit_lsn,
        first.end_lsn
    );
    let rows: Vec<_> = first
        .changes
        .iter()
        .map(|c| match c {
            WalChange::Insert { relation, new } => {
                assert_eq!(relation.name, items());
                assert_eq!(relation.replica_identity, ReplicaIdentity::Full);
                new[..3].to_vec()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        rows,
        [vec![s("1"), s("one"), None], vec![s("2"), s("two"), None]]
    );
    let WalChange::Update { old, new, .. } = &consumer.transactions[1].changes[0] else {
        panic!()
    };
    assert_eq!(old.as_ref().unwrap()[1], s("one"));
    assert_eq!(new[1], s("uno"));
    assert_eq!(new[3], s("10"));
    let WalChange::Delete { old, .. } = &consumer.transactions[2].changes[0] else {
        panic!()
    };
    assert_eq!(old[..2], [s("2"), s("two")]);
    let WalChange::Truncate { relations, .. } = &consumer.transactions[3].changes[0] else {
        panic!()
    };
    assert_eq!(relations[0].name, items());
    let lsns: Vec<_> = consumer.transactions.iter().map(|t| t.commit_lsn).collect();
    assert!(
        lsns.windows(2).all(|w| w[0] < w[1]),
        "commit order: {lsns:?}"
    );

    let row = client
        .query_one(
            "SELECT s.system_identifier, c.timeline_id
             FROM pg_control_system() s, pg_control_checkpoint() c",
            &[],
        )
        .await
        .unwrap();
    let (system_id, timeline, _) = consumer.sessions[0];
    assert_eq!(system_id as i64, row.get::<_, i64>(0));
    assert_eq!(timeline as i32, row.get::<_, i32>(1));
    assert!(matches!(
        *stream.status().borrow(),
        StreamStatus::Streaming { .. }
    ));

    shutdown.cancel();
    stream.join().await.expect("a clean shutdown");
    assert!(consumer.recv(WAIT).await.is_none(), "the channel closes");
}

#[tokio::test]
async fn values_use_the_snapshot_display_settings_whatever_the_server_says() {
    let settings = [
        ("timezone", "America/St_Johns"),
        ("datestyle", "SQL, MDY"),
        ("intervalstyle", "postgres"),
        ("extra_float_digits", "-2"),
        ("bytea_output", "escape"),
    ];
    let options = ClusterOptions {
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ClusterOptions::default()
    };
    let (db, client) = prepared_db("display", options).await;
    client
        .batch_execute(
            "CREATE TABLE typed (id int PRIMARY KEY, at timestamptz, d date, i interval,
                                 f float8, b bytea);
             ALTER PUBLICATION shapesync ADD TABLE typed",
        )
        .await
        .unwrap();
    let (stream, mut consumer, _shutdown) = start_stream(&db.url, Lsn::ZERO, 64, |_| {});
    consumer
        .until("connected", WAIT, |c| !c.sessions.is_empty())
        .await;
    client
        .batch_execute(
            "INSERT INTO typed VALUES (1, '2024-01-02 03:04:05+00', '2024-03-04',
                                       '1 day 2 hours', 0.1::float8 + 0.2, '\\x00ff')",
        )
        .await
        .unwrap();
    consumer
        .until("the insert", WAIT, |c| c.transactions.len() == 1)
        .await;
    let (_, row) = consumer.inserted_rows().next().unwrap();
    assert_eq!(
        *row,
        vec![
            s("1"),
            s("2024-01-02 03:04:05+00"),
            s("2024-03-04"),
            s("P1DT2H"),
            s("0.30000000000000004"),
            s("\\x00ff"),
        ]
    );
    stop_stream(stream).await;
}

#[tokio::test]
async fn an_unchanged_toasted_value_is_filled_from_the_old_row() {
    let (db, client) = prepared_db("toast", ClusterOptions::default()).await;
    let (stream, mut consumer, _shutdown) = start_stream(&db.url, Lsn::ZERO, 64, |_| {});
    consumer
        .until("connected", WAIT, |c| !c.sessions.is_empty())
        .await;
    // 3,200 random hex characters: incompressible, so stored out of line.
    client
        .batch_execute(
            "INSERT INTO items (id, body, n)
             SELECT 1, string_agg(md5(random()::text), ''), 1 FROM generate_series(1, 100)",
        )
        .await
        .unwrap();
    client
        .batch_execute("UPDATE items SET n = 2 WHERE id = 1")
        .await
        .unwrap();
    let toast_table: String = client
        .query_one(
            "SELECT reltoastrelid::regclass::text FROM pg_class WHERE relname = 'items'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let chunks: i64 = client
        .query_one(&format!("SELECT count(*) FROM {toast_table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert!(chunks > 0, "the value is stored out of line");
    let body: String = client
        .query_one("SELECT body FROM items WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    consumer
        .until("insert and update", WAIT, |c| c.transactions.len() == 2)
        .await;
    let WalChange::Update {
        new,
        unfilled_toast,
        ..
    } = &consumer.transactions[1].changes[0]
    else {
        panic!()
    };
    assert_eq!(new[2].as_deref(), Some(body.as_str()));
    assert_eq!(new[3], s("2"));
    assert!(unfilled_toast.is_empty());
    stop_stream(stream).await;
}

#[tokio::test]
async fn a_multi_statement_transaction_arrives_as_one_in_order() {
    let (db, mut client) = prepared_db("multi", ClusterOptions::default()).await;
    let (stream, mut consumer, _shutdown) = start_stream(&db.url, Lsn::ZERO, 64, |_| {});
    consumer
        .until("connected", WAIT, |c| !c.sessions.is_empty())
        .await;
    commit_bracketed(
        &mut client,
        "INSERT INTO items (id, n) VALUES (1, 1);
         INSERT INTO items (id, n) VALUES (2, 1);
         UPDATE items SET n = 2 WHERE id = 1;
         DELETE FROM items WHERE id = 2;
         INSERT INTO items (id, n) VALUES (3, 1)",
    )
    .await;
    consumer
        .until("the transaction", WAIT, |c| c.transactions.len() == 1)
        .await;
    let ops: Vec<(&str, Option<String>)> = consumer.transactions[0]
        .changes
        .iter()
        .map(|c| match c {
            WalChange::Insert { new, .. } => ("insert", new[0].clone()),
            WalChange::Update { new, .. } => ("update", new[0].clone()),
            WalChange::Delete { old, .. } => ("delete", old[0].clone()),
            WalChange::Truncate { .. } => ("truncate", None),
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("insert", s("1")),
            ("insert", s("2")),
            ("update", s("1")),
            ("delete", s("2")),
            ("insert", s("3")),
        ]
    );
    stop_stream(stream).await;
}

/// Inserts ids `range` into items, one transaction each.
async fn insert_each(client: &tokio_postgres::Client, range: std::ops::Range<i32>) {
    for id in range {
        client
            .execute("INSERT INTO items (id, n) VALUES ($1, 0)", &[&id])
            .await
            .unwrap();
    }
}

fn item_ids(consumer: &Consumer) -> BTreeSet<i32> {
    consumer
        .inserted_rows()
        .filter(|(table, _)| *table == "items")
        .map(|(_, row)| row[0].as_deref().unwrap().parse().unwrap())
        .collect()
}

/// Every re-sent transaction came from the session's start on, and not past what the
/// consumer had applied.
fn assert_duplicates_are_harmless(consumer: &Consumer) {
    for dup in &consumer.duplicates {
        assert!(
            dup.commit_lsn <= dup.last_applied && dup.commit_lsn >= dup.session_start,
            "{dup:?}"
        );
        if consumer.flush_every == 1 {
            assert!(dup.commit_lsn < dup.flushed, "{dup:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_reconnects_after_postgres_restarts_and_loses_nothing() {
    let (mut db, client) = prepared_db("restart", ClusterOptions::default()).await;
    let (stream, mut consumer, _shutdown) = start_stream(&db.url, Lsn::ZERO, 1024, |_| {});
    consumer
        .until("connected", WAIT, |c| !c.sessions.is_empty())
        .await;
    insert_each(&client, 0..20).await;
    consumer
        .until("the first rows", WAIT, |c| c.inserts == 20)
        .await;
    drop(client);

    tokio::task::block_in_place(|| db.cluster.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| db.cluster.start()).expect("restart");
    let client = db.connect().await;
    insert_each(&client, 20..40).await;
    consumer
        .until("rows after the restart", WAIT, |c| c.inserts == 40)
        .await;
    tokio::task::block_in_place(|| db.cluster.kill());
    // The killed server's backends (our walsender among them) take a moment to notice.
    let mut attempts = 0;
    while let Err(err) = tokio::task::block_in_place(|| db.cluster.start()) {
        attempts += 1;
        assert!(attempts < 50, "recover from a crash: {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let client = db.connect().await;
    insert_each(&client, 40..60).await;

    consumer.until("every row", WAIT, |c| c.inserts == 60).await;
    assert_eq!(item_ids(&consumer), (0..60).collect());
    assert!(consumer.sessions.len() >= 3, "{:?}", consumer.sessions);
    assert!(
        consumer
            .other
            .iter()
            .any(|e| matches!(e, ReplicationEvent::Disconnected { .. }))
    );
    // Each new session started at the consumer's flushed position.
    for window in consumer.sessions.windows(2) {
        assert!(window[1].2 >= window[0].2);
    }
    assert_duplicates_are_harmless(&consumer);
    assert!(!stream.is_finished());
    stop_stream(stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_reconnects_after_its_walsender_is_terminated_mid_stream() {
    let (db, client) = prepared_db("terminate", ClusterOptions::default()).await;
    let (stream, mut consumer, _shutdown) = start_stream(&db.url, Lsn::ZERO, 256, |_| {});
    // Flush lazily, as fsync groups do: re-sent transactions then really happen.
    consumer.flush_every = 7;
    consumer
        .until("connected", WAIT, |c| !c.sessions.is_empty())
        .await;

    let terminated = Arc::new(AtomicI64::new(0));
    let admin = db.connect().await;
    let terminator = tokio::spawn({
        let terminated = terminated.clone();
        async move {
            while terminated.load(Ordering::SeqCst) < 4 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let row = admin
                    .query_one(
                        "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots
                         WHERE slot_name = 'shapesync' AND active_pid IS NOT NULL",
                        &[],
                    )
                    .await
                    .unwrap();
                terminated.fetch_add(row.get::<_, i64>(0), Ordering::SeqCst);
            }
        }
    });
    // Writes until the walsender was terminated four times, then once more.
    let mut writer = tokio::spawn({
        let terminated = terminated.clone();
        async move {
            let mut expected = BTreeSet::new();
            for round in 0.. {
                let last = terminated.load(Ordering::SeqCst) >= 4;
                let base = round * 10_000;
                insert_each(&client, base..base + 30).await;
                // A big transaction, so that a termination can land inside one.
                client
                    .execute(
                        "INSERT INTO items (id, n) SELECT g, 1 FROM generate_series($1::int, $2) g",
                        &[&(base + 1000), &(base + 2999)],
                    )
                    .await
                    .unwrap();
                expected.extend((base..base + 30).chain(base + 1000..base + 3000));
                if last {
                    break;
                }
            }
            expected
        }
    });
    let expected = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            tokio::select! {
                expected = &mut writer => break expected.unwrap(),
                event = consumer.events.recv() => consumer.apply(event.expect("the stream runs")),
            }
        }
    })
    .await
    .expect("the writer finishes");
    terminator.await.unwrap();
    consumer
        .until("every row", Duration::from_secs(90), |c| {
            c.inserts == expected.len()
        })
        .await;
    assert_eq!(item_ids(&consumer), expected);
    assert!(consumer.sessions.len() >= 5, "{:?}", consumer.sessions);
    assert!(
        !consumer.duplicates.is_empty(),
        "lazy flushing makes Postgres re-send"
    );
    assert_duplicates_are_harmless(&consumer);
    stop_stream(stream).await;
}

#[tokio::test]
async fn an_idle_slot_is_acknowledged_up_to_the_servers_wal_end() {
    let (db, client) = prepared_db("idle", ClusterOptions::default()).await;
    let (stream, mut consumer, _shutdown) = start_stream(&db.url, Lsn::ZERO, 64, |_| {});
    consumer
        .until("connected", WAIT, |c| !c.sessions.is_empty())
        .await;
    insert_each(&client, 0..3).await;
    consumer
        .until("the rows", WAIT, |c| c.transactions.len() == 3)
        .await;
    // WAL the slot does not publish: only keepalives speak of it.
    for _ in 0..20 {
        client
            .execute("INSERT INTO unpublished (v) VALUES ('x')", &[])
            .await
            .unwrap();
    }
    let target = current_lsn(&client).await;
    let consumer_flushed = consumer.flushed();
    assert!(consumer_flushed < target);
    // Nothing to consume meanwhile: only keepalives speak of that WAL.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (confirmed, _, _) = slot_row(&client).await.unwrap();
        if confirmed.is_some_and(|c| c >= target) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "confirmed_flush_lsn {confirmed:?} never passed the idle WAL at {target}"
        );
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(50), consumer.events.recv()).await
        {
            consumer.apply(event);
        }
    }
    assert_eq!(
        consumer.flushed(),
        consumer_flushed,
        "the consumer flushed nothing more"
    );
    stop_stream(stream).await;
}

#[tokio::test]
async fn the_stream_starts_at_the_consumers_position_not_the_slots() {
    let (db, client) = prepared_db("resume", ClusterOptions::default()).await;
    // No status update while it runs: the slot stays where it was created.
    let (stream, mut consumer, shutdown) = start_stream(&db.url, Lsn::ZERO, 64, |c| {
        c.status_interval = Duration::from_secs(3600);
    });
    consumer
        .until("connected", WAIT, |c| !c.sessions.is_empty())
        .await;
    insert_each(&client, 0..3).await;
    consumer
        .until("three transactions", WAIT, |c| c.transactions.len() == 3)
        .await;
    shutdown.cancel();
    stream.join().await.unwrap();
    let (confirmed, _, _) = slot_row(&client).await.unwrap();
    let second_end = consumer.transactions[1].end_lsn;
    assert!(confirmed.unwrap() < consumer.transactions[0].commit_lsn);

    let (stream, mut resumed, _shutdown) = start_stream(&db.url, second_end, 64, |_| {});
    resumed
        .until("the third transaction", WAIT, |c| {
            !c.transactions.is_empty()
        })
        .await;
    assert_eq!(resumed.sessions[0].2, second_end);
    assert_eq!(
        resumed.transactions[0].commit_lsn,
        consumer.transactions[2].commit_lsn
    );
    stop_stream(stream).await;
}

#[tokio::test]
async fn an_invalidated_slot_is_reported_lost_and_replaced_by_a_working_one() {
    let options = ClusterOptions {
        settings: vec![("max_slot_wal_keep_size".into(), "1MB".into())],
        ..ClusterOptions::default()
    };
    let (db, client) = prepared_db("invalidated", options).await;
    let (stream, mut consumer, _shutdown) = start_stream(&db.url, Lsn::ZERO, 1024, |_| {});
    // Delivered but never flushed: the slot cannot move past it.
    consumer.flush_every = usize::MAX;
    consumer
        .until("connected", WAIT, |c| !c.sessions.is_empty())
        .await;
    insert_each(&client, 0..1).await;
    consumer
        .until("the row", WAIT, |c| c.transactions.len() == 1)
        .await;

    let original_restart = slot_restart_lsn(&client).await;
    // Generate WAL the slot does not publish, and checkpoint, until Postgres invalidates the
    // slot (or the stream already replaced it); then stop, so the new slot survives.
    let mut rounds = 0;
    loop {
        let restart = slot_restart_lsn(&client).await;
        let (_, wal_status, _) = slot_row(&client).await.unwrap_or_default();
        if wal_status == "lost" || restart.is_some_and(|r| Some(r) != original_restart) {
            break;
        }
        rounds += 1;
        assert!(rounds < 60, "the slot was never invalidated");
        client
            .batch_execute(
                "SELECT pg_switch_wal();
                 INSERT INTO unpublished (v) SELECT repeat('x', 100) FROM generate_series(1, 2000);
                 CHECKPOINT",
            )
            .await
            .unwrap();
    }
    let lost = |c: &Consumer| {
        c.other
            .iter()
            .filter(|e| matches!(e, ReplicationEvent::SlotLost { .. }))
            .count()
    };
    consumer.until("SlotLost", WAIT, |c| lost(c) == 1).await;
    let Some(ReplicationEvent::SlotLost {
        reason,
        new_slot_lsn,
        ..
    }) = consumer
        .other
        .iter()
        .find(|e| matches!(e, ReplicationEvent::SlotLost { .. }))
    else {
        unreachable!()
    };
    assert!(reason.contains("invalidated"), "{reason}");
    let new_slot_lsn = *new_slot_lsn;

    insert_each(&client, 1..2).await;
    consumer
        .until("a row through the new slot", WAIT, |c| {
            c.transactions.len() == 2
        })
        .await;
    assert!(consumer.transactions[1].commit_lsn > new_slot_lsn);
    assert_eq!(lost(&consumer), 1, "{:?}", consumer.other);
    let (_, wal_status, active) = slot_row(&client).await.unwrap();
    assert_ne!(wal_status, "lost");
    assert!(active.is_some());
    stop_stream(stream).await;
}

#[tokio::test]
async fn a_role_without_replication_gets_a_definite_error_naming_the_grant() {
    let (db, client) = prepared_db("privilege", ClusterOptions::default()).await;
    client
        .batch_execute("CREATE ROLE app LOGIN PASSWORD 'app-secret'")
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('shapesync', 'pgoutput')")
        .await
        .unwrap();
    let url = format!(
        "postgres://app:app-secret@127.0.0.1:{}/privilege",
        db.cluster.port()
    );
    let (stream, mut consumer, _shutdown) = start_stream(&url, Lsn::ZERO, 64, |_| {});
    let err = tokio::time::timeout(WAIT, stream.join())
        .await
        .expect("gives up at once")
        .expect_err("a definite error");
    assert!(!err.is_transient());
    assert!(
        matches!(err, ReplicationError::NotReplicationRole { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("ALTER ROLE \"app\" WITH REPLICATION;"),
        "{err}"
    );
    assert!(consumer.recv(WAIT).await.is_none());

    // Without the slot, creating it fails the same way, with the same advice.
    client
        .batch_execute("SELECT pg_drop_replication_slot('shapesync')")
        .await
        .unwrap();
    let app = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(app.1);
    let err = proxy::replication::ensure_slot(&app.0, "shapesync", false)
        .await
        .expect_err("no REPLICATION attribute");
    assert!(!err.is_transient());
    assert!(
        err.to_string()
            .contains("ALTER ROLE \"app\" WITH REPLICATION;"),
        "{err}"
    );
}

#[tokio::test]
async fn a_slot_held_by_another_stream_for_too_long_is_a_definite_error() {
    let (db, _client) = prepared_db("busy", ClusterOptions::default()).await;
    let (holder, mut first, _shutdown) = start_stream(&db.url, Lsn::ZERO, 64, |_| {});
    first
        .until("connected", WAIT, |c| !c.sessions.is_empty())
        .await;

    let (second, mut other, _shutdown) = start_stream(&db.url, Lsn::ZERO, 64, |c| {
        c.slot_busy_timeout = Duration::from_secs(1);
    });
    let err = tokio::time::timeout(WAIT, second.join())
        .await
        .expect("gives up after the busy timeout")
        .expect_err("a definite error");
    assert!(
        matches!(err, ReplicationError::SlotBusyTooLong { .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(
        err.to_string()
            .contains("give this proxy a slot of its own"),
        "{err}"
    );
    assert!(other.recv(WAIT).await.is_none());
    assert!(!holder.is_finished(), "the holder keeps streaming");
    stop_stream(holder).await;
}

#[tokio::test]
async fn a_wrong_password_is_a_definite_error() {
    let (db, _client) = prepared_db("password", ClusterOptions::default()).await;
    let url = format!(
        "postgres://postgres:wrong@127.0.0.1:{}/password",
        db.cluster.port()
    );
    let (stream, _consumer, _shutdown) = start_stream(&url, Lsn::ZERO, 64, |_| {});
    let err = tokio::time::timeout(WAIT, stream.join())
        .await
        .expect("gives up at once")
        .expect_err("a definite error");
    assert!(
        matches!(err, ReplicationError::Authentication { .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
}

#[tokio::test]
async fn a_consumer_that_stops_reading_keeps_its_session_alive() {
    // A short sender timeout: without status updates under backpressure, the walsender
    // would drop the session within it.
    let options = ClusterOptions {
        settings: vec![("wal_sender_timeout".into(), "2s".into())],
        ..ClusterOptions::default()
    };
    let (db, client) = prepared_db("backpressure", options).await;
    let (stream, mut consumer, _shutdown) = start_stream(&db.url, Lsn::ZERO, 4, |c| {
        c.client_buffer = 16;
    });
    consumer
        .until("connected", WAIT, |c| !c.sessions.is_empty())
        .await;
    for batch in 0..100 {
        client
            .execute(
                "INSERT INTO items (id, body) SELECT g, repeat('x', 500)
                 FROM generate_series($1::int, $1 + 49) g",
                &[&(batch * 50)],
            )
            .await
            .unwrap();
    }
    // Read nothing for three sender timeouts.
    tokio::time::sleep(Duration::from_secs(6)).await;
    consumer
        .until("every row", WAIT, |c| c.inserts == 5_000)
        .await;
    assert_eq!(consumer.sessions.len(), 1, "{:?}", consumer.other);
    assert!(consumer.other.is_empty(), "{:?}", consumer.other);
    stop_stream(stream).await;
}
