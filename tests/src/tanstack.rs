//! TanStack DB's electric collection (`@tanstack/electric-db-collection` with `@tanstack/db`,
//! from npm, pinned in tests/electric-client) driven from Rust: a Node process (tanstack.mjs)
//! creates a collection on a shape of the proxy and reports its rows whenever they change.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::electric::spawn_node;

pub struct TanStackCollection {
    _child: Child,
    _stdin: ChildStdin,
    events: mpsc::UnboundedReceiver<Value>,
    /// The last `rows` report: rows by key, `status`, `initialRequests`, `conflicts`.
    pub last: Option<Value>,
    /// Errors reported so far.
    pub errors: Vec<Value>,
}

impl TanStackCollection {
    /// Starts a collection on the shape `params` (`table`, `where`, `params`…) of the proxy at
    /// `url`, keyed by the column `key`.
    pub fn start(url: &str, params: Value, key: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("electric-client");
        assert!(
            dir.join("node_modules/@tanstack/electric-db-collection")
                .is_dir(),
            "TanStack DB is not installed: run ./tests/run (or `npm ci` in {})",
            dir.display()
        );
        let config = json!({"url": url, "params": params, "key": key});
        let (child, stdin, stdout) = spawn_node(&dir, "tanstack.mjs", &config);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(value) => {
                        if tx.send(value).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("tanstack collection: {line}"),
                }
            }
        });
        Self {
            _child: child,
            _stdin: stdin,
            events,
            last: None,
            errors: Vec::new(),
        }
    }

    /// Waits until the collection is ready and its rows (key → row) satisfy `check`; returns
    /// the report. Panics after `timeout`, showing the last rows.
    pub async fn wait_rows(
        &mut self,
        timeout: Duration,
        check: impl FnMut(&Map<String, Value>) -> bool,
    ) -> Value {
        self.try_wait_rows(timeout, check)
            .await
            .unwrap_or_else(|last| {
                panic!(
                    "the TanStack collection did not get there within {timeout:?}; last report \
                 {last:#}; errors {:?}",
                    self.errors
                )
            })
    }

    /// Like [`TanStackCollection::wait_rows`], but after `timeout` returns the last report (null
    /// if none) as the error, for the caller to say what differs.
    pub async fn try_wait_rows(
        &mut self,
        timeout: Duration,
        mut check: impl FnMut(&Map<String, Value>) -> bool,
    ) -> Result<Value, Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(last) = &self.last
                && last["status"] == "ready"
                && last["rows"].as_object().is_some_and(&mut check)
            {
                return Ok(last.clone());
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => panic!("the TanStack collection exited; errors {:?}", self.errors),
                Err(_) => return Err(self.last.clone().unwrap_or_default()),
            };
            match event["type"].as_str() {
                Some("rows") => self.last = Some(event),
                Some("error") => self.errors.push(event),
                _ => {}
            }
        }
    }

    /// Takes in every report the collection sends within `period` (to see that it stays put).
    pub async fn settle(&mut self, period: Duration) {
        let deadline = tokio::time::Instant::now() + period;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            match event["type"].as_str() {
                Some("rows") => self.last = Some(event),
                Some("error") => self.errors.push(event),
                _ => {}
            }
        }
    }
}
