//! One type per pgoutput message of protocol version 1, as the Postgres documentation
//! ("Logical Replication Message Formats") defines them, and how each is read.

use shapes::lsn::{Lsn, Xid32};

use super::DecodeError;
use super::cursor::Cursor;
use super::tuple::TupleData;

/// `B`: a transaction starts. Its changes follow, then its [`Commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the commit record: the transaction's commit LSN.
    pub final_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 UTC (the Postgres epoch).
    pub commit_time_micros: i64,
    pub xid: Xid32,
}

/// `C`: the transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Unused by Postgres so far (always 0).
    pub flags: u8,
    /// The LSN of the commit record (equal to the Begin's `final_lsn`).
    pub commit_lsn: Lsn,
    /// The end of the commit record: the position to acknowledge once the transaction is
    /// durable, and from which a new session resumes after it.
    pub end_lsn: Lsn,
    pub commit_time_micros: i64,
}

/// `O`: the transaction was replayed from another node (replication origin set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The commit LSN on the origin server.
    pub commit_lsn: Lsn,
    pub name: String,
}

/// How a table identifies its old rows in updates and deletes (`pg_class.relreplident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key columns.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: every column (what shapesync sets: old rows arrive whole, so unchanged TOAST
    /// values can be filled in).
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    fn from_wire(byte: u8, offset: usize) -> Result<Self, DecodeError> {
        match byte {
            b'd' => Ok(Self::Default),
            b'n' => Ok(Self::Nothing),
            b'f' => Ok(Self::Full),
            b'i' => Ok(Self::Index),
            other => Err(DecodeError::UnknownReplicaIdentity {
                value: other,
                offset,
            }),
        }
    }
}

/// `R`: the shape of a table, sent before the first change to it in a session and again
/// whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// The schema; empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    /// The published columns in attribute order (dropped and, before Postgres 16, generated
    /// columns are not sent).
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`Relation`] message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Bit 1: the column is part of the replica identity key.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_mod: i32,
}

impl RelationColumn {
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// `Y`: a user-defined type used by a column that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    pub oid: u32,
    /// The schema; empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
}

/// `I`: a row was inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insert<'a> {
    pub relation_oid: u32,
    pub new: TupleData<'a>,
}

/// The old row of an update or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldTuple<'a> {
    /// `K`: only the replica identity key columns carry values; the others are NULL.
    Key(TupleData<'a>),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full(TupleData<'a>),
}

/// `U`: a row was updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update<'a> {
    pub relation_oid: u32,
    /// Absent when the identity is DEFAULT/INDEX and the key did not change.
    pub old: Option<OldTuple<'a>>,
    pub new: TupleData<'a>,
}

/// `D`: a row was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delete<'a> {
    pub relation_oid: u32,
    pub old: OldTuple<'a>,
}

/// `T`: tables were truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Bit 1: CASCADE; bit 2: RESTART IDENTITY.
    pub options: u8,
    pub relation_oids: Vec<u32>,
}

impl Truncate {
    pub fn cascade(&self) -> bool {
        self.options & 1 != 0
    }

    pub fn restart_identity(&self) -> bool {
        self.options & 2 != 0
    }
}

/// `M`: a logical decoding message (`pg_logical_emit_message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// Bit 1: transactional (delivered with its transaction, after Begin).
    pub flags: u8,
    pub lsn: Lsn,
    pub prefix: &'a str,
    pub content: &'a [u8],
}

impl Message<'_> {
    pub fn transactional(&self) -> bool {
        self.flags & 1 != 0
    }
}

// Readers. Each gets the message body after the tag byte.

pub(super) fn read_begin(c: &mut Cursor<'_>) -> Result<Begin, DecodeError> {
    Ok(Begin {
        final_lsn: c.lsn()?,
        commit_time_micros: c.i64()?,
        xid: Xid32(c.u32()?),
    })
}

pub(super) fn read_commit(c: &mut Cursor<'_>) -> Result<Commit, DecodeError> {
    Ok(Commit {
        flags: c.u8()?,
        commit_lsn: c.lsn()?,
        end_lsn: c.lsn()?,
        commit_time_micros: c.i64()?,
    })
}

pub(super) fn read_origin(c: &mut Cursor<'_>) -> Result<Origin, DecodeError> {
    Ok(Origin {
        commit_lsn: c.lsn()?,
        name: c.cstr()?.to_owned(),
    })
}

pub(super) fn read_relation(c: &mut Cursor<'_>) -> Result<Relation, DecodeError> {
    let oid = c.u32()?;
    let namespace = c.cstr()?.to_owned();
    let name = c.cstr()?.to_owned();
    let at = c.position();
    let replica_identity = ReplicaIdentity::from_wire(c.u8()?, at)?;
    let count = c.count16()?;
    let mut columns = Vec::with_capacity(count);
    for _ in 0..count {
        columns.push(RelationColumn {
            flags: c.u8()?,
            name: c.cstr()?.to_owned(),
            type_oid: c.u32()?,
            type_mod: c.i32()?,
        });
    }
    Ok(Relation {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

pub(super) fn read_type(c: &mut Cursor<'_>) -> Result<Type, DecodeError> {
    Ok(Type {
        oid: c.u32()?,
        namespace: c.cstr()?.to_owned(),
        name: c.cstr()?.to_owned(),
    })
}

pub(super) fn read_insert<'a>(c: &mut Cursor<'a>) -> Result<Insert<'a>, DecodeError> {
    let relation_oid = c.u32()?;
    expect_tuple_kind(c, b'N')?;
    Ok(Insert {
        relation_oid,
        new: TupleData::read(c)?,
    })
}

pub(super) fn read_update<'a>(c: &mut Cursor<'a>) -> Result<Update<'a>, DecodeError> {
    let relation_oid = c.u32()?;
    let at = c.position();
    let (old, new) = match c.u8()? {
        b'N' => (None, TupleData::read(c)?),
        kind @ (b'K' | b'O') => {
            let old = old_tuple(kind, TupleData::read(c)?);
            expect_tuple_kind(c, b'N')?;
            (Some(old), TupleData::read(c)?)
        }
        kind => return Err(DecodeError::UnexpectedTupleKind { kind, offset: at }),
    };
    Ok(Update {
        relation_oid,
        old,
        new,
    })
}

pub(super) fn read_delete<'a>(c: &mut Cursor<'a>) -> Result<Delete<'a>, DecodeError> {
    let relation_oid = c.u32()?;
    let at = c.position();
    let kind = c.u8()?;
    if kind != b'K' && kind != b'O' {
        return Err(DecodeError::UnexpectedTupleKind { kind, offset: at });
    }
    Ok(Delete {
        relation_oid,
        old: old_tuple(kind, TupleData::read(c)?),
    })
}

pub(super) fn read_truncate(c: &mut Cursor<'_>) -> Result<Truncate, DecodeError> {
    let count = c.count32()?;
    let options = c.u8()?;
    // Bound the allocation by what the message can hold, whatever the count claims.
    let mut relation_oids = Vec::with_capacity(count.min(c.remaining().len() / 4));
    for _ in 0..count {
        relation_oids.push(c.u32()?);
    }
    Ok(Truncate {
        options,
        relation_oids,
    })
}

pub(super) fn read_message<'a>(c: &mut Cursor<'a>) -> Result<Message<'a>, DecodeError> {
    let flags = c.u8()?;
    let lsn = c.lsn()?;
    let prefix = c.cstr()?;
    let len = c.count32()?;
    Ok(Message {
        flags,
        lsn,
        prefix,
        content: c.take(len)?,
    })
}

fn old_tuple(kind: u8, tuple: TupleData<'_>) -> OldTuple<'_> {
    if kind == b'O' {
        OldTuple::Full(tuple)
    } else {
        OldTuple::Key(tuple)
    }
}

fn expect_tuple_kind(c: &mut Cursor<'_>, expected: u8) -> Result<(), DecodeError> {
    let at = c.position();
    match c.u8()? {
        kind if kind == expected => Ok(()),
        kind => Err(DecodeError::UnexpectedTupleKind { kind, offset: at }),
    }
}
