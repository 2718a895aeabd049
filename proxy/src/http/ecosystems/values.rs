//! Column values as the documents of other client databases hold them. Shapes send every
//! value as Postgres' text output; RxDB and WatermelonDB documents are typed JSON, so the
//! protocols of `http::ecosystems` convert by column type, in both directions.

use std::io::Write as _;

use serde::de::IgnoredAny;
use serde_json::{Map, Number, Value};
use shapes::schema::{Column, PgType, TypeKind};
use shapes::wire::write_json_str;

use super::changes::RowValues;

/// How JSON columns appear in documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonColumns {
    /// As the JSON value (RxDB: the schema can declare objects and arrays).
    Parsed,
    /// As their text (WatermelonDB has no JSON type: apps store JSON in string columns).
    Text,
}

/// What a value of `column` becomes in a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Boolean,
    Integer,
    Float,
    Json,
    Text,
}

fn kind(column: &Column) -> Kind {
    if column.dims > 0 {
        return Kind::Text;
    }
    kind_of(&column.ty)
}

fn kind_of(ty: &PgType) -> Kind {
    match &ty.kind {
        TypeKind::Domain { base } => kind_of(base),
        TypeKind::Base => match ty.name.as_str() {
            "bool" => Kind::Boolean,
            "int2" | "int4" | "int8" | "oid" => Kind::Integer,
            "float4" | "float8" | "numeric" => Kind::Float,
            "json" | "jsonb" => Kind::Json,
            _ => Kind::Text,
        },
        TypeKind::Enum { .. } | TypeKind::Array { .. } | TypeKind::Other => Kind::Text,
    }
}

/// The document value of a column's text (`None`: SQL NULL). A value the type's text form
/// does not parse as (never from Postgres) stays a string.
pub fn to_document(column: &Column, text: Option<&str>, json: JsonColumns) -> Value {
    let Some(text) = text else {
        return Value::Null;
    };
    typed(column, text, json).unwrap_or_else(|| Value::String(text.to_owned()))
}

/// The typed document value of a column's text; `None`: it stays the text.
fn typed(column: &Column, text: &str, json: JsonColumns) -> Option<Value> {
    match kind(column) {
        Kind::Boolean => match text {
            "t" | "true" => Some(Value::Bool(true)),
            "f" | "false" => Some(Value::Bool(false)),
            _ => None,
        },
        Kind::Integer => text.parse::<i64>().ok().map(Value::from),
        // NaN and the infinities have no JSON number: they stay strings.
        Kind::Float => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number),
        Kind::Json if json == JsonColumns::Parsed => serde_json::from_str(text).ok(),
        Kind::Json | Kind::Text => None,
    }
}

/// A document's value for a column as `POST /v1/mutations` takes it: JSON columns of parsed
/// documents go back as their JSON text (a JSON string value included, which the write path
/// would otherwise take as the text to parse); everything else as it is.
pub fn from_document(column: &Column, value: &Value, json: JsonColumns) -> Value {
    match (kind(column), json, value) {
        (_, _, Value::Null) => Value::Null,
        (Kind::Json, JsonColumns::Parsed, value) => Value::String(value.to_string()),
        (_, _, value) => value.clone(),
    }
}

/// A row (column → text or null, as shapes and the write path give it) as a document of the
/// columns `columns` (names missing from the row are left out).
pub fn document(
    columns: &[Column],
    row: &Map<String, Value>,
    json: JsonColumns,
) -> Map<String, Value> {
    columns
        .iter()
        .filter_map(|column| {
            let value = row.get(&column.name)?;
            Some((
                column.name.clone(),
                to_document(column, value.as_str(), json),
            ))
        })
        .collect()
}

/// A row's column texts, as documents are written from them.
pub trait RowTexts {
    /// The text of `column`: `None` when the row lacks it, `Some(None)` for NULL.
    fn text(&self, column: &str) -> Option<Option<&str>>;
}

impl RowTexts for Map<String, Value> {
    fn text(&self, column: &str) -> Option<Option<&str>> {
        self.get(column).map(Value::as_str)
    }
}

impl RowTexts for RowValues<'_> {
    fn text(&self, column: &str) -> Option<Option<&str>> {
        self.get(column)
    }
}

/// Writes documents of one set of columns: each column's `"name":` and kind are worked out
/// once, not once per row.
pub struct DocumentWriter<'c> {
    columns: Vec<(&'c Column, Vec<u8>, Kind)>,
    json: JsonColumns,
}

impl<'c> DocumentWriter<'c> {
    pub fn new(columns: &'c [Column], json: JsonColumns) -> Self {
        let columns = columns
            .iter()
            .map(|column| {
                let mut name = Vec::with_capacity(column.name.len() + 3);
                write_json_str(&mut name, &column.name);
                name.push(b':');
                (column, name, kind(column))
            })
            .collect();
        Self { columns, json }
    }

    /// Appends `row` as the JSON object [`document`] makes of it, written straight from the
    /// texts (a pull sends one per row: no `Value` tree is built, serialized and dropped for
    /// it), then `"_deleted": <deleted>` when given. Members come in column order.
    pub fn write(&self, out: &mut Vec<u8>, row: &impl RowTexts, deleted: Option<bool>) {
        out.push(b'{');
        let mut first = true;
        for (column, name, kind) in &self.columns {
            let Some(value) = row.text(&column.name) else {
                continue;
            };
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(name);
            match value {
                None => out.extend_from_slice(b"null"),
                Some(text) => write_typed(out, column, *kind, text, self.json),
            }
        }
        if let Some(deleted) = deleted {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(if deleted {
                b"\"_deleted\":true"
            } else {
                b"\"_deleted\":false"
            });
        }
        out.push(b'}');
    }
}

/// One column's text, typed as [`to_document`] types it.
fn write_typed(out: &mut Vec<u8>, column: &Column, kind: Kind, text: &str, json: JsonColumns) {
    match kind {
        Kind::Boolean if matches!(text, "t" | "true") => out.extend_from_slice(b"true"),
        Kind::Boolean if matches!(text, "f" | "false") => out.extend_from_slice(b"false"),
        Kind::Integer => match text.parse::<i64>() {
            Ok(n) => {
                // Into the buffer: no `String` per value.
                let _ = write!(out, "{n}");
            }
            Err(_) => write_json_str(out, text),
        },
        Kind::Text => write_json_str(out, text),
        Kind::Json if json == JsonColumns::Text => write_json_str(out, text),
        // Postgres' JSON text as it is, once known to be JSON (no tree built and written).
        Kind::Json if serde_json::from_str::<IgnoredAny>(text).is_ok() => {
            out.extend_from_slice(text.as_bytes());
        }
        Kind::Boolean | Kind::Float | Kind::Json => match typed(column, text, json) {
            // Numbers and parsed JSON: written as the `Value` path writes them.
            Some(value) => {
                let _ = serde_json::to_writer(&mut *out, &value);
            }
            None => write_json_str(out, text),
        },
    }
}

/// Equality of document values as a JavaScript client sees them: numbers by value (`1` and
/// `1.0` are one number), objects by their members whatever their order.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    /// `into_document` is `document` of a row it may take apart: the same document for
    /// every kind of column, value (text, typed, unparsable, NULL, not a string) and a
    /// column the row lacks, in both JSON modes.
    fn column(ty: &str, dims: u32) -> Column {
        Column {
            name: "c".into(),
            ty: PgType {
                oid: 0,
                name: ty.into(),
                kind: TypeKind::Base,
            },
            type_mod: -1,
            dims,
            not_null: false,
            pk_index: None,
            generated: false,
        }
    }

    #[rstest]
    #[case::boolean_true("bool", "t", json!(true))]
    #[case::boolean_false("bool", "f", json!(false))]
    #[case::int4("int4", "-42", json!(-42))]
    #[case::int8("int8", "9007199254740993", json!(9_007_199_254_740_993_i64))]
    #[case::float("float8", "1.5", json!(1.5))]
    #[case::numeric("numeric", "10.25", json!(10.25))]
    #[case::nan_stays_text("float8", "NaN", json!("NaN"))]
    #[case::infinity_stays_text("float4", "Infinity", json!("Infinity"))]
    #[case::jsonb_parsed("jsonb", r#"{"a":[1,2]}"#, json!({"a":[1,2]}))]
    #[case::text("text", "hello", json!("hello"))]
    #[case::timestamptz("timestamptz", "2026-01-01 10:00:00+00", json!("2026-01-01 10:00:00+00"))]
    #[case::uuid("uuid", "6f1c0e8e-0000-4000-8000-000000000000", json!("6f1c0e8e-0000-4000-8000-000000000000"))]
    fn text_becomes_typed_json(#[case] ty: &str, #[case] text: &str, #[case] expected: Value) {
        assert_eq!(
            to_document(&column(ty, 0), Some(text), JsonColumns::Parsed),
            expected
        );
    }

    #[test]
    fn nulls_arrays_and_watermelon_json_columns() {
        assert_eq!(
            to_document(&column("int4", 0), None, JsonColumns::Parsed),
            Value::Null
        );
        assert_eq!(
            to_document(&column("int4", 1), Some("{1,2}"), JsonColumns::Parsed),
            json!("{1,2}")
        );
        assert_eq!(
            to_document(&column("jsonb", 0), Some(r#"{"a": 1}"#), JsonColumns::Text),
            json!(r#"{"a": 1}"#)
        );
    }

    #[test]
    fn documents_go_back_in_the_form_the_write_path_takes() {
        let jsonb = column("jsonb", 0);
        assert_eq!(
            from_document(&jsonb, &json!("a string"), JsonColumns::Parsed),
            json!("\"a string\"")
        );
        assert_eq!(
            from_document(&jsonb, &json!({"a": 1}), JsonColumns::Parsed),
            json!(r#"{"a":1}"#)
        );
        assert_eq!(
            from_document(&jsonb, &json!("{\"a\":1}"), JsonColumns::Text),
            json!("{\"a\":1}")
        );
        assert_eq!(
            from_document(&column("int4", 0), &json!(7), JsonColumns::Parsed),
            json!(7)
        );
        assert_eq!(
            from_document(&jsonb, &Value::Null, JsonColumns::Parsed),
            Value::Null
        );
    }

    #[test]
    fn written_documents_are_the_documents_of_the_value_path() {
        let columns: Vec<Column> = [
            ("b", "bool"),
            ("i", "int8"),
            ("f", "float8"),
            ("n", "numeric"),
            ("j", "jsonb"),
            ("t", "text"),
        ]
        .iter()
        .map(|(name, ty)| Column {
            name: (*name).into(),
            ..column(ty, 0)
        })
        .collect();
        let rows = [
            json!({"b": "t", "i": "-9007199254740993", "f": "1e+20", "n": "10.25",
                   "j": "{\"a\": [1, {\"b\": null}]}", "t": "quote \" and \\ and \u{1}"}),
            json!({"b": "f", "i": null, "f": "NaN", "n": "-0", "j": "\"s\"", "t": ""}),
            json!({"b": null, "f": "-Infinity", "j": "{not json", "t": "ünïcødé ✓"}),
            json!({}),
        ];
        for json in [JsonColumns::Parsed, JsonColumns::Text] {
            for row in &rows {
                let row = row.as_object().unwrap();
                for deleted in [None, Some(true), Some(false)] {
                    let mut out = Vec::new();
                    DocumentWriter::new(&columns, json).write(&mut out, row, deleted);
                    let written: Value = serde_json::from_slice(&out).unwrap();
                    let mut expected = document(&columns, row, json);
                    if let Some(deleted) = deleted {
                        expected.insert("_deleted".into(), Value::Bool(deleted));
                    }
                    assert_eq!(
                        written,
                        Value::Object(expected),
                        "{}",
                        String::from_utf8_lossy(&out)
                    );
                }
            }
        }
    }

    #[test]
    fn values_compare_as_javascript_sees_them() {
        assert!(same_value(&json!(1), &json!(1.0)));
        assert!(same_value(
            &json!({"a": 1, "b": [2]}),
            &json!({"b": [2.0], "a": 1})
        ));
        assert!(!same_value(&json!("1"), &json!(1)));
        assert!(!same_value(&json!({"a": 1}), &json!({"a": 1, "b": null})));
    }
}
