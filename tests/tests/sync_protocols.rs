//! The RxDB and WatermelonDB endpoints over HTTP, against a real proxy and Postgres: paging by
//! checkpoint returns every row exactly once whatever the page size and the chunk boundaries,
//! pushes follow each protocol's conflict rule on the locked rows, and bad input is a 400 that
//! names the field and writes nothing. (The clients themselves run in `tests/ecosystems`.)

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt as _;
use rstest::rstest;
use serde_json::{Value, json};
use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

const WAIT: Duration = Duration::from_secs(30);

/// A database with `items` (text id, typed columns), `pairs` (two-column key) and the example
/// app; a proxy with small chunks so a pull crosses chunk boundaries.
async fn world(name: &str) -> (TestDb, tokio_postgres::Client, ProxyProcess) {
    let db = TestDb::new(name).await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE items (id text PRIMARY KEY, n int4, price numeric, done bool NOT NULL DEFAULT false,
                             meta jsonb, note text, deleted_at timestamptz);
         CREATE TABLE pairs (a int, b int, PRIMARY KEY (a, b));
         CREATE TABLE numbered (id int8 PRIMARY KEY, title text);",
    )
    .await
    .unwrap();
    let proxy = ProxyProcess::start(
        shapesync_bin!(),
        &db,
        &[
            "--writable",
            "items,numbered,pairs",
            "--tombstones",
            "items",
            "--chunk-bytes",
            "2000",
        ],
    )
    .await;
    (db, sql, proxy)
}

async fn get(proxy: &ProxyProcess, path: &str) -> (u16, Value) {
    proxy.get_json(path).await
}

async fn post(proxy: &ProxyProcess, path: &str, body: &Value) -> (u16, Value) {
    proxy.post_json(path, body).await
}

fn encode(value: &Value) -> String {
    form_urlencoded::byte_serialize(value.to_string().as_bytes()).collect()
}

/// Pulls `table` from `checkpoint` to the end in pages of `limit`: every document, in order,
/// and the last checkpoint.
async fn pull_all(
    proxy: &ProxyProcess,
    table: &str,
    mut checkpoint: Value,
    limit: usize,
) -> (Vec<Value>, Value) {
    let mut documents = Vec::new();
    loop {
        let path = format!(
            "/v1/rxdb/{table}/pull?limit={limit}&checkpoint={}",
            encode(&checkpoint)
        );
        let (status, body) = get(proxy, &path).await;
        assert_eq!(status, 200, "{body}");
        let page = body["documents"].as_array().unwrap().clone();
        assert!(
            page.len() <= limit,
            "a page holds at most `limit` documents"
        );
        let done = page.is_empty();
        if done && !checkpoint.is_null() {
            assert_eq!(
                body["checkpoint"], checkpoint,
                "an empty page gives the same checkpoint back"
            );
        }
        checkpoint = body["checkpoint"].clone();
        documents.extend(page);
        if done {
            return (documents, checkpoint);
        }
    }
}

/// The rows of `items` as RxDB documents, from Postgres itself.
async fn items_in_postgres(sql: &tokio_postgres::Client) -> BTreeMap<String, Value> {
    let rows = sql
        .query(
            "SELECT id, json_build_object('id', id, 'n', n, 'price', price, 'done', done, 'meta', meta,
                    'note', note)::text FROM items WHERE deleted_at IS NULL",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let mut doc: Value = serde_json::from_str(r.get::<_, &str>(1)).unwrap();
            doc["_deleted"] = json!(false);
            (r.get(0), doc)
        })
        .collect()
}

/// What a client that applied `documents` in order holds: the live ones by id.
fn mirror(documents: &[Value]) -> BTreeMap<String, Value> {
    let mut rows = BTreeMap::new();
    for doc in documents {
        let id = doc["id"].as_str().unwrap().to_owned();
        if doc["_deleted"] == json!(true) {
            rows.remove(&id);
        } else {
            rows.insert(id, doc.clone());
        }
    }
    rows
}

#[rstest]
#[case::one_at_a_time(1)]
#[case::odd_pages(7)]
#[case::large_pages(1000)]
#[tokio::test]
async fn rxdb_pull_pages_through_snapshot_and_log_exactly_once(#[case] limit: usize) {
    let (_db, sql, proxy) = world(&format!("rxdb_pages_{limit}")).await;
    sql.batch_execute(
        "INSERT INTO items (id, n, price, done, meta, note)
         SELECT 'i' || g, g, g * 1.5, g % 2 = 0, json_build_object('g', g), repeat('x', g % 40)
         FROM generate_series(1, 120) g",
    )
    .await
    .unwrap();
    let (first, checkpoint) = pull_all(&proxy, "items", Value::Null, limit).await;
    assert_eq!(first.len(), 120, "each snapshot row once");
    assert_eq!(mirror(&first), items_in_postgres(&sql).await);
    assert_eq!(first[2]["meta"], json!({"g": 3}), "jsonb as JSON");
    assert_eq!(first[2]["price"], json!(4.5), "numeric as a number");
    assert_eq!(first[1]["done"], json!(true), "bool as a boolean");

    // Changes after the snapshot: an update of one row many times, a tombstone, a hard delete,
    // inserts, in several transactions.
    for i in 0..5 {
        sql.execute("UPDATE items SET n = n + $1 WHERE id = 'i1'", &[&i])
            .await
            .unwrap();
    }
    sql.batch_execute(
        "UPDATE items SET deleted_at = now() WHERE id = 'i2';
         DELETE FROM items WHERE id = 'i3';
         INSERT INTO items (id, n) SELECT 'j' || g, g FROM generate_series(1, 15) g;",
    )
    .await
    .unwrap();
    let fence = proxy
        .http()
        .get(format!("{}/v1/lsn", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(fence.status(), 200);
    let (later, _) = pull_all(&proxy, "items", checkpoint, limit).await;
    let mut all = first.clone();
    all.extend(later.iter().cloned());
    assert_eq!(mirror(&all), items_in_postgres(&sql).await);
    let deleted: Vec<&str> = later
        .iter()
        .filter(|d| d["_deleted"] == json!(true))
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        deleted,
        ["i2", "i3"],
        "a tombstone and a hard delete, as deleted documents"
    );
    if limit >= 20 {
        assert_eq!(
            later.len(),
            18,
            "a row changed five times comes once per page"
        );
    }
}

#[tokio::test]
async fn rxdb_push_follows_the_assumed_master_rule_and_a_retry_changes_nothing() {
    let (_db, sql, proxy) = world("rxdb_push").await;
    let doc = json!({"id": "a", "n": 1, "price": 2.5, "done": false, "meta": {"k": ["v"]},
                     "note": "first", "_deleted": false});
    let push = json!([{"newDocumentState": doc}]);
    let (status, conflicts) = post(&proxy, "/v1/rxdb/items/push", &push).await;
    assert_eq!((status, &conflicts), (200, &json!([])));
    let stored: String = sql
        .query_one("SELECT meta::text FROM items WHERE id = 'a'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, r#"{"k": ["v"]}"#, "a JSON field is stored as jsonb");
    let version = || async {
        let xmin: String = sql
            .query_one("SELECT xmin::text FROM items WHERE id = 'a'", &[])
            .await
            .unwrap()
            .get(0);
        xmin
    };
    let written = version().await;

    // The same push again (a retry whose answer was lost): the master is already the pushed
    // document, so it is answered as applied (RxDB then assumes that master), and nothing is
    // written twice.
    let (status, conflicts) = post(&proxy, "/v1/rxdb/items/push", &push).await;
    assert_eq!((status, &conflicts), (200, &json!([])), "a retried insert");
    assert_eq!(version().await, written, "the retry wrote nothing");

    // An update from a stale assumed state is refused with the master; Postgres keeps it.
    let stale = json!([{"assumedMasterState": {"id": "a", "n": 0, "price": 2.5, "done": false,
                                              "meta": {"k": ["v"]}, "note": "first", "_deleted": false},
                         "newDocumentState": {"id": "a", "n": 5, "price": 2.5, "done": true,
                                              "meta": {"k": ["v"]}, "note": "first", "_deleted": false}}]);
    let (status, conflicts) = post(&proxy, "/v1/rxdb/items/push", &stale).await;
    assert_eq!((status, &conflicts), (200, &json!([doc])));
    let n: i32 = sql
        .query_one("SELECT n FROM items WHERE id = 'a'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // From the right state (numbers compare by value: 2.50 is 2.5) it applies.
    let mut assumed = doc.clone();
    assumed["price"] = json!(2.50);
    let mut new = doc.clone();
    new["done"] = json!(true);
    new["note"] = json!("second");
    let (status, conflicts) = post(
        &proxy,
        "/v1/rxdb/items/push",
        &json!([{"assumedMasterState": assumed, "newDocumentState": new}]),
    )
    .await;
    assert_eq!((status, &conflicts), (200, &json!([])));
    let row = sql
        .query_one("SELECT done, note FROM items WHERE id = 'a'", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, bool>(0), row.get::<_, String>(1)),
        (true, "second".to_owned())
    );

    // That update again, its answer lost, while the device edited the document further: the
    // retry is answered as applied and writes nothing, so the edit, pushed from the state the
    // retry confirmed, applies (as a conflict, RxDB would have lost the edit).
    let written = version().await;
    let (status, conflicts) = post(
        &proxy,
        "/v1/rxdb/items/push",
        &json!([{"assumedMasterState": assumed, "newDocumentState": new}]),
    )
    .await;
    assert_eq!((status, &conflicts), (200, &json!([])), "a retried update");
    assert_eq!(version().await, written, "the retry wrote nothing");
    let mut edited = new.clone();
    edited["note"] = json!("third");
    let (status, conflicts) = post(
        &proxy,
        "/v1/rxdb/items/push",
        &json!([{"assumedMasterState": new, "newDocumentState": edited}]),
    )
    .await;
    assert_eq!((status, &conflicts), (200, &json!([])));
    let new = edited;

    // A delete on a tombstoned table sets the tombstone; pulled, it is a deleted document.
    let mut deleted = new.clone();
    deleted["_deleted"] = json!(true);
    let (status, conflicts) = post(
        &proxy,
        "/v1/rxdb/items/push",
        &json!([{"assumedMasterState": new, "newDocumentState": deleted}]),
    )
    .await;
    assert_eq!((status, &conflicts), (200, &json!([])));
    let tombstoned: bool = sql
        .query_one(
            "SELECT deleted_at IS NOT NULL FROM items WHERE id = 'a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(tombstoned);
    let (documents, _) = pull_all(&proxy, "items", Value::Null, 10).await;
    assert!(
        documents.is_empty(),
        "a tombstoned row is not in a first pull: {documents:?}"
    );
}

/// An open `pullStream` of `items` (from `checkpoint`, or from now).
struct PullStream {
    body: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>,
    >,
    text: String,
}

impl PullStream {
    async fn open(proxy: &ProxyProcess, checkpoint: Option<&Value>) -> Self {
        let query = checkpoint.map_or(String::new(), |c| format!("?checkpoint={}", encode(c)));
        let response = proxy
            .http()
            .get(format!("{}/v1/rxdb/items/pullStream{query}", proxy.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        Self {
            body: Box::pin(response.bytes_stream()),
            text: String::new(),
        }
    }

    /// The data of the next event (waits at most `WAIT`).
    async fn next_data(&mut self) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(end) = self.text.find("\n\n") {
                    let event: String = self.text.drain(..end + 2).collect();
                    if let Some(line) = event.lines().find(|l| l.starts_with("data: ")) {
                        return line["data: ".len()..].to_owned();
                    }
                    continue;
                }
                let chunk = self
                    .body
                    .next()
                    .await
                    .expect("the stream stays open")
                    .unwrap();
                self.text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("an event within the wait")
    }
}

#[tokio::test]
async fn rxdb_pull_stream_sends_each_transaction_and_its_checkpoint() {
    let (_db, sql, proxy) = world("rxdb_stream").await;
    sql.batch_execute("INSERT INTO items (id, n) VALUES ('s1', 1)")
        .await
        .unwrap();
    let mut stream = PullStream::open(&proxy, None).await;
    sql.batch_execute(
        "BEGIN; UPDATE items SET n = 2 WHERE id = 's1'; INSERT INTO items (id, n) VALUES ('s2', 7); COMMIT;",
    )
    .await
    .unwrap();
    let event: Value = serde_json::from_str(&stream.next_data().await).unwrap();
    let ids: Vec<&str> = event["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["s1", "s2"],
        "one event for the whole transaction: {event}"
    );
    assert_eq!(event["documents"][0]["n"], json!(2));
    // Its checkpoint continues a pull after the transaction.
    let path = format!(
        "/v1/rxdb/items/pull?checkpoint={}",
        encode(&event["checkpoint"])
    );
    let (status, body) = get(&proxy, &path).await;
    assert_eq!((status, &body["documents"]), (200, &json!([])));
}

#[rstest]
#[case::unknown_table("/v1/rxdb/nope/pull", "table")]
#[case::two_column_key("/v1/rxdb/pairs/pull", "table")]
#[case::bad_checkpoint("/v1/rxdb/items/pull?checkpoint=%7B%22x%22%3A1%7D", "checkpoint")]
#[case::checkpoint_not_json("/v1/rxdb/items/pull?checkpoint=abc", "checkpoint")]
#[case::limit_zero("/v1/rxdb/items/pull?limit=0", "limit")]
#[case::repeated("/v1/rxdb/items/pull?limit=1&limit=2", "limit")]
#[case::unknown_param("/v1/rxdb/items/pull?where=1", "where")]
#[case::forged_position(
    "/v1/rxdb/items/pull?checkpoint=%7B%22handle%22%3A%22HANDLE%22%2C%22snapshot%22%3A3%7D",
    "checkpoint"
)]
#[case::watermelon_no_tables("/v1/watermelon/pull?last_pulled_at=null&schema_version=1", "tables")]
#[case::watermelon_int_key(
    "/v1/watermelon/pull?last_pulled_at=null&schema_version=1&tables=numbered",
    "tables"
)]
#[case::watermelon_bad_timestamp(
    "/v1/watermelon/pull?last_pulled_at=yesterday&schema_version=1&tables=items",
    "last_pulled_at"
)]
#[case::watermelon_bad_migration(
    "/v1/watermelon/pull?last_pulled_at=null&schema_version=1&tables=items&migration=%7B%7D",
    "migration"
)]
#[tokio::test]
async fn bad_reads_are_400s_naming_the_parameter(#[case] path: &str, #[case] field: &str) {
    let (_db, sql, proxy) = world(&format!("sync_bad_read_{field}")).await;
    sql.batch_execute("INSERT INTO items (id) SELECT 'r' || g FROM generate_series(1, 50) g")
        .await
        .unwrap();
    let path = if path.contains("HANDLE") {
        let (_, body) = get(&proxy, "/v1/rxdb/items/pull").await;
        let handle = body["checkpoint"]["handle"].as_str().unwrap().to_owned();
        path.replace("HANDLE", &handle)
    } else {
        path.to_owned()
    };
    let (status, body) = get(&proxy, &path).await;
    assert_eq!(status, 400, "{path}: {body}");
    assert!(
        body["errors"][field].is_array(),
        "{path}: names {field}: {body}"
    );
}

#[rstest]
#[case::unknown_column(json!([{"newDocumentState": {"id": "b", "nope": 1}}]), "[1].newDocumentState.nope")]
#[case::wrong_type(json!([{"newDocumentState": {"id": "b", "n": "many"}}]), "[1].newDocumentState.n")]
#[case::missing_key(json!([{"newDocumentState": {"n": 1}}]), "[1].newDocumentState.id")]
#[case::bad_deleted(json!([{"newDocumentState": {"id": "b", "_deleted": "yes"}}]), "[1].newDocumentState._deleted")]
#[case::unknown_row_field(json!([{"newDocumentState": {"id": "b"}, "extra": 1}]), "[1]")]
#[tokio::test]
async fn a_bad_row_in_a_push_is_a_400_naming_it_and_nothing_is_written(
    #[case] bad: Value,
    #[case] field: &str,
) {
    let (_db, sql, proxy) = world("rxdb_bad_push").await;
    let mut rows = vec![json!({"newDocumentState": {"id": "good", "n": 1}})];
    rows.extend(bad.as_array().unwrap().iter().cloned());
    let (status, body) = post(&proxy, "/v1/rxdb/items/push", &Value::Array(rows)).await;
    assert_eq!(status, 400, "{body}");
    let errors = body["errors"].as_object().unwrap();
    assert!(
        errors.keys().any(|k| k.starts_with(field)),
        "names {field}: {body}"
    );
    let count: i64 = sql
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "the good row was not written either");
}

async fn watermelon_pull(proxy: &ProxyProcess, last: Option<u64>, tables: &str) -> Value {
    let last = last.map_or("null".to_owned(), |n| n.to_string());
    let (status, body) = get(
        proxy,
        &format!("/v1/watermelon/pull?last_pulled_at={last}&schema_version=1&migration=null&tables={tables}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn watermelon_pulls_changes_since_a_timestamp_and_push_aborts_on_newer_server_changes() {
    let (_db, sql, proxy) = world("watermelon_flow").await;
    sql.batch_execute(
        "CREATE TABLE tags (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), label text);
         INSERT INTO items (id, n, meta) VALUES ('w1', 1, '{\"a\": 1}'), ('w2', 2, null), ('w3', 3, null);
         INSERT INTO tags (label) VALUES ('red');",
    )
    .await
    .unwrap();
    let first = watermelon_pull(&proxy, None, "items,tags,items").await;
    assert_eq!(
        first["changes"].as_object().unwrap().len(),
        2,
        "a table named twice is answered once"
    );
    assert_eq!(first["changes"]["items"]["created"], json!([]));
    let created = first["changes"]["items"]["updated"].as_array().unwrap();
    assert_eq!(created.len(), 3);
    assert_eq!(
        created[0]["meta"],
        json!(r#"{"a": 1}"#),
        "JSON columns as text"
    );
    assert_eq!(
        first["changes"]["tags"]["updated"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let t1 = first["timestamp"].as_u64().expect("a number");

    sql.batch_execute(
        "UPDATE items SET n = 10 WHERE id = 'w1';
         DELETE FROM items WHERE id = 'w2';
         INSERT INTO items (id, n) VALUES ('w4', 4);
         INSERT INTO items (id, n) VALUES ('w5', 5); DELETE FROM items WHERE id = 'w5';",
    )
    .await
    .unwrap();
    let second = watermelon_pull(&proxy, Some(t1), "items,tags").await;
    let items = &second["changes"]["items"];
    // After a first pull every live row is an update and every delete is sent, even of rows
    // inserted since: the device may hold them, having pushed them itself.
    assert_eq!(items["created"], json!([]));
    let updated: Vec<(Value, Value)> = items["updated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].clone(), r["n"].clone()))
        .collect();
    assert_eq!(updated, [(json!("w1"), json!(10)), (json!("w4"), json!(4))]);
    assert_eq!(items["deleted"], json!(["w2", "w5"]));
    assert_eq!(
        second["changes"]["tags"],
        json!({"created": [], "updated": [], "deleted": []})
    );
    let t2 = second["timestamp"].as_u64().unwrap();
    assert!(t2 > t1);
    let third = watermelon_pull(&proxy, Some(t2), "items").await;
    assert_eq!(
        third["changes"]["items"],
        json!({"created": [], "updated": [], "deleted": []})
    );

    // A push from t1 touching w1 (changed on the server since): 409, nothing written.
    let push = json!({"items": {"created": [{"id": "w9", "n": 9, "_status": "created", "_changed": ""}],
                                "updated": [{"id": "w1", "n": 11, "note": "device", "_status": "updated", "_changed": "note"}],
                                "deleted": ["w3"]}});
    let (status, body) = post(
        &proxy,
        &format!("/v1/watermelon/push?last_pulled_at={t1}"),
        &push,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["conflicts"], json!({"items": ["w1"]}));
    let count: i64 = sql
        .query_one("SELECT count(*) FROM items WHERE id IN ('w9') OR (id = 'w3' AND deleted_at IS NOT NULL)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "nothing of the aborted push was written");

    // From t2 it applies; `_changed` limits an update to the columns the device changed.
    let (status, body) = post(
        &proxy,
        &format!("/v1/watermelon/push?last_pulled_at={t2}"),
        &push,
    )
    .await;
    assert_eq!((status, &body), (200, &json!({})));
    let row = sql
        .query_one("SELECT n, note FROM items WHERE id = 'w1'", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, Option<String>>(1)),
        (10, Some("device".to_owned()))
    );
    let w3: bool = sql
        .query_one(
            "SELECT deleted_at IS NOT NULL FROM items WHERE id = 'w3'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(w3, "a delete tombstones");
    // The device's own writes come back on its next pull (Watermelon applies them as no-ops).
    let fourth = watermelon_pull(&proxy, Some(t2), "items").await;
    let mut ids: Vec<&str> = fourth["changes"]["items"]["updated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["w1", "w9"]);
    assert_eq!(fourth["changes"]["items"]["deleted"], json!(["w3"]));
}

#[tokio::test]
async fn rxdb_pull_stream_says_resync_when_the_shape_rotates_and_pull_starts_over() {
    let (_db, sql, proxy) = world("rxdb_resync").await;
    sql.batch_execute("INSERT INTO items (id, n) VALUES ('r1', 1)")
        .await
        .unwrap();
    let (_, first) = get(&proxy, "/v1/rxdb/items/pull").await;
    let checkpoint = first["checkpoint"].clone();
    let mut stream = PullStream::open(&proxy, Some(&checkpoint)).await;
    // A new column changes every shape that selects all columns: it rotates.
    sql.batch_execute(
        "ALTER TABLE items ADD COLUMN extra text; INSERT INTO items (id, n) VALUES ('r2', 2);",
    )
    .await
    .unwrap();
    assert_eq!(stream.next_data().await, "\"RESYNC\"");
    // Pulling from the old checkpoint starts over on the new shape: every row, the new column.
    let (documents, _) = pull_all(&proxy, "items", checkpoint, 100).await;
    let ids: Vec<&str> = documents
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r1", "r2"]);
    assert!(documents[0].get("extra").is_some(), "{documents:?}");
}

#[tokio::test]
async fn watermelon_migrations_send_new_tables_whole_and_deleting_a_missing_row_is_ignored() {
    let (_db, sql, proxy) = world("watermelon_migration").await;
    sql.batch_execute(
        "CREATE TABLE tags (id text PRIMARY KEY, label text);
         INSERT INTO items (id, n) VALUES ('m1', 1);
         INSERT INTO tags VALUES ('t1', 'red'), ('t2', 'blue');",
    )
    .await
    .unwrap();
    let first = watermelon_pull(&proxy, None, "items").await;
    let t1 = first["timestamp"].as_u64().unwrap();
    // The device's schema gained `tags` (and a column of items): both come whole.
    let migration = encode(&json!({"from": 1, "tables": ["tags"],
                                   "columns": [{"table": "items", "columns": ["note"]}]}));
    let (status, body) = get(
        &proxy,
        &format!("/v1/watermelon/pull?last_pulled_at={t1}&schema_version=2&migration={migration}&tables=items,tags"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let created: Vec<&str> = body["changes"]["tags"]["updated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(created, ["t1", "t2"]);
    assert_eq!(body["changes"]["items"]["updated"][0]["id"], json!("m1"));
    let t2 = body["timestamp"].as_u64().unwrap();

    let (status, body) = post(
        &proxy,
        &format!("/v1/watermelon/push?last_pulled_at={t2}"),
        &json!({"items": {"created": [{"id": "m2", "n": 2}], "deleted": ["never-existed"]}}),
    )
    .await;
    assert_eq!((status, &body), (200, &json!({})));
    let n: i64 = sql
        .query_one("SELECT count(*) FROM items WHERE id = 'm2'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn pulls_are_gzipped_when_the_client_accepts_it() {
    let (_db, sql, proxy) = world("sync_gzip").await;
    sql.batch_execute("INSERT INTO items (id, note) SELECT 'g' || g, repeat('text ', 50) FROM generate_series(1, 200) g")
        .await
        .unwrap();
    for path in [
        "/v1/rxdb/items/pull?limit=200",
        "/v1/watermelon/pull?last_pulled_at=null&schema_version=1&tables=items",
    ] {
        // A client without automatic decompression, to see the encoding.
        let raw = reqwest::Client::builder().no_gzip().build().unwrap();
        let response = raw
            .get(format!("{}{path}", proxy.url))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-encoding"], "gzip", "{path}");
    }
}

#[rstest]
#[case::unknown_column(json!({"items": {"created": [{"id": "b", "nope": 1}]}}), "items.created[0].nope")]
#[case::wrong_type(json!({"items": {"updated": [{"id": "b", "n": "many"}]}}), "items.updated[0].n")]
#[case::missing_id(json!({"items": {"created": [{"n": 1}]}}), "items.created[0].id")]
#[case::not_a_list(json!({"items": {"created": {"id": "b"}}}), "items.created")]
#[case::unknown_list(json!({"items": {"moved": []}}), "items")]
#[case::unknown_table(json!({"nope": {"created": []}}), "nope")]
#[case::int_key_table(json!({"numbered": {"created": [{"id": "1"}]}}), "numbered")]
#[tokio::test]
async fn a_bad_watermelon_push_is_a_400_naming_the_record_and_nothing_is_written(
    #[case] bad: Value,
    #[case] field: &str,
) {
    let (_db, sql, proxy) = world("watermelon_bad_push").await;
    sql.batch_execute("INSERT INTO items (id) VALUES ('keep')")
        .await
        .unwrap();
    let t = watermelon_pull(&proxy, None, "items").await["timestamp"]
        .as_u64()
        .unwrap();
    // A good delete beside the bad record: it must not be applied either.
    let mut changes = json!({"items": {"deleted": ["keep"]}});
    for (table, lists) in bad.as_object().unwrap() {
        let entry = changes
            .as_object_mut()
            .unwrap()
            .entry(table.clone())
            .or_insert(json!({}));
        for (list, value) in lists.as_object().unwrap() {
            entry[list] = value.clone();
        }
    }
    let (status, body) = post(
        &proxy,
        &format!("/v1/watermelon/push?last_pulled_at={t}"),
        &changes,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let errors = body["errors"].as_object().unwrap();
    assert!(
        errors.keys().any(|k| k.starts_with(field)),
        "names {field}: {body}"
    );
    let rows: Vec<(String, bool)> = sql
        .query("SELECT id, deleted_at IS NULL FROM items", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [("keep".to_owned(), true)], "nothing was written");
}
