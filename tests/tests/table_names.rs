//! Table names resolve as Postgres resolves them: `shapes::table_name` against the server's
//! own `parse_ident` (cast to `name[]`, which truncates), against the table `CREATE TABLE`
//! makes of the same text, and end to end: one spelling names one table for a shape, a
//! mutation and `--writable` alike.

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use shapes::schema::QualifiedName;
use shapes::table_name::parse_table_name;
use tests::proxy_process::ProxyProcess;
use tests::shape_http;
use tests::{TestDb, shapesync_bin};

/// What Postgres makes of `text`: its parts, or `None` when it refuses it.
async fn postgres_parts(client: &tokio_postgres::Client, text: &str) -> Option<Vec<String>> {
    client
        .query_one("SELECT parse_ident($1)::name[]::text[]", &[&text])
        .await
        .ok()
        .map(|row| row.get(0))
}

/// Ours, as parts: `[schema, name]`, or `None` when refused. A one-part name is in `public`.
fn our_parts(text: &str) -> Option<(Option<String>, String)> {
    let name = parse_table_name(text).ok()?;
    Some((Some(name.schema), name.name))
}

fn agree(text: &str, ours: Option<(Option<String>, String)>, theirs: Option<Vec<String>>) {
    match (ours, theirs) {
        (None, None) => {}
        (None, Some(parts)) if parts.len() > 2 => {}
        (Some((Some(schema), name)), Some(parts)) => {
            let expected = match parts.as_slice() {
                [name] => ("public".to_owned(), name.clone()),
                [schema, name] => (schema.clone(), name.clone()),
                _ => panic!("{text:?}: we read {schema:?}.{name:?}, Postgres {parts:?}"),
            };
            assert_eq!((schema, name), expected, "{text:?}");
        }
        (ours, theirs) => panic!("{text:?}: we read {ours:?}, Postgres {theirs:?}"),
    }
}

const CASES: &[&str] = &[
    "items",
    "ITEMS",
    "\"ITEMS\"",
    "App.Items",
    "\"My Schema\".\"my table\"",
    "\"a.b\"",
    "\"a\"\"b\"",
    "t$1",
    "Été",
    "Ärger",
    "ÄRGER",
    "ÄrGeR",
    "\"Ärger\"",
    "İstanbul",
    "ǅemal",
    "ß",
    "Ωmega",
    "_x",
    "  app .  items  ",
    "\tapp\n.\ritems\x0c",
    "a\x0bb",
    "",
    "   ",
    "a.b.c",
    "a b",
    "\"\"",
    "\"open",
    "1abc",
    "a.",
    ".a",
    "a;drop",
    "a-b",
    "a\0b",
    "\"a\0b\"",
    "\u{a0}nbsp",
];

#[tokio::test]
async fn table_names_resolve_as_postgres_parse_ident_resolves_them() {
    let db = TestDb::new("names_parse_ident").await;
    let client = db.connect().await;
    let mut cases: Vec<String> = CASES.iter().map(|s| (*s).to_owned()).collect();
    cases.push("a".repeat(70));
    cases.push(format!("\"{}\"", "B".repeat(70)));
    cases.push("é".repeat(40));
    cases.push(format!("a{}", "é".repeat(40)));
    cases.push(format!("{}.{}", "S".repeat(64), "Ä".repeat(33)));
    for text in &cases {
        agree(text, our_parts(text), postgres_parts(&client, text).await);
    }

    // Random names from an alphabet of the characters that matter; replay with
    // TABLE_NAME_SEED=<seed>.
    let seed = std::env::var("TABLE_NAME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("TABLE_NAME_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let alphabet = [
        "a",
        "Z",
        "é",
        "Ä",
        "ß",
        "İ",
        "ǅ",
        "_",
        "$",
        "1",
        " ",
        ".",
        "\"",
        "\t",
        "-",
        "\u{a0}",
        "ééééééééééééééééééééééééééééééééé",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ];
    for _ in 0..3000 {
        let len = rng.random_range(0..10);
        let text: String = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        agree(
            &text,
            our_parts(&text),
            postgres_parts(&client, &text).await,
        );
    }
}

#[tokio::test]
async fn a_name_reaches_the_table_create_table_made_of_the_same_text() {
    let db = TestDb::new("names_create").await;
    let client = db.connect().await;
    client.batch_execute("CREATE SCHEMA app").await.unwrap();
    let long = "Ä".repeat(40);
    let quoted_long = format!("\"{}\"", "é".repeat(40));
    let spellings = [
        "Ärger",
        "ÄRGER",
        "\"Ärger\"",
        "App.Items",
        "app.\"Items\"",
        "İstanbul",
        "ǅemal",
        "\"My Table\"",
        long.as_str(),
        quoted_long.as_str(),
    ];
    for text in spellings {
        client
            .batch_execute(&format!("CREATE TABLE {text} (id int)"))
            .await
            .unwrap_or_else(|e| panic!("CREATE TABLE {text}: {e}"));
        let row = client
            .query_one(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind = 'r' AND n.nspname IN ('public', 'app')",
                &[],
            )
            .await
            .unwrap();
        let created = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        assert_eq!(parse_table_name(text), Ok(created), "{text}");
        client
            .batch_execute(&format!("DROP TABLE {text}"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn one_spelling_names_the_same_table_for_a_shape_a_mutation_and_writable() {
    let db = TestDb::new("names_end_to_end").await;
    let client = db.connect().await;
    // Unquoted, Ärger is stored as "Ärger" (Postgres folds only ASCII letters); "ärger" is
    // another table, which a folding of every letter would reach instead.
    client
        .batch_execute(
            "CREATE TABLE Ärger (id int PRIMARY KEY, v text);
             CREATE TABLE \"ärger\" (id int PRIMARY KEY, v text);",
        )
        .await
        .unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &["--writable", "Ärger"]).await;
    let response = proxy
        .http()
        .post(format!("{}/v1/mutations", proxy.url))
        .json(&json!({"client_id": "c", "mutations": [
            {"id": "m1", "table": "Ärger", "op": "upsert", "key": {"id": "1"},
             "values": {"v": "written"}, "timestamp": "2026-11-22T10:30:00Z"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], "applied", "{body}");
    let count = |table: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(count("\"Ärger\"").await, 1, "the write reached \"Ärger\"");
    assert_eq!(count("\"ärger\"").await, 0, "and not \"ärger\"");

    let shape = shape_http::get(proxy.http(), &proxy.url, "table=Ärger&offset=-1").await;
    assert_eq!(shape.status, 200, "{:?}", shape.body);
    let rows = shape.body.as_array().unwrap();
    assert_eq!(rows[0]["value"], json!({"id": "1", "v": "written"}));
    assert_eq!(rows[0]["headers"]["relation"], json!(["public", "Ärger"]));
}
