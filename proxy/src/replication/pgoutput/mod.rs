//! pgoutput, protocol version 1, decoded as pure code over bytes.
//!
//! Each `XLogData` payload of the replication stream holds one message; its first byte says
//! which. [`PgOutputMessage::try_from`] reads it into one of the types in [`messages`], which
//! follow the Postgres documentation ("Logical Replication Message Formats"). Row values
//! borrow from the payload ([`TupleData`]), so decoding allocates nothing per row; the
//! assembler copies each text value once, into the row it builds.
//!
//! Malformed bytes give a [`DecodeError`], never a panic. A tag this code does not know
//! (a newer server, or protocol-2 streaming messages) decodes as [`PgOutputMessage::Unknown`],
//! which the caller may skip.
//!
//! The tests run on bytes captured from a real PostgreSQL 15 (see `fixtures/README.md`).

mod cursor;
pub mod messages;
mod tuple;

#[cfg(test)]
pub(crate) mod tests;

pub use messages::{
    Begin, Commit, Delete, Insert, Message, OldTuple, Origin, Relation, RelationColumn,
    ReplicaIdentity, Truncate, Type, Update,
};
pub use tuple::{ColumnValue, Columns, TextValue, TupleData};

use cursor::Cursor;

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage<'a> {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(Type),
    Insert(Insert<'a>),
    Update(Update<'a>),
    Delete(Delete<'a>),
    Truncate(Truncate),
    Message(Message<'a>),
    /// A message kind this decoder does not know; `body` follows the tag byte.
    Unknown {
        tag: u8,
        body: &'a [u8],
    },
}

/// Why a message could not be decoded. Offsets count from the tag byte. Every variant is
/// definite: the same bytes would fail again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty pgoutput message")]
    Empty,
    #[error("pgoutput {message} truncated: {needed} more bytes expected at offset {offset}")]
    Truncated {
        message: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("pgoutput {message}: negative length {length} at offset {offset}")]
    NegativeLength {
        message: &'static str,
        offset: usize,
        length: i64,
    },
    #[error("pgoutput {message}: string at offset {offset} has no terminating NUL")]
    UnterminatedString {
        message: &'static str,
        offset: usize,
    },
    #[error(
        "pgoutput {message}: string at offset {offset} is not UTF-8 (the database encoding must \
         be UTF8)"
    )]
    InvalidUtf8 {
        message: &'static str,
        offset: usize,
    },
    #[error("pgoutput {message}: {count} unexpected bytes after the last field")]
    TrailingBytes { message: &'static str, count: usize },
    #[error("pgoutput tuple: unknown column kind {kind:#04x} at offset {offset}")]
    UnknownColumnKind { kind: u8, offset: usize },
    #[error("pgoutput: unexpected tuple kind {kind:#04x} at offset {offset}")]
    UnexpectedTupleKind { kind: u8, offset: usize },
    #[error("pgoutput Relation: unknown replica identity {value:#04x} at offset {offset}")]
    UnknownReplicaIdentity { value: u8, offset: usize },
}

impl<'a> TryFrom<&'a [u8]> for PgOutputMessage<'a> {
    type Error = DecodeError;

    fn try_from(bytes: &'a [u8]) -> Result<Self, Self::Error> {
        let (&tag, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        let Some(name) = message_name(tag) else {
            return Ok(Self::Unknown { tag, body });
        };
        let mut c = Cursor::new(bytes, name);
        c.u8()?;
        let message = match tag {
            b'B' => Self::Begin(messages::read_begin(&mut c)?),
            b'C' => Self::Commit(messages::read_commit(&mut c)?),
            b'O' => Self::Origin(messages::read_origin(&mut c)?),
            b'R' => Self::Relation(messages::read_relation(&mut c)?),
            b'Y' => Self::Type(messages::read_type(&mut c)?),
            b'I' => Self::Insert(messages::read_insert(&mut c)?),
            b'U' => Self::Update(messages::read_update(&mut c)?),
            b'D' => Self::Delete(messages::read_delete(&mut c)?),
            b'T' => Self::Truncate(messages::read_truncate(&mut c)?),
            _ => Self::Message(messages::read_message(&mut c)?),
        };
        c.finish()?;
        Ok(message)
    }
}

fn message_name(tag: u8) -> Option<&'static str> {
    Some(match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        _ => return None,
    })
}
