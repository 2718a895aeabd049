//! `POST /v1/mutations` against real Postgres, through the real router: last-write-wins,
//! tombstones, idempotency, atomic batches, validation, HTTP details, Yjs, determinism.

mod determinism;
mod gc;
mod http;
mod lww_column;
mod savepoints;
mod support;
mod ties;
mod validation;
mod yjs;

use serde_json::json;
use support::{at, from_now, harness, new_todo, status, todo, todo_id};

#[tokio::test]
async fn a_stale_update_is_a_conflict_with_the_winning_row_and_lost_columns() {
    let h = harness("mut_stale").await;
    let id = todo_id(1);
    h.send(
        "a",
        vec![todo("m1", "insert", 1, new_todo("first"), &at(0))],
    )
    .await;
    h.send(
        "a",
        vec![todo("m2", "update", 1, json!({"title": "newer"}), &at(20))],
    )
    .await;
    let response = h
        .send(
            "b",
            vec![todo(
                "m3",
                "update",
                1,
                json!({"title": "older", "done": true}),
                &at(10),
            )],
        )
        .await;
    let result = &response["results"][0];
    assert_eq!(status(result), "conflict", "{response}");
    assert_eq!(result["lost"], json!(["title"]));
    assert_eq!(result["row"]["title"], "newer");
    assert_eq!(result["row"]["done"], "t", "the older write still won done");
    assert_eq!(result["row"]["id"], id.as_str());
    assert_eq!(
        h.todo(&id, "title, done, updated_at").await,
        Some(vec![
            Some("newer".into()),
            Some("true".into()),
            Some("2026-01-01 00:00:20+00".into())
        ]),
        "updated_at is the newest clock among the row's columns"
    );
}

#[tokio::test]
async fn concurrent_edits_of_different_columns_both_survive() {
    let h = harness("mut_columns").await;
    h.send("a", vec![todo("m1", "insert", 1, new_todo("t"), &at(0))])
        .await;
    let one = h.send(
        "a",
        vec![todo("m2", "update", 1, json!({"title": "from a"}), &at(20))],
    );
    let two = h.send(
        "b",
        vec![todo("m3", "update", 1, json!({"done": true}), &at(10))],
    );
    let (one, two) = tokio::join!(one, two);
    assert_eq!(status(&one["results"][0]), "applied", "{one}");
    assert_eq!(status(&two["results"][0]), "applied", "{two}");
    assert_eq!(
        h.todo(&todo_id(1), "title, done").await,
        Some(vec![Some("from a".into()), Some("true".into())])
    );
}

#[tokio::test]
async fn a_retried_mutation_id_returns_its_first_result_and_changes_nothing() {
    let h = harness("mut_idempotent").await;
    let insert = todo("m1", "insert", 1, new_todo("once"), &at(0));
    let first = h.send("a", vec![insert.clone()]).await;
    h.client
        .execute(
            "UPDATE todos SET position = 42 WHERE id = $1::text::uuid",
            &[&todo_id(1)],
        )
        .await
        .unwrap();
    let xmin_before: Vec<String> = xmin(&h).await;
    let again = h.send("a", vec![insert.clone(), insert]).await;
    assert_eq!(again["results"][0], first["results"][0], "same result");
    assert_eq!(
        again["results"][1], first["results"][0],
        "a repeat within the batch too"
    );
    assert_eq!(xmin(&h).await, xmin_before, "the row was not written again");
    assert_eq!(
        h.todo(&todo_id(1), "position").await,
        Some(vec![Some("42".into())]),
        "the retry did not overwrite the later plain SQL write"
    );
}

async fn xmin(h: &support::Harness) -> Vec<String> {
    h.client
        .query("SELECT xmin::text FROM todos ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_delete_then_an_older_update_stays_deleted() {
    let h = harness("mut_delete_older").await;
    h.send("a", vec![todo("m1", "insert", 1, new_todo("t"), &at(0))])
        .await;
    let deleted = h
        .send("a", vec![todo("m2", "delete", 1, json!({}), &at(30))])
        .await;
    assert_eq!(status(&deleted["results"][0]), "applied", "{deleted}");
    assert_eq!(deleted["results"][0]["row"], json!(null));
    let late = h
        .send(
            "b",
            vec![todo("m3", "update", 1, json!({"title": "late"}), &at(20))],
        )
        .await;
    let result = &late["results"][0];
    assert_eq!(status(result), "conflict", "{late}");
    assert_eq!(result["lost"], json!(["title"]));
    assert_eq!(result["row"], json!(null), "the row is gone for the client");
    let row = h.todo(&todo_id(1), "deleted_at, updated_at").await;
    assert_eq!(
        row,
        Some(vec![
            Some("2026-01-01 00:00:30+00".into()),
            Some("2026-01-01 00:00:30+00".into())
        ]),
        "a tombstone, not a real delete"
    );
}

#[tokio::test]
async fn a_delete_then_a_newer_update_resurrects_the_row() {
    let h = harness("mut_resurrect").await;
    h.send("a", vec![todo("m1", "insert", 1, new_todo("t"), &at(0))])
        .await;
    h.send("a", vec![todo("m2", "delete", 1, json!({}), &at(30))])
        .await;
    let back = h
        .send(
            "b",
            vec![todo("m3", "update", 1, json!({"done": true}), &at(40))],
        )
        .await;
    let result = &back["results"][0];
    assert_eq!(status(result), "applied", "{back}");
    assert_eq!(result["row"]["deleted_at"], json!(null));
    assert_eq!(
        result["row"]["title"], "t",
        "columns the update did not write keep their value"
    );
    assert_eq!(
        h.todo(&todo_id(1), "deleted_at, done").await,
        Some(vec![None, Some("true".into())])
    );
}

#[tokio::test]
async fn deletes_on_tables_without_tombstones_are_real_deletes() {
    let h = support::harness_with("mut_hard_delete", |config| {
        config.tombstones.retain(|t| t.table.name != "todos");
    })
    .await;
    h.send("a", vec![todo("m1", "insert", 1, new_todo("t"), &at(0))])
        .await;
    let deleted = h
        .send("a", vec![todo("m2", "delete", 1, json!({}), &at(10))])
        .await;
    assert_eq!(status(&deleted["results"][0]), "applied", "{deleted}");
    assert_eq!(h.todo(&todo_id(1), "title").await, None);
    let late = h
        .send(
            "b",
            vec![todo("m3", "update", 1, json!({"title": "late"}), &at(5))],
        )
        .await;
    assert_eq!(status(&late["results"][0]), "conflict", "{late}");
    assert_eq!(
        h.todo(&todo_id(1), "title").await,
        None,
        "an older write does not resurrect"
    );
}

#[tokio::test]
async fn an_atomic_batch_with_one_bad_value_applies_nothing() {
    let h = harness("mut_atomic").await;
    let response = support::send(
        &h.router,
        "a",
        true,
        vec![
            todo("m1", "insert", 1, new_todo("good"), &at(0)),
            todo(
                "m2",
                "insert",
                2,
                json!({"owner_id": "a", "title": "bad", "position": "high"}),
                &at(0),
            ),
            todo("m3", "insert", 3, new_todo("good too"), &at(0)),
        ],
    )
    .await;
    assert_eq!(response["txid"], json!(null), "{response}");
    let statuses: Vec<&str> = response["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(status)
        .collect();
    assert_eq!(statuses, ["aborted", "rejected", "aborted"]);
    assert_eq!(response["results"][1]["error"]["column"], "position");
    let count: i64 = h
        .client
        .query_one("SELECT count(*) FROM todos", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3, "only the example rows");
    // Nothing was recorded: the same batch, fixed, applies.
    let fixed = support::send(
        &h.router,
        "a",
        true,
        vec![todo("m1", "insert", 1, new_todo("good"), &at(0))],
    )
    .await;
    assert_eq!(status(&fixed["results"][0]), "applied", "{fixed}");
}

#[tokio::test]
async fn an_atomic_batch_rejected_by_a_constraint_applies_nothing() {
    let h = harness("mut_atomic_constraint").await;
    let response = support::send(
        &h.router,
        "a",
        true,
        vec![
            todo("m1", "insert", 1, new_todo("good"), &at(0)),
            todo(
                "m2",
                "insert",
                2,
                json!({"owner_id": "", "title": "empty owner"}),
                &at(0),
            ),
        ],
    )
    .await;
    assert_eq!(response["txid"], json!(null), "{response}");
    assert_eq!(status(&response["results"][0]), "aborted");
    assert_eq!(response["results"][1]["error"]["code"], "check_violation");
    assert_eq!(response["results"][1]["error"]["column"], "owner_id");
    assert_eq!(h.todo(&todo_id(1), "title").await, None);
}

#[tokio::test]
async fn a_non_atomic_batch_applies_everything_but_the_bad_mutations() {
    let h = harness("mut_partial").await;
    let mut mutations = Vec::new();
    for n in 1..=30 {
        let values = match n {
            7 => json!({"owner_id": "a", "title": "bad", "done": "maybe"}),
            13 => json!({"owner_id": "a", "title": ""}),
            21 => json!({"owner_id": "a"}),
            _ => new_todo(&format!("todo {n}")),
        };
        mutations.push(todo(&format!("m{n}"), "insert", n, values, &at(0)));
    }
    let response = h.send("a", mutations).await;
    assert!(response["txid"].as_u64().is_some(), "{response}");
    let results = response["results"].as_array().unwrap();
    for (n, result) in (1..=30).zip(results) {
        let expected = match n {
            7 | 13 | 21 => "rejected",
            _ => "applied",
        };
        assert_eq!(status(result), expected, "mutation {n}: {result}");
    }
    assert_eq!(results[6]["error"]["code"], "invalid_value");
    assert_eq!(results[6]["error"]["column"], "done");
    assert_eq!(results[12]["error"]["code"], "check_violation");
    assert_eq!(results[12]["error"]["column"], "title");
    assert_eq!(results[20]["error"]["code"], "not_null_violation");
    assert_eq!(results[20]["error"]["column"], "title");
    let count: i64 = h
        .client
        .query_one(
            "SELECT count(*) FROM todos WHERE owner_id = 'alice' AND title LIKE 'todo %'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 27);
}

#[tokio::test]
async fn the_txid_is_the_xid_that_logical_decoding_reports_for_the_commit() {
    let h = harness("mut_txid").await;
    h.client
        .execute(
            "SELECT pg_create_logical_replication_slot('txid_check', 'test_decoding')",
            &[],
        )
        .await
        .unwrap();
    let response = h
        .send("a", vec![todo("m1", "insert", 1, new_todo("t"), &at(0))])
        .await;
    let txid = response["txid"].as_u64().expect("txid");
    let changes: Vec<String> = h
        .client
        .query(
            "SELECT data FROM pg_logical_slot_get_changes('txid_check', NULL, NULL)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        changes.iter().any(|c| *c == format!("BEGIN {txid}")),
        "no BEGIN {txid} in {changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.contains("table public.todos: INSERT")),
        "{changes:?}"
    );
    assert_eq!(
        response["lsn"],
        json!(null),
        "replication is not running here"
    );
}

#[tokio::test]
async fn a_timestamp_far_in_the_future_is_clamped_and_says_so() {
    let h = harness("mut_clamp").await;
    let response = h
        .send(
            "broken-clock",
            vec![todo(
                "m1",
                "insert",
                1,
                new_todo("t"),
                "2999-01-01T00:00:00Z",
            )],
        )
        .await;
    let result = &response["results"][0];
    assert_eq!(status(result), "applied", "{response}");
    let clamped = result["clamped_to"].as_str().expect("clamped_to");
    assert!(clamped.starts_with("20"), "{clamped}");
    let in_future: bool = h
        .client
        .query_one(
            "SELECT updated_at BETWEEN now() AND now() + interval '61 seconds' FROM todos WHERE id = $1::text::uuid",
            &[&todo_id(1)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        in_future,
        "updated_at is server time + skew, not the year 2999"
    );
    // A device with a sane clock can write the row a minute later.
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let later = h
        .send(
            "sane",
            vec![todo(
                "m2",
                "update",
                1,
                json!({"title": "fixed"}),
                "2998-01-01T00:00:00Z",
            )],
        )
        .await;
    assert_eq!(status(&later["results"][0]), "applied", "{later}");
}

#[tokio::test]
async fn a_plain_sql_update_between_mutations_wins_only_the_columns_it_changed() {
    let h = harness("mut_plain_sql").await;
    h.send(
        "a",
        vec![todo(
            "m1",
            "insert",
            1,
            new_todo("device"),
            &from_now(-7200),
        )],
    )
    .await;
    // A plain SQL write now: the trigger moves updated_at to now().
    h.client
        .execute(
            "UPDATE todos SET title = 'admin' WHERE id = $1::text::uuid",
            &[&todo_id(1)],
        )
        .await
        .unwrap();
    let admin_time = h.todo(&todo_id(1), "updated_at").await;
    // A device edit made an hour ago, arriving after it, loses the title, which the plain
    // SQL write changed, and keeps its position, which nobody else wrote.
    let stale = h
        .send(
            "b",
            vec![todo(
                "m2",
                "update",
                1,
                json!({"position": 7, "title": "stale"}),
                &from_now(-3600),
            )],
        )
        .await;
    let result = &stale["results"][0];
    assert_eq!(status(result), "conflict", "{stale}");
    assert_eq!(result["lost"], json!(["title"]));
    assert_eq!(result["row"]["title"], "admin");
    assert_eq!(result["row"]["position"], "7");
    assert_eq!(
        h.todo(&todo_id(1), "updated_at").await,
        admin_time,
        "the newest write in the row is still the plain SQL one"
    );
    // A device edit made after the plain SQL write (within the allowed skew) wins.
    let newer = h
        .send(
            "b",
            vec![todo(
                "m3",
                "update",
                1,
                json!({"title": "newest"}),
                &from_now(5),
            )],
        )
        .await;
    assert_eq!(status(&newer["results"][0]), "applied", "{newer}");
    assert_eq!(newer["results"][0]["clamped_to"], json!(null), "{newer}");
    assert_eq!(
        h.todo(&todo_id(1), "title, position").await,
        Some(vec![Some("newest".into()), Some("7".into())])
    );
}

#[tokio::test]
async fn gc_purges_old_tombstones_and_mutation_ids() {
    let h = harness("mut_gc").await;
    h.send("a", vec![todo("m1", "insert", 1, new_todo("t"), &at(0))])
        .await;
    h.send("a", vec![todo("m2", "delete", 1, json!({}), &at(10))])
        .await;
    h.send("a", vec![todo("m3", "insert", 2, new_todo("kept"), &at(0))])
        .await;
    let policy = proxy::mutations::gc::GcPolicy {
        tombstones: vec!["todos".parse().unwrap()],
        tombstone_retention: Some(std::time::Duration::from_secs(1)),
        mutation_id_retention: std::time::Duration::from_secs(3600),
    };
    let report = proxy::mutations::gc::collect_once(&h.db.url, &policy)
        .await
        .unwrap();
    assert_eq!(report.tombstones, 1, "{report:?}");
    assert_eq!(report.clocks, 1, "{report:?}");
    assert_eq!(report.mutation_ids, 0);
    assert_eq!(h.todo(&todo_id(1), "title").await, None);
    assert!(h.todo(&todo_id(2), "title").await.is_some());
    let policy = proxy::mutations::gc::GcPolicy {
        mutation_id_retention: std::time::Duration::ZERO,
        ..policy
    };
    let report = proxy::mutations::gc::collect_once(&h.db.url, &policy)
        .await
        .unwrap();
    assert_eq!(report.mutation_ids, 3, "{report:?}");
}

/// An application's trigger that raises an error with a code of its own choosing refuses that
/// mutation, `database_refused` with Postgres' message; the others of the batch are applied,
/// and the request is never a 500.
#[tokio::test]
async fn a_trigger_raising_its_own_error_code_refuses_that_mutation_only() {
    let h = harness("mut_trigger_codes").await;
    h.client
        .batch_execute(
            "CREATE FUNCTION app_says_no() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 RAISE EXCEPTION 'the app says no to %', NEW.title
                     USING ERRCODE = substr(NEW.title, 7);
             END $$;
             CREATE TRIGGER app_says_no BEFORE INSERT ON todos FOR EACH ROW
                 WHEN (NEW.title LIKE 'raise %') EXECUTE FUNCTION app_says_no();",
        )
        .await
        .unwrap();
    let codes = [
        "SS001", "P0002", "2F005", "09000", "42P17", "HV000", "72000",
    ];
    let mut mutations = vec![todo("m0", "insert", 100, new_todo("fine"), &at(0))];
    for (n, code) in codes.iter().enumerate() {
        let values = new_todo(&format!("raise {code}"));
        let n = n as u32 + 1;
        mutations.push(todo(&format!("m{n}"), "insert", n, values, &at(0)));
    }
    let response = h.send("a", mutations).await;
    let results = response["results"].as_array().expect("results");
    assert_eq!(status(&results[0]), "applied", "{response}");
    for (result, code) in results[1..].iter().zip(codes) {
        assert_eq!(status(result), "rejected", "{code}: {result}");
        assert_eq!(
            result["error"]["code"], "database_refused",
            "{code}: {result}"
        );
        assert_eq!(
            result["error"]["message"],
            format!("the app says no to raise {code}"),
            "{code}: {result}"
        );
    }
    assert_eq!(
        h.todo(&todo_id(100), "title").await,
        Some(vec![Some("fine".to_owned())])
    );
}
