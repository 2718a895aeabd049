//! The JSON of `POST /v1/mutations` (proxy/PROTOCOL.md, "Writes"), defined once for the proxy
//! that answers it and the client that sends it: the batch, the response, and the outcome of
//! each mutation (also what the proxy's idempotency record keeps).
//!
//! Parsing is strict where the proxy reads (unknown fields are refused, so a typo is a 400
//! naming it, not a silently ignored column).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A batch of mutations from one client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MutationRequest {
    /// The device's id: the tie-break of equal timestamps, and the scope of mutation ids.
    pub client_id: String,
    /// All-or-nothing: if any mutation is rejected, none is applied.
    #[serde(default)]
    pub atomic: bool,
    pub mutations: Vec<Mutation>,
}

/// One mutation as the client sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mutation {
    /// Client-made id; a retried id returns its first result.
    pub id: String,
    /// `t`, `schema.t` or quoted `"My Schema"."my table"`.
    pub table: String,
    pub op: Op,
    /// Primary-key column → value.
    pub key: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub values: Map<String, Value>,
    /// Yjs column → base64 Yjs update (v1 encoding).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub merge: Map<String, Value>,
    /// The client's clock: RFC 3339 with a zone, e.g. `2026-11-22T10:30:00.123456Z`.
    pub timestamp: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Insert,
    Update,
    Upsert,
    Delete,
}

impl Op {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Upsert => "upsert",
            Self::Delete => "delete",
        }
    }
}

/// The answer to a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MutationResponse {
    /// The transaction's xid as 32 bits (`txid_current() % 2^32`), the form `headers.txids`
    /// of shape messages carry it in; null when nothing committed.
    ///
    /// Why 32 bits: Postgres' `txid_current()`/`pg_current_xact_id()` are 64-bit (epoch and
    /// xid), but logical replication sends the bare 32-bit xid, so shape messages can only
    /// carry that, and a client matches its write's echo by comparing the two. A 64-bit value
    /// would stop matching after the first xid wraparound (epoch 1); a `u32` here says what
    /// the number is and refuses anything wider.
    pub txid: Option<u32>,
    /// The commit LSN as a decimal string, once replication has seen it.
    pub lsn: Option<String>,
    pub results: Vec<MutationResult>,
}

/// One mutation's result, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MutationResult {
    pub id: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A row as shapes send it: column → Postgres text output, or null.
pub type RowJson = Map<String, Value>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// Every column was written (for a delete: the row is gone).
    Applied {
        row: Option<RowJson>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clamped_to: Option<String>,
    },
    /// Newer writes won `lost`; `row` is the current row (null when the row is deleted).
    Conflict {
        lost: Vec<String>,
        row: Option<RowJson>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clamped_to: Option<String>,
    },
    /// Nothing was written.
    Rejected { error: Refusal },
    /// Not applied because the batch failed elsewhere; safe to send again.
    Aborted,
}

impl Outcome {
    pub fn rejected(code: RefusalCode, column: Option<&str>, message: impl Into<String>) -> Self {
        Self::Rejected {
            error: Refusal {
                code,
                column: column.map(str::to_owned),
                message: message.into(),
            },
        }
    }

    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }

    /// The `status` on the wire.
    pub fn status(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::Conflict { .. } => "conflict",
            Self::Rejected { .. } => "rejected",
            Self::Aborted => "aborted",
        }
    }

    /// The columns newer writes won (empty unless a conflict).
    pub fn lost(&self) -> &[String] {
        match self {
            Self::Conflict { lost, .. } => lost,
            _ => &[],
        }
    }

    /// The row the answer carries (applied and conflict only; `None` also for a deleted row).
    pub fn row(&self) -> Option<&RowJson> {
        match self {
            Self::Applied { row, .. } | Self::Conflict { row, .. } => row.as_ref(),
            Self::Rejected { .. } | Self::Aborted => None,
        }
    }
}

/// Why a mutation was rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: RefusalCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    InvalidValue,
    NotNullViolation,
    CheckViolation,
    UniqueViolation,
    ForeignKeyViolation,
    UnknownColumn,
    ReadOnlyColumn,
    UnknownTable,
    NotWritable,
    Forbidden,
    BadTimestamp,
    /// Postgres refused the write for a reason of the application's own (an error raised by
    /// one of its triggers or rules with a code of its choosing); the message is Postgres'.
    DatabaseRefused,
}

impl RefusalCode {
    /// The code on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidValue => "invalid_value",
            Self::NotNullViolation => "not_null_violation",
            Self::CheckViolation => "check_violation",
            Self::UniqueViolation => "unique_violation",
            Self::ForeignKeyViolation => "foreign_key_violation",
            Self::UnknownColumn => "unknown_column",
            Self::ReadOnlyColumn => "read_only_column",
            Self::UnknownTable => "unknown_table",
            Self::NotWritable => "not_writable",
            Self::Forbidden => "forbidden",
            Self::BadTimestamp => "bad_timestamp",
            Self::DatabaseRefused => "database_refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    fn op_names_on_the_wire_are_the_serialized_ones(
        #[values(Op::Insert, Op::Update, Op::Upsert, Op::Delete)] op: Op,
    ) {
        assert_eq!(serde_json::to_value(op).unwrap(), op.as_str());
    }

    #[rstest]
    fn refusal_code_names_on_the_wire_are_the_serialized_ones(
        #[values(
            RefusalCode::InvalidValue,
            RefusalCode::NotNullViolation,
            RefusalCode::CheckViolation,
            RefusalCode::UniqueViolation,
            RefusalCode::ForeignKeyViolation,
            RefusalCode::UnknownColumn,
            RefusalCode::ReadOnlyColumn,
            RefusalCode::UnknownTable,
            RefusalCode::NotWritable,
            RefusalCode::Forbidden,
            RefusalCode::BadTimestamp
        )]
        code: RefusalCode,
    ) {
        assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
    }

    #[rstest]
    fn outcome_statuses_on_the_wire_are_the_serialized_ones(
        #[values(
            Outcome::Applied {
                row: None,
                clamped_to: None,
            },
            Outcome::Conflict {
                lost: vec!["a".into()],
                row: None,
                clamped_to: None,
            },
            Outcome::rejected(RefusalCode::Forbidden, None, "no"),
            Outcome::Aborted
        )]
        outcome: Outcome,
    ) {
        assert_eq!(
            serde_json::to_value(&outcome).unwrap()["status"],
            outcome.status()
        );
    }

    #[test]
    fn a_txid_wider_than_32_bits_is_refused() {
        let wide = r#"{"txid": 4294967296, "lsn": null, "results": []}"#;
        assert!(serde_json::from_str::<MutationResponse>(wide).is_err());
        let fits = r#"{"txid": 4294967295, "lsn": null, "results": []}"#;
        let response: MutationResponse = serde_json::from_str(fits).unwrap();
        assert_eq!(response.txid, Some(u32::MAX));
    }
}
