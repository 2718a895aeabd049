//! How a shape's columns (the `electric-schema` header) become SQLite columns, and how values
//! cross between the two.
//!
//! | Postgres (`type` in `electric-schema`)          | SQLite column | value                          |
//! |--------------------------------------------------|---------------|--------------------------------|
//! | `int2`, `int4`, `int8`, `oid`, `xid`             | `INTEGER`     | the number                     |
//! | `float4`, `float8`                               | `REAL`        | the number; `NaN`/`Infinity` stay text |
//! | `bool`                                           | `INTEGER`     | `1` / `0`                      |
//! | `bytea`                                          | `BLOB`        | the bytes (decoded from `\x…`) |
//! | `numeric`                                        | `TEXT`        | Postgres' text (exact: no rounding through a double) |
//! | arrays (`dims` present), of any element type     | `TEXT`        | Postgres' array literal (`{a,b}`) |
//! | everything else: `text`, `varchar`, `uuid`, `json(b)`, `timestamp(tz)`, `date`, `time`, `interval`, enums, … | `TEXT` | Postgres' text output (timestamps in UTC, ISO) |
//!
//! Primary-key columns keep their order as the table's `PRIMARY KEY`; `not_null` becomes
//! `NOT NULL` only on key columns (a local insert may leave other columns to the server).
//!
//! Rows are identified locally by a *row key*: the JSON array of the primary-key values as
//! SQLite holds them (`[42]`, `["8f1d…"]`), the same whether the row came from the server or
//! from a local write.

use std::fmt;

use rusqlite::types::Value as SqlValue;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;

/// How a column is stored in SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    Integer,
    Real,
    Boolean,
    Blob,
    Text,
}

impl StorageKind {
    /// The storage of a Postgres type name (element type for arrays, `dims > 0`).
    pub fn of(pg_type: &str, dims: u32) -> Self {
        if dims > 0 {
            return Self::Text;
        }
        match pg_type {
            "int2" | "int4" | "int8" | "oid" | "xid" | "smallint" | "integer" | "bigint" => {
                Self::Integer
            }
            "float4" | "float8" | "real" | "double precision" => Self::Real,
            "bool" | "boolean" => Self::Boolean,
            "bytea" => Self::Blob,
            _ => Self::Text,
        }
    }

    /// The declared SQLite type (which gives the column its affinity).
    pub fn sqlite_type(self) -> &'static str {
        match self {
            Self::Integer | Self::Boolean => "INTEGER",
            Self::Real => "REAL",
            Self::Blob => "BLOB",
            Self::Text => "TEXT",
        }
    }

    /// A value as Postgres prints it (or NULL) → the SQLite value.
    pub fn from_pg_text(self, text: Option<&str>) -> SqlValue {
        let Some(text) = text else {
            return SqlValue::Null;
        };
        let parsed = match self {
            Self::Integer => text.parse().ok().map(SqlValue::Integer),
            Self::Real => text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(SqlValue::Real),
            Self::Boolean => match text {
                "t" | "true" | "TRUE" | "1" => Some(SqlValue::Integer(1)),
                "f" | "false" | "FALSE" | "0" => Some(SqlValue::Integer(0)),
                _ => None,
            },
            Self::Blob => shapes::bytea::decode(text).map(SqlValue::Blob),
            Self::Text => None,
        };
        parsed.unwrap_or_else(|| SqlValue::Text(text.to_owned()))
    }

    /// A value a local write gives as JSON → the SQLite value. Strings are read as Postgres
    /// text (`"t"`, `"\\x00ff"`, `"42"`); numbers and booleans as themselves.
    pub fn from_json(self, value: &Json) -> SqlValue {
        match value {
            Json::Null => SqlValue::Null,
            Json::Bool(b) => match self {
                Self::Text => SqlValue::Text(if *b { "true" } else { "false" }.into()),
                _ => SqlValue::Integer(i64::from(*b)),
            },
            Json::Number(n) => match (self, n.as_i64(), n.as_f64()) {
                (Self::Text, _, _) => SqlValue::Text(n.to_string()),
                (Self::Real, _, Some(f)) => SqlValue::Real(f),
                (_, Some(i), _) => SqlValue::Integer(i),
                (_, None, Some(f)) => SqlValue::Real(f),
                _ => SqlValue::Text(n.to_string()),
            },
            Json::String(s) => self.from_pg_text(Some(s)),
            other => SqlValue::Text(other.to_string()),
        }
    }

    /// A SQLite value → JSON as the user reads it (`export`, conflicts): booleans as
    /// booleans, blobs as `"\\x…"`.
    pub fn to_json(self, value: &SqlValue) -> Json {
        match value {
            SqlValue::Null => Json::Null,
            SqlValue::Integer(i) if self == Self::Boolean => Json::Bool(*i != 0),
            SqlValue::Integer(i) => Json::from(*i),
            SqlValue::Real(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or(Json::Null),
            SqlValue::Text(t) => Json::String(t.clone()),
            SqlValue::Blob(b) => Json::String(shapes::bytea::encode(b)),
        }
    }
}

/// One column of a shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    /// Postgres type name as `electric-schema` gives it (the element type for arrays).
    pub pg_type: String,
    pub dims: u32,
    pub pk_index: Option<usize>,
    pub not_null: bool,
    pub storage: StorageKind,
}

/// A shape's columns in the server's order, and its primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeSchema {
    pub columns: Vec<ColumnSpec>,
    /// Positions of the primary-key columns, in key order.
    pub pk: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
#[error("electric-schema header: {0}")]
pub struct SchemaError(pub String);

#[derive(Deserialize)]
struct RawColumn {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    dims: Option<u32>,
    #[serde(default)]
    pk_index: Option<usize>,
    #[serde(default)]
    not_null: Option<bool>,
}

/// The header's object, keeping the order of its keys (serde_json's map would sort them).
struct OrderedColumns(Vec<(String, RawColumn)>);

impl<'de> Deserialize<'de> for OrderedColumns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = OrderedColumns;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of columns")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut columns = Vec::new();
                while let Some(entry) = map.next_entry::<String, RawColumn>()? {
                    columns.push(entry);
                }
                Ok(OrderedColumns(columns))
            }
        }
        d.deserialize_map(Ordered)
    }
}

impl ShapeSchema {
    /// Parses `electric-schema`.
    ///
    /// ```
    /// use client_sqlite::schema_mapping::{ShapeSchema, StorageKind};
    /// let s = ShapeSchema::parse(r#"{"id":{"type":"int4","pk_index":0,"not_null":true},"tags":{"type":"text","dims":1}}"#).unwrap();
    /// assert_eq!(s.pk, vec![0]);
    /// assert_eq!(s.columns[1].storage, StorageKind::Text);
    /// ```
    pub fn parse(header: &str) -> Result<Self, SchemaError> {
        let OrderedColumns(raw) =
            serde_json::from_str(header).map_err(|e| SchemaError(e.to_string()))?;
        let columns: Vec<ColumnSpec> = raw
            .into_iter()
            .map(|(name, c)| {
                let dims = c.dims.unwrap_or(0);
                ColumnSpec {
                    storage: StorageKind::of(&c.ty, dims),
                    name,
                    pg_type: c.ty,
                    dims,
                    pk_index: c.pk_index,
                    not_null: c.not_null.unwrap_or(false),
                }
            })
            .collect();
        let mut pk: Vec<(usize, usize)> = columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.pk_index.map(|k| (k, i)))
            .collect();
        pk.sort_unstable();
        let pk: Vec<usize> = pk.into_iter().map(|(_, i)| i).collect();
        if pk.is_empty() {
            return Err(SchemaError(
                "the shape has no primary-key column (pk_index): the client needs one to \
                 identify rows; include the key in `columns` or add a primary key"
                    .into(),
            ));
        }
        Ok(Self { columns, pk })
    }

    /// Position of a column by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// `CREATE TABLE` for the mirror table `name` (extra leading columns first, e.g. a shadow
    /// table's bookkeeping).
    pub fn create_table_sql(&self, name: &str, extra: &str, with_pk: bool) -> String {
        let mut sql = format!("CREATE TABLE {} (", quote(name));
        sql.push_str(extra);
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 || !extra.is_empty() {
                sql.push_str(", ");
            }
            sql.push_str(&quote(&c.name));
            sql.push(' ');
            sql.push_str(c.storage.sqlite_type());
            if with_pk && c.pk_index.is_some() && c.not_null {
                sql.push_str(" NOT NULL");
            }
        }
        if with_pk {
            let pk: Vec<String> = self
                .pk
                .iter()
                .map(|&i| quote(&self.columns[i].name))
                .collect();
            sql.push_str(&format!(", PRIMARY KEY ({})", pk.join(", ")));
        }
        sql.push(')');
        sql
    }

    /// The row key of primary-key values (in key order).
    pub fn row_key<'a>(values: impl IntoIterator<Item = &'a SqlValue>) -> String {
        let parts: Vec<Json> = values
            .into_iter()
            .map(|v| match v {
                SqlValue::Blob(b) => Json::String(shapes::bytea::encode(b)),
                other => StorageKind::Text.to_json(other),
            })
            .collect();
        Json::Array(parts).to_string()
    }

    /// `"a", "b", …` for every column.
    pub fn column_list(&self) -> String {
        let names: Vec<String> = self.columns.iter().map(|c| quote(&c.name)).collect();
        names.join(", ")
    }

    /// `"k1" IS ?n AND "k2" IS ?n+1` over the key columns, numbering from `first`.
    pub fn key_predicate(&self, first: usize) -> String {
        let parts: Vec<String> = self
            .pk
            .iter()
            .enumerate()
            .map(|(n, &i)| format!("{} IS ?{}", quote(&self.columns[i].name), first + n))
            .collect();
        parts.join(" AND ")
    }
}

/// Quotes an SQLite identifier.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_text_becomes_typed_sqlite_values() {
        assert_eq!(
            StorageKind::Integer.from_pg_text(Some("42")),
            SqlValue::Integer(42)
        );
        assert_eq!(
            StorageKind::Boolean.from_pg_text(Some("t")),
            SqlValue::Integer(1)
        );
        assert_eq!(
            StorageKind::Blob.from_pg_text(Some("\\x00ff")),
            SqlValue::Blob(vec![0, 255])
        );
        assert_eq!(
            StorageKind::Real.from_pg_text(Some("NaN")),
            SqlValue::Text("NaN".into())
        );
        assert_eq!(StorageKind::Text.from_pg_text(None), SqlValue::Null);
        assert_eq!(
            StorageKind::Text.from_pg_text(Some("1.10")),
            SqlValue::Text("1.10".into())
        );
    }

    #[test]
    fn json_values_of_local_writes_map_like_server_values() {
        let json: Json = serde_json::json!(true);
        assert_eq!(StorageKind::Boolean.from_json(&json), SqlValue::Integer(1));
        assert_eq!(
            StorageKind::Integer.from_json(&serde_json::json!("7")),
            SqlValue::Integer(7)
        );
        assert_eq!(
            StorageKind::Text.from_json(&serde_json::json!(1.5)),
            SqlValue::Text("1.5".into())
        );
        assert_eq!(
            StorageKind::Boolean.to_json(&SqlValue::Integer(0)),
            Json::Bool(false)
        );
        assert_eq!(
            StorageKind::Blob.to_json(&SqlValue::Blob(vec![1, 2])),
            Json::String("\\x0102".into())
        );
    }

    #[test]
    fn schema_keeps_header_order_and_finds_the_key() {
        let s = ShapeSchema::parse(
            r#"{"z":{"type":"text"},"id":{"type":"uuid","pk_index":0,"not_null":true},"n":{"type":"int8"}}"#,
        )
        .unwrap();
        let names: Vec<&str> = s.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["z", "id", "n"]);
        assert_eq!(s.pk, vec![1]);
        assert_eq!(
            s.create_table_sql("t", "", true),
            r#"CREATE TABLE "t" ("z" TEXT, "id" TEXT NOT NULL, "n" INTEGER, PRIMARY KEY ("id"))"#
        );
        assert!(ShapeSchema::parse(r#"{"a":{"type":"text"}}"#).is_err());
    }

    #[test]
    fn row_keys_are_json_arrays_of_key_values() {
        let key = ShapeSchema::row_key([&SqlValue::Integer(1), &SqlValue::Text("a".into())]);
        assert_eq!(key, r#"[1,"a"]"#);
    }
}
