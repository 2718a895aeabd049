//! The client's body splitters: Server-Sent Events and the streamed JSON array, and the
//! message decoder each piece goes to.
//!
//! Input: one byte, then a response body. The byte picks the size of the pieces the body
//! arrives in (1 to 64 bytes; 0: whole). Properties: the events and elements are the same
//! however the body is cut; a body that is a JSON array of objects splits into exactly those
//! objects (checked against serde_json) and finishes cleanly.

use std::sync::OnceLock;

use client_sqlite::schema_mapping::ShapeSchema;
use client_sqlite::subscription::json_array::{ArraySplitter, SplitError};
use client_sqlite::subscription::message;
use client_sqlite::subscription::sse_events::EventSplitter;
use serde_json::Value;

pub fn run(data: &[u8]) {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let piece = match cut % 65 {
        0 => body.len().max(1),
        n => usize::from(n),
    };
    let whole = sse_events(body, body.len().max(1));
    assert_eq!(
        sse_events(body, piece),
        whole,
        "SSE cut in pieces of {piece}"
    );
    let elements = array_elements(body, body.len().max(1));
    assert_eq!(
        array_elements(body, piece),
        elements,
        "JSON array cut in pieces of {piece}"
    );
    if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body)
        && items.iter().all(Value::is_object)
    {
        let (elements, end) = &elements;
        assert_eq!(end, &Ok(()), "a JSON array of objects is refused");
        let parsed: Vec<Value> = elements
            .iter()
            .map(|e| serde_json::from_slice(e).expect("an element of a valid array"))
            .collect();
        assert_eq!(parsed, items);
    }
    let schema = schema();
    for event in whole.iter().chain(&elements.0) {
        let _ = message::decode(event, schema);
        let _ = message::decode_control(event);
    }
}

/// The events of `body` read in pieces of `piece` bytes.
fn sse_events(body: &[u8], piece: usize) -> Vec<Vec<u8>> {
    let mut splitter = EventSplitter::default();
    let mut events = Vec::new();
    for chunk in body.chunks(piece) {
        // A fuzz input is far below the 64 MiB cap, so no event can be refused.
        splitter
            .feed(chunk)
            .expect("an event of a fuzz input is under the cap");
        while let Some(event) = splitter.next_event() {
            events.push(event);
        }
    }
    events
}

/// The elements of `body` read in pieces, and how the body ended (the error of the piece that
/// was refused, or of `finish`).
fn array_elements(body: &[u8], piece: usize) -> (Vec<Vec<u8>>, Result<(), String>) {
    let mut splitter = ArraySplitter::default();
    let mut elements = Vec::new();
    for chunk in body.chunks(piece) {
        let fed = splitter.feed::<SplitError>(chunk, |e| {
            elements.push(e.to_vec());
            Ok(())
        });
        if let Err(e) = fed {
            return (elements, Err(e.to_string()));
        }
    }
    let end = splitter.finish().map_err(|e| e.to_string());
    (elements, end)
}

/// A shape of every storage kind the client maps.
fn schema() -> &'static ShapeSchema {
    static SCHEMA: OnceLock<ShapeSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        ShapeSchema::parse(
            r#"{"id":{"type":"int8","pk_index":0,"not_null":true},"title":{"type":"text"},
            "done":{"type":"bool"},"n":{"type":"numeric"},"f":{"type":"float8"},
            "tags":{"type":"text","dims":1},"doc":{"type":"jsonb"},"at":{"type":"timestamptz"},
            "body":{"type":"bytea"},"u":{"type":"uuid"}}"#,
        )
        .expect("the fuzz shape's schema")
    })
}
