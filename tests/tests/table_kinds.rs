//! Every kind of relation a client can name — views, materialized views, partitioned,
//! foreign, unlogged and key-less tables, sequences, indexes, types, system catalogs, the
//! proxy's own tables, temporary schemas — asked for as a shape, as a subset and with every
//! mutation op, through a real proxy started with `--writable '*'` and no auth. Each gets a
//! 4xx or a `rejected` result that names the table and says why; never a 500, and nothing of
//! the proxy's own or the system's is read, written or published.

use serde_json::{Value, json};
use tests::cases::Cases;
use tests::proxy_process::ProxyProcess;
use tests::shape_http;
use tests::{TestDb, shapesync_bin};

const OPS: [&str; 4] = ["insert", "update", "upsert", "delete"];

async fn setup(name: &str) -> (TestDb, tokio_postgres::Client, ProxyProcess) {
    let db = TestDb::new(name).await;
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, v text);
             INSERT INTO items VALUES (1, 'a');
             CREATE VIEW items_view AS SELECT * FROM items;
             CREATE MATERIALIZED VIEW items_matview AS SELECT * FROM items;
             CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
             CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (1000);
             CREATE FOREIGN DATA WRAPPER w;
             CREATE SERVER s FOREIGN DATA WRAPPER w;
             CREATE FOREIGN TABLE remote (id int, v text) SERVER s;
             CREATE TABLE nokey (id int, v text);
             INSERT INTO nokey VALUES (1, 'a'), (1, 'a');
             CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, v text);
             CREATE SEQUENCE counter;
             CREATE TYPE pair AS (a int, b int);",
        )
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &["--writable", "*"]).await;
    (db, client, proxy)
}

async fn mutate(proxy: &ProxyProcess, mutation: Value) -> (u16, Value) {
    let body = json!({"client_id": "kinds", "mutations": [mutation]});
    proxy.post_json("/v1/mutations", &body).await
}

fn mutation(table: &str, op: &str, key: Value) -> Value {
    let mut m = json!({"id": format!("{table}-{op}"), "table": table, "op": op, "key": key,
                       "timestamp": "2026-11-22T10:30:00Z"});
    if op != "delete" {
        m["values"] = json!({"v": "x"});
    }
    m
}

/// Posts each op at `table`: every one is answered 200 with a result.
async fn each_op(proxy: &ProxyProcess, table: &str) -> Vec<Value> {
    let mut results = Vec::new();
    for op in OPS {
        let (status, body) = mutate(proxy, mutation(table, op, json!({"id": "1"}))).await;
        assert_eq!(status, 200, "{op} on {table}: {body}");
        results.push(body["results"][0].clone());
    }
    results
}

async fn subset(proxy: &ProxyProcess, table: &str) -> (u16, Value) {
    let path = format!("/v1/shape?table={table}&offset=-1");
    proxy
        .post_json(&path, &json!({"order_by": "id", "limit": 1}))
        .await
}

/// The relation is refused everywhere with `message`: a shape and a subset get 400 under
/// `errors.table`, and every mutation op `rejected` with `code`.
async fn refused_everywhere(
    proxy: &ProxyProcess,
    table: &str,
    message: &str,
    code: &str,
    write_message: &str,
) {
    let shape = shape_http::get(
        proxy.http(),
        &proxy.url,
        &format!("table={table}&offset=-1"),
    )
    .await;
    assert_eq!(
        (shape.status, &shape.body),
        (
            400,
            &json!({"message": "Invalid request", "errors": {"table": [message]}})
        ),
        "shape of {table}"
    );
    let (status, body) = subset(proxy, table).await;
    assert_eq!(
        (status, &body),
        (
            400,
            &json!({"message": "Invalid request", "errors": {"table": [message]}})
        ),
        "subset of {table}"
    );
    for result in each_op(proxy, table).await {
        assert_eq!(
            result["status"], "rejected",
            "{table}: {result} (expected a refusal)"
        );
        assert_eq!(
            result["error"],
            json!({"code": code, "message": write_message}),
            "{table}"
        );
    }
}

fn reserved(table: &str, why: &str) -> String {
    format!("table {table} {why}; name one of the application's tables")
}

#[tokio::test]
async fn the_proxy_schema_and_system_schemas_are_refused_before_any_sql() {
    let (_db, client, proxy) = setup("kinds_reserved").await;
    // A recorded mutation id, which a delete through the API must not remove.
    let (_, body) = mutate(&proxy, mutation("items", "upsert", json!({"id": "2"}))).await;
    assert_eq!(body["results"][0]["status"], "applied", "{body}");
    let recorded = "SELECT count(*) FROM shapesync.mutation_ids WHERE mutation_id = 'items-upsert'";
    assert_eq!(
        client
            .query_one(recorded, &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );

    let own = "belongs to shapesync itself (schema shapesync holds its clocks and mutation ids): \
               it is never served or written";
    let system = |schema: &str| {
        format!("is in the system schema \"{schema}\": system catalogs are never served or written")
    };
    let temporary = |schema: &str| {
        format!(
            "is a temporary table (schema \"{schema}\"): temporary tables belong to one \
             database session, so they are never served or written"
        )
    };
    let cases = [
        (
            "shapesync.mutation_ids",
            "\"shapesync\".\"mutation_ids\"",
            own.to_owned(),
        ),
        (
            "shapesync.row_clocks",
            "\"shapesync\".\"row_clocks\"",
            own.to_owned(),
        ),
        (
            "pg_catalog.pg_description",
            "\"pg_catalog\".\"pg_description\"",
            system("pg_catalog"),
        ),
        (
            "pg_catalog.pg_authid",
            "\"pg_catalog\".\"pg_authid\"",
            system("pg_catalog"),
        ),
        (
            "PG_CATALOG.PG_CLASS",
            "\"pg_catalog\".\"pg_class\"",
            system("pg_catalog"),
        ),
        (
            "information_schema.tables",
            "\"information_schema\".\"tables\"",
            system("information_schema"),
        ),
        (
            "pg_toast.pg_toast_2609",
            "\"pg_toast\".\"pg_toast_2609\"",
            system("pg_toast"),
        ),
        ("pg_temp_1.t", "\"pg_temp_1\".\"t\"", temporary("pg_temp_1")),
        (
            "pg_toast_temp_1.t",
            "\"pg_toast_temp_1\".\"t\"",
            temporary("pg_toast_temp_1"),
        ),
    ];
    for (table, quoted, why) in &cases {
        let message = reserved(quoted, why);
        refused_everywhere(&proxy, table, &message, "not_writable", &message).await;
    }
    let (_, body) = mutate(
        &proxy,
        json!({"id": "steal", "table": "shapesync.mutation_ids", "op": "delete",
               "key": {"client_id": "kinds", "mutation_id": "items-upsert"},
               "timestamp": "2026-11-22T10:30:00Z"}),
    )
    .await;
    assert_eq!(body["results"][0]["status"], "rejected", "{body}");
    assert_eq!(
        client
            .query_one(recorded, &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1,
        "the proxy's idempotency record survives"
    );
    let published: Vec<String> = client
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(published.is_empty(), "published: {published:?}");
    let identity: String = client
        .query_one(
            "SELECT relreplident::text FROM pg_class WHERE oid = 'pg_authid'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(identity, "n", "pg_authid was not altered");
}

#[tokio::test]
async fn relations_that_are_not_replicable_tables_are_refused_naming_what_they_are() {
    let (_db, _client, proxy) = setup("kinds_relations").await;
    let cases = [
        (
            "items_view",
            "\"public\".\"items_view\" is a view: shapesync serves and writes tables only (a \
             view's rows do not pass through the WAL); use the tables it reads",
        ),
        (
            "items_matview",
            "\"public\".\"items_matview\" is a materialized view: its refreshes are not \
             replicated row by row, so shapesync serves and writes tables only; use the tables \
             it is built from",
        ),
        (
            "remote",
            "\"public\".\"remote\" is a foreign table: its rows live on another server and \
             never pass through this database's WAL, so shapesync cannot serve or write it",
        ),
        (
            "scratch",
            "table \"public\".\"scratch\" is unlogged: its changes are not written to the WAL, \
             so shapesync can neither serve nor write it; make it logged with ALTER TABLE \
             \"public\".\"scratch\" SET LOGGED",
        ),
        (
            "counter",
            "\"public\".\"counter\" is a sequence, not a table",
        ),
        (
            "items_pkey",
            "\"public\".\"items_pkey\" is an index, not a table",
        ),
        (
            "pair",
            "\"public\".\"pair\" is a composite type, not a table",
        ),
    ];
    for (table, message) in cases {
        refused_everywhere(&proxy, table, message, "not_writable", message).await;
    }
}

#[tokio::test]
async fn a_table_without_a_primary_key_is_refused_with_what_to_do() {
    let (_db, client, proxy) = setup("kinds_nokey").await;
    let message = "table \"public\".\"nokey\" has no primary key, which shapes need to tell \
                   rows apart (two identical rows would be one row on the client); add one: \
                   ALTER TABLE \"public\".\"nokey\" ADD PRIMARY KEY (column, …)";
    refused_everywhere(
        &proxy,
        "nokey",
        message,
        "not_writable",
        "table \"public\".\"nokey\" has no primary key, which writes need to find rows; add one",
    )
    .await;
    let published: i64 = client
        .query_one("SELECT count(*) FROM pg_publication_tables", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, 0, "a refused table is not published");
}

#[tokio::test]
async fn partitioned_tables_and_unknown_tables_never_answer_500() {
    let (_db, _client, proxy) = setup("kinds_parted").await;
    for result in each_op(&proxy, "parted").await {
        let status = result["status"].as_str().unwrap_or_default();
        assert!(
            ["applied", "conflict"].contains(&status),
            "parted: {result}"
        );
    }
    let shape = shape_http::get(proxy.http(), &proxy.url, "table=parted&offset=-1").await;
    assert!(shape.status < 500, "{} {:?}", shape.status, shape.body);
    let (status, body) = subset(&proxy, "parted").await;
    assert!(status < 500, "{status} {body}");

    let message = "table \"public\".\"nope\" does not exist. Names are case-folded like SQL: a \
                   table created as \"Todos\" must be requested quoted, e.g. table=\"Todos\" \
                   (and schema-qualified when not in public)";
    refused_everywhere(&proxy, "nope", message, "unknown_table", message).await;
}

#[tokio::test]
async fn a_nul_character_in_any_name_value_or_id_is_a_400_not_a_5xx() {
    let (_db, _client, proxy) = setup("kinds_nul").await;
    let proxy = &proxy;
    let mut cases = Cases::default();
    cases
        .check("table", async {
            let shape = shape_http::get(proxy.http(), &proxy.url, "table=a%00b&offset=-1").await;
            assert_eq!(
                (shape.status, &shape.body),
                (
                    400,
                    &json!({"message": "Invalid request", "errors": {"table": [
                        "a name cannot contain the NUL character (position 1). Use `name`, \
                         `schema.name`, or quoted identifiers such as \"My Table\""]}})
                )
            );
        })
        .await;
    let nul = "must not contain the NUL character (Postgres text cannot hold it)";
    for (query, param) in [
        ("table=items&offset=-1&where=v%20%3D%20%27a%00%27", "where"),
        (
            "table=items&offset=-1&where=v%20%3D%20%241&params%5B1%5D=a%00",
            "params",
        ),
        (
            "table=items&offset=-1&subset__where=v%20%3D%20%27a%00%27",
            "subset__where",
        ),
    ] {
        cases
            .check(&format!("GET {param}"), async {
                let reply = shape_http::get(proxy.http(), &proxy.url, query).await;
                assert_eq!(
                    (reply.status, &reply.body),
                    (
                        400,
                        &json!({"message": "Invalid request", "errors": {param: [nul]}})
                    ),
                    "{query}"
                );
            })
            .await;
    }
    cases
        .check("GET columns", async {
            let reply = shape_http::get(
                proxy.http(),
                &proxy.url,
                "table=items&offset=-1&columns=id,v%00",
            )
            .await;
            assert_eq!(reply.status, 400, "{:?}", reply.body);
        })
        .await;
    for body in [
        json!({"where": "v = 'a\u{0}'"}),
        json!({"where": "v = $1", "params": {"1": "a\u{0}"}}),
    ] {
        let field = if body["params"].is_null() {
            "where"
        } else {
            "params"
        };
        cases
            .check(&format!("POST subset {field}"), async {
                let (status, answer) = proxy
                    .post_json("/v1/shape?table=items&offset=-1", &body)
                    .await;
                assert_eq!(status, 400, "{body}");
                assert_eq!(
                    answer,
                    json!({"message": "Invalid request", "errors": {"subset": {field: [nul]}}}),
                );
            })
            .await;
    }
    for (field, request) in [
        (
            "client_id",
            json!({"client_id": "dev\u{0}ice", "mutations": [mutation("items", "upsert", json!({"id": "1"}))]}),
        ),
        (
            "mutations[0].id",
            json!({"client_id": "device", "mutations": [
                {"id": "m\u{0}", "table": "items", "op": "delete", "key": {"id": "1"},
                 "timestamp": "2026-11-22T10:30:00Z"}]}),
        ),
        (
            "mutations[0].table",
            json!({"client_id": "device", "mutations": [
                {"id": "m", "table": "a\u{0}b", "op": "delete", "key": {"id": "1"},
                 "timestamp": "2026-11-22T10:30:00Z"}]}),
        ),
        (
            "mutations[1].values.v\\u0000",
            json!({"client_id": "device", "mutations": [
                mutation("items", "upsert", json!({"id": "1"})),
                {"id": "m", "table": "items", "op": "upsert", "key": {"id": "1"},
                 "values": {"v\u{0}": "x"}, "timestamp": "2026-11-22T10:30:00Z"}]}),
        ),
        (
            "mutations[0].values.v",
            json!({"client_id": "device", "mutations": [
                {"id": "m", "table": "items", "op": "upsert", "key": {"id": "1"},
                 "values": {"v": "a\u{0}"}, "timestamp": "2026-11-22T10:30:00Z"}]}),
        ),
    ] {
        cases
            .check(&format!("POST mutations {field}"), async {
                let (status, body) = proxy.post_json("/v1/mutations", &request).await;
                assert_eq!(status, 400, "{field}");
                assert_eq!(
                    body,
                    json!({"message": "Invalid request",
                           "errors": {field: ["must not contain the NUL character (Postgres \
                                               text cannot hold it)"]}}),
                );
            })
            .await;
    }
    cases.finish();
}

/// The fix the refusal names works at once: after `ADD PRIMARY KEY` (which no row change shows
/// in the stream), the same shape and write are served.
#[tokio::test]
async fn a_table_given_a_primary_key_after_a_refusal_is_served_at_once() {
    let (_db, client, proxy) = setup("kinds_key_added").await;
    let shape = shape_http::get(proxy.http(), &proxy.url, "table=nokey&offset=-1").await;
    assert_eq!(shape.status, 400, "{:?}", shape.body);
    let (_, body) = mutate(&proxy, mutation("nokey", "update", json!({"id": "1"}))).await;
    assert_eq!(body["results"][0]["status"], "rejected", "{body}");

    client
        .batch_execute(
            "DELETE FROM nokey;
             INSERT INTO nokey VALUES (1, 'a');
             ALTER TABLE nokey ADD PRIMARY KEY (id);",
        )
        .await
        .unwrap();
    let shape = shape_http::get(proxy.http(), &proxy.url, "table=nokey&offset=-1").await;
    assert_eq!(shape.status, 200, "{:?}", shape.body);
    // A new id: the refused one's result is recorded under its id.
    let mut again = mutation("nokey", "update", json!({"id": "1"}));
    again["id"] = json!("nokey-update-again");
    let (_, body) = mutate(&proxy, again).await;
    assert_eq!(body["results"][0]["status"], "applied", "{body}");
}
