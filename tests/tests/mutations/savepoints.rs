//! The subtransaction bound: a batch never holds more than `SAVEPOINT_BUDGET` subtransactions
//! (Postgres' per-backend cache holds 64; past it every snapshot in the database slows down).
//!
//! Observable after the commit: every subtransaction that wrote leaves its own xid as the
//! `xmin` of the rows it wrote, and rolled-back ones leave nothing (Postgres also drops them
//! from the cache). So the distinct `xmin`s of the rows a batch wrote, other than the
//! transaction's own, are the subtransactions it held.

use serde_json::{Value, json};

use crate::support::{Harness, at, harness, new_todo, send, status, todo, todo_id};

const BUDGET: usize = proxy::mutations::store::SAVEPOINT_BUDGET as usize;

/// Distinct subtransaction xids among the todos, registers and mutation ids that the
/// transaction `txid` (a top-level xid, as results carry it) wrote.
async fn subtransactions_of(h: &Harness, txid: &Value) -> i64 {
    let txid = txid.as_i64().expect("a committed batch has a txid");
    h.client
        .query_one(
            "SELECT count(DISTINCT x) FROM (
                 SELECT xmin::text::int8 AS x FROM todos
                 UNION ALL SELECT xmin::text::int8 FROM shapesync.row_clocks
                 UNION ALL SELECT xmin::text::int8 FROM shapesync.mutation_ids) written
             WHERE x > $1",
            &[&txid],
        )
        .await
        .unwrap()
        .get(0)
}

/// The xid of the transaction that last wrote todo `n`.
async fn xmin_of(h: &Harness, n: u32) -> i64 {
    h.client
        .query_one(
            "SELECT xmin::text::int8 FROM todos WHERE id = $1::text::uuid",
            &[&todo_id(n)],
        )
        .await
        .unwrap()
        .get(0)
}

/// Mutation `i` of the big batch: every third is fine; the others break a unique index (on
/// titles taken beforehand), a check constraint, or a NOT NULL. All set the same columns, so
/// they make one statement.
fn mixed_mutation(i: usize) -> (Value, Option<(&'static str, &'static str)>) {
    let n = u32::try_from(i).unwrap() + 1;
    let mut values = new_todo(&format!("free {i}"));
    let refusal = match i % 6 {
        0 | 3 => None,
        1 | 4 => {
            values["title"] = json!(format!("taken {i}"));
            Some(("unique_violation", "title"))
        }
        2 => {
            values["owner_id"] = json!("");
            Some(("check_violation", "owner_id"))
        }
        _ => {
            values["title"] = json!(null);
            Some(("not_null_violation", "title"))
        }
    };
    (todo(&format!("m{i}"), "insert", n, values, &at(0)), refusal)
}

#[tokio::test]
async fn a_batch_with_100_constraint_violations_rejects_each_within_the_savepoint_budget() {
    let h = harness("mut_savepoint_budget").await;
    h.client
        .batch_execute(
            "CREATE UNIQUE INDEX todos_title_unique ON todos (title);
             INSERT INTO todos (owner_id, title)
                 SELECT 'admin', 'taken ' || n FROM generate_series(0, 149) n;",
        )
        .await
        .unwrap();
    let (mutations, refusals): (Vec<Value>, Vec<_>) = (0..150).map(mixed_mutation).unzip();
    assert_eq!(refusals.iter().filter(|r| r.is_some()).count(), 100);

    let first = send(&h.router, "a", false, mutations.clone()).await;
    let results = first["results"].as_array().unwrap();
    // Each good mutation sits between bad ones, so splitting the failing statement isolates it
    // in a savepoint of its own. Mutations are decided in batch order; once the budget is
    // spent (by the good one at 3 × (BUDGET − 1)), the rest are `aborted`: not recorded, so
    // sending them again applies them.
    let last_decided = 3 * (BUDGET - 1);
    for (i, (result, refusal)) in results.iter().zip(&refusals).enumerate() {
        match refusal {
            _ if i > last_decided => assert_eq!(status(result), "aborted", "{i}: {result}"),
            None => assert_eq!(status(result), "applied", "{i}: {result}"),
            Some((code, column)) => {
                assert_eq!(status(result), "rejected", "{i}: {result}");
                assert_eq!(result["error"]["code"], *code, "{i}: {result}");
                assert_eq!(result["error"]["column"], *column, "{i}: {result}");
            }
        }
    }
    let held = subtransactions_of(&h, &first["txid"]).await;
    assert!(
        (1..=BUDGET as i64).contains(&held),
        "the batch held {held} subtransactions"
    );
    assert!(held < 64, "Postgres caches 64 subtransactions per backend");

    // The retry returns the decided results as they were and decides the aborted ones.
    let retry = send(&h.router, "a", false, mutations).await;
    let again = retry["results"].as_array().unwrap();
    assert_eq!(again[..=last_decided], results[..=last_decided]);
    for (i, (result, refusal)) in again
        .iter()
        .zip(&refusals)
        .enumerate()
        .skip(last_decided + 1)
    {
        let expected = if refusal.is_some() {
            "rejected"
        } else {
            "applied"
        };
        assert_eq!(status(result), expected, "{i}: {result}");
    }
    assert!(subtransactions_of(&h, &retry["txid"]).await <= BUDGET as i64);
    let applied: i64 = h
        .client
        .query_one(
            "SELECT count(*) FROM todos WHERE owner_id = 'alice' AND title LIKE 'free %'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 50, "every good mutation, none of the bad ones");
}

/// `count` updates of todo 1, one per second after its insert.
fn edits(count: usize, prefix: &str) -> Vec<Value> {
    (1..=count)
        .map(|k| {
            let title = format!("edit {k}");
            todo(
                &format!("{prefix}{k}"),
                "update",
                1,
                json!({"title": title}),
                &at(i64::try_from(k).unwrap()),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_edit_of_one_row_in_a_batch_longer_than_the_budget_applies() {
    let h = harness("mut_savepoint_rounds").await;
    h.send("a", vec![todo("m0", "insert", 1, new_todo("t"), &at(0))])
        .await;
    // Each edit of the same row is a statement of its own (a statement writes a row once).
    let count = 2 * BUDGET + 5;
    let response = h.send("a", edits(count, "e")).await;
    for (k, result) in response["results"].as_array().unwrap().iter().enumerate() {
        assert_eq!(status(result), "applied", "edit {}: {result}", k + 1);
    }
    assert_eq!(
        h.todo(&todo_id(1), "title").await,
        Some(vec![Some(format!("edit {count}"))])
    );
    assert_eq!(
        xmin_of(&h, 1).await,
        response["txid"].as_i64().unwrap(),
        "a batch that breaks no constraint needs no savepoint"
    );
}

#[tokio::test]
async fn an_atomic_batch_longer_than_the_savepoint_budget_is_all_or_nothing() {
    let h = harness("mut_savepoint_atomic").await;
    h.send("a", vec![todo("m0", "insert", 1, new_todo("t"), &at(0))])
        .await;
    let count = 2 * BUDGET + 5;

    // One bad value at the end: nothing applies, the bad one is named.
    let mut bad = edits(count, "bad");
    bad[count - 1]["values"]["title"] = json!("");
    let response = send(&h.router, "a", true, bad).await;
    assert_eq!(response["txid"], json!(null), "{response}");
    let results = response["results"].as_array().unwrap();
    for result in &results[..count - 1] {
        assert_eq!(status(result), "aborted", "{result}");
    }
    assert_eq!(results[count - 1]["error"]["code"], "check_violation");
    assert_eq!(results[count - 1]["error"]["column"], "title");
    assert_eq!(
        h.todo(&todo_id(1), "title").await,
        Some(vec![Some("t".into())])
    );

    // All good: everything applies, in one transaction.
    let response = send(&h.router, "a", true, edits(count, "good")).await;
    let txid = response["txid"].as_i64().expect("committed");
    for result in response["results"].as_array().unwrap() {
        assert_eq!(status(result), "applied", "{result}");
    }
    assert_eq!(
        h.todo(&todo_id(1), "title").await,
        Some(vec![Some(format!("edit {count}"))])
    );
    assert_eq!(xmin_of(&h, 1).await, txid);
}
