//! The types the `where` language knows, mapped from the catalog's [`PgType`].

use std::fmt;
use std::sync::Arc;

use crate::schema::{PgType, TypeKind};

/// An enum type: its name (for messages) and labels in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnumType {
    pub name: String,
    pub labels: Vec<String>,
}

/// A type of a `where` expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SqlType {
    Bool,
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    Text,
    Varchar,
    Bpchar,
    Uuid,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Json,
    Jsonb,
    Enum(Arc<EnumType>),
    Array(Box<SqlType>),
}

impl SqlType {
    /// Maps a catalog type (domains as their base type); `Err` names what is unsupported.
    pub fn from_pg(ty: &PgType) -> Result<SqlType, String> {
        match &ty.kind {
            TypeKind::Base => Self::from_name(&ty.name).ok_or_else(|| ty.name.clone()),
            TypeKind::Enum { labels } => Ok(SqlType::Enum(Arc::new(EnumType {
                name: ty.name.clone(),
                labels: labels.clone(),
            }))),
            TypeKind::Array { element } => {
                let elem = Self::from_pg(element).map_err(|e| format!("{e}[]"))?;
                match elem {
                    SqlType::Enum(_) | SqlType::Array(_) | SqlType::Json => {
                        Err(format!("{}[]", element.name))
                    }
                    elem => Ok(SqlType::Array(Box::new(elem))),
                }
            }
            TypeKind::Domain { base } => Self::from_pg(base),
            TypeKind::Other => Err(ty.name.clone()),
        }
    }

    /// A built-in type by any of its SQL names (`int`, `integer`, `int4`, `double precision`…).
    pub fn from_name(name: &str) -> Option<SqlType> {
        let lower = name.trim().to_ascii_lowercase();
        if let Some(elem) = lower.strip_suffix("[]") {
            return Self::from_name(elem).map(|e| SqlType::Array(Box::new(e)));
        }
        Some(match lower.as_str() {
            "bool" | "boolean" => SqlType::Bool,
            "int2" | "smallint" => SqlType::Int2,
            "int4" | "int" | "integer" => SqlType::Int4,
            "int8" | "bigint" => SqlType::Int8,
            "numeric" | "decimal" => SqlType::Numeric,
            "float4" | "real" => SqlType::Float4,
            "float8" | "double precision" | "float" => SqlType::Float8,
            "text" => SqlType::Text,
            "varchar" | "character varying" => SqlType::Varchar,
            "bpchar" => SqlType::Bpchar,
            "uuid" => SqlType::Uuid,
            "date" => SqlType::Date,
            "time" | "time without time zone" => SqlType::Time,
            "timestamp" | "timestamp without time zone" => SqlType::Timestamp,
            "timestamptz" | "timestamp with time zone" => SqlType::Timestamptz,
            "interval" => SqlType::Interval,
            "json" => SqlType::Json,
            "jsonb" => SqlType::Jsonb,
            _ => return None,
        })
    }

    /// The name to write in a SQL cast (`$1::int4`); enums have none we may rely on.
    pub fn sql_name(&self) -> String {
        match self {
            SqlType::Array(e) => format!("{}[]", e.sql_name()),
            SqlType::Enum(e) => e.name.clone(),
            other => other.to_string(),
        }
    }

    pub fn is_integer(&self) -> bool {
        matches!(self, SqlType::Int2 | SqlType::Int4 | SqlType::Int8)
    }

    pub fn is_float(&self) -> bool {
        matches!(self, SqlType::Float4 | SqlType::Float8)
    }

    pub fn is_number(&self) -> bool {
        self.is_integer() || self.is_float() || *self == SqlType::Numeric
    }

    /// text, varchar and bpchar.
    pub fn is_string(&self) -> bool {
        matches!(self, SqlType::Text | SqlType::Varchar | SqlType::Bpchar)
    }

    /// Types whose order depends on a collation (so the rebuilt SQL says `COLLATE "C"`).
    pub fn is_collatable(&self) -> bool {
        match self {
            SqlType::Array(e) => e.is_collatable(),
            t => t.is_string(),
        }
    }

    /// Whether values of this type have a total order and equality we evaluate.
    pub fn is_comparable(&self) -> bool {
        match self {
            SqlType::Json | SqlType::Jsonb => false,
            SqlType::Array(e) => e.is_comparable(),
            _ => true,
        }
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            SqlType::Bool => "boolean",
            SqlType::Int2 => "int2",
            SqlType::Int4 => "int4",
            SqlType::Int8 => "int8",
            SqlType::Numeric => "numeric",
            SqlType::Float4 => "float4",
            SqlType::Float8 => "float8",
            SqlType::Text => "text",
            SqlType::Varchar => "varchar",
            SqlType::Bpchar => "bpchar",
            SqlType::Uuid => "uuid",
            SqlType::Date => "date",
            SqlType::Time => "time",
            SqlType::Timestamp => "timestamp",
            SqlType::Timestamptz => "timestamptz",
            SqlType::Interval => "interval",
            SqlType::Json => "json",
            SqlType::Jsonb => "jsonb",
            SqlType::Enum(e) => return f.write_str(&e.name),
            SqlType::Array(e) => return write!(f, "{e}[]"),
        };
        f.write_str(name)
    }
}
