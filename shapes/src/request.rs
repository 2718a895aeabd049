//! What a client asked for: one shape request, before it is checked against its table.
//!
//! HTTP parsing produces it (the proxy's `http/shape/params.rs`), the auth rules narrow it, the
//! read path validates it into a [`ShapeDefinition`](crate::definition::ShapeDefinition), and
//! the proxy keeps it on disk (in a serialized form of its own) to rebuild the shape after a
//! restart.

use std::collections::BTreeMap;

use crate::definition::{LogMode, MoveMode, ReplicaMode};
use crate::schema::QualifiedName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeRequest {
    pub table: QualifiedName,
    /// The `where` text as given, `$n` placeholders unsubstituted.
    pub where_: Option<String>,
    /// `params[n]` values, by `n` (from 1).
    pub params: BTreeMap<usize, String>,
    /// The `columns` list as given.
    pub columns: Option<String>,
    pub replica: ReplicaMode,
    pub log: LogMode,
    /// `moves=rows|events` (shapes with subqueries).
    pub moves: MoveMode,
    /// The row filter of the server's auth rules (claims bound), ANDed into `where`: part of
    /// the shape's identity. Never from the client.
    pub filter: Option<RowFilter>,
    /// The row filters of the rules of the tables the `where`'s subqueries read (claims
    /// bound), ANDed into each subquery over that table: part of the shape's identity. Never
    /// from the client.
    pub inner_filters: Vec<(QualifiedName, RowFilter)>,
}

/// A server-side row filter: `where` text with `$n` placeholders and their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilter {
    pub where_: String,
    pub params: BTreeMap<usize, String>,
}
