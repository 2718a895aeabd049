//! Soft deletes: the tables whose rows are tombstoned instead of deleted, and their tombstone
//! column (`--tombstones`). The read path hides tombstoned rows from every shape; the write
//! path sets the column instead of deleting; `gc` purges old tombstones.

use std::str::FromStr;

use shapes::schema::QualifiedName;

/// `table` or `schema.table`, optionally `:column` (default `deleted_at`), as given to
/// `--tombstones`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TombstoneSpec {
    pub table: QualifiedName,
    pub column: String,
}

pub const DEFAULT_TOMBSTONE_COLUMN: &str = "deleted_at";

impl FromStr for TombstoneSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (table, column) = match s.split_once(':') {
            Some((table, column)) => (table.trim(), column.trim()),
            None => (s.trim(), DEFAULT_TOMBSTONE_COLUMN),
        };
        let table = parse_plain_table(table)
            .ok_or_else(|| format!("`{s}`: expected `table`, `schema.table` or `table:column`"))?;
        if column.is_empty() {
            return Err(format!("`{s}`: the column after `:` is empty"));
        }
        Ok(Self {
            table,
            column: column.to_owned(),
        })
    }
}

/// `name` or `schema.name` as written in flags (unquoted, folded to lower case like SQL).
pub fn parse_plain_table(text: &str) -> Option<QualifiedName> {
    let valid = |part: &str| !part.is_empty() && !part.contains(char::is_whitespace);
    match text.split_once('.') {
        Some((schema, name)) if valid(schema) && valid(name) => Some(QualifiedName::new(
            schema.to_lowercase(),
            name.to_lowercase(),
        )),
        None if valid(text) => Some(QualifiedName::new("public", text.to_lowercase())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstone_specs_default_the_column_and_schema() {
        let spec: TombstoneSpec = "todos".parse().unwrap();
        assert_eq!(spec.table, QualifiedName::new("public", "todos"));
        assert_eq!(spec.column, "deleted_at");
        let spec: TombstoneSpec = "app.Notes:removed_at".parse().unwrap();
        assert_eq!(spec.table, QualifiedName::new("app", "notes"));
        assert_eq!(spec.column, "removed_at");
        assert!("todos:".parse::<TombstoneSpec>().is_err());
        assert!("".parse::<TombstoneSpec>().is_err());
        assert!("a b".parse::<TombstoneSpec>().is_err());
    }
}
