//! The real RxDB and WatermelonDB clients from npm (pinned in tests/ecosystems) driven from
//! Rust: a Node script holds one client database and answers JSON commands over stdin/stdout
//! (the protocol of tests/ecosystems/driver.mjs). The tests decide what happens when; the
//! clients do their own syncing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

/// How long one command may take: generous, since syncing is not what is measured here.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The folder of the npm package.
pub fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ecosystems")
}

/// One client process.
pub struct NodeClient {
    name: String,
    _child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
    next_seq: u64,
    /// Replies and events read while waiting for something else.
    replies: HashMap<u64, Value>,
    events: Vec<Value>,
}

impl NodeClient {
    /// Runs `node <script> <config>` in the package folder; `name` labels its failures.
    pub fn start(name: &str, script: &str, config: &Value) -> Self {
        let dir = package_dir();
        assert!(
            dir.join("node_modules/rxdb").is_dir(),
            "the ecosystem clients are not installed: run ./tests/run (or `npm ci` in {})",
            dir.display()
        );
        let (child, stdin, stdout) = crate::electric::spawn_node(&dir, script, config);
        let (tx, lines) = mpsc::unbounded_channel();
        let label = name.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(value) if value.get("seq").is_some() || value.get("event").is_some() => {
                        if tx.send(value).is_err() {
                            break;
                        }
                    }
                    // What the libraries print for themselves.
                    _ => eprintln!("{label}: {line}"),
                }
            }
        });
        Self {
            name: name.to_owned(),
            _child: child,
            stdin,
            lines,
            next_seq: 1,
            replies: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// Sends `op` with `args` (an object) without waiting; returns its sequence number.
    pub async fn send(&mut self, op: &str, args: Value) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut command = match args {
            Value::Object(map) => Value::Object(map),
            Value::Null => json!({}),
            other => panic!("command arguments must be an object, not {other}"),
        };
        command["seq"] = json!(seq);
        command["op"] = json!(op);
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .unwrap_or_else(|err| panic!("{}: write a command: {err}", self.name));
        seq
    }

    async fn next_line(&mut self, what: &str) -> Value {
        tokio::time::timeout(COMMAND_TIMEOUT, self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: no {what} within {COMMAND_TIMEOUT:?}", self.name))
            .unwrap_or_else(|| panic!("{}: the client exited while waiting for {what}", self.name))
    }

    /// The reply to command `seq`: its result, or the error the client reported.
    pub async fn reply(&mut self, seq: u64) -> Result<Value, String> {
        loop {
            if let Some(reply) = self.replies.remove(&seq) {
                return if reply["ok"] == true {
                    Ok(reply["result"].clone())
                } else {
                    Err(reply["error"].as_str().unwrap_or_default().to_owned())
                };
            }
            let line = self.next_line(&format!("reply to command {seq}")).await;
            match line["seq"].as_u64() {
                Some(n) => {
                    self.replies.insert(n, line);
                }
                None => self.events.push(line),
            }
        }
    }

    /// Runs `op` and returns its result or the client's error.
    pub async fn call(&mut self, op: &str, args: Value) -> Result<Value, String> {
        let seq = self.send(op, args.clone()).await;
        self.reply(seq).await
    }

    /// Runs `op`, which must succeed.
    pub async fn ok(&mut self, op: &str, args: Value) -> Value {
        match self.call(op, args.clone()).await {
            Ok(result) => result,
            Err(err) => panic!("{}: {op} {args} failed: {err}", self.name),
        }
    }

    /// Waits for the unsolicited event `{"event": kind, …}` satisfying `check`.
    pub async fn event(&mut self, kind: &str, check: impl Fn(&Value) -> bool) -> Value {
        loop {
            if let Some(at) = self
                .events
                .iter()
                .position(|e| e["event"] == kind && check(e))
            {
                return self.events.remove(at);
            }
            let line = self.next_line(&format!("event {kind}")).await;
            match line["seq"].as_u64() {
                Some(n) => {
                    self.replies.insert(n, line);
                }
                None => self.events.push(line),
            }
        }
    }
}

/// The rows of `table` matching `filter` as JSON objects sorted by `id` (as text, byte
/// order), the form the clients print theirs in: columns by name, with Postgres' own JSON for
/// each value (`to_jsonb`).
pub async fn table_rows(sql: &tokio_postgres::Client, table: &str, filter: &str) -> Value {
    let query = format!("SELECT to_jsonb(t)::text FROM {table} t WHERE {filter}");
    let mut rows: Vec<Value> = sql
        .query(&query, &[])
        .await
        .unwrap_or_else(|err| panic!("read {table}: {err}"))
        .iter()
        .map(|row| serde_json::from_str(row.get::<_, &str>(0)).expect("Postgres' JSON"))
        .collect();
    rows.sort_by_key(id_text);
    Value::Array(rows)
}

fn id_text(row: &Value) -> String {
    match &row["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
