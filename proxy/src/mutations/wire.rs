//! The JSON of `POST /v1/mutations` as the proxy reads it: the types are the ones the client
//! shares ([`shapes::mutations`]); here the body is parsed strictly, naming the field that is
//! wrong (see proxy/PROTOCOL.md, "Writes").

use serde_json::Value;

pub use shapes::mutations::{
    Mutation, MutationRequest, MutationResponse, MutationResult, Op, Outcome, Refusal, RefusalCode,
    RowJson,
};

/// A request that is not a valid batch: answered 400 with the field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRequest {
    /// Where in the body: `body`, `mutations[2].valuez`, `client_id`, ….
    pub field: String,
    pub message: String,
}

/// Parses a request body, naming the offending field (with the mutation's index) on error.
pub fn parse_request(body: &[u8]) -> Result<MutationRequest, InvalidRequest> {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    let request: MutationRequest =
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let field = match path.as_str() {
                "." | "" => "body".to_owned(),
                path => path.to_owned(),
            };
            let message = match inner.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    format!("not valid JSON: {inner}")
                }
                _ => inner.to_string(),
            };
            InvalidRequest { field, message }
        })?;
    if request.client_id.trim().is_empty() {
        return Err(InvalidRequest {
            field: "client_id".to_owned(),
            message: "must not be empty".to_owned(),
        });
    }
    if let Some(i) = request.mutations.iter().position(|m| m.id.is_empty()) {
        return Err(InvalidRequest {
            field: format!("mutations[{i}].id"),
            message: "must not be empty".to_owned(),
        });
    }
    if let Some(field) = field_with_nul(&request) {
        return Err(InvalidRequest {
            field,
            message: "must not contain the NUL character (Postgres text cannot hold it)".to_owned(),
        });
    }
    Ok(request)
}

/// The first field holding a NUL character (`\u0000`), in a name or a value: no Postgres
/// text, name or jsonb can hold one, and results (which echo names) are recorded as jsonb.
fn field_with_nul(request: &MutationRequest) -> Option<String> {
    fn in_value(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(in_value),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || in_value(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    if request.client_id.contains('\0') {
        return Some("client_id".to_owned());
    }
    request.mutations.iter().enumerate().find_map(|(i, m)| {
        let maps = [("key", &m.key), ("values", &m.values), ("merge", &m.merge)];
        let texts = [
            ("id", &m.id),
            ("table", &m.table),
            ("timestamp", &m.timestamp),
        ];
        texts
            .iter()
            .find(|(_, text)| text.contains('\0'))
            .map(|(name, _)| (*name).to_owned())
            .or_else(|| {
                maps.iter().find_map(|(name, map)| {
                    map.iter()
                        .find(|(k, v)| k.contains('\0') || in_value(v))
                        .map(|(k, _)| format!("{name}.{}", k.replace('\0', "\\u0000")))
                })
            })
            .map(|field| format!("mutations[{i}].{field}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn parses_a_batch_with_defaults() {
        let request = parse_request(&body(json!({
            "client_id": "d1",
            "mutations": [{"id": "m1", "table": "todos", "op": "upsert", "key": {"id": "1"},
                           "values": {"title": "x"}, "timestamp": "2026-01-01T00:00:00Z"}]
        })))
        .unwrap();
        assert!(!request.atomic);
        assert_eq!(request.mutations[0].op, Op::Upsert);
        assert!(request.mutations[0].merge.is_empty());
    }

    #[test]
    fn unknown_fields_are_named_with_the_mutation_index() {
        let err = parse_request(&body(json!({
            "client_id": "d1",
            "mutations": [
                {"id": "m1", "table": "t", "op": "delete", "key": {"id": "1"}, "timestamp": "x"},
                {"id": "m2", "table": "t", "op": "delete", "key": {"id": "1"}, "timestamp": "x",
                 "valuez": {}}]
        })))
        .unwrap_err();
        assert_eq!(err.field, "mutations[1].valuez");
        assert!(err.message.contains("unknown field `valuez`"), "{err}");
        let err = parse_request(&body(
            json!({"client_id": "d", "mutations": [], "atomik": true}),
        ))
        .unwrap_err();
        assert_eq!(err.field, "atomik");
    }

    #[test]
    fn malformed_json_and_bad_ops_are_invalid_requests() {
        let err = parse_request(b"{\"client_id\": ").unwrap_err();
        assert!(err.message.starts_with("not valid JSON"), "{err}");
        let err = parse_request(&body(json!({"client_id": "d", "mutations": [
            {"id": "m", "table": "t", "op": "merge", "key": {}, "timestamp": "x"}]})))
        .unwrap_err();
        assert_eq!(err.field, "mutations[0].op");
        let err = parse_request(&body(json!({"client_id": " ", "mutations": []}))).unwrap_err();
        assert_eq!(err.field, "client_id");
    }

    #[test]
    fn outcomes_serialize_with_a_status_tag() {
        let result = MutationResult {
            id: "m".into(),
            outcome: Outcome::rejected(RefusalCode::InvalidValue, Some("id"), "bad"),
        };
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            json!({"id": "m", "status": "rejected",
                   "error": {"code": "invalid_value", "column": "id", "message": "bad"}})
        );
        let aborted = serde_json::to_value(MutationResult {
            id: "m".into(),
            outcome: Outcome::Aborted,
        })
        .unwrap();
        assert_eq!(aborted, json!({"id": "m", "status": "aborted"}));
        let conflict = Outcome::Conflict {
            lost: vec!["title".into()],
            row: None,
            clamped_to: None,
        };
        let text = serde_json::to_string(&conflict).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), conflict);
    }
}
