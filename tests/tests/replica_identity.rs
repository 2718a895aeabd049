//! Shapes need whole old rows (REPLICA IDENTITY FULL) to see a row move out or go. The proxy
//! watches for it instead of assuming it: a table set back to `DEFAULT` (while the proxy runs
//! or while it is down) gets FULL again, and the shapes that a change without the whole old
//! row could have left behind are rotated, never silently stale. Partitioned tables: every
//! partition, also one attached later, and shapes of the parent and of a partition both see
//! every change once.

use std::collections::BTreeSet;
use std::time::Duration;

use tests::proxy_process::ProxyProcess;
use tests::shape_consumer::{ConsumerOptions, ShapeConsumer, ShapeSpec};
use tests::{TestDb, shapesync_bin, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// The rows a consumer mirrors, as the text of `columns`.
fn mirrored(consumer: &ShapeConsumer, columns: &[&str]) -> BTreeSet<Vec<String>> {
    consumer
        .state()
        .rows
        .values()
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    row.get(*c)
                        .and_then(|v| v.as_str())
                        .unwrap_or("NULL")
                        .to_owned()
                })
                .collect()
        })
        .collect()
}

/// The rows Postgres has for `query` (every column selected as text).
async fn in_postgres(sql: &tokio_postgres::Client, query: &str) -> BTreeSet<Vec<String>> {
    sql.query(query, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (0..row.len()).map(|i| row.get::<_, String>(i)).collect())
        .collect()
}

/// Catches the consumer up until its rows are what Postgres has, and checks it saw no change
/// twice (or a delete of a row it never had).
async fn converges(
    consumer: &ShapeConsumer,
    columns: &[&str],
    sql: &tokio_postgres::Client,
    query: &str,
) {
    let what = format!("{} to mirror `{query}`", consumer.spec.table);
    let mut last = None;
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            consumer.catch_up().await;
            let want = in_postgres(sql, query).await;
            let have = mirrored(consumer, columns);
            if want == have {
                return;
            }
            last = Some((want, have));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "{what}: (postgres, mirror) = {last:?}");
    let violations = consumer.state().violations;
    assert!(violations.is_empty(), "{what}: {violations:?}");
}

async fn identity_of(sql: &tokio_postgres::Client, table: &str) -> String {
    sql.query_one(
        "SELECT relreplident::text FROM pg_class WHERE oid = $1::text::regclass",
        &[&table],
    )
    .await
    .unwrap()
    .get(0)
}

async fn identity_comes_back(sql: &tokio_postgres::Client, table: &str) {
    wait_for(
        &format!("REPLICA IDENTITY FULL on {table} again"),
        WAIT,
        || async { (identity_of(sql, table).await == "f").then_some(()) },
    )
    .await;
}

fn catch_up_consumer(proxy: &ProxyProcess, spec: ShapeSpec) -> ShapeConsumer {
    ShapeConsumer::new(
        &proxy.url,
        spec,
        ConsumerOptions {
            live: false,
            ..Default::default()
        },
    )
}

const TODOS: &str = "CREATE TABLE todos (id int PRIMARY KEY, title text, done bool NOT NULL);
     INSERT INTO todos SELECT g, 'todo ' || g, false FROM generate_series(1, 6) g;";
const OPEN_TODOS: &str = "SELECT id::text, title FROM todos WHERE done = false";

async fn todos_with_open_shape(
    name: &str,
) -> (TestDb, tokio_postgres::Client, ProxyProcess, ShapeConsumer) {
    let db = TestDb::new(name).await;
    let sql = db.connect().await;
    sql.batch_execute(TODOS).await.unwrap();
    let proxy = ProxyProcess::start_logging(shapesync_bin!(), &db, &[]).await;
    let open = catch_up_consumer(
        &proxy,
        ShapeSpec::table("todos", &["id"]).filter("done = false", &[]),
    );
    converges(&open, &["id", "title"], &sql, OPEN_TODOS).await;
    assert_eq!(identity_of(&sql, "todos").await, "f");
    (db, sql, proxy, open)
}

/// A move out of the shape and a delete, then (identity FULL again) the same once more.
async fn move_out_and_delete(sql: &tokio_postgres::Client, ids: (i32, i32)) {
    sql.execute("UPDATE todos SET done = true WHERE id = $1", &[&ids.0])
        .await
        .unwrap();
    sql.execute("DELETE FROM todos WHERE id = $1", &[&ids.1])
        .await
        .unwrap();
}

#[tokio::test]
async fn replica_identity_set_back_to_default_while_running_is_restored_and_nothing_is_missed() {
    let (_db, sql, proxy, open) = todos_with_open_shape("identity_running").await;

    sql.batch_execute("ALTER TABLE todos REPLICA IDENTITY DEFAULT")
        .await
        .unwrap();
    move_out_and_delete(&sql, (1, 2)).await;
    converges(&open, &["id", "title"], &sql, OPEN_TODOS).await;
    identity_comes_back(&sql, "todos").await;

    // With FULL back, later moves and deletes reach the (rebuilt) shape as changes.
    move_out_and_delete(&sql, (3, 4)).await;
    converges(&open, &["id", "title"], &sql, OPEN_TODOS).await;
    let log = proxy.log();
    assert!(
        log.contains("ERROR")
            && log.contains("REPLICA IDENTITY of \"public\".\"todos\" is no longer FULL"),
        "{log}"
    );
}

#[tokio::test]
async fn replica_identity_set_back_to_default_while_down_is_caught_at_start() {
    let (_db, sql, mut proxy, open) = todos_with_open_shape("identity_down").await;

    proxy.stop().await;
    sql.batch_execute("ALTER TABLE todos REPLICA IDENTITY DEFAULT")
        .await
        .unwrap();
    move_out_and_delete(&sql, (1, 2)).await;
    proxy.restart().await;

    identity_comes_back(&sql, "todos").await;
    converges(&open, &["id", "title"], &sql, OPEN_TODOS).await;
    move_out_and_delete(&sql, (3, 4)).await;
    converges(&open, &["id", "title"], &sql, OPEN_TODOS).await;
    let log = proxy.log();
    assert!(
        log.contains("ERROR") && log.contains("without its whole old row"),
        "{log}"
    );
}

const PARTITIONED: &str = "
    CREATE TABLE p (id int, v text, w text, PRIMARY KEY (id, v)) PARTITION BY LIST (v);
    CREATE TABLE p_a PARTITION OF p FOR VALUES IN ('a');
    CREATE TABLE p_b PARTITION OF p FOR VALUES IN ('b');
    INSERT INTO p VALUES (1, 'a', 'x'), (2, 'a', 'y'), (3, 'b', 'x'), (4, 'b', 'y'),
                         (5, 'b', 'x');";

/// Shapes of the partitioned table and of one partition, each whole and filtered, converge to
/// Postgres through ordinary updates, moves between partitions, deletes, and partitions
/// created or attached (with another column order) while the proxy runs.
#[tokio::test]
async fn shapes_of_a_partitioned_table_and_of_its_partition_see_every_change_once() {
    let db = TestDb::new("partitions").await;
    let sql = db.connect().await;
    sql.batch_execute(PARTITIONED).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let key = ["id", "v"];
    let shapes = [
        (ShapeSpec::table("p", &key), "SELECT id::text, v, w FROM p"),
        (
            ShapeSpec::table("p", &key).filter("w = 'x'", &[]),
            "SELECT id::text, v, w FROM p WHERE w = 'x'",
        ),
        (
            ShapeSpec::table("p_b", &key),
            "SELECT id::text, v, w FROM p_b",
        ),
        (
            ShapeSpec::table("p_b", &key).filter("w = 'x'", &[]),
            "SELECT id::text, v, w FROM p_b WHERE w = 'x'",
        ),
    ];
    let consumers: Vec<(ShapeConsumer, &str)> = shapes
        .into_iter()
        .map(|(spec, query)| (catch_up_consumer(&proxy, spec), query))
        .collect();
    let all_converge = || async {
        for (consumer, query) in &consumers {
            converges(consumer, &["id", "v", "w"], &sql, query).await;
        }
    };
    all_converge().await;
    for table in ["p", "p_a", "p_b"] {
        assert_eq!(identity_of(&sql, table).await, "f", "{table}");
    }
    let handles: Vec<_> = consumers.iter().map(|(c, _)| c.state().handle).collect();

    let steps = [
        // An ordinary update that moves a row out of `w = 'x'`.
        "UPDATE p SET w = 'y' WHERE id = 3",
        // A move between partitions (a delete on p_a and an insert on p_b).
        "UPDATE p SET v = 'b' WHERE id = 1",
        "UPDATE p SET v = 'a' WHERE id = 5",
        "DELETE FROM p WHERE id = 4",
        "INSERT INTO p VALUES (6, 'b', 'x')",
        "UPDATE p_b SET w = 'x' WHERE id = 3",
    ];
    for step in steps {
        sql.batch_execute(step).await.unwrap();
        all_converge().await;
    }
    let refetched: Vec<_> = consumers.iter().map(|(c, _)| c.state().refetches).collect();
    assert_eq!(refetched, [0, 0, 0, 0], "no shape was rebuilt: {handles:?}");

    // A partition created later, and a table with its own column order attached later.
    sql.batch_execute(
        "CREATE TABLE p_c PARTITION OF p FOR VALUES IN ('c');
         CREATE TABLE p_d (w text, v text NOT NULL, id int NOT NULL);
         ALTER TABLE p ATTACH PARTITION p_d FOR VALUES IN ('d');
         INSERT INTO p VALUES (7, 'c', 'x'), (8, 'd', 'x'), (9, 'd', 'x');",
    )
    .await
    .unwrap();
    all_converge().await;
    for step in [
        "UPDATE p SET w = 'y' WHERE id = 7",
        "UPDATE p SET w = 'y' WHERE id = 8",
        "DELETE FROM p WHERE id = 9",
        "UPDATE p SET v = 'b' WHERE id = 7",
        "UPDATE p SET v = 'd' WHERE id = 6",
    ] {
        sql.batch_execute(step).await.unwrap();
        all_converge().await;
    }
    for table in ["p_c", "p_d"] {
        identity_comes_back(&sql, table).await;
    }
    // With every partition FULL, changes flow without rebuilding any shape.
    let before: Vec<_> = consumers.iter().map(|(c, _)| c.state().refetches).collect();
    for step in [
        "UPDATE p SET w = 'x' WHERE id = 8",
        "UPDATE p SET v = 'c' WHERE id = 8",
        "DELETE FROM p WHERE id = 7",
    ] {
        sql.batch_execute(step).await.unwrap();
        all_converge().await;
    }
    let after: Vec<_> = consumers.iter().map(|(c, _)| c.state().refetches).collect();
    assert_eq!(
        before, after,
        "no shape was rebuilt once every partition is FULL"
    );
}
