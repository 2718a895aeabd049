//! Shapes whose `where` has a subquery (README, "Subqueries: relational shapes"), through HTTP,
//! on the schema of a todo app: `projects`, `members (project_id, user_id)`, `todos`, and the
//! shape `todos` where `project_id IN (SELECT project_id FROM members WHERE user_id = $1)`.
//!
//! - [`moves`]: `moves_in_10k` and `moves_out_10k`, 10,000 rows moving in and out of a live
//!   shape when one `members` row is inserted or deleted;
//! - [`routing`]: `routing_subquery_10k`, outer-row changes routed with 10,000 subquery shapes
//!   vs 10, and the proxy's memory per subquery shape;
//! - [`latency`]: `latency_subquery`, commit → client of ordinary outer-row changes.

pub mod latency;
pub mod moves;
pub mod routing;

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::http_wire;
use crate::sse::{self, Kind, Live};

/// The tables (`todos.project_id` indexed: the proxy reads moved-in rows by it).
pub const SCHEMA: &str = "
    CREATE TABLE projects (id int8 PRIMARY KEY, name text NOT NULL);
    CREATE TABLE members (project_id int8 NOT NULL, user_id int8 NOT NULL,
                          role text NOT NULL DEFAULT 'dev', PRIMARY KEY (project_id, user_id));
    CREATE INDEX members_user ON members (user_id);
    CREATE TABLE todos (id int8 PRIMARY KEY, project_id int8 NOT NULL, title text NOT NULL,
                        done bool NOT NULL DEFAULT false);
    CREATE INDEX todos_project ON todos (project_id);";

/// The query of user `user`'s shape: the todos of the projects they are a member of.
pub fn shape_query(user: u64) -> String {
    shape_query_moving(user, "rows")
}

/// [`shape_query`] with its moves sent as `moves` (`rows` or `events`).
pub fn shape_query_moving(user: u64, moves: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("table", "todos")
        .append_pair(
            "where",
            "project_id IN (SELECT project_id FROM members WHERE user_id = $1)",
        )
        .append_pair("params[1]", &user.to_string());
    if moves != "rows" {
        query.append_pair("moves", moves);
    }
    query.finish()
}

/// An insert or a delete (or an update) reaching a client, or a move event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    MoveIn,
    MoveOut,
}

/// A change message's operation, from its `headers`.
pub fn op(message: &[u8]) -> Option<Op> {
    const HEADER: &[u8] = br#""headers":{"operation":""#;
    let at = http_wire::find(message, HEADER)? + HEADER.len();
    let rest = &message[at..];
    if rest.starts_with(b"insert") {
        Some(Op::Insert)
    } else if rest.starts_with(b"update") {
        Some(Op::Update)
    } else if rest.starts_with(b"delete") {
        Some(Op::Delete)
    } else {
        None
    }
}

/// A change received: its operation, its key and when the read that carried it returned.
pub type Received = (Op, i64, Instant);

/// Follows `live` on a task of its own, sending every change message it carries.
pub fn forward_changes(
    mut live: Live,
    out: mpsc::UnboundedSender<Received>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let open = live
                .next(|message, at| {
                    if sse::kind(message) == Kind::Change
                        && let (Some(op), Some(id)) = (op(message), sse::key_id(message))
                    {
                        let _ = out.send((op, id, at));
                    } else if message.starts_with(br#"{"headers":{"event":"move-out""#) {
                        let _ = out.send((Op::MoveOut, 0, at));
                    } else if message.starts_with(br#"{"headers":{"event":"move-in""#) {
                        let _ = out.send((Op::MoveIn, 0, at));
                    }
                })
                .await;
            if !matches!(open, Ok(true)) {
                return;
            }
        }
    })
}

/// A counter or gauge of the proxy's `/metrics`.
pub async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let (_, body) = http_wire::get_all(addr, "/metrics").await?;
    let text = String::from_utf8_lossy(&body);
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .with_context(|| format!("no {name} in /metrics"))
}

/// The directory of the shape `handle` in the proxy's storage.
pub fn shape_dir(storage: &std::path::Path, handle: &str) -> std::path::PathBuf {
    storage.join("v1/shapes").join(handle)
}

pub fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
