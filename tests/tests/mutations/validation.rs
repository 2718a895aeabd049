//! Refusals: each names the mutation's column and why.

use serde_json::{Value, json};

use crate::support::{at, harness, new_todo, status, todo};

fn error(response: &Value, index: usize) -> (String, Option<String>, String) {
    let result = &response["results"][index];
    assert_eq!(status(result), "rejected", "{response}");
    let error = &result["error"];
    (
        error["code"].as_str().unwrap_or_default().to_owned(),
        error["column"].as_str().map(str::to_owned),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn an_invalid_uuid_is_rejected_naming_the_column_with_postgres_message() {
    let h = harness("mut_bad_uuid").await;
    let response = h
        .send(
            "a",
            vec![
                json!({"id": "m1", "table": "todos", "op": "insert", "key": {"id": "not-a-uuid"},
                        "values": new_todo("t"), "timestamp": at(0)}),
            ],
        )
        .await;
    let (code, column, message) = error(&response, 0);
    assert_eq!(code, "invalid_value");
    assert_eq!(column.as_deref(), Some("id"));
    assert_eq!(
        message,
        r#"invalid input syntax for type uuid: "not-a-uuid""#
    );
}

#[tokio::test]
async fn unknown_and_unwritable_tables_and_columns_get_their_codes() {
    let h = harness("mut_refusals").await;
    h.client
        .batch_execute(
            "CREATE TABLE secrets (id int PRIMARY KEY, v text);
             CREATE TABLE nokey (v text);
             ALTER TABLE todos ADD COLUMN slug text GENERATED ALWAYS AS (lower(title)) STORED;",
        )
        .await
        .unwrap();
    let on = |table: &str, values: Value| {
        json!({"id": format!("m-{table}-{values}"), "table": table, "op": "update",
               "key": {"id": crate::support::todo_id(1)}, "values": values, "timestamp": at(0)})
    };
    let response = h
        .send(
            "a",
            vec![
                on("nope", json!({})),
                on("secrets", json!({})),
                on("todos", json!({"colour": "red"})),
                on("todos", json!({"slug": "x"})),
                on("todos", json!({"updated_at": "2026-01-01T00:00:00Z"})),
                on("todos", json!({"deleted_at": null})),
                on("notes", json!({"body": "\\x00"})),
                todo("m-ts", "update", 1, json!({}), "tomorrow"),
            ],
        )
        .await;
    let codes: Vec<(String, Option<String>)> = (0..8)
        .map(|i| {
            let (code, column, _) = error(&response, i);
            (code, column)
        })
        .collect();
    let expect = |code: &str, column: Option<&str>| (code.to_owned(), column.map(str::to_owned));
    assert_eq!(
        codes,
        [
            expect("unknown_table", None),
            expect("not_writable", None),
            expect("unknown_column", Some("colour")),
            expect("read_only_column", Some("slug")),
            expect("read_only_column", Some("updated_at")),
            expect("read_only_column", Some("deleted_at")),
            expect("read_only_column", Some("body")),
            expect("bad_timestamp", None),
        ]
    );
    let (_, _, message) = error(&response, 0);
    assert!(message.contains("does not exist"), "{message}");

    let everything = crate::support::harness_with("mut_refusals_star", |config| {
        config.writes.writable = proxy::mutations::config::Writable::All;
    })
    .await;
    everything
        .client
        .batch_execute("CREATE TABLE nokey (v text)")
        .await
        .unwrap();
    let response = everything
        .send(
            "a",
            vec![
                json!({"id": "m", "table": "nokey", "op": "insert", "key": {},
                               "values": {"v": "x"}, "timestamp": at(0)}),
            ],
        )
        .await;
    let (code, _, message) = error(&response, 0);
    assert_eq!(code, "not_writable");
    assert!(message.contains("no primary key"), "{message}");
}

#[tokio::test]
async fn unique_and_foreign_key_violations_name_their_column() {
    let h = harness("mut_constraints").await;
    h.client
        .batch_execute(
            "CREATE UNIQUE INDEX todos_title_unique ON todos (title);
             CREATE TABLE owners (name text PRIMARY KEY);
             INSERT INTO owners VALUES ('alice');
             ALTER TABLE notes ADD FOREIGN KEY (owner_id) REFERENCES owners (name) NOT VALID;",
        )
        .await
        .unwrap();
    let response = h
        .send(
            "a",
            vec![
                todo("m1", "insert", 1, new_todo("same"), &at(0)),
                todo("m2", "insert", 2, new_todo("same"), &at(0)),
                json!({"id": "m3", "table": "notes", "op": "insert",
                       "key": {"id": crate::support::todo_id(3)},
                       "values": {"owner_id": "mallory"}, "timestamp": at(0)}),
            ],
        )
        .await;
    assert_eq!(status(&response["results"][0]), "applied", "{response}");
    let (code, column, message) = error(&response, 1);
    assert_eq!(
        (code.as_str(), column.as_deref()),
        ("unique_violation", Some("title"))
    );
    assert!(message.contains("already exists"), "{message}");
    let (code, column, _) = error(&response, 2);
    assert_eq!(
        (code.as_str(), column.as_deref()),
        ("foreign_key_violation", Some("owner_id"))
    );
}

#[tokio::test]
async fn too_long_values_are_rejected_not_truncated() {
    let h = harness("mut_too_long").await;
    h.client
        .batch_execute("ALTER TABLE todos ADD COLUMN code varchar(3)")
        .await
        .unwrap();
    let mut values = new_todo("t");
    values["code"] = json!("abcdef");
    let response = h
        .send("a", vec![todo("m1", "insert", 1, values, &at(0))])
        .await;
    let (code, column, message) = error(&response, 0);
    assert_eq!(code, "invalid_value");
    assert_eq!(column.as_deref(), Some("code"));
    assert!(message.contains("too long"), "{message}");
}

/// A refusal is never made from a cached table: once the column a refusal asks for exists,
/// the next write is taken, without waiting for the cached table to age out.
#[tokio::test]
async fn a_table_fixed_after_a_refusal_is_written_at_once() {
    let h = crate::support::harness_with("mut_fixed_table", |config| {
        config
            .tombstones
            .push("plain".parse().expect("tombstone spec"));
        config.writes.writable = proxy::mutations::config::Writable::All;
    })
    .await;
    h.client
        .batch_execute("CREATE TABLE plain (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let write = |id: &str| {
        json!({"id": id, "table": "plain", "op": "upsert", "key": {"id": 1},
               "values": {"v": "x"}, "timestamp": at(0)})
    };
    let response = h.send("a", vec![write("m-1")]).await;
    let (code, _, message) = error(&response, 0);
    assert_eq!(code, "not_writable");
    assert!(message.contains("tombstone column deleted_at"), "{message}");

    h.client
        .batch_execute("ALTER TABLE plain ADD COLUMN deleted_at timestamptz")
        .await
        .unwrap();
    let response = h.send("a", vec![write("m-2")]).await;
    assert_eq!(status(&response["results"][0]), "applied", "{response}");
}
