//! What the proxy reads from the catalog about a table, and rows as they arrive.
//!
//! Rows are positional: value `i` belongs to column `i` of [`TableSchema::columns`], which is
//! the table's attribute order (the order pgoutput sends and snapshots select). A value is the
//! Postgres text output of the column, or `None` for SQL NULL.

use std::fmt;

/// A schema-qualified table name, as Postgres stores it (already case-folded/unquoted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

/// `"schema"."name"`, quoted for SQL (and as Electric writes it in message keys).
impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            quote_identifier(&self.schema),
            quote_identifier(&self.name)
        )
    }
}

/// Quotes an identifier for SQL: `my "col"` → `"my ""col"""`.
pub fn quote_identifier(ident: &str) -> String {
    let mut out = String::with_capacity(ident.len() + 2);
    out.push('"');
    for c in ident.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A Postgres type as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgType {
    /// `pg_type.oid`.
    pub oid: u32,
    /// The short name Electric puts in `electric-schema`: `int4`, `text`, `varchar`,
    /// `timestamptz`, or the type's own name for enums and other user types. For arrays, the
    /// element's name (the dimensions go in `dims`).
    pub name: String,
    pub kind: TypeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    /// A built-in or extension scalar type, known by its name.
    Base,
    /// An enum with its labels in declaration order (which is how enums compare).
    Enum { labels: Vec<String> },
    /// An array; `element` is the element type.
    Array { element: Box<PgType> },
    /// A domain over another type (compares as its base type).
    Domain { base: Box<PgType> },
    /// Composite, range and other types the `where` language does not evaluate.
    Other,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: PgType,
    /// `pg_attribute.atttypmod` (-1 when none): varchar length, numeric precision/scale, ….
    pub type_mod: i32,
    /// Declared array dimensions (`attndims`); 0 for scalars.
    pub dims: u32,
    pub not_null: bool,
    /// Position in the primary key (0-based), if part of it.
    pub pk_index: Option<usize>,
    /// Generated (`GENERATED ALWAYS AS …`): never writable.
    pub generated: bool,
}

/// A table: its name and its columns in attribute order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub name: QualifiedName,
    /// `pg_class.oid`, which pgoutput's Relation messages carry.
    pub oid: u32,
    pub columns: Vec<Column>,
}

impl TableSchema {
    /// Position of a column by exact (already folded) name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Positions of the primary-key columns, in key order.
    pub fn primary_key(&self) -> Vec<usize> {
        let mut pk: Vec<(usize, usize)> = self
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.pk_index.map(|k| (k, i)))
            .collect();
        pk.sort_unstable();
        pk.into_iter().map(|(_, i)| i).collect()
    }

    /// Column names, comma separated, for error messages.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One value: the Postgres text output, or `None` for NULL.
pub type Value = Option<String>;

/// A row in the table's column order.
pub type Row = Vec<Value>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers_and_doubles_quotes() {
        assert_eq!(quote_identifier("todos"), "\"todos\"");
        assert_eq!(quote_identifier("my \"col\""), "\"my \"\"col\"\"\"");
        assert_eq!(
            QualifiedName::new("My Schema", "t").to_string(),
            "\"My Schema\".\"t\""
        );
    }
}
