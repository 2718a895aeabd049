//! Yjs documents in columns (`bytea` holding an encoded Yjs state, merged on the server).
//!
//! The app gets a [`YjsDoc`]: a `yrs::Doc` loaded from the row as it reads it now (server
//! state plus pending local edits). After editing it, [`crate::Client::save_yjs_doc`] sends the
//! difference as a merge mutation (`merge: {column: base64 update}`) and applies it locally as
//! an overlay that *merges* into whatever the server sends meanwhile, so edits made offline on
//! two devices both survive.

use rusqlite::types::Value as SqlValue;
use serde_json::{Map, Value as Json};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::error::ClientError;

/// A document loaded from a row's Yjs column.
#[derive(Debug)]
pub struct YjsDoc {
    pub shape: String,
    /// The row's primary key (column → value).
    pub key: Map<String, Json>,
    pub column: String,
    doc: Doc,
    /// The document's state when loaded: what is sent is everything after it.
    loaded: StateVector,
}

impl YjsDoc {
    pub(crate) fn load(
        shape: &str,
        key: Map<String, Json>,
        column: &str,
        state: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let doc = Doc::new();
        if let Some(state) = state.filter(|s| !s.is_empty()) {
            apply(&doc, state)?;
        }
        let loaded = doc.transact().state_vector();
        Ok(Self {
            shape: shape.to_owned(),
            key,
            column: column.to_owned(),
            doc,
            loaded,
        })
    }

    /// The document to read and edit (`doc.get_or_insert_text("body")`, …).
    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// The edits made since loading, as a Yjs v1 update (empty when nothing changed).
    pub fn local_update(&self) -> Vec<u8> {
        self.doc.transact().encode_diff_v1(&self.loaded)
    }

    /// Marks the current state as sent.
    pub(crate) fn mark_saved(&mut self) {
        self.loaded = self.doc.transact().state_vector();
    }
}

fn apply(doc: &Doc, update: &[u8]) -> Result<(), ClientError> {
    let update = Update::decode_v1(update).map_err(|e| ClientError::Yjs(e.to_string()))?;
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| ClientError::Yjs(e.to_string()))
}

/// Merges a Yjs update into a stored state (either may be empty/NULL): the value `T` shows for
/// a Yjs column with pending local edits.
pub fn merge_values(base: &SqlValue, update: &SqlValue) -> Result<SqlValue, ClientError> {
    let doc = Doc::new();
    for value in [base, update] {
        match value {
            SqlValue::Blob(bytes) if !bytes.is_empty() => apply(&doc, bytes)?,
            SqlValue::Text(text) => {
                if let Some(bytes) = shapes::bytea::decode(text) {
                    apply(&doc, &bytes)?;
                }
            }
            _ => {}
        }
    }
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    Ok(SqlValue::Blob(state))
}

/// A state vector's bytes (for diagnostics and tests).
pub fn state_vector(state: &[u8]) -> Result<Vec<u8>, ClientError> {
    let doc = Doc::new();
    apply(&doc, state)?;
    Ok(doc.transact().state_vector().encode_v1())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    fn text_update(client: u64, text: &str) -> Vec<u8> {
        let doc = Doc::with_client_id(client);
        let t = doc.get_or_insert_text("body");
        t.insert(&mut doc.transact_mut(), 0, text);
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    #[test]
    fn merging_keeps_both_sides_edits() {
        let merged = merge_values(
            &SqlValue::Blob(text_update(1, "left")),
            &SqlValue::Blob(text_update(2, "right")),
        )
        .unwrap();
        let SqlValue::Blob(bytes) = merged else {
            panic!("a blob")
        };
        let doc = YjsDoc::load("notes", Map::new(), "body", Some(&bytes)).unwrap();
        let text = doc.doc().get_or_insert_text("body");
        let s = text.get_string(&doc.doc().transact());
        assert!(s.contains("left") && s.contains("right"), "{s}");
        assert!(
            doc.local_update().len() <= 2,
            "nothing edited since loading"
        );
    }
}
