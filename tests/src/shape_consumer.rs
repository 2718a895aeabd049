//! A reference consumer of `GET /v1/shape`, written from proxy/PROTOCOL.md alone, that checks
//! every
//! response against the protocol while it mirrors the shape.
//!
//! It applies messages exactly as the protocol says: `insert`/`update`/`delete` keyed by
//! `key`, and on a 409 (`must-refetch`) it forgets everything and starts again from `-1` with
//! the new handle. It goes live (long-poll) after its first up-to-date. Unlike a forgiving
//! client it does not treat an insert as an upsert: with a correct server every change follows
//! from the previous state, so each of these is recorded as a *violation*:
//! - an insert of a key the mirror holds, an update or delete of a key it does not hold;
//! - with `replica=full`, an `old_value` (update) or a `value` (delete) that differs from the
//!   mirrored row;
//! - a log change without `txids`, `lsn` or `op_position`, or whose `(lsn, op_position)` is not
//!   above every change delivered before on this handle (so a resumed client never sees a
//!   change twice);
//! - a response offset below the request's, not above it although changes came, or not the
//!   offset of the last change it carried; a missing handle, offset, schema or cursor header;
//! - a log change of a transaction the shape's snapshot already holds (its txid is visible in
//!   the `snapshot-end` xmin/xmax/xip_list);
//! - a key that is not the one the row's primary key makes;
//! - a 400 or a 500.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};
use shapes::offset::Offset;
use shapes::schema::QualifiedName;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Which shape to follow.
#[derive(Debug, Clone)]
pub struct ShapeSpec {
    pub table: String,
    pub where_: Option<String>,
    pub params: Vec<String>,
    pub columns: Option<String>,
    pub replica_full: bool,
    pub changes_only: bool,
    /// The primary-key columns, in key order (to check message keys).
    pub key_columns: Vec<String>,
}

impl ShapeSpec {
    /// A whole table keyed by `key_columns`.
    pub fn table(table: &str, key_columns: &[&str]) -> Self {
        Self {
            table: table.to_owned(),
            where_: None,
            params: Vec::new(),
            columns: None,
            replica_full: false,
            changes_only: false,
            key_columns: key_columns.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    pub fn filter(mut self, where_: &str, params: &[&str]) -> Self {
        self.where_ = Some(where_.to_owned());
        self.params = params.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    pub fn columns(mut self, columns: &str) -> Self {
        self.columns = Some(columns.to_owned());
        self
    }

    pub fn replica_full(mut self) -> Self {
        self.replica_full = true;
        self
    }

    pub fn changes_only(mut self) -> Self {
        self.changes_only = true;
        self
    }

    /// The shape's definition as query parameters.
    pub fn query(&self) -> Vec<(String, String)> {
        let mut query = vec![("table".to_owned(), self.table.clone())];
        if let Some(w) = &self.where_ {
            query.push(("where".into(), w.clone()));
        }
        for (i, p) in self.params.iter().enumerate() {
            query.push((format!("params[{}]", i + 1), p.clone()));
        }
        if let Some(c) = &self.columns {
            query.push(("columns".into(), c.clone()));
        }
        if self.replica_full {
            query.push(("replica".into(), "full".into()));
        }
        if self.changes_only {
            query.push(("log".into(), "changes_only".into()));
        }
        query
    }

    fn message_key(&self, row: &Map<String, Value>) -> Option<String> {
        let name = QualifiedName::new("public", self.table.clone());
        let mut values = Vec::new();
        for column in &self.key_columns {
            match row.get(column)? {
                Value::Null => values.push(None),
                Value::String(s) => values.push(Some(s.as_str())),
                _ => return None,
            }
        }
        Some(shapes::wire::message_key(&name, values))
    }
}

/// One response, as the consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub handle: String,
    pub request_offset: String,
    pub response_offset: String,
    pub live: bool,
    pub messages: usize,
}

/// What a consumer holds and has seen.
#[derive(Debug, Clone, Default)]
pub struct ConsumerState {
    pub handle: Option<String>,
    pub offset: Option<String>,
    pub cursor: Option<String>,
    /// key → row (column → text value or null).
    pub rows: BTreeMap<String, Map<String, Value>>,
    /// An up-to-date arrived since the last refetch.
    pub up_to_date: bool,
    /// `global_last_seen_lsn` of the latest up-to-date.
    pub global_last_seen: u64,
    pub violations: Vec<String>,
    pub refetches: usize,
    /// 503s, 5xx and connection errors (retried).
    pub retries: usize,
    /// Log changes applied.
    pub changes: usize,
    /// Every 200 response, in order.
    pub exchanges: Vec<Exchange>,
    /// `snapshot-end`'s `(xmin, xmax, xip_list)`.
    pub snapshot: Option<(u64, u64, Vec<u64>)>,
    last_change: Option<(u64, u64)>,
}

impl ConsumerState {
    fn reset(&mut self, handle: Option<String>) {
        self.handle = handle;
        self.offset = None;
        self.rows.clear();
        self.up_to_date = false;
        self.last_change = None;
        self.snapshot = None;
        self.refetches += 1;
    }
}

/// How a consumer behaves.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Go live (long-poll) after the first up-to-date; otherwise stop there.
    pub live: bool,
    /// Pause between requests that returned data (0: none).
    pub pause: Duration,
    pub secret: Option<String>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            live: true,
            pause: Duration::ZERO,
            secret: None,
        }
    }
}

/// What one request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A 200 was applied.
    Applied {
        up_to_date: bool,
    },
    Refetch,
    /// Transient trouble (connection refused, 503); try again.
    Retry,
    /// A 400 or other definite error: stop.
    Failed,
}

/// A shape consumer over HTTP.
#[derive(Clone)]
pub struct ShapeConsumer {
    http: reqwest::Client,
    url: String,
    pub spec: ShapeSpec,
    options: ConsumerOptions,
    state: Arc<Mutex<ConsumerState>>,
}

impl ShapeConsumer {
    pub fn new(base_url: &str, spec: ShapeSpec, options: ConsumerOptions) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .expect("http client");
        Self {
            http,
            url: format!("{base_url}/v1/shape"),
            spec,
            options,
            state: Arc::new(Mutex::new(ConsumerState::default())),
        }
    }

    /// A copy of the state (rows, violations, …).
    pub fn state(&self) -> ConsumerState {
        self.lock().clone()
    }

    /// `f` of the state, without copying it (cheap enough to poll while rows pour in).
    pub fn with_state<R>(&self, f: impl FnOnce(&ConsumerState) -> R) -> R {
        f(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, ConsumerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests until `stop` is cancelled or a definite error; retries transient trouble.
    pub fn spawn(&self, stop: CancellationToken) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let step = tokio::select! {
                    () = stop.cancelled() => return,
                    step = this.step() => step,
                };
                match step {
                    Step::Failed => return,
                    Step::Applied { up_to_date: true } if !this.options.live => return,
                    Step::Retry => tokio::time::sleep(Duration::from_millis(100)).await,
                    Step::Applied { .. } | Step::Refetch => {
                        if !this.options.pause.is_zero() {
                            tokio::time::sleep(this.options.pause).await;
                        }
                    }
                }
            }
        })
    }

    /// Reads until the first up-to-date (or a definite error).
    pub async fn catch_up(&self) {
        loop {
            match self.step().await {
                Step::Applied { up_to_date: true } | Step::Failed => return,
                Step::Retry => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => {}
            }
        }
    }

    /// One request, and what came of it.
    pub async fn step(&self) -> Step {
        let (handle, offset, live, cursor) = {
            let state = self.lock();
            let live = self.options.live && state.up_to_date;
            (
                state.handle.clone(),
                state.offset.clone(),
                live,
                state.cursor.clone(),
            )
        };
        let request_offset = match (&handle, &offset) {
            (Some(_), Some(offset)) => offset.clone(),
            _ => "-1".to_owned(),
        };
        let mut query = self.spec.query();
        query.push(("offset".into(), request_offset.clone()));
        if request_offset != "-1"
            && let Some(h) = &handle
        {
            query.push(("handle".into(), h.clone()));
        }
        if live {
            query.push(("live".into(), "true".into()));
            query.push(("cursor".into(), cursor.unwrap_or_default()));
        }
        if let Some(secret) = &self.options.secret {
            query.push(("secret".into(), secret.clone()));
        }
        let url = reqwest::Url::parse_with_params(&self.url, &query).expect("shape URL");
        let response = match self.http.get(url).send().await {
            Ok(r) => r,
            Err(_) => {
                self.lock().retries += 1;
                return Step::Retry;
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let text = match response.text().await {
            Ok(t) => t,
            Err(_) => {
                self.lock().retries += 1;
                return Step::Retry;
            }
        };
        let mut state = self.lock();
        match status {
            200 => {}
            409 => {
                // With the handle to use, or (the shape went away under a live request and
                // nothing replaces it yet, as Electric answers too) without: from -1 then.
                state.reset(header("electric-handle"));
                return Step::Refetch;
            }
            503 => {
                state.retries += 1;
                return Step::Retry;
            }
            _ => {
                state
                    .violations
                    .push(format!("{status} for offset {request_offset}: {text}"));
                return if status == 400 {
                    Step::Failed
                } else {
                    state.retries += 1;
                    Step::Retry
                };
            }
        }
        let (Some(response_handle), Some(response_offset)) =
            (header("electric-handle"), header("electric-offset"))
        else {
            state
                .violations
                .push("200 without electric-handle or electric-offset".into());
            return Step::Failed;
        };
        if live && header("electric-cursor").is_none() {
            state
                .violations
                .push("live 200 without electric-cursor".into());
        }
        if !live && header("electric-schema").is_none() {
            state.violations.push("200 without electric-schema".into());
        }
        if let Some(h) = &handle
            && *h != response_handle
        {
            state.violations.push(format!(
                "asked handle {h}, got a 200 for {response_handle} (expected a 409)"
            ));
        }
        let messages: Vec<Value> = if text.is_empty() {
            Vec::new()
        } else {
            match serde_json::from_str(&text) {
                Ok(Value::Array(m)) => m,
                _ => {
                    state
                        .violations
                        .push(format!("body is not a JSON array: {text:.200}"));
                    return Step::Failed;
                }
            }
        };
        state.handle = Some(response_handle.clone());
        if live {
            state.cursor = header("electric-cursor");
        }
        let outcome = apply(&self.spec, &mut state, &messages);
        check_offsets(
            &mut state,
            &request_offset,
            &response_offset,
            outcome.changes,
            outcome.last_log,
        );
        let header_up_to_date = header("electric-up-to-date").is_some();
        if header_up_to_date != outcome.up_to_date {
            state.violations.push(format!(
                "electric-up-to-date header {header_up_to_date} but up-to-date message {}",
                outcome.up_to_date
            ));
        }
        state.exchanges.push(Exchange {
            handle: response_handle,
            request_offset,
            response_offset: response_offset.clone(),
            live,
            messages: messages.len(),
        });
        state.offset = Some(response_offset);
        if outcome.up_to_date {
            state.up_to_date = true;
        }
        Step::Applied {
            up_to_date: outcome.up_to_date,
        }
    }
}

struct Applied {
    changes: usize,
    last_log: Option<(u64, u64)>,
    up_to_date: bool,
}

fn apply(spec: &ShapeSpec, state: &mut ConsumerState, messages: &[Value]) -> Applied {
    let mut outcome = Applied {
        changes: 0,
        last_log: None,
        up_to_date: false,
    };
    for message in messages {
        let headers = &message["headers"];
        if let Some(control) = headers["control"].as_str() {
            if control == "snapshot-end" {
                state.snapshot = snapshot_of(headers);
                if state.snapshot.is_none() {
                    state
                        .violations
                        .push(format!("malformed snapshot-end: {message}"));
                }
            }
            if control == "up-to-date" {
                outcome.up_to_date = true;
                match headers["global_last_seen_lsn"]
                    .as_str()
                    .and_then(|l| l.parse().ok())
                {
                    Some(lsn) => state.global_last_seen = lsn,
                    None => state.violations.push(format!(
                        "up-to-date without global_last_seen_lsn: {message}"
                    )),
                }
            }
            continue;
        }
        outcome.changes += 1;
        if let Some(position) = log_position(state, message) {
            outcome.last_log = Some(position);
            state.changes += 1;
        }
        apply_change(spec, state, message);
    }
    outcome
}

/// Checks the log headers of a change; returns its `(lsn, op_position)` if it is a log change.
fn log_position(state: &mut ConsumerState, message: &Value) -> Option<(u64, u64)> {
    let headers = &message["headers"];
    let lsn = headers.get("lsn")?;
    let Some(lsn) = lsn.as_str().and_then(|l| l.parse::<u64>().ok()) else {
        state
            .violations
            .push(format!("lsn is not a decimal string: {message}"));
        return None;
    };
    let Some(op) = headers["op_position"].as_u64() else {
        state
            .violations
            .push(format!("log change without op_position: {message}"));
        return None;
    };
    let txids_ok = headers["txids"]
        .as_array()
        .is_some_and(|t| !t.is_empty() && t.iter().all(Value::is_u64));
    if !txids_ok {
        state
            .violations
            .push(format!("log change without txids: {message}"));
    }
    if let (Some((xmin, xmax, xip)), Some(txid)) = (&state.snapshot, headers["txids"][0].as_u64())
        && (txid < *xmin || (txid < *xmax && !xip.contains(&txid)))
    {
        state.violations.push(format!(
            "change of txid {txid}, which the snapshot {xmin}:{xmax}:{xip:?} already holds: {message}"
        ));
    }
    let position = (lsn, op);
    if state.last_change.is_some_and(|last| position <= last) {
        state.violations.push(format!(
            "change at {lsn}_{op} delivered after {:?} (duplicate or out of order): {message}",
            state.last_change
        ));
    }
    state.last_change = Some(position);
    Some(position)
}

fn snapshot_of(headers: &Value) -> Option<(u64, u64, Vec<u64>)> {
    let number = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
    let xip = headers["xip_list"]
        .as_array()?
        .iter()
        .map(number)
        .collect::<Option<Vec<u64>>>()?;
    Some((number(&headers["xmin"])?, number(&headers["xmax"])?, xip))
}

fn apply_change(spec: &ShapeSpec, state: &mut ConsumerState, message: &Value) {
    let (Some(key), Some(operation), Some(value)) = (
        message["key"].as_str(),
        message["headers"]["operation"].as_str(),
        message["value"].as_object(),
    ) else {
        state
            .violations
            .push(format!("malformed change: {message}"));
        return;
    };
    if spec.message_key(value).as_deref() != Some(key) {
        state.violations.push(format!(
            "key {key} does not match the row's primary key: {message}"
        ));
    }
    match operation {
        "insert" => {
            if state.rows.insert(key.to_owned(), value.clone()).is_some() {
                state
                    .violations
                    .push(format!("insert of a key already present: {message}"));
            }
        }
        "update" => {
            let Some(row) = state.rows.get_mut(key) else {
                state
                    .violations
                    .push(format!("update of an absent key: {message}"));
                return;
            };
            if let Some(old) = message["old_value"].as_object() {
                for (column, old_value) in old {
                    if row.get(column) != Some(old_value) {
                        state.violations.push(format!(
                            "old_value.{column} is {old_value}, the mirror holds {:?}: {message}",
                            row.get(column)
                        ));
                        break;
                    }
                }
            } else if spec.replica_full {
                state
                    .violations
                    .push(format!("replica=full update without old_value: {message}"));
            }
            for (column, v) in value {
                row.insert(column.clone(), v.clone());
            }
        }
        "delete" => match state.rows.remove(key) {
            None => state
                .violations
                .push(format!("delete of an absent key: {message}")),
            Some(row) => {
                if spec.replica_full && row != *value {
                    state.violations.push(format!(
                        "replica=full delete carries {value:?}, the mirror held {row:?}"
                    ));
                }
            }
        },
        other => state
            .violations
            .push(format!("unknown operation {other}: {message}")),
    }
}

fn check_offsets(
    state: &mut ConsumerState,
    request: &str,
    response: &str,
    changes: usize,
    last_log: Option<(u64, u64)>,
) {
    let (Ok(asked), Ok(got)) = (request.parse::<Offset>(), response.parse::<Offset>()) else {
        state
            .violations
            .push(format!("unparsable offsets {request} → {response}"));
        return;
    };
    if got < asked || (changes > 0 && got == asked) {
        state.violations.push(format!(
            "offset went from {request} to {response} with {changes} changes"
        ));
    }
    if let Some((lsn, op)) = last_log
        && got != (Offset::At { tx: lsn, op })
    {
        state.violations.push(format!(
            "response offset {response} is not that of its last change {lsn}_{op}"
        ));
    }
}
