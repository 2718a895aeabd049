//! Subset snapshots: part of a shape on demand (`requestSnapshot` / `fetchSnapshot` of the
//! Electric client), as `POST /v1/shape` with a JSON body or `subset__*` query parameters.
//!
//! `SELECT … WHERE <shape where> AND (<subset where>) ORDER BY … LIMIT … OFFSET …` runs in a
//! `REPEATABLE READ READ ONLY` transaction whose snapshot comes back as metadata, so the client
//! can skip log changes its snapshot already contains.
//!
//! A subset takes one of the `--max-concurrent-snapshots` connection slots (503 with
//! `retry-after` when none is free) for as long as its query runs. There is no row cap: with
//! no `limit`, every matching row is returned, through a [`spool::Spool`] so that neither
//! memory nor the snapshot transaction depends on the size of the answer or the client's speed.

mod spool;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use serde::Deserialize;
use serde_json::Value;
use shapes::schema::{TableSchema, quote_identifier};
use shapes::where_clause::WhereClause;

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::read_path::snapshot::{self, Narrowing};
use crate::read_path::subquery::{self, SubqueryShape, initial};
use crate::storage::shape_store::Shape;

/// The subset request, from a JSON body or `subset__*` parameters. Other fields (the
/// client's structured `where_expr` / `order_by_expr`) are ignored: the text forms are used.
#[derive(Debug, Default, Deserialize)]
pub struct SubsetRequest {
    #[serde(rename = "where")]
    pub where_: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    pub order_by: Option<String>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    let mut errors = BTreeMap::new();
    errors.insert(field.to_owned(), vec![message.into()]);
    ApiError::InvalidSubset(errors)
}

impl SubsetRequest {
    /// From `subset__where`, `subset__params` (a JSON object), `subset__order_by`,
    /// `subset__limit`, `subset__offset`.
    pub fn from_query(subset: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        let number = |key: &str| -> Result<Option<u64>, ApiError> {
            subset
                .get(key)
                .map(|v| {
                    v.parse()
                        .map_err(|_| invalid(key, "must be a non-negative integer"))
                })
                .transpose()
        };
        let params = match subset.get("params") {
            None => BTreeMap::new(),
            Some(text) => serde_json::from_str(text).map_err(|_| {
                invalid("params", "must be a JSON object such as {\"1\":\"value\"}")
            })?,
        };
        Ok(Self {
            where_: subset.get("where").cloned(),
            params,
            order_by: subset.get("order_by").cloned(),
            limit: number("limit")?,
            offset: number("offset")?,
        })
    }

    /// The `where` text, unless blank.
    pub fn where_text(&self) -> Option<&str> {
        self.where_.as_deref().filter(|w| !w.trim().is_empty())
    }

    /// Checks what needs no table: `params` numbered from 1 and not null, `order_by` a list
    /// of columns with directions (and present with `limit`/`offset`).
    pub fn parts(&self) -> Result<SubsetParts, ApiError> {
        let nul = |text: &Option<String>| text.as_deref().is_some_and(|t| t.contains('\0'));
        for (field, text) in [("where", &self.where_), ("order_by", &self.order_by)] {
            if nul(text) {
                return Err(invalid(field, super::params::NUL_MESSAGE));
            }
        }
        if self
            .params
            .values()
            .any(|v| v.as_str().is_some_and(|t| t.contains('\0')))
        {
            return Err(invalid("params", super::params::NUL_MESSAGE));
        }
        if (self.limit.is_some() || self.offset.is_some()) && self.order_by.is_none() {
            return Err(invalid(
                "order_by",
                "order_by is required when limit or offset is present",
            ));
        }
        let mut params = BTreeMap::new();
        for (key, value) in &self.params {
            let index: usize = key.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                invalid(
                    "params",
                    format!("\"{key}\": placeholders are numbered from 1"),
                )
            })?;
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => return Err(invalid("params", format!("${index} is null"))),
                other => other.to_string(),
            };
            params.insert(index, text);
        }
        let order_by = self
            .order_by
            .as_deref()
            .map(parse_order_by)
            .transpose()
            .map_err(|m| invalid("order_by", m))?;
        Ok(SubsetParts { params, order_by })
    }

    /// The condition and tail of the subset's query; its `where` and `order_by` may use the
    /// columns of `table` (the shape's table, or the part of it the caller may read).
    fn narrowing(
        &self,
        shape: &Shape,
        parts: &SubsetParts,
        table: &TableSchema,
    ) -> Result<Narrowing, ApiError> {
        let first = shape
            .definition
            .where_clause()
            .map_or(1, |w| w.to_sql_with_offset(1).1.len() + 1);
        let condition = match self.where_text() {
            None => None,
            Some(text) => {
                let clause = WhereClause::parse(text, &parts.params, table)
                    .map_err(|e| invalid("where", e.to_electric_message()))?;
                Some(clause.to_sql_with_offset(first))
            }
        };
        let mut tail = String::new();
        if let Some(order_by) = &parts.order_by {
            tail.push_str(" ORDER BY ");
            tail.push_str(&order_by_sql(order_by, table).map_err(|m| invalid("order_by", m))?);
        }
        if let Some(limit) = self.limit {
            tail.push_str(&format!(" LIMIT {limit}"));
        }
        if let Some(offset) = self.offset {
            tail.push_str(&format!(" OFFSET {offset}"));
        }
        Ok(Narrowing { condition, tail })
    }
}

/// A subset request's `params` and `order_by`, checked for their form.
#[derive(Debug, Default)]
pub struct SubsetParts {
    pub params: BTreeMap<usize, String>,
    pub order_by: Option<Vec<OrderItem>>,
}

impl SubsetParts {
    /// The columns `order_by` names.
    pub fn order_by_columns(&self) -> Vec<String> {
        self.order_by
            .iter()
            .flatten()
            .map(|item| item.column.clone())
            .collect()
    }
}

/// Runs a subset snapshot: `{"metadata":{…},"data":[…]}`.
/// `table` is what its `where` and `order_by` may use: the shape's table, or the part of it
/// the caller may read.
pub(super) async fn run(
    state: &AppState,
    shape: &Arc<Shape>,
    request: &SubsetRequest,
    parts: &SubsetParts,
    table: &TableSchema,
) -> Result<Body, ApiError> {
    let narrowing = request.narrowing(shape, parts, table)?;
    let permit = state.shapes.try_snapshot_permit()?;
    let mut client = state.shapes.snapshot_client().await?;
    let query_error = |e: snapshot::SnapshotError| match e {
        snapshot::SnapshotError::Io(e) => storage_error(e),
        e if e.is_transient() => ApiError::Unavailable {
            code: "database_unavailable",
            message: e.to_string(),
            retry_after: 1,
        },
        e => ApiError::Internal(format!("subset snapshot of {}: {e}", shape.handle)),
    };
    let (tx, info, wal_lsn) = snapshot::begin(&mut client).await.map_err(query_error)?;
    let mark: u64 = rand::random_range(1..=u64::from(u32::MAX));
    let xip: Vec<String> = info.xip.iter().map(|x| format!("\"{}\"", x.0)).collect();
    let head = format!(
        r#"{{"metadata":{{"xmin":"{}","xmax":"{}","xip_list":[{}],"database_lsn":"{}","snapshot_mark":{mark}}},"data":["#,
        info.xmin.0,
        info.xmax.0,
        xip.join(","),
        wal_lsn.as_u64()
    );
    let mut body = spool::Spool::new(&state.shapes.spool_dir());
    body.write(head.as_bytes()).map_err(storage_error)?;
    // A subquery shape's rows carry their tags and active conditions, decided by what its
    // subqueries offer in this snapshot.
    let mut levels = subquery::has_subqueries(&shape.definition)
        .then(|| SubqueryShape::new(shape.table.clone(), &shape.definition, shape.tombstone));
    if let Some(levels) = levels.as_mut() {
        initial::read_views(&tx, levels)
            .await
            .map_err(query_error)?;
    }
    let headers = levels
        .as_ref()
        .and_then(|levels| initial::row_headers(shape, levels));
    let headers = headers.as_ref().map(|h| h as snapshot::RowHeaders<'_>);
    let mut first = true;
    snapshot::stream_rows_with(
        &tx,
        shape,
        Some(&narrowing),
        Some(mark),
        headers,
        |message| {
            if !std::mem::take(&mut first) {
                body.write(b",")?;
            }
            body.write(message)
        },
    )
    .await
    .map_err(query_error)?;
    tx.commit()
        .await
        .map_err(|e| query_error(snapshot::SnapshotError::Query(e)))?;
    client.reuse();
    drop(permit);
    body.write(b"]}").map_err(storage_error)?;
    body.into_body().map_err(storage_error)
}

fn storage_error(err: std::io::Error) -> ApiError {
    tracing::error!(error = %err, "cannot write a subset snapshot to the storage directory");
    ApiError::Unavailable {
        code: "storage_unavailable",
        message: format!("storage: {err}"),
        retry_after: 5,
    }
}

/// One `order_by` item: a column (folded, or as quoted) and its direction in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItem {
    pub column: String,
    suffix: &'static str,
}

/// Splits `col [ASC|DESC] [NULLS FIRST|LAST], …` into its items.
pub fn parse_order_by(text: &str) -> Result<Vec<OrderItem>, String> {
    let mut items = Vec::new();
    for item in split_top_level(text)? {
        let mut tokens = tokenize(&item)?.into_iter();
        let Some(Token::Ident(name)) = tokens.next() else {
            return Err(format!("expected a column name in {:?}", item.trim()));
        };
        let rest: Vec<String> = tokens
            .map(|t| match t {
                Token::Word(w) => w,
                Token::Ident(i) => i,
            })
            .collect();
        let words: Vec<&str> = rest.iter().map(String::as_str).collect();
        let suffix = match words.as_slice() {
            [] => "",
            ["asc"] => " ASC",
            ["desc"] => " DESC",
            ["nulls", "first"] => " NULLS FIRST",
            ["nulls", "last"] => " NULLS LAST",
            ["asc", "nulls", "first"] => " ASC NULLS FIRST",
            ["asc", "nulls", "last"] => " ASC NULLS LAST",
            ["desc", "nulls", "first"] => " DESC NULLS FIRST",
            ["desc", "nulls", "last"] => " DESC NULLS LAST",
            _ => {
                return Err(format!(
                    "expected ASC, DESC, NULLS FIRST or NULLS LAST after {name:?}"
                ));
            }
        };
        items.push(OrderItem {
            column: name,
            suffix,
        });
    }
    if items.is_empty() {
        return Err("is empty".into());
    }
    Ok(items)
}

/// The items over the columns of `table`, rebuilt with quoted identifiers (text columns in
/// byte order, as everywhere else).
pub fn order_by_sql(items: &[OrderItem], table: &TableSchema) -> Result<String, String> {
    let mut sql = Vec::with_capacity(items.len());
    for item in items {
        let column = table
            .column_index(&item.column)
            .map(|i| &table.columns[i])
            .ok_or_else(|| {
                format!(
                    "unknown column {:?}; the table has: {}",
                    item.column,
                    table.column_list()
                )
            })?;
        let mut one = quote_identifier(&column.name);
        if matches!(column.ty.name.as_str(), "text" | "varchar" | "bpchar") {
            one.push_str(" COLLATE \"C\"");
        }
        one.push_str(item.suffix);
        sql.push(one);
    }
    Ok(sql.join(", "))
}

enum Token {
    /// A column name: unquoted (folded to lower case) or quoted.
    Ident(String),
    /// A keyword, lower case.
    Word(String),
}

fn split_top_level(text: &str) -> Result<Vec<String>, String> {
    let mut items = vec![String::new()];
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                items.last_mut().expect("non-empty").push(c);
            }
            ',' if !quoted => items.push(String::new()),
            _ => items.last_mut().expect("non-empty").push(c),
        }
    }
    if quoted {
        return Err("has an unterminated quoted identifier".into());
    }
    Ok(items)
}

fn tokenize(item: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = item.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut name = String::new();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        name.push('"');
                    }
                    Some('"') => break,
                    Some(other) => name.push(other),
                    None => return Err("has an unterminated quoted identifier".into()),
                }
            }
            tokens.push(Token::Ident(name));
        } else if c.is_alphanumeric() || c == '_' {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_alphanumeric() || c == '_' || c == '$' {
                    word.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            // Postgres folds only ASCII letters of an unquoted name (in UTF-8).
            let folded = word.to_ascii_lowercase();
            if tokens.is_empty() {
                tokens.push(Token::Ident(folded));
            } else {
                tokens.push(Token::Word(folded));
            }
        } else {
            return Err(format!(
                "unexpected {c:?}: only column names with ASC/DESC and NULLS FIRST/LAST are allowed"
            ));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shapes::schema::QualifiedName;
    use shapes::testing::{base, column};

    fn table() -> TableSchema {
        TableSchema {
            name: QualifiedName::new("public", "t"),
            oid: 1,
            columns: vec![column("id", base("int4")), column("Title", base("text"))],
        }
    }

    fn sql(text: &str) -> Result<String, String> {
        order_by_sql(&parse_order_by(text)?, &table())
    }

    #[test]
    fn order_by_is_rebuilt_with_quoted_identifiers() {
        assert_eq!(
            sql("id DESC, \"Title\" nulls last").unwrap(),
            "\"id\" DESC, \"Title\" COLLATE \"C\" NULLS LAST"
        );
        assert_eq!(sql("ID").unwrap(), "\"id\"");
        let columns: Vec<String> = parse_order_by("ID desc, \"Title\"")
            .unwrap()
            .into_iter()
            .map(|item| item.column)
            .collect();
        assert_eq!(columns, ["id", "Title"]);
    }

    #[test]
    fn order_by_refuses_anything_but_columns_and_directions() {
        assert!(sql("title").unwrap_err().contains("unknown column"));
        assert!(sql("id; DROP TABLE t").is_err());
        assert!(sql("id DESC DESC").is_err());
        assert!(sql("(select 1)").is_err());
        assert!(sql("").is_err());
        assert!(sql("\"id").is_err());
    }
}
