//! Checking one mutation against its table before anything touches the database: the key
//! names the primary key, every column exists and is writable, Yjs columns come as `merge`,
//! the timestamp parses (and is clamped). Whether a value fits its column is Postgres' call
//! (see `values`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::clock::{self, Clock};
use super::table::{ColumnRole, WritableTable};
use super::wire::{Mutation, Op, Refusal, RefusalCode};

/// A mutation that passed every check that does not need the data.
#[derive(Debug, Clone)]
pub struct ValidMutation {
    pub table: Arc<WritableTable>,
    pub op: Op,
    /// Key values in key order, as text (canonical Postgres output once values are checked).
    pub key: Vec<String>,
    /// Plain columns to write: (column position, text or NULL).
    pub values: Vec<(usize, Option<String>)>,
    /// Yjs columns to merge: (column position, Yjs update).
    pub merges: Vec<(usize, Vec<u8>)>,
    pub clock: Clock,
    /// Set when the timestamp was clamped to server time + max skew.
    pub clamped_to: Option<i64>,
}

fn refusal(code: RefusalCode, column: Option<&str>, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        column: column.map(str::to_owned),
        message: message.into(),
    }
}

/// A JSON value as the text Postgres parses: strings as they are, numbers and booleans in
/// JSON form, arrays and objects as JSON text (for json/jsonb columns), null as NULL.
pub fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(_) | Value::Object(_) => Some(value.to_string()),
    }
}

/// Checks `mutation` against `table`; `server_now` (µs) bounds its timestamp. A refusal
/// lists only columns `shown` allows (those the caller may know of).
pub fn validate(
    mutation: &Mutation,
    table: &Arc<WritableTable>,
    client_id: &str,
    server_now: i64,
    max_skew: Duration,
    shown: &dyn Fn(&str) -> bool,
) -> Result<ValidMutation, Refusal> {
    let columns = Columns { table, shown };
    let micros = clock::parse_timestamp(&mutation.timestamp)
        .map_err(|message| refusal(RefusalCode::BadTimestamp, None, message))?;
    let (micros, clamped_to) = clock::clamp(micros, server_now, max_skew);
    let key = validate_key(&mutation.key, table)?;
    if mutation.op == Op::Delete
        && let Some(column) = mutation.values.keys().chain(mutation.merge.keys()).next()
    {
        return Err(refusal(
            RefusalCode::InvalidValue,
            Some(column),
            "a delete carries no values or merges",
        ));
    }
    let values = validate_values(&mutation.values, &key, &columns)?;
    let merges = validate_merges(&mutation.merge, &columns)?;
    Ok(ValidMutation {
        table: table.clone(),
        op: mutation.op,
        key,
        values,
        merges,
        clock: Clock::new(micros, client_id),
        clamped_to,
    })
}

/// A table's columns as one caller may know them.
struct Columns<'a> {
    table: &'a WritableTable,
    shown: &'a dyn Fn(&str) -> bool,
}

impl Columns<'_> {
    /// The position of column `name`; `unknown_column` listing the columns shown.
    fn index(&self, name: &str) -> Result<usize, Refusal> {
        let table = self.table;
        table.schema.column_index(name).ok_or_else(|| {
            let shown: Vec<&str> = table
                .schema
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .filter(|c| (self.shown)(c))
                .collect();
            refusal(
                RefusalCode::UnknownColumn,
                Some(name),
                format!(
                    "table {} has no column {name}; use one of: {}",
                    table.name(),
                    shown.join(", ")
                ),
            )
        })
    }
}

/// The key must give every primary-key column and nothing else. Names are compared with the
/// key's columns only, so the answer says nothing of the table's other columns.
fn validate_key(key: &Map<String, Value>, table: &WritableTable) -> Result<Vec<String>, Refusal> {
    let key_names: Vec<&str> = table.key.iter().map(|&i| table.column_name(i)).collect();
    if let Some(name) = key.keys().find(|name| !key_names.contains(&name.as_str())) {
        return Err(refusal(
            RefusalCode::InvalidValue,
            Some(name),
            format!(
                "{name} is not part of the primary key of {}; the key names {}",
                table.name(),
                key_names.join(", ")
            ),
        ));
    }
    table
        .key
        .iter()
        .map(|&index| {
            let name = table.column_name(index);
            match key.get(name).map(value_text) {
                Some(Some(text)) => Ok(text),
                Some(None) => Err(refusal(
                    RefusalCode::InvalidValue,
                    Some(name),
                    format!("key column {name} cannot be null"),
                )),
                None => Err(refusal(
                    RefusalCode::InvalidValue,
                    Some(name),
                    format!("the key must give every primary-key column; {name} is missing"),
                )),
            }
        })
        .collect()
}

fn validate_values(
    values: &Map<String, Value>,
    key: &[String],
    columns: &Columns<'_>,
) -> Result<Vec<(usize, Option<String>)>, Refusal> {
    let table = columns.table;
    let mut out = Vec::with_capacity(values.len());
    for (name, value) in values {
        let index = columns.index(name)?;
        let text = value_text(value);
        match table.role(index) {
            ColumnRole::Plain => out.push((index, text)),
            ColumnRole::Key => {
                let position = table.key.iter().position(|&k| k == index);
                let expected = position.map(|p| key[p].as_str());
                if text.as_deref() != expected {
                    return Err(refusal(
                        RefusalCode::InvalidValue,
                        Some(name),
                        format!(
                            "values give {name} = {}, but the key says {}; a primary key cannot \
                             change",
                            text.as_deref().unwrap_or("null"),
                            expected.unwrap_or("null"),
                        ),
                    ));
                }
            }
            ColumnRole::Yjs => {
                return Err(refusal(
                    RefusalCode::ReadOnlyColumn,
                    Some(name),
                    format!("{name} is a Yjs document: send updates in `merge`, never in `values`"),
                ));
            }
            ColumnRole::ReadOnly(why) => {
                return Err(refusal(
                    RefusalCode::ReadOnlyColumn,
                    Some(name),
                    format!("{name} cannot be written: {why}"),
                ));
            }
        }
    }
    Ok(out)
}

fn validate_merges(
    merges: &Map<String, Value>,
    columns: &Columns<'_>,
) -> Result<Vec<(usize, Vec<u8>)>, Refusal> {
    merges
        .iter()
        .map(|(name, value)| {
            let index = columns.index(name)?;
            if columns.table.role(index) != ColumnRole::Yjs {
                return Err(refusal(
                    RefusalCode::InvalidValue,
                    Some(name),
                    format!("{name} is not a Yjs document column; write it in `values`"),
                ));
            }
            let update = value
                .as_str()
                .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
                .ok_or_else(|| {
                    refusal(
                        RefusalCode::InvalidValue,
                        Some(name),
                        "a merge is a Yjs update (v1 encoding) in standard base64",
                    )
                })?;
            Ok((index, update))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mutations::config::{WriteConfig, YjsColumn};
    use serde_json::json;
    use shapes::schema::{QualifiedName, TableSchema};
    use shapes::testing::{base, column};

    /// `notes(id uuid pk, title text, body bytea [yjs], slug [generated], updated_at,
    /// deleted_at [tombstone])`.
    pub(crate) fn notes() -> Arc<WritableTable> {
        let name = QualifiedName::new("public", "notes");
        let schema = TableSchema {
            name: name.clone(),
            oid: 1,
            columns: vec![
                column("id", base("uuid")).pk(0),
                column("title", base("text")),
                column("body", base("bytea")),
                column("slug", base("text")).generated(),
                column("updated_at", base("timestamptz")),
                column("deleted_at", base("timestamptz")),
            ],
        };
        let config = WriteConfig {
            yjs_columns: vec![YjsColumn {
                table: name,
                column: "body".into(),
            }],
            ..WriteConfig::default()
        };
        let types = vec![
            "uuid",
            "text",
            "bytea",
            "text",
            "timestamptz",
            "timestamptz",
        ];
        let types = types.into_iter().map(String::from).collect();
        Arc::new(WritableTable::new(schema, types, &config, Some("deleted_at")).unwrap())
    }

    fn mutation(value: serde_json::Value) -> Mutation {
        let mut base = json!({"id": "m", "table": "notes", "op": "update", "key": {"id": "k"},
                              "timestamp": "1970-01-01T00:00:01Z"});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), value.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn check(value: serde_json::Value) -> Result<ValidMutation, Refusal> {
        validate(
            &mutation(value),
            &notes(),
            "c",
            0,
            Duration::from_secs(60),
            &|_| true,
        )
    }

    fn code(value: serde_json::Value) -> (RefusalCode, Option<String>) {
        let refusal = check(value).unwrap_err();
        (refusal.code, refusal.column)
    }

    #[test]
    fn a_valid_update_keeps_its_values_and_clock() {
        let valid = check(json!({"values": {"title": "t", "id": "k"}})).unwrap();
        assert_eq!(valid.key, ["k"]);
        assert_eq!(valid.values, [(1, Some("t".to_owned()))], "key dropped");
        assert_eq!(valid.clock, Clock::new(1_000_000, "c"));
        assert_eq!(valid.clamped_to, None);
    }

    #[test]
    fn columns_must_exist_and_be_writable() {
        let unknown = Some("nope".to_owned());
        assert_eq!(
            code(json!({"values": {"nope": 1}})),
            (RefusalCode::UnknownColumn, unknown)
        );
        assert_eq!(
            code(json!({"merge": {"title": "AAA="}})).0,
            RefusalCode::InvalidValue
        );
        assert_eq!(
            code(json!({"merge": {"body": "not base64!"}})).0,
            RefusalCode::InvalidValue
        );
        assert!(check(json!({"merge": {"body": "AAA="}})).is_ok());
    }

    /// The clock and tombstone columns, the generated `slug` and the Yjs `body` are written
    /// by shapesync only.
    #[rstest::rstest]
    fn managed_columns_are_read_only(
        #[values("updated_at", "deleted_at", "slug", "body")] managed: &str,
    ) {
        assert_eq!(
            code(json!({"values": {managed: "x"}})),
            (RefusalCode::ReadOnlyColumn, Some(managed.to_owned())),
            "{managed}"
        );
    }

    #[test]
    fn unknown_columns_list_only_the_columns_shown() {
        let shown = |c: &str| c == "id" || c == "title";
        let refusal = validate(
            &mutation(json!({"values": {"nope": 1}})),
            &notes(),
            "c",
            0,
            Duration::from_secs(60),
            &shown,
        )
        .unwrap_err();
        assert_eq!(refusal.code, RefusalCode::UnknownColumn);
        assert!(
            refusal.message.ends_with("use one of: id, title"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn a_key_naming_another_column_is_answered_alike_whether_it_exists_or_not() {
        let message = |key: serde_json::Value| check(json!({"key": key})).unwrap_err().message;
        assert_eq!(
            message(json!({"id": "k", "title": "x"})),
            "title is not part of the primary key of \"public\".\"notes\"; the key names id"
        );
        assert_eq!(
            message(json!({"id": "k", "nope": "x"})),
            "nope is not part of the primary key of \"public\".\"notes\"; the key names id"
        );
    }

    #[test]
    fn keys_must_name_the_primary_key_and_agree_with_values() {
        let id = Some("id".to_owned());
        assert_eq!(
            code(json!({"key": {}})),
            (RefusalCode::InvalidValue, id.clone())
        );
        assert_eq!(
            code(json!({"key": {"id": null}})),
            (RefusalCode::InvalidValue, id.clone())
        );
        assert_eq!(
            code(json!({"key": {"id": "k", "title": "x"}})).0,
            RefusalCode::InvalidValue
        );
        assert_eq!(
            code(json!({"op": "insert", "values": {"id": "other"}})),
            (RefusalCode::InvalidValue, id)
        );
        assert_eq!(
            code(json!({"op": "delete", "values": {"title": "x"}})).0,
            RefusalCode::InvalidValue
        );
    }

    #[test]
    fn timestamps_must_parse_and_are_clamped() {
        assert_eq!(
            code(json!({"timestamp": "soon"})).0,
            RefusalCode::BadTimestamp
        );
        let valid = check(json!({"timestamp": "2100-01-01T00:00:00Z"})).unwrap();
        assert_eq!(valid.clamped_to, Some(60_000_000));
        assert_eq!(valid.clock.micros, 60_000_000);
    }

    #[test]
    fn json_values_become_postgres_text() {
        assert_eq!(value_text(&json!(null)), None);
        assert_eq!(value_text(&json!(true)).as_deref(), Some("true"));
        assert_eq!(value_text(&json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(value_text(&json!("x")).as_deref(), Some("x"));
        assert_eq!(value_text(&json!({"a": 1})).as_deref(), Some(r#"{"a":1}"#));
    }
}
