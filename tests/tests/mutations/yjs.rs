//! Yjs documents are merged, never overwritten.

use base64::Engine as _;
use serde_json::json;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use crate::support::{at, harness, status, todo_id};

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An edit of `base` by another client: `text` inserted at `at`, as a diff.
fn edit(base: &[u8], client: u64, at: u32, text: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(client);
    let body = doc.get_or_insert_text("body");
    let mut txn = doc.transact_mut();
    txn.apply_update(Update::decode_v1(base).unwrap()).unwrap();
    let before = txn.state_vector();
    body.insert(&mut txn, at, text);
    txn.encode_diff_v1(&before)
}

fn note_merge(id: &str, client: &str, update: &[u8], timestamp: &str) -> serde_json::Value {
    json!({"id": format!("{client}-{id}"), "table": "notes", "op": "upsert",
           "key": {"id": todo_id(1)}, "values": {"owner_id": "alice"},
           "merge": {"body": base64(update)}, "timestamp": timestamp})
}

#[tokio::test]
async fn three_concurrent_merges_keep_all_three_edits() {
    let h = harness("mut_yjs").await;
    let base_doc = Doc::with_client_id(1);
    let text = base_doc.get_or_insert_text("body");
    text.insert(&mut base_doc.transact_mut(), 0, "shared base");
    let base = base_doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let first = h
        .send("writer-0", vec![note_merge("base", "w0", &base, &at(0))])
        .await;
    assert_eq!(status(&first["results"][0]), "applied", "{first}");

    let edits = [(2, 0, "[one]"), (3, 6, "[two]"), (4, 11, "[three]")];
    let mut tasks = Vec::new();
    for (client, position, insert) in edits {
        let update = edit(&base, client, position, insert);
        let router = h.router.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("writer-{client}");
            // Older timestamps than the base write: LWW does not apply to Yjs columns.
            let mutation = note_merge("edit", &name, &update, &at(-100));
            crate::support::send(&router, &name, false, vec![mutation]).await
        }));
    }
    for task in tasks {
        let response = task.await.unwrap();
        let result = &response["results"][0];
        assert_ne!(status(result), "rejected", "{response}");
    }

    let stored: Vec<u8> = h
        .client
        .query_one(
            "SELECT body FROM notes WHERE id = $1::text::uuid",
            &[&todo_id(1)],
        )
        .await
        .unwrap()
        .get(0);
    let doc = Doc::new();
    let body = doc.get_or_insert_text("body");
    let mut txn = doc.transact_mut();
    txn.apply_update(Update::decode_v1(&stored).unwrap())
        .unwrap();
    let merged = body.get_string(&txn);
    for (_, _, insert) in edits {
        assert!(merged.contains(insert), "{insert} missing from {merged:?}");
    }
    assert!(merged.contains("shared"), "{merged:?}");
}

#[tokio::test]
async fn a_merge_that_is_not_a_yjs_update_is_rejected() {
    let h = harness("mut_yjs_bad").await;
    let response = h
        .send(
            "a",
            vec![note_merge("bad", "a", &[0xff, 0xff, 0xff, 0xff], &at(0))],
        )
        .await;
    let result = &response["results"][0];
    assert_eq!(status(result), "rejected", "{response}");
    assert_eq!(result["error"]["code"], "invalid_value");
    assert_eq!(result["error"]["column"], "body");
}
