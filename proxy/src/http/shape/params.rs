//! The query parameters of `/v1/shape`, validated into a [`ShapeParams`] or the Electric
//! error shape naming each bad parameter.

use std::collections::BTreeMap;

use shapes::definition::{LogMode, MoveMode, ReplicaMode};
use shapes::handle::Handle;
use shapes::offset::Offset;
use shapes::request::ShapeRequest;
use shapes::table_name::{parse_table_name, reserved_table};

use crate::http::error::ApiError;

/// Longest `where` accepted, in bytes.
pub const MAX_WHERE_BYTES: usize = 4 * 1024;
/// Most placeholders accepted.
pub const MAX_PARAMS: usize = 256;

/// Where a request starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOffset {
    /// `now`: skip the snapshot and the log; start at the end.
    Now,
    At(Offset),
}

/// A validated `/v1/shape` request.
#[derive(Debug, Clone)]
pub struct ShapeParams {
    pub shape: ShapeRequest,
    pub offset: RequestOffset,
    pub handle: Option<Handle>,
    pub live: bool,
    pub sse: bool,
    pub cursor: Option<u64>,
    /// `subset__*` parameters, when present.
    pub subset: BTreeMap<String, String>,
}

impl ShapeParams {
    pub fn is_initial(&self) -> bool {
        matches!(
            self.offset,
            RequestOffset::Now | RequestOffset::At(Offset::BeforeAll)
        )
    }
}

/// Why a value holding `\0` is refused.
pub const NUL_MESSAGE: &str = "must not contain the NUL character (Postgres text cannot hold it)";

/// Parses a query string (unknown parameters are ignored: clients add cache busters).
pub fn parse(query: &str) -> Result<ShapeParams, ApiError> {
    let mut raw: BTreeMap<String, String> = BTreeMap::new();
    let mut params = BTreeMap::new();
    let mut subset = BTreeMap::new();
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut fail = |param: &str, message: String| {
        errors.entry(param.to_owned()).or_default().push(message);
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        // Postgres text cannot hold NUL: such a `where` or parameter would fail in the
        // snapshot query instead of here (the table name's own parser says it for `table`).
        if value.contains('\0') && key != "table" {
            let param = if key.starts_with("params[") {
                "params"
            } else {
                key.as_ref()
            };
            fail(param, NUL_MESSAGE.to_owned());
            continue;
        }
        if let Some(index) = key
            .strip_prefix("params[")
            .and_then(|k| k.strip_suffix(']'))
        {
            match index.parse::<usize>() {
                Ok(n) if n >= 1 => {
                    params.insert(n, value.into_owned());
                }
                _ => fail(
                    "params",
                    format!("params[{index}]: placeholders are numbered from 1"),
                ),
            }
        } else if let Some(name) = key.strip_prefix("subset__") {
            subset.insert(name.to_owned(), value.into_owned());
        } else {
            raw.insert(key.into_owned(), value.into_owned());
        }
    }
    if let Some(json) = raw.get("params") {
        match serde_json::from_str::<BTreeMap<String, String>>(json) {
            Ok(map) => {
                for (k, v) in map {
                    match k.parse::<usize>() {
                        Ok(n) if n >= 1 => {
                            params.insert(n, v);
                        }
                        _ => fail(
                            "params",
                            format!("\"{k}\": placeholders are numbered from 1"),
                        ),
                    }
                }
            }
            Err(_) => fail(
                "params",
                "must be params[1]=…&params[2]=… or a JSON object of strings".into(),
            ),
        }
    }
    if params.len() > MAX_PARAMS {
        fail("params", format!("at most {MAX_PARAMS} placeholders"));
    }

    let table = match raw.get("table").map(String::as_str) {
        None | Some("") => {
            fail("table", "can't be blank".into());
            None
        }
        Some(text) => match parse_table_name(text) {
            // Refused here, before any SQL: not even the catalog is read for these.
            Ok(name) => match reserved_table(&name) {
                Some(reserved) => {
                    fail("table", reserved.to_string());
                    None
                }
                None => Some(name),
            },
            Err(e) => {
                fail(
                    "table",
                    format!(
                        "{e}. Use `name`, `schema.name`, or quoted identifiers such as \"My Table\""
                    ),
                );
                None
            }
        },
    };
    let offset = match raw.get("offset").map(String::as_str) {
        None | Some("") => {
            fail("offset", "can't be blank".into());
            None
        }
        Some("now") => Some(RequestOffset::Now),
        Some(text) => match text.parse::<Offset>() {
            Ok(offset) => Some(RequestOffset::At(offset)),
            Err(e) => {
                fail("offset", e.to_string());
                None
            }
        },
    };
    let handle = match raw.get("handle").map(String::as_str) {
        None | Some("") => None,
        Some(text) => match text.parse::<Handle>() {
            Ok(h) => Some(h),
            Err(e) => {
                fail("handle", e.to_string());
                None
            }
        },
    };
    let live = raw.get("live").is_some_and(|v| v != "false");
    let sse = ["live_sse", "experimental_live_sse"]
        .iter()
        .any(|k| raw.get(*k).is_some_and(|v| v != "false"));
    let initial = matches!(
        offset,
        Some(RequestOffset::Now) | Some(RequestOffset::At(Offset::BeforeAll))
    );
    if offset.is_some() && !initial && handle.is_none() && !raw.contains_key("handle") {
        fail("handle", "can't be blank when offset != -1".into());
    }
    if live && matches!(offset, Some(RequestOffset::At(Offset::BeforeAll))) {
        fail("live", "can't be true when offset == -1".into());
    }
    if live && matches!(offset, Some(RequestOffset::Now)) {
        fail("live", "can't be true when offset is 'now'".into());
    }
    if sse && !live {
        fail("live_sse", "can't be true unless live is also true".into());
    }
    let replica = match raw.get("replica").map(String::as_str) {
        None | Some("default") => ReplicaMode::Default,
        Some("full") => ReplicaMode::Full,
        Some(other) => {
            fail(
                "replica",
                format!(
                    "Invalid value for replica: {other:?}. Expecting one of `full` or `default`"
                ),
            );
            ReplicaMode::Default
        }
    };
    let log = match raw.get("log").map(String::as_str) {
        None | Some("full") => LogMode::Full,
        Some("changes_only") => LogMode::ChangesOnly,
        Some(other) => {
            fail(
                "log",
                format!(
                    "Invalid value for log: {other:?}. Expecting one of `full` or `changes_only`"
                ),
            );
            LogMode::Full
        }
    };
    let moves = match raw.get("moves").map(String::as_str) {
        None | Some("rows") => MoveMode::Rows,
        Some("events") => MoveMode::Events,
        Some(other) => {
            fail(
                "moves",
                format!(
                    "Invalid value for moves: {other:?}. Expecting one of `rows` (moved rows as inserts and deletes) or `events` (Electric's move-in/move-out events)"
                ),
            );
            MoveMode::Rows
        }
    };
    let where_ = raw.get("where").filter(|w| !w.trim().is_empty()).cloned();
    if where_.as_ref().is_some_and(|w| w.len() > MAX_WHERE_BYTES) {
        fail("where", format!("is longer than {MAX_WHERE_BYTES} bytes"));
    }
    let columns = raw.get("columns").filter(|c| !c.trim().is_empty()).cloned();
    let cursor = raw.get("cursor").and_then(|c| c.parse().ok());

    match (table, offset, errors.is_empty()) {
        (Some(table), Some(offset), true) => Ok(ShapeParams {
            shape: ShapeRequest {
                table,
                where_,
                params,
                columns,
                replica,
                log,
                moves,
                filter: None,
                inner_filters: Vec::new(),
            },
            offset,
            handle,
            live,
            sse,
            cursor,
            subset,
        }),
        _ => Err(ApiError::Invalid(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shapes::schema::QualifiedName;

    fn errors(query: &str) -> BTreeMap<String, Vec<String>> {
        match parse(query) {
            Err(ApiError::Invalid(errors)) => errors,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_first_request_needs_only_table_and_offset() {
        let p = parse("table=items&offset=-1&cache-buster=x").unwrap();
        assert_eq!(p.shape.table, QualifiedName::new("public", "items"));
        assert_eq!(p.offset, RequestOffset::At(Offset::BeforeAll));
        assert!(!p.live && !p.sse);
    }

    #[test]
    fn later_requests_need_a_handle_and_live_rules_hold() {
        assert_eq!(
            errors("table=t&offset=0_0")["handle"],
            ["can't be blank when offset != -1"]
        );
        assert_eq!(
            errors("table=t&offset=-1&live=true")["live"],
            ["can't be true when offset == -1"]
        );
        assert_eq!(
            errors("table=t&offset=0_0&handle=h&live_sse=true")["live_sse"],
            ["can't be true unless live is also true"]
        );
        let p = parse("table=t&offset=5_2&handle=h&live=1&experimental_live_sse=true").unwrap();
        assert!(p.live && p.sse);
        assert!(
            !parse("table=t&offset=5_2&handle=h&live=false")
                .unwrap()
                .live
        );
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let e = errors("offset=abc&replica=half&log=some&params[0]=x");
        assert_eq!(e["table"], ["can't be blank"]);
        assert_eq!(e["offset"], ["has invalid format"]);
        assert!(e["replica"][0].contains("half"));
        assert!(e["log"][0].contains("some"));
        assert!(e["params"][0].contains("numbered from 1"));
    }

    #[test]
    fn params_come_as_indexed_keys_or_json() {
        let p = parse("table=t&offset=-1&where=a%3D%241&params%5B1%5D=x%20y").unwrap();
        assert_eq!(p.shape.where_.as_deref(), Some("a=$1"));
        assert_eq!(p.shape.params[&1], "x y");
        let p = parse("table=t&offset=-1&params=%7B%221%22%3A%22z%22%7D").unwrap();
        assert_eq!(p.shape.params[&1], "z");
    }

    #[test]
    fn quoted_and_qualified_tables_keep_their_case() {
        let p = parse("table=%22My%20Schema%22.%22Items%22&offset=-1").unwrap();
        assert_eq!(p.shape.table, QualifiedName::new("My Schema", "Items"));
        let p = parse("table=Items&offset=now").unwrap();
        assert_eq!(p.shape.table.name, "items");
        assert_eq!(p.offset, RequestOffset::Now);
    }
}
