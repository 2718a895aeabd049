//! Whole-request behaviour: JSON errors, gzip bodies, the size limit.

use std::io::Write as _;

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{at, harness, harness_with, new_todo, status, todo};

#[tokio::test]
async fn an_unknown_json_field_is_a_400_naming_it_and_the_mutation() {
    let h = harness("mut_unknown_field").await;
    let mut mutation = todo("m1", "insert", 1, new_todo("t"), &at(0));
    mutation["valuez"] = json!({});
    let (code, body) = h
        .post(&json!({"client_id": "a", "mutations": [todo("m0", "insert", 2, new_todo("t"), &at(0)), mutation]}))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "Invalid request");
    let message = body["errors"]["mutations[1].valuez"][0]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("unknown field `valuez`"), "{body}");
    let (code, body) = h.post_bytes(b"{not json".to_vec(), None).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"].as_object().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn a_gzipped_body_is_accepted() {
    let h = harness("mut_gzip").await;
    let body = json!({"client_id": "a", "mutations": [todo("m1", "insert", 1, new_todo("zipped"), &at(0))]});
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&serde_json::to_vec(&body).unwrap())
        .unwrap();
    let (code, response) = h.post_bytes(encoder.finish().unwrap(), Some("gzip")).await;
    assert_eq!(code, StatusCode::OK, "{response}");
    assert_eq!(status(&response["results"][0]), "applied");
    assert_eq!(response["results"][0]["row"]["title"], "zipped");
}

#[tokio::test]
async fn an_oversize_body_is_a_413_also_when_gzipped() {
    let h = harness_with("mut_too_large", |config| {
        config.writes.max_body_bytes = 4096
    })
    .await;
    let big = json!({"client_id": "a",
                     "mutations": [todo("m1", "insert", 1, new_todo(&"x".repeat(10_000)), &at(0))]});
    let bytes = serde_json::to_vec(&big).unwrap();
    let (code, body) = h.post_bytes(bytes.clone(), None).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["message"].as_str().is_some(), "{body}");
    // Compressed it is tiny, but the limit applies to what it expands to.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&bytes).unwrap();
    let zipped = encoder.finish().unwrap();
    assert!(zipped.len() < 4096);
    let (code, _) = h.post_bytes(zipped, Some("gzip")).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
}
