//! Merging Yjs updates into a stored document with `yrs`. The stored value is the whole
//! document encoded as one Yjs update (v1), in a bytea column; merging is commutative, so
//! concurrent merges (serialized by the row lock) never lose an edit, in any order.

use shapes::bytea;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

/// Merges `update` into `stored` (bytea text output `\x…`, or NULL) and returns the merged
/// document as bytea text.
pub fn merge(stored: Option<&str>, update: &[u8]) -> Result<String, String> {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        if let Some(stored) = stored {
            let bytes = bytea::decode(stored)
                .ok_or_else(|| "the stored document is not bytea text".to_owned())?;
            if !bytes.is_empty() {
                let stored = Update::decode_v1(&bytes)
                    .map_err(|e| format!("the stored document is not a Yjs update: {e}"))?;
                txn.apply_update(stored)
                    .map_err(|e| format!("the stored document cannot be applied: {e}"))?;
            }
        }
        let update = Update::decode_v1(update)
            .map_err(|e| format!("not a Yjs update (v1 encoding): {e}"))?;
        txn.apply_update(update)
            .map_err(|e| format!("the Yjs update cannot be applied: {e}"))?;
    }
    // The whole document, including updates still waiting for missing dependencies.
    let merged = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    Ok(bytea::encode(&merged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    fn edit(base: &[u8], client: u64, at: u32, text: &str) -> Vec<u8> {
        let doc = Doc::with_client_id(client);
        let body = doc.get_or_insert_text("body");
        let mut txn = doc.transact_mut();
        txn.apply_update(Update::decode_v1(base).unwrap()).unwrap();
        let before = txn.state_vector();
        body.insert(&mut txn, at, text);
        txn.encode_diff_v1(&before)
    }

    fn text_of(stored: &str) -> String {
        let doc = Doc::new();
        let body = doc.get_or_insert_text("body");
        let mut txn = doc.transact_mut();
        let bytes = bytea::decode(stored).unwrap();
        txn.apply_update(Update::decode_v1(&bytes).unwrap())
            .unwrap();
        body.get_string(&txn)
    }

    #[test]
    fn merges_of_concurrent_edits_keep_every_edit_in_any_order() {
        let base_doc = Doc::with_client_id(1);
        let body = base_doc.get_or_insert_text("body");
        body.insert(&mut base_doc.transact_mut(), 0, "hello");
        let base = base_doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let a = edit(&base, 2, 0, "A");
        let b = edit(&base, 3, 5, "B");
        let one = merge(None, &base).unwrap();
        let ab = merge(Some(&merge(Some(&one), &a).unwrap()), &b).unwrap();
        let ba = merge(Some(&merge(Some(&one), &b).unwrap()), &a).unwrap();
        assert_eq!(text_of(&ab), "AhelloB");
        assert_eq!(text_of(&ab), text_of(&ba));
        // An edit that arrives before its base is kept until the base comes.
        let early = merge(Some(&merge(None, &a).unwrap()), &base).unwrap();
        assert_eq!(text_of(&early), "Ahello");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(merge(None, b"\xff\xff\xff").is_err());
        assert!(merge(Some("\\xzz"), &[0, 0]).is_err());
        assert_eq!(bytea::decode("\\x0aff"), Some(vec![10, 255]));
        assert_eq!(bytea::encode(&[10, 255]), "\\x0aff");
    }
}
