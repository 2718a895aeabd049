//! The pgoutput decoder and the transaction assembler behind it.
//!
//! Input: a sequence of pgoutput messages in [`crate::frames`] (the seeds are the captured
//! streams of `proxy/src/replication/pgoutput/fixtures`). Each message is decoded (twice: the
//! decoder is a pure function), every value of its tuples is read, and whatever decodes is fed
//! to one `TransactionAssembler`, as the replication stream does.

use proxy::replication::TransactionAssembler;
use proxy::replication::pgoutput::{OldTuple, PgOutputMessage, TupleData};

pub fn run(data: &[u8]) {
    let mut assembler = TransactionAssembler::new();
    for bytes in crate::frames(data) {
        let Ok(message) = PgOutputMessage::try_from(bytes) else {
            continue;
        };
        assert_eq!(PgOutputMessage::try_from(bytes).as_ref(), Ok(&message));
        match &message {
            PgOutputMessage::Insert(insert) => walk(&insert.new),
            PgOutputMessage::Update(update) => {
                if let Some(OldTuple::Key(old) | OldTuple::Full(old)) = &update.old {
                    walk(old);
                }
                walk(&update.new);
            }
            PgOutputMessage::Delete(delete) => {
                let (OldTuple::Key(old) | OldTuple::Full(old)) = &delete.old;
                walk(old);
            }
            _ => {}
        }
        let _ = format!("{message:?}");
        if let Ok(Some(event)) = assembler.apply(message) {
            let _ = format!("{event:?}");
        }
    }
    let _ = assembler.abandon();
}

/// Reads every value: the decoder checked the layout, so there are exactly `len` of them.
fn walk(tuple: &TupleData<'_>) {
    assert_eq!(tuple.columns().count(), tuple.len());
}
