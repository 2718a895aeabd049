//! An LWW column with another name than `updated_at` (`--lww-column`), kept current for plain
//! SQL writes by the trigger the README gives — run here exactly as the README prints it.

use proxy::mutations::config::Writable;
use serde_json::{Value, json};
use shapes::schema::QualifiedName;

use crate::support::{Harness, from_now, harness_with, status};

const README: &str = include_str!("../../../README.md");

/// The README's SQL block that defines `shapesync_touch_lww` and a trigger on `items`.
fn readme_trigger_sql() -> &'static str {
    let function = README
        .find("CREATE FUNCTION shapesync_touch_lww")
        .expect("the README defines shapesync_touch_lww");
    let start = README[..function].rfind("```sql").expect("in a sql block") + "```sql".len();
    let end = start + README[start..].find("```").expect("the block ends");
    &README[start..end]
}

/// A table whose LWW column is `modified_at`, with the README's trigger.
async fn items(name: &str) -> Harness {
    let h = harness_with(name, |config| {
        config.writes.lww_column = "modified_at".into();
        config.writes.writable = Writable::Tables(vec![QualifiedName::new("public", "items")]);
    })
    .await;
    h.client
        .batch_execute(
            "CREATE TABLE items (
                 id int PRIMARY KEY,
                 name text NOT NULL,
                 qty int NOT NULL DEFAULT 0,
                 modified_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .unwrap();
    h.client.batch_execute(readme_trigger_sql()).await.unwrap();
    h
}

fn item(id: &str, op: &str, n: i32, values: Value, timestamp: &str) -> Value {
    json!({"id": id, "table": "items", "op": op, "key": {"id": n}, "values": values,
           "timestamp": timestamp})
}

/// (name, qty, modified_at in µs) of item `n`.
async fn row(h: &Harness, n: i32) -> (String, i32, i64) {
    let row = h
        .client
        .query_one(
            "SELECT name, qty, (extract(epoch FROM modified_at) * 1000000)::int8
             FROM items WHERE id = $1",
            &[&n],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

fn micros(rfc3339: &str) -> i64 {
    proxy::mutations::clock::parse_timestamp(rfc3339).unwrap()
}

#[tokio::test]
async fn a_custom_lww_column_takes_the_mutation_timestamp_and_is_read_only() {
    let h = items("mut_lww_column").await;
    let (inserted, updated) = (from_now(-7200), from_now(-3600));
    let response = h
        .send(
            "a",
            vec![
                item("m1", "insert", 1, json!({"name": "one"}), &inserted),
                item("m2", "insert", 2, json!({"name": "two"}), &inserted),
            ],
        )
        .await;
    assert_eq!(status(&response["results"][0]), "applied", "{response}");
    assert_eq!(row(&h, 1).await, ("one".into(), 0, micros(&inserted)));
    // The trigger leaves shapesync's own writes alone.
    h.send(
        "a",
        vec![item("m3", "update", 1, json!({"qty": 3}), &updated)],
    )
    .await;
    assert_eq!(row(&h, 1).await, ("one".into(), 3, micros(&updated)));
    let refused = h
        .send(
            "a",
            vec![item(
                "m4",
                "update",
                2,
                json!({"modified_at": from_now(0)}),
                &updated,
            )],
        )
        .await;
    let result = &refused["results"][0];
    assert_eq!(status(result), "rejected", "{refused}");
    assert_eq!(result["error"]["code"], "read_only_column");
    assert_eq!(result["error"]["column"], "modified_at");
}

#[tokio::test]
async fn plain_sql_writes_count_through_a_custom_lww_column_with_the_readme_trigger() {
    let h = items("mut_lww_column_plain").await;
    h.send(
        "a",
        vec![item(
            "m1",
            "insert",
            1,
            json!({"name": "device"}),
            &from_now(-7200),
        )],
    )
    .await;
    // An admin's UPDATE (the trigger dates it now) and INSERT (the default does).
    h.client
        .batch_execute(
            "UPDATE items SET name = 'admin' WHERE id = 1;
             INSERT INTO items (id, name) VALUES (2, 'plain');",
        )
        .await
        .unwrap();
    let before_stale = (row(&h, 1).await, row(&h, 2).await);
    assert!(
        before_stale.0.2 > micros(&from_now(-60)),
        "the trigger moved modified_at to now()"
    );
    // Device edits made an hour ago: on the updated row only the name, which the plain UPDATE
    // changed, is lost; the plainly inserted row was written whole after them.
    let stale = h
        .send(
            "b",
            vec![
                item(
                    "m2",
                    "update",
                    1,
                    json!({"name": "stale", "qty": 5}),
                    &from_now(-3600),
                ),
                item("m3", "update", 2, json!({"qty": 5}), &from_now(-3600)),
            ],
        )
        .await;
    for (i, result) in stale["results"].as_array().unwrap().iter().enumerate() {
        assert_eq!(status(result), "conflict", "{i}: {stale}");
    }
    assert_eq!(stale["results"][0]["lost"], json!(["name"]));
    assert_eq!(stale["results"][0]["row"]["name"], "admin");
    assert_eq!(stale["results"][0]["row"]["qty"], "5");
    assert_eq!(stale["results"][1]["lost"], json!(["qty"]));
    let admin = before_stale.0.clone();
    assert_eq!(
        (row(&h, 1).await, row(&h, 2).await),
        (("admin".into(), 5, admin.2), before_stale.1)
    );
    // One made after them wins.
    let newer = h
        .send(
            "b",
            vec![item("m4", "update", 1, json!({"qty": 6}), &from_now(5))],
        )
        .await;
    assert_eq!(status(&newer["results"][0]), "applied", "{newer}");
    assert_eq!(row(&h, 1).await.0, "admin");
    assert_eq!(row(&h, 1).await.1, 6);
}

#[tokio::test]
async fn a_plain_sql_update_that_changes_nothing_is_no_write() {
    let h = items("mut_lww_column_unchanged").await;
    let inserted = from_now(-7200);
    h.send(
        "a",
        vec![item(
            "m1",
            "insert",
            1,
            json!({"name": "device", "qty": 1}),
            &inserted,
        )],
    )
    .await;
    // A backend job that sets what is already there, in every way it can.
    h.client
        .batch_execute(
            "UPDATE items SET name = name WHERE id = 1;
             UPDATE items SET name = 'device', qty = 1 WHERE id = 1;",
        )
        .await
        .unwrap();
    assert_eq!(
        row(&h, 1).await,
        ("device".into(), 1, micros(&inserted)),
        "the LWW column did not move"
    );
    // So a device edit made after the insert, long before the job, still wins.
    let edit = h
        .send(
            "b",
            vec![item(
                "m2",
                "update",
                1,
                json!({"name": "edited", "qty": 2}),
                &from_now(-3600),
            )],
        )
        .await;
    assert_eq!(status(&edit["results"][0]), "applied", "{edit}");
    assert_eq!(row(&h, 1).await.0, "edited");
    assert_eq!(row(&h, 1).await.1, 2);
}

#[tokio::test]
async fn a_plain_sql_update_that_sets_the_lww_column_to_its_value_is_dated_now() {
    let h = items("mut_lww_column_same_value").await;
    h.send(
        "a",
        vec![item(
            "m1",
            "insert",
            1,
            json!({"name": "device", "qty": 1}),
            &from_now(-7200),
        )],
    )
    .await;
    // Two plain UPDATEs that both say they happened an hour ago. The second sets modified_at
    // to the value the first left there, which the trigger cannot tell from not setting it
    // (it sees values, not the statement): that write is dated now().
    let hour_ago = from_now(-3600);
    h.client
        .batch_execute(&format!(
            "UPDATE items SET name = 'first', modified_at = '{hour_ago}' WHERE id = 1"
        ))
        .await
        .unwrap();
    assert_eq!(row(&h, 1).await, ("first".into(), 1, micros(&hour_ago)));
    let dated_now: bool = h
        .client
        .query_one(
            &format!(
                "UPDATE items SET name = 'second', qty = 2, modified_at = '{hour_ago}'
                 WHERE id = 1 RETURNING modified_at = now()"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(dated_now, "the second UPDATE is dated now()");
    // So a device edit made after the hour-old time, before now, loses in both columns.
    let edit = h
        .send(
            "b",
            vec![item(
                "m2",
                "update",
                1,
                json!({"name": "edited", "qty": 3}),
                &from_now(-1800),
            )],
        )
        .await;
    let result = &edit["results"][0];
    assert_eq!(status(result), "conflict", "{edit}");
    assert_eq!(result["lost"], json!(["name", "qty"]));
    assert_eq!(row(&h, 1).await.0, "second");
    assert_eq!(row(&h, 1).await.1, 2);
}
