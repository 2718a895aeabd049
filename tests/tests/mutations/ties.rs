//! Equal timestamps: the clock's tie-break is the client id (byte order), so two devices that
//! write at the same microsecond still end on the same row whichever arrives first; plain SQL
//! (the empty client id) loses every tie.

use serde_json::{Value, json};

use crate::support::{Harness, at, harness, new_todo, status, todo, todo_id};

const LOW: &str = "device-a";
const HIGH: &str = "device-b";

/// Sends one mutation on todo `n` from `client` at the shared instant; returns its result.
async fn write(h: &Harness, client: &str, n: u32, op: &str, values: Value) -> Value {
    let id = format!("{client}-{op}-{n}");
    let response = h
        .send(client, vec![todo(&id, op, n, values, &at(10))])
        .await;
    response["results"][0].clone()
}

async fn seed(h: &Harness, rows: u32) {
    let mutations = (1..=rows)
        .map(|n| todo(&format!("seed-{n}"), "insert", n, new_todo("seed"), &at(0)))
        .collect();
    h.send("seed", mutations).await;
}

#[tokio::test]
async fn equal_timestamps_go_to_the_higher_client_id_in_either_arrival_order() {
    let h = harness("mut_ties").await;
    seed(&h, 4).await;
    // Rows 1 and 2: both devices set the title at the same instant, in either order.
    for (n, order) in [(1, [LOW, HIGH]), (2, [HIGH, LOW])] {
        let mut results = Vec::new();
        for client in order {
            let values = json!({"title": format!("from {client}")});
            results.push((client, write(&h, client, n, "update", values).await));
        }
        for (client, result) in results {
            if client == LOW && order[0] == HIGH {
                assert_eq!(status(&result), "conflict", "row {n}: {result}");
                assert_eq!(result["lost"], json!(["title"]), "row {n}");
                assert_eq!(result["row"]["title"], format!("from {HIGH}"), "row {n}");
            } else {
                assert_eq!(status(&result), "applied", "row {n} {client}: {result}");
            }
        }
        assert_eq!(
            h.todo(&todo_id(n), "title, updated_at").await,
            Some(vec![
                Some(format!("from {HIGH}")),
                Some("2026-01-01 00:00:10+00".into())
            ]),
            "row {n}"
        );
    }
    // Rows 3 and 4: the higher id deletes while the lower one edits: deleted either way.
    for (n, order) in [(3, [LOW, HIGH]), (4, [HIGH, LOW])] {
        for client in order {
            let (op, values) = if client == HIGH {
                ("delete", json!({}))
            } else {
                ("update", json!({"done": true}))
            };
            let result = write(&h, client, n, op, values).await;
            if client == LOW && order[0] == HIGH {
                assert_eq!(status(&result), "conflict", "row {n}: {result}");
                assert_eq!(result["row"], json!(null), "row {n}: gone for the client");
            } else {
                assert_eq!(status(&result), "applied", "row {n} {client}: {result}");
            }
        }
        assert_eq!(
            h.todo(&todo_id(n), "deleted_at").await,
            Some(vec![Some("2026-01-01 00:00:10+00".into())]),
            "row {n} is tombstoned"
        );
    }
}

#[tokio::test]
async fn an_edit_beats_a_delete_of_the_same_instant_from_a_lower_client_id() {
    let h = harness("mut_ties_resurrect").await;
    seed(&h, 2).await;
    for (n, order) in [(1, [LOW, HIGH]), (2, [HIGH, LOW])] {
        let mut results = Vec::new();
        for client in order {
            let (op, values) = if client == LOW {
                ("delete", json!({}))
            } else {
                ("update", json!({"title": "kept"}))
            };
            results.push((client, write(&h, client, n, op, values).await));
        }
        for (client, result) in results {
            let expected = if client == LOW && order[0] == HIGH {
                "conflict"
            } else {
                "applied"
            };
            assert_eq!(status(&result), expected, "row {n} {client}: {result}");
        }
        assert_eq!(
            h.todo(&todo_id(n), "title, deleted_at").await,
            Some(vec![Some("kept".into()), None]),
            "row {n} is live"
        );
    }
}

#[tokio::test]
async fn a_mutation_beats_a_plain_sql_write_of_the_same_instant() {
    let h = harness("mut_ties_plain_sql").await;
    seed(&h, 1).await;
    h.client
        .execute(
            "UPDATE todos SET title = 'admin', updated_at = $2::text::timestamptz
             WHERE id = $1::text::uuid",
            &[&todo_id(1), &at(10)],
        )
        .await
        .unwrap();
    let result = write(&h, LOW, 1, "update", json!({"title": "device"})).await;
    assert_eq!(status(&result), "applied", "{result}");
    assert_eq!(
        h.todo(&todo_id(1), "title").await,
        Some(vec![Some("device".into())])
    );
}
