//! Soft deletes: the tables whose rows are tombstoned instead of deleted, and their tombstone
//! column (`--tombstones`). The read path hides tombstoned rows from every shape; the write
//! path sets the column instead of deleting; `gc` purges old tombstones.

use std::str::FromStr;

use shapes::schema::QualifiedName;
use shapes::table_name::{parse_table_with_column, reserved_table};

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

    /// Names follow SQL's rules (`shapes::table_name`); the proxy's own and the system
    /// tables are refused, so a typo fails at start instead of at the first write.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (table, column) = parse_table_with_column(s, ':').map_err(|e| {
            format!("`{s}`: {e}; expected `table`, `schema.table` or `table:column`")
        })?;
        if let Some(reserved) = reserved_table(&table) {
            return Err(format!("`{s}`: {reserved}"));
        }
        Ok(Self {
            table,
            column: column.unwrap_or_else(|| DEFAULT_TOMBSTONE_COLUMN.to_owned()),
        })
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

    #[test]
    fn tombstone_specs_read_names_as_sql_does() {
        let spec: TombstoneSpec = "Ärger".parse().unwrap();
        assert_eq!(spec.table, QualifiedName::new("public", "Ärger"));
        let spec: TombstoneSpec = r#""My:Table":"Gone At""#.parse().unwrap();
        assert_eq!(spec.table, QualifiedName::new("public", "My:Table"));
        assert_eq!(spec.column, "Gone At");
    }

    #[test]
    fn tombstones_on_the_proxy_schema_or_a_catalog_are_refused() {
        let err = "shapesync.row_clocks".parse::<TombstoneSpec>().unwrap_err();
        assert!(err.contains("belongs to shapesync itself"), "{err}");
        let err = "pg_catalog.pg_class:relname"
            .parse::<TombstoneSpec>()
            .unwrap_err();
        assert!(err.contains("system schema"), "{err}");
    }
}
