//! A shape's definition — table, `where` (with params substituted), columns, replica and log
//! mode — validated against the table, with a canonical form and a stable hash that give the
//! same shape the same identity however the request spelled it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::schema::{QualifiedName, TableSchema, quote_identifier};
use crate::table_name::parse_column_list;
use crate::where_clause::{WhereClause, WhereError};

/// `replica=default|full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReplicaMode {
    /// Updates carry the primary key and changed columns.
    #[default]
    Default,
    /// Updates carry the whole new row and the old values.
    Full,
}

/// `log=full|changes_only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogMode {
    /// Initial rows, then changes.
    #[default]
    Full,
    /// Changes only, no initial rows.
    ChangesOnly,
}

/// `moves=rows|events`: how a shape with subqueries tells its clients that rows moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MoveMode {
    /// As inserts and deletes: every client holds the right rows, the plain `Shape` of
    /// `@electric-sql/client` included.
    #[default]
    Rows,
    /// As Electric's `move-out`/`move-in` event messages (moved-in rows still come as
    /// inserts): a client must follow the rows' tags to drop what moved out (TanStack DB's
    /// collection does); a move-out writes one message whatever the number of rows.
    Events,
}

impl FromStr for MoveMode {
    type Err = ModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rows" => Ok(MoveMode::Rows),
            "events" => Ok(MoveMode::Events),
            _ => Err(ModeError {
                value: s.to_owned(),
                expected: "rows, events",
            }),
        }
    }
}

impl fmt::Display for MoveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MoveMode::Rows => "rows",
            MoveMode::Events => "events",
        })
    }
}

/// An unknown `replica` or `log` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value \"{value}\"; expected one of: {expected}")]
pub struct ModeError {
    pub value: String,
    pub expected: &'static str,
}

impl FromStr for ReplicaMode {
    type Err = ModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(ReplicaMode::Default),
            "full" => Ok(ReplicaMode::Full),
            _ => Err(ModeError {
                value: s.to_owned(),
                expected: "default, full",
            }),
        }
    }
}

impl fmt::Display for ReplicaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicaMode::Default => "default",
            ReplicaMode::Full => "full",
        })
    }
}

impl FromStr for LogMode {
    type Err = ModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(LogMode::Full),
            "changes_only" => Ok(LogMode::ChangesOnly),
            _ => Err(ModeError {
                value: s.to_owned(),
                expected: "full, changes_only",
            }),
        }
    }
}

impl fmt::Display for LogMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogMode::Full => "full",
            LogMode::ChangesOnly => "changes_only",
        })
    }
}

/// A definition that cannot be served; [`DefinitionError::param`] names the request
/// parameter at fault (`where`, `params` or `columns`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("{0}")]
    Where(WhereError),
    #[error("{0}")]
    Params(WhereError),
    #[error("{0}")]
    Columns(String),
}

impl DefinitionError {
    /// `where`, `params` or `columns`.
    pub fn param(&self) -> &'static str {
        match self {
            DefinitionError::Where(_) => "where",
            DefinitionError::Params(_) => "params",
            DefinitionError::Columns(_) => "columns",
        }
    }

    /// The message for `{"errors":{"<param>":["<message>"]}}` (Postgres' wording for `where`
    /// syntax errors).
    pub fn message(&self) -> String {
        match self {
            DefinitionError::Where(e) | DefinitionError::Params(e) => e.to_electric_message(),
            DefinitionError::Columns(m) => m.clone(),
        }
    }
}

/// A validated shape definition.
///
/// ```
/// use std::collections::BTreeMap;
/// use shapes::definition::{LogMode, ReplicaMode, ShapeDefinition};
/// use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
/// let col = |name: &str, ty: &str, pk: Option<usize>| Column {
///     name: name.into(),
///     ty: PgType { oid: 0, name: ty.into(), kind: TypeKind::Base },
///     type_mod: -1, dims: 0, not_null: pk.is_some(), pk_index: pk, generated: false,
/// };
/// let table = TableSchema {
///     name: QualifiedName::new("public", "todos"),
///     oid: 1,
///     columns: vec![col("id", "int8", Some(0)), col("title", "text", None), col("done", "bool", None)],
/// };
/// let a = ShapeDefinition::new(&table, Some("done = $1"), &BTreeMap::from([(1, "true".into())]),
///     Some("title,id"), ReplicaMode::Default, LogMode::Full).unwrap();
/// let b = ShapeDefinition::new(&table, Some("  \"done\"=TRUE "), &BTreeMap::new(),
///     Some("ID, \"title\""), ReplicaMode::Default, LogMode::Full).unwrap();
/// assert_eq!(a.canonical(), b.canonical());
/// assert_eq!(a.identity_hash(), b.identity_hash());
/// assert_eq!(a.selected_columns(), &[0, 1]);
/// ```
///
/// Cheap to clone: the parts are shared (every shape of a proxy keeps its definition in a few
/// places).
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeDefinition(Arc<Parts>);

#[derive(Debug, Clone, PartialEq)]
struct Parts {
    table: QualifiedName,
    where_clause: Option<Arc<WhereClause>>,
    selected: Vec<usize>,
    replica: ReplicaMode,
    log: LogMode,
    moves: MoveMode,
    canonical: String,
    hash: u64,
}

impl ShapeDefinition {
    /// Validates a definition against `table`. An empty (or all-space) `where` means none.
    pub fn new(
        table: &TableSchema,
        where_: Option<&str>,
        params: &BTreeMap<usize, String>,
        columns: Option<&str>,
        replica: ReplicaMode,
        log: LogMode,
    ) -> Result<ShapeDefinition, DefinitionError> {
        Self::new_with_tables(table, where_, params, columns, replica, log, &|_| None)
    }

    /// [`ShapeDefinition::new`] with the schemas of the other tables the `where`'s subqueries
    /// may read (`None`: no such table).
    pub fn new_with_tables(
        table: &TableSchema,
        where_: Option<&str>,
        params: &BTreeMap<usize, String>,
        columns: Option<&str>,
        replica: ReplicaMode,
        log: LogMode,
        others: &dyn Fn(&QualifiedName) -> Option<std::sync::Arc<TableSchema>>,
    ) -> Result<ShapeDefinition, DefinitionError> {
        let where_clause = match where_.filter(|w| !w.trim().is_empty()) {
            None => None,
            Some(text) => Some(
                WhereClause::parse_with_tables(text, params, table, others).map_err(
                    |e| match e {
                        WhereError::Param { .. } | WhereError::MissingParam(_) => {
                            DefinitionError::Params(e)
                        }
                        e => DefinitionError::Where(e),
                    },
                )?,
            ),
        };
        let selected = match columns {
            None => (0..table.columns.len()).collect(),
            Some(list) => select_columns(table, list)?,
        };
        let mut canonical = format!("table={}", table.name);
        if let Some(w) = &where_clause {
            canonical.push_str(&format!("\nwhere={}", w.canonical()));
        }
        if columns.is_some() {
            let names: Vec<String> = selected
                .iter()
                .map(|i| quote_identifier(&table.columns[*i].name))
                .collect();
            canonical.push_str(&format!("\ncolumns={}", names.join(",")));
        }
        canonical.push_str(&format!("\nreplica={replica}\nlog={log}"));
        let hash = fnv1a_64(canonical.as_bytes());
        Ok(ShapeDefinition(Arc::new(Parts {
            table: table.name.clone(),
            where_clause: where_clause.map(Arc::new),
            selected,
            replica,
            log,
            moves: MoveMode::Rows,
            canonical,
            hash,
        })))
    }

    pub fn table(&self) -> &QualifiedName {
        &self.0.table
    }

    /// The canonical text of the definition (one `key=value` per line).
    pub fn canonical(&self) -> &str {
        &self.0.canonical
    }

    /// FNV-1a (64-bit) of [`ShapeDefinition::canonical`]: stable across builds and platforms.
    pub fn identity_hash(&self) -> u64 {
        self.0.hash
    }

    /// Positions of the selected columns in table order; every primary-key column is there.
    pub fn selected_columns(&self) -> &[usize] {
        &self.0.selected
    }

    pub fn where_clause(&self) -> Option<&WhereClause> {
        self.0.where_clause.as_deref()
    }

    /// [`ShapeDefinition::where_clause`], to keep without a copy.
    pub fn shared_where_clause(&self) -> Option<&Arc<WhereClause>> {
        self.0.where_clause.as_ref()
    }

    pub fn replica(&self) -> ReplicaMode {
        self.0.replica
    }

    pub fn log(&self) -> LogMode {
        self.0.log
    }

    /// The definition with a server-side row `filter` ANDed into its `where`: rows must match
    /// both, whatever the request's `where` says. The filter is part of the identity (a
    /// `filter=` line of the canonical form, so the hash differs from every unfiltered
    /// definition), and [`ShapeDefinition::where_clause`] is the conjunction.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use shapes::definition::{LogMode, ReplicaMode, ShapeDefinition};
    /// use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
    /// use shapes::where_clause::WhereClause;
    /// let col = |name: &str, ty: &str, pk: Option<usize>| Column {
    ///     name: name.into(),
    ///     ty: PgType { oid: 0, name: ty.into(), kind: TypeKind::Base },
    ///     type_mod: -1, dims: 0, not_null: pk.is_some(), pk_index: pk, generated: false,
    /// };
    /// let table = TableSchema {
    ///     name: QualifiedName::new("public", "todos"),
    ///     oid: 1,
    ///     columns: vec![col("id", "int8", Some(0)), col("owner", "text", None)],
    /// };
    /// let none = BTreeMap::new();
    /// let plain = ShapeDefinition::new(&table, Some("id > 1"), &none, None,
    ///     ReplicaMode::Default, LogMode::Full).unwrap();
    /// let alice = WhereClause::parse("owner = 'alice'", &none, &table).unwrap();
    /// let bob = WhereClause::parse("owner = 'bob'", &none, &table).unwrap();
    /// let for_alice = plain.clone().with_filter(&alice);
    /// let for_bob = plain.clone().with_filter(&bob);
    /// assert_ne!(for_alice.identity_hash(), for_bob.identity_hash());
    /// assert_ne!(for_alice.identity_hash(), plain.identity_hash());
    /// let w = for_alice.where_clause().unwrap();
    /// assert!(!w.matches(&[Some("2".into()), Some("bob".into())]));
    /// assert!(w.matches(&[Some("2".into()), Some("alice".into())]));
    /// ```
    /// How the shape's clients learn of moves (see [`MoveMode`]). `events` is part of the
    /// identity (a `moves=` line of the canonical form); `rows`, the default, leaves the
    /// definition as it is.
    pub fn with_moves(mut self, moves: MoveMode) -> ShapeDefinition {
        if moves != self.0.moves {
            let parts = Arc::make_mut(&mut self.0);
            parts.canonical.push_str(&format!("\nmoves={moves}"));
            parts.hash = fnv1a_64(parts.canonical.as_bytes());
            parts.moves = moves;
        }
        self
    }

    pub fn moves(&self) -> MoveMode {
        self.0.moves
    }

    pub fn with_filter(mut self, filter: &WhereClause) -> ShapeDefinition {
        let parts = Arc::make_mut(&mut self.0);
        parts
            .canonical
            .push_str(&format!("\nfilter={}", filter.canonical()));
        parts.hash = fnv1a_64(parts.canonical.as_bytes());
        parts.where_clause = Some(Arc::new(match &parts.where_clause {
            Some(requested) => filter.and(requested),
            None => filter.clone(),
        }));
        self
    }
}

impl ShapeDefinition {
    /// Narrows every subquery of the `where` by the row filter of its table (the auth rules
    /// of the tables a token's subqueries read; see
    /// [`WhereClause::with_subquery_filters`]). Part of the shape's identity.
    pub fn with_subquery_filters(
        mut self,
        filters: &[(QualifiedName, WhereClause)],
    ) -> ShapeDefinition {
        let Some(w) = self.0.where_clause.clone() else {
            return self;
        };
        if filters.is_empty() || !w.has_subqueries() {
            return self;
        }
        let parts = Arc::make_mut(&mut self.0);
        let filter_of = |table: &QualifiedName| {
            filters
                .iter()
                .find(|(t, _)| t == table)
                .map(|(_, f)| f.clone())
        };
        for (table, filter) in filters {
            parts
                .canonical
                .push_str(&format!("\nfilter {table}={}", filter.canonical()));
        }
        parts.hash = fnv1a_64(parts.canonical.as_bytes());
        parts.where_clause = Some(Arc::new(w.with_subquery_filters(&filter_of)));
        self
    }
}

fn select_columns(table: &TableSchema, list: &str) -> Result<Vec<usize>, DefinitionError> {
    let names = parse_column_list(list)
        .map_err(|e| DefinitionError::Columns(format!("invalid column list: {e}")))?;
    let mut selected = Vec::with_capacity(names.len());
    for name in &names {
        let Some(i) = table.column_index(name) else {
            return Err(DefinitionError::Columns(format!(
                "unknown column \"{name}\"; the table {} has: {}",
                table.name,
                table.column_list()
            )));
        };
        if selected.contains(&i) {
            return Err(DefinitionError::Columns(format!(
                "column \"{name}\" is listed twice"
            )));
        }
        selected.push(i);
    }
    let missing: Vec<&str> = table
        .primary_key()
        .into_iter()
        .filter(|pk| !selected.contains(pk))
        .map(|pk| table.columns[pk].name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(DefinitionError::Columns(format!(
            "the column list must include the primary key; missing: {}",
            missing.join(", ")
        )));
    }
    selected.sort_unstable();
    Ok(selected)
}

/// FNV-1a, 64-bit: a tiny, fixed, platform-independent hash.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::fnv1a_64;

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
