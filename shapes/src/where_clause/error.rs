//! What can be wrong with a `where`, and where.

/// The length of `SELECT 1 WHERE `, the query Postgres (and Electric) report positions in.
pub(crate) const SELECT_PREFIX_CHARS: usize = 15;

/// A `where` that cannot be used for a shape.
///
/// Positions (`location`) are character offsets in `SELECT 1 WHERE <where>`: for syntax
/// errors zero-based, as Electric reports them (Postgres' one-based position minus one);
/// for the other errors one-based, as Postgres reports them.
///
/// ```
/// use std::collections::BTreeMap;
/// use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
/// use shapes::where_clause::{WhereClause, WhereError};
/// let table = TableSchema {
///     name: QualifiedName::new("public", "t"),
///     oid: 1,
///     columns: vec![Column {
///         name: "id".into(),
///         ty: PgType { oid: 23, name: "int4".into(), kind: TypeKind::Base },
///         type_mod: -1, dims: 0, not_null: true, pk_index: Some(0), generated: false,
///     }],
/// };
/// let err = WhereClause::parse("id x 1", &BTreeMap::new(), &table).unwrap_err();
/// assert_eq!(err.to_electric_message(), r#"At location 18: syntax error at or near "x""#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhereError {
    /// Not a well-formed expression.
    #[error("At location {location}: syntax error at {near}; expected {expected}")]
    Syntax {
        location: usize,
        /// `or near "x"` or `end of input`.
        near: String,
        expected: String,
    },
    /// A literal or quoted name that never ends, worded as Postgres words it
    /// (`unterminated quoted string at or near "'abc"`).
    #[error("At location {location}: {message}")]
    Unterminated { location: usize, message: String },
    /// Well-formed, but not a `where` we can evaluate (type mismatch, non-deterministic or
    /// unsupported construct).
    #[error("{}{message}", location_prefix(*location))]
    Invalid {
        location: Option<usize>,
        message: String,
    },
    /// A name that is not a column of the table (`name` folded as Postgres folds it); the
    /// message lists the table's columns.
    #[error("{}{message}", location_prefix(*location))]
    UnknownColumn {
        location: Option<usize>,
        name: String,
        message: String,
    },
    /// A `params[n]` value does not fit where `$n` is used.
    #[error("params[{index}]: {message}")]
    Param { index: usize, message: String },
    /// `$n` is used but `params[n]` was not given.
    #[error("the where clause uses ${0} but params[{0}] is not given")]
    MissingParam(usize),
}

fn location_prefix(location: Option<usize>) -> String {
    location.map_or_else(String::new, |l| format!("At location {l}: "))
}

impl WhereError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        WhereError::Invalid {
            location: None,
            message: message.into(),
        }
    }

    /// The message as Electric (and Postgres) word it: for syntax errors
    /// `At location N: syntax error at or near "x"`; other errors as displayed.
    pub fn to_electric_message(&self) -> String {
        match self {
            WhereError::Syntax { location, near, .. } => {
                format!("At location {location}: syntax error at {near}")
            }
            other => other.to_string(),
        }
    }

    /// The position, when the error has one.
    pub fn location(&self) -> Option<usize> {
        match self {
            WhereError::Syntax { location, .. } | WhereError::Unterminated { location, .. } => {
                Some(*location)
            }
            WhereError::Invalid { location, .. } | WhereError::UnknownColumn { location, .. } => {
                *location
            }
            _ => None,
        }
    }

    /// The column name, when the error is that the table has no such column.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
    /// use shapes::where_clause::WhereClause;
    /// let table = TableSchema {
    ///     name: QualifiedName::new("public", "t"),
    ///     oid: 1,
    ///     columns: vec![Column {
    ///         name: "id".into(),
    ///         ty: PgType { oid: 23, name: "int4".into(), kind: TypeKind::Base },
    ///         type_mod: -1, dims: 0, not_null: true, pk_index: Some(0), generated: false,
    ///     }],
    /// };
    /// let err = WhereClause::parse("Secret::text = 'x'", &BTreeMap::new(), &table).unwrap_err();
    /// assert_eq!(err.unknown_column(), Some("secret"));
    /// ```
    pub fn unknown_column(&self) -> Option<&str> {
        match self {
            WhereError::UnknownColumn { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Whether the fault is in a `params[n]` value rather than in the `where` text.
    pub fn is_param_error(&self) -> bool {
        matches!(self, WhereError::Param { .. })
    }

    /// Adds a location to an error that has none.
    pub(crate) fn at(self, loc: Option<usize>) -> Self {
        match self {
            WhereError::Invalid {
                location: None,
                message,
            } => WhereError::Invalid {
                location: loc,
                message,
            },
            WhereError::UnknownColumn {
                location: None,
                name,
                message,
            } => WhereError::UnknownColumn {
                location: loc,
                name,
                message,
            },
            other => other,
        }
    }
}
