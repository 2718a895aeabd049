//! The official `@electric-sql/client` (from npm, pinned in tests/electric-client) driven from
//! Rust: a Node process runs a `ShapeStream` + `Shape` against the proxy and reports every
//! batch of messages and every materialised state as JSON lines.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

pub struct ElectricClient {
    _child: Child,
    stdin: ChildStdin,
    events: mpsc::UnboundedReceiver<Value>,
    /// Every event received so far, in order.
    pub history: Vec<Value>,
}

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("electric-client")
}

impl ElectricClient {
    /// Starts a client with `config` (`params`, `sse`, `raw`, `log`, `offset`, `handle`,
    /// `headers`; see stream.mjs) against the proxy at `url`.
    pub fn start(url: &str, mut config: Value) -> Self {
        let dir = client_dir();
        assert!(
            dir.join("node_modules/@electric-sql/client").is_dir(),
            "the Electric client is not installed: run ./tests/run (or `npm ci` in {})",
            dir.display()
        );
        config["url"] = json!(url);
        let (child, stdin, stdout) = spawn_node(&dir, "stream.mjs", &config);
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
                    Err(_) => eprintln!("electric client: {line}"),
                }
            }
        });
        Self {
            _child: child,
            stdin,
            events,
            history: Vec::new(),
        }
    }

    /// The next event, or a panic after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Value {
        let event = tokio::time::timeout(timeout, self.events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no event from the Electric client within {timeout:?}; history: {:#?}",
                    self.tail()
                )
            })
            .expect("the Electric client exited");
        self.history.push(event.clone());
        event
    }

    fn tail(&self) -> &[Value] {
        &self.history[self.history.len().saturating_sub(6)..]
    }

    /// Waits until the materialised rows satisfy `check`; returns them (key → row).
    pub async fn wait_rows(
        &mut self,
        timeout: Duration,
        mut check: impl FnMut(&Map<String, Value>) -> bool,
    ) -> Map<String, Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_event(left).await;
            if event["type"] == "rows"
                && let Some(rows) = event["rows"].as_object()
                && check(rows)
            {
                return rows.clone();
            }
        }
    }

    /// Waits for a delivered message satisfying `check`.
    pub async fn wait_message(
        &mut self,
        timeout: Duration,
        mut check: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_event(left).await;
            if event["type"] == "messages"
                && let Some(found) = event["messages"]
                    .as_array()
                    .and_then(|ms| ms.iter().find(|m| check(m)))
            {
                return found.clone();
            }
        }
    }

    /// Every message delivered so far.
    pub fn messages(&self) -> Vec<Value> {
        self.history
            .iter()
            .filter(|e| e["type"] == "messages")
            .flat_map(|e| e["messages"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Errors reported so far.
    pub fn errors(&self) -> Vec<Value> {
        self.history
            .iter()
            .filter(|e| e["type"] == "error")
            .cloned()
            .collect()
    }

    /// Sends a command (`requestSnapshot` / `fetchSnapshot`).
    pub async fn command(&mut self, command: Value) {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to the Electric client");
    }
}

/// Starts `node <dir>/<script> <config JSON>` in `dir`, its stdin and stdout piped to the test
/// (stderr goes to the test's own), killed when the child is dropped.
pub fn spawn_node(
    dir: &std::path::Path,
    script: &str,
    config: &Value,
) -> (Child, ChildStdin, tokio::process::ChildStdout) {
    let mut child = Command::new("node")
        .arg(dir.join(script))
        .arg(config.to_string())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start node (Node.js 20 must be on PATH)");
    let stdout = child.stdout.take().expect("piped stdout");
    let stdin = child.stdin.take().expect("piped stdin");
    (child, stdin, stdout)
}
