//! Live schema changes (DESIGN.md decision 13): a DDL statement rotates only the shapes that
//! read a changed column (selected, in the `where`, the key) or select every column; the
//! others keep their handle and offsets and their clients see nothing but the rows' changes.
//! A dropped or renamed table stops its shapes at once, a changed primary key rotates them,
//! and a change made while the proxy was down is found when it starts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tests::electric::ElectricClient;
use tests::proxy_process::ProxyProcess;
use tests::shape_consumer::{ConsumerOptions, ShapeConsumer, ShapeSpec};
use tests::{TestDb, shape_http, shapesync_bin, wait_for};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "CREATE TABLE items (
        id int PRIMARY KEY,
        title varchar(100),
        notes text,
        priority int NOT NULL DEFAULT 0
    );
    INSERT INTO items SELECT g, 'item ' || g, 'note ' || g, g % 4 FROM generate_series(1, 8) g;";

/// A shape followed by our consumer, and what it must hold: `select` lists the columns of a
/// row (each cast to text), `filter` the rows (SQL), both as Postgres sees them now.
struct Followed {
    name: &'static str,
    consumer: ShapeConsumer,
    select: &'static str,
    filter: &'static str,
}

impl Followed {
    fn start(
        proxy: &ProxyProcess,
        name: &'static str,
        spec: ShapeSpec,
        (select, filter): (&'static str, &'static str),
        stop: &CancellationToken,
    ) -> Self {
        let consumer = ShapeConsumer::new(&proxy.url, spec, ConsumerOptions::default());
        consumer.spawn(stop.clone());
        Self {
            name,
            consumer,
            select,
            filter,
        }
    }

    /// Waits until the consumer holds exactly the rows Postgres has.
    async fn converges(&self, db: &TestDb, step: &str) {
        let sql = db.connect().await;
        let query = format!(
            "SELECT json_build_object({})::text FROM items WHERE {}",
            self.select, self.filter
        );
        let expected: BTreeMap<String, Map<String, Value>> = sql
            .query(&query, &[])
            .await
            .expect(&query)
            .iter()
            .map(|row| {
                let object: Value = serde_json::from_str(row.get(0)).unwrap();
                let object = object.as_object().unwrap().clone();
                let key = format!(
                    "\"public\".\"items\"/\"{}\"",
                    object["id"].as_str().unwrap()
                );
                (key, object)
            })
            .collect();
        let name = self.name;
        wait_for(&format!("{name} after {step}"), WAIT, || async {
            let state = self.consumer.state();
            assert!(
                state.violations.is_empty(),
                "{name}: {:?}",
                state.violations
            );
            (state.up_to_date && state.rows == expected).then_some(())
        })
        .await;
    }

    fn handle(&self) -> String {
        self.consumer.state().handle.expect("a handle")
    }

    fn refetches(&self) -> usize {
        self.consumer.state().refetches
    }
}

const NARROW: (&str, &str) = ("'id', id::text, 'title', title::text", "true");
const FILTERED: (&str, &str) = ("'id', id::text, 'title', title::text", "priority > 1");

#[tokio::test]
async fn each_kind_of_column_change_rotates_only_the_shapes_that_read_the_column() {
    let db = TestDb::new("ddl_kinds").await;
    db.connect().await.batch_execute(SCHEMA).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let stop = CancellationToken::new();
    let narrow = Followed::start(
        &proxy,
        "columns=id,title",
        ShapeSpec::table("items", &["id"]).columns("id,title"),
        NARROW,
        &stop,
    );
    let filtered = Followed::start(
        &proxy,
        "columns=id,title where priority > 1",
        ShapeSpec::table("items", &["id"])
            .columns("id,title")
            .filter("priority > 1", &[]),
        FILTERED,
        &stop,
    );
    let mut official = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items", "columns": "id,title"}, "raw": true}),
    );
    official.wait_rows(WAIT, |rows| rows.len() == 8).await;
    let mut official_all = ElectricClient::start(
        &proxy.url,
        json!({"params": {"table": "items"}, "raw": true}),
    );
    official_all.wait_rows(WAIT, |rows| rows.len() == 8).await;
    // Selects every column: its select list is rebuilt from the catalog at each step.
    let all = ShapeConsumer::new(
        &proxy.url,
        ShapeSpec::table("items", &["id"]),
        ConsumerOptions::default(),
    );
    all.spawn(stop.clone());
    for followed in [&narrow, &filtered] {
        followed.converges(&db, "the start").await;
    }
    let (narrow_handle, filtered_handle) = (narrow.handle(), filtered.handle());

    // (statement, and whether it rotates the shape of every column, the shape filtering on
    // `priority`, the narrow one)
    let steps: [(&str, bool, bool, bool); 8] = [
        (
            "ALTER TABLE items ADD COLUMN extra text DEFAULT 'x'",
            true,
            false,
            false,
        ),
        ("ALTER TABLE items DROP COLUMN notes", true, false, false),
        (
            "ALTER TABLE items RENAME COLUMN extra TO memo",
            true,
            false,
            false,
        ),
        (
            "ALTER TABLE items ALTER COLUMN memo TYPE varchar(20)",
            true,
            false,
            false,
        ),
        // Its clients parse by `electric-schema`, which says NOT NULL.
        (
            "ALTER TABLE items ALTER COLUMN memo SET NOT NULL",
            true,
            false,
            false,
        ),
        // Nothing a client receives changes.
        (
            "ALTER TABLE items ADD CONSTRAINT memo_short CHECK (length(memo) < 20)",
            false,
            false,
            false,
        ),
        (
            "ALTER TABLE items ALTER COLUMN priority TYPE bigint",
            true,
            true,
            false,
        ),
        (
            "ALTER TABLE items ALTER COLUMN title TYPE text",
            true,
            true,
            true,
        ),
    ];
    let sql = db.connect().await;
    let mut all_rows = Map::new();
    for (n, (ddl, all_rotates, filtered_rotates, narrow_rotates)) in steps.into_iter().enumerate() {
        let all_before = all.state();
        sql.batch_execute(ddl).await.expect(ddl);
        sql.batch_execute(&format!(
            "UPDATE items SET title = 'step {n}', priority = priority + 1 WHERE id = {};
             INSERT INTO items (id, title, priority) VALUES ({}, 'new {n}', 3);",
            n % 8 + 1,
            100 + n
        ))
        .await
        .unwrap();
        for followed in [&narrow, &filtered] {
            followed.converges(&db, ddl).await;
        }
        let rows_now = sql
            .query_one("SELECT count(*) FROM items", &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
        wait_for(
            &format!("the all-columns shape after {ddl}"),
            WAIT,
            || async {
                let state = all.state();
                let title = state
                    .rows
                    .get(&format!("\"public\".\"items\"/\"{}\"", n % 8 + 1))
                    .map(|row| row["title"].clone());
                (state.up_to_date
                    && state.rows.len() as i64 == rows_now
                    && title == Some(json!(format!("step {n}"))))
                .then_some(())
            },
        )
        .await;
        all_rows = official_all
            .wait_rows(WAIT, |rows| {
                rows.len() as i64 == rows_now
                    && rows
                        .get(&format!("\"public\".\"items\"/\"{}\"", n % 8 + 1))
                        .is_some_and(|row| row["title"] == json!(format!("step {n}")))
            })
            .await;
        assert_eq!(
            all.state().handle != all_before.handle,
            all_rotates,
            "the all-columns shape after {ddl}"
        );
        assert_eq!(
            all.state().refetches - all_before.refetches,
            usize::from(all_rotates),
            "the all-columns shape after {ddl}"
        );
        let expect = |rotates: bool, handle: &str, followed: &Followed| {
            if rotates {
                assert_ne!(
                    followed.handle(),
                    handle,
                    "{}: {ddl} must rotate it",
                    followed.name
                );
            } else {
                assert_eq!(
                    followed.handle(),
                    handle,
                    "{}: {ddl} must keep it",
                    followed.name
                );
                assert_eq!(
                    followed.refetches(),
                    0,
                    "{}: refetched after {ddl}",
                    followed.name
                );
            }
        };
        expect(narrow_rotates, &narrow_handle, &narrow);
        expect(filtered_rotates, &filtered_handle, &filtered);
    }
    assert_eq!(
        narrow.refetches(),
        1,
        "the narrow shape refetches once, for the title"
    );
    assert_eq!(filtered.refetches(), 2, "priority, then title");

    // The official client followed the narrow shape through every step: one refetch, for
    // the last, and the rows Postgres has.
    let expected = sql
        .query("SELECT id, title FROM items", &[])
        .await
        .unwrap()
        .len();
    let rows = official
        .wait_rows(WAIT, |rows| {
            rows.len() == expected
                && rows
                    .get("\"public\".\"items\"/\"8\"")
                    .is_some_and(|row| row["title"] == "step 7")
        })
        .await;
    assert!(rows.values().all(|row| row.as_object().unwrap().len() == 2));
    let handles: Vec<&str> = official
        .history
        .iter()
        .filter(|e| e["type"] == "messages")
        .filter_map(|e| e["handle"].as_str())
        .collect();
    let mut distinct = handles.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        2,
        "one rotation (title), seen by the official client: {distinct:?}"
    );
    let refetches = official
        .messages()
        .iter()
        .filter(|m| m["headers"]["control"] == "must-refetch")
        .count();
    assert_eq!(refetches, 1);

    // The official client of every column refetched once per rotation (it was waited for
    // after each step), and has every column as Postgres has it now.
    assert_eq!(all_rows.len(), expected);
    let columns: Vec<&String> = all_rows["\"public\".\"items\"/\"1\""]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(columns, ["id", "memo", "priority", "title"]);
    let refetches = official_all
        .messages()
        .iter()
        .filter(|m| m["headers"]["control"] == "must-refetch")
        .count();
    assert_eq!(refetches, 7, "one per rotating statement");
    stop.cancel();
}

#[tokio::test]
async fn a_dropped_or_renamed_table_stops_its_shapes_at_once_and_a_new_key_rotates_them() {
    let db = TestDb::new("ddl_tables").await;
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE gone (id int PRIMARY KEY);
             CREATE TABLE moved (id int PRIMARY KEY);
             CREATE TABLE rekeyed (id int PRIMARY KEY, other int NOT NULL DEFAULT 1);
             INSERT INTO gone VALUES (1); INSERT INTO moved VALUES (1);
             INSERT INTO rekeyed VALUES (1), (2);",
        )
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let http = reqwest::Client::new();
    let mut live = Vec::new();
    for table in ["gone", "moved", "rekeyed"] {
        let first = shape_http::get(&http, &proxy.url, &format!("table={table}&offset=-1")).await;
        assert_eq!(first.status, 200);
        let handle = first.header("electric-handle").unwrap().to_owned();
        let offset = first.header("electric-offset").unwrap().to_owned();
        // A live request waits for the next change; nothing but the DDL comes.
        let query = format!("table={table}&handle={handle}&offset={offset}&live=true");
        let (http, url) = (http.clone(), proxy.url.clone());
        live.push(tokio::spawn(async move {
            shape_http::get(&http, &url, &query).await
        }));
    }
    let sql = db.connect().await;
    sql.batch_execute(
        "DROP TABLE gone; ALTER TABLE moved RENAME TO moved_away;
         ALTER TABLE rekeyed DROP CONSTRAINT rekeyed_pkey, ADD PRIMARY KEY (id, other);",
    )
    .await
    .unwrap();
    for (table, request) in ["gone", "moved"].into_iter().zip(live.drain(..2)) {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 409, "{table}: {:?}", reply.body);
        assert_eq!(reply.controls(), ["must-refetch"]);
    }
    for (table, why) in [
        ("gone", "table \"public\".\"gone\" does not exist"),
        ("moved", "table \"public\".\"moved\" does not exist"),
    ] {
        let reply = shape_http::get(&http, &proxy.url, &format!("table={table}&offset=-1")).await;
        assert_eq!(reply.status, 400, "{table}: {:?}", reply.body);
        let error = reply.body["errors"]["table"][0]
            .as_str()
            .unwrap_or_default();
        assert!(error.starts_with(why), "{table}: {}", reply.body);
    }
    // The key changed: the next change shows the proxy the table again.
    sql.batch_execute("UPDATE rekeyed SET other = 5 WHERE id = 1")
        .await
        .unwrap();
    let reply = live.pop().unwrap().await.unwrap();
    assert_eq!(reply.status, 409, "{:?}", reply.body);
    let fresh = shape_http::get(&http, &proxy.url, "table=rekeyed&offset=-1").await;
    assert_eq!(fresh.status, 200);
    let schema: Value = serde_json::from_str(fresh.header("electric-schema").unwrap()).unwrap();
    assert_eq!(schema["other"]["pk_index"], 1, "{schema}");
    let mut keys: Vec<String> = fresh
        .changes()
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "\"public\".\"rekeyed\"/\"1\"/\"5\"",
            "\"public\".\"rekeyed\"/\"2\"/\"1\""
        ]
    );
}

#[tokio::test]
async fn column_changes_made_while_the_proxy_was_down_are_found_when_it_starts() {
    let db = TestDb::new("ddl_restart").await;
    db.connect()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, title text, notes text, priority int);
             CREATE TABLE again (id int PRIMARY KEY, title text);
             INSERT INTO items SELECT g, 'item ' || g, 'n', g FROM generate_series(1, 5) g;
             INSERT INTO again VALUES (1, 'one');",
        )
        .await
        .unwrap();
    let mut proxy = ProxyProcess::start_logging(shapesync_bin!(), &db, &[]).await;
    let http = reqwest::Client::new();
    let first = |query: &'static str| {
        let (http, url) = (http.clone(), proxy.url.clone());
        async move {
            let reply = shape_http::get(&http, &url, query).await;
            assert_eq!(reply.status, 200, "{query}: {:?}", reply.body);
            (
                reply.header("electric-handle").unwrap().to_owned(),
                reply.header("electric-offset").unwrap().to_owned(),
            )
        }
    };
    let kept = first("table=items&columns=id,title&offset=-1").await;
    let retyped = first("table=items&columns=id,title&where=priority%20%3E%202&offset=-1").await;
    let recreated = first("table=again&columns=id,title&offset=-1").await;
    proxy.stop().await;

    let sql = db.connect().await;
    sql.batch_execute(
        "UPDATE items SET title = 'before' WHERE id = 1;
         ALTER TABLE items ADD COLUMN extra text DEFAULT 'x', DROP COLUMN notes;
         UPDATE items SET title = 'after', extra = 'y' WHERE id = 2;
         ALTER TABLE items ALTER COLUMN priority TYPE bigint;
         DROP TABLE again; CREATE TABLE again (id int PRIMARY KEY, title text);
         INSERT INTO again VALUES (2, 'two');",
    )
    .await
    .unwrap();
    proxy.restart().await;

    // Kept: the same handle continues from its offset with the changes made meanwhile (once
    // the stream has brought them).
    let (handle, offset) = &kept;
    let query = format!("table=items&columns=id,title&handle={handle}&offset={offset}");
    let changes = wait_for("the changes made while down", WAIT, || async {
        let reply = shape_http::get(&http, &proxy.url, &query).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let changes = reply.changes();
        (changes.len() == 2).then_some(changes)
    })
    .await;
    let titles: Vec<&str> = changes
        .iter()
        .filter_map(|m| m["value"]["title"].as_str())
        .collect();
    assert_eq!(titles, ["before", "after"]);
    assert!(changes.iter().all(|m| m["value"].get("extra").is_none()));
    // Rotated: its `where` reads a column whose type changed; the table made again is
    // another table.
    for ((handle, offset), query) in [
        (
            &retyped,
            "table=items&columns=id,title&where=priority%20%3E%202",
        ),
        (&recreated, "table=again&columns=id,title"),
    ] {
        let reply = shape_http::get(
            &http,
            &proxy.url,
            &format!("{query}&handle={handle}&offset={offset}"),
        )
        .await;
        assert_eq!(reply.status, 409, "{query}: {:?}", reply.body);
    }
    let log = proxy.log();
    assert!(log.contains("the type of column priority changed"), "{log}");
    assert!(
        log.contains("its table was dropped and made again under the same name"),
        "{log}"
    );
}

/// One table per kind of change made while the proxy is down, each followed by the official
/// client through the restart: (table, statement, whether its shape is rotated, its `columns`).
const WHILE_DOWN: &[(&str, &str, bool, Option<&str>)] = &[
    (
        "k_add",
        "ALTER TABLE k_add ADD COLUMN extra int DEFAULT 1",
        false,
        Some("id,title"),
    ),
    (
        "k_drop",
        "ALTER TABLE k_drop DROP COLUMN other",
        false,
        Some("id,title"),
    ),
    (
        "k_rename",
        "ALTER TABLE k_rename RENAME COLUMN other TO renamed",
        false,
        Some("id,title"),
    ),
    (
        "k_retype",
        "ALTER TABLE k_retype ALTER COLUMN other TYPE varchar(10)",
        false,
        Some("id,title"),
    ),
    (
        "k_not_null",
        "ALTER TABLE k_not_null ALTER COLUMN other SET NOT NULL",
        false,
        Some("id,title"),
    ),
    (
        "r_title",
        "ALTER TABLE r_title ALTER COLUMN title TYPE varchar(50)",
        true,
        Some("id,title"),
    ),
    (
        "r_key",
        "ALTER TABLE r_key DROP CONSTRAINT r_key_pkey, ADD PRIMARY KEY (id, n)",
        true,
        Some("id,title,n"),
    ),
    (
        "r_all",
        "ALTER TABLE r_all ADD COLUMN extra int DEFAULT 1",
        true,
        None,
    ),
];

#[tokio::test]
async fn official_clients_through_a_restart_refetch_only_the_shapes_whose_columns_changed() {
    let db = TestDb::new("ddl_restart_clients").await;
    let sql = db.connect().await;
    for (table, ..) in WHILE_DOWN {
        sql.batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, title text, other text DEFAULT 'o',
                                   n int NOT NULL DEFAULT 0);
             INSERT INTO {table} (id, title) SELECT g, 'row ' || g FROM generate_series(1, 3) g;"
        ))
        .await
        .unwrap();
    }
    let mut proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let mut clients = Vec::new();
    for (table, _, _, columns) in WHILE_DOWN {
        let mut params = json!({"table": table});
        if let Some(columns) = columns {
            params["columns"] = json!(columns);
        }
        let mut client = ElectricClient::start(&proxy.url, json!({"params": params, "raw": true}));
        client.wait_rows(WAIT, |rows| rows.len() == 3).await;
        clients.push(client);
    }
    proxy.stop().await;
    for (table, ddl, ..) in WHILE_DOWN {
        sql.batch_execute(ddl).await.expect(ddl);
        sql.batch_execute(&format!(
            "UPDATE {table} SET title = 'while down' WHERE id = 2"
        ))
        .await
        .unwrap();
    }
    proxy.restart().await;
    for ((table, ddl, rotated, _), client) in WHILE_DOWN.iter().zip(&mut clients) {
        let rows = client
            .wait_rows(WAIT, |rows| {
                rows.len() == 3 && rows.values().any(|row| row["title"] == "while down")
            })
            .await;
        if *table == "r_all" {
            assert!(
                rows.values().all(|row| row["extra"] == "1"),
                "{table}: {rows:?}"
            );
        }
        let refetches = client
            .messages()
            .iter()
            .filter(|m| m["headers"]["control"] == "must-refetch")
            .count();
        assert_eq!(refetches, usize::from(*rotated), "{table} after `{ddl}`");
    }
}
