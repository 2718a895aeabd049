//! The store following tags and move events: rows a move-out takes are deleted as server
//! deletes are (pending local writes included), in the batch's transaction, and the state
//! outlives the process.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::shape_spec::ShapeSpec;
use crate::status::StatusBoard;
use crate::store::outbox::{BatchAnswer, LocalWrite, OutboxEntry, WriteOp};
use crate::store::{BatchStep, Incoming, OpenOptions, StoreCore};
use crate::subscription::message::{self, Message};

const SCHEMA: &str = r#"{"id":{"type":"int4","pk_index":0,"not_null":true},"project_id":{"type":"int4"},"title":{"type":"text"}}"#;

fn spec() -> ShapeSpec {
    ShapeSpec::new("todos", "todos")
        .with_where("project_id IN (SELECT project_id FROM members WHERE user_id = 'u1')")
        .moves_as_events()
}

fn open(path: &Path) -> StoreCore {
    let options = OpenOptions {
        key: None,
        client_id: Some("device-test".into()),
        ack_grace_ms: 60_000,
        clock: Arc::new(|| 1_700_000_000_000_000),
    };
    let mut core = StoreCore::open(
        path,
        options,
        StatusBoard::default(),
        broadcast::channel(16).0,
    )
    .expect("open the store");
    core.register(&spec()).expect("register");
    core
}

/// The tag of a row of project `p` (any opaque text will do).
fn hash(project: i64) -> String {
    format!("{project:032x}")
}

fn insert(id: i64, project: i64, title: &str) -> Value {
    json!({"key": id.to_string(), "value": {"id": id.to_string(), "project_id": project.to_string(),
        "title": title}, "headers": {"operation": "insert", "tags": [hash(project)],
        "active_conditions": [true]}})
}

fn move_event(kind: &str, project: i64, txid: u32) -> Value {
    json!({"headers": {"event": kind, "patterns": [{"pos": 0, "value": hash(project)}],
        "txids": [txid]}})
}

/// Applies the messages as one batch and commits it at `offset`.
fn batch(core: &mut StoreCore, offset: &str, messages: &[Value]) {
    apply(core, messages);
    commit(core, offset);
}

fn apply(core: &mut StoreCore, messages: &[Value]) {
    let schema = core.schema("todos").expect("synced");
    let incoming = messages
        .iter()
        .filter_map(
            |m| match message::decode(m.to_string().as_bytes(), &schema) {
                Ok(Message::Change(change, _)) => Some(Incoming::Change(change)),
                Ok(Message::Move(event, _)) => Some(Incoming::Move(event)),
                Ok(Message::Other) => None,
                other => panic!("{m}: {other:?}"),
            },
        )
        .collect();
    core.batch_step("todos", BatchStep::Apply(incoming))
        .expect("apply");
}

fn commit(core: &mut StoreCore, offset: &str) {
    let step = BatchStep::Commit {
        handle: "h-1".parse().unwrap(),
        offset: offset.into(),
        global_lsn: None,
    };
    core.batch_step("todos", step).expect("commit");
}

/// A fresh snapshot: todos 1 and 3 in project 1, 2 in project 2.
fn snapshot(core: &mut StoreCore) {
    let reset = BatchStep::Reset {
        schema_json: SCHEMA.into(),
    };
    core.batch_step("todos", reset).expect("reset");
    batch(
        core,
        "0_0",
        &[
            insert(1, 1, "one"),
            insert(2, 2, "two"),
            insert(3, 1, "three"),
        ],
    );
}

fn query(core: &StoreCore, sql: &str) -> Vec<String> {
    let mut stmt = core.connection().prepare(sql).expect(sql);
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        let cells = (0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i)
                    .map(|v| format!("{v:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(cells.join("|"))
    })
    .expect(sql)
    .collect::<Result<_, _>>()
    .expect(sql)
}

fn ids(core: &StoreCore) -> Vec<String> {
    query(core, "SELECT id FROM todos ORDER BY id")
}

fn tag_rows(core: &StoreCore) -> usize {
    query(core, "SELECT row_key FROM _shapesync_row_tags").len()
        + query(core, "SELECT row_key FROM _shapesync_tag_slots").len()
}

#[test]
fn a_move_out_deletes_the_rows_of_its_value_and_forgets_their_tags() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(&dir.path().join("a.db"));
    snapshot(&mut core);
    assert_eq!(ids(&core), ["Integer(1)", "Integer(2)", "Integer(3)"]);
    batch(&mut core, "10_0", &[move_event("move-out", 1, 700)]);
    assert_eq!(ids(&core), ["Integer(2)"]);
    assert_eq!(
        query(
            &core,
            "SELECT row_key, pos, value FROM _shapesync_tag_slots"
        ),
        [format!("Text(\"[2]\")|Integer(0)|Text(\"{}\")", hash(2))]
    );
    // Project 1 back: a move-in, then its rows as inserts.
    batch(
        &mut core,
        "20_0",
        &[
            move_event("move-in", 1, 701),
            insert(1, 1, "one again"),
            insert(3, 1, "three"),
            json!({"headers": {"control": "snapshot-end", "xmin": "1", "xmax": "2",
                "xip_list": []}}),
        ],
    );
    assert_eq!(ids(&core), ["Integer(1)", "Integer(2)", "Integer(3)"]);
    assert_eq!(tag_rows(&core), 6);
}

#[test]
fn an_update_moving_a_row_to_another_value_follows_its_removed_tags() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(&dir.path().join("a.db"));
    snapshot(&mut core);
    let moved = json!({"key": "1", "value": {"id": "1", "project_id": "2"}, "headers": {
        "operation": "update", "tags": [hash(2)], "removed_tags": [hash(1)],
        "active_conditions": [true]}});
    batch(&mut core, "10_0", &[moved, move_event("move-out", 1, 700)]);
    assert_eq!(
        ids(&core),
        ["Integer(1)", "Integer(2)"],
        "1 is in project 2 now"
    );
    batch(&mut core, "20_0", &[move_event("move-out", 2, 701)]);
    assert!(ids(&core).is_empty());
    assert_eq!(tag_rows(&core), 0);
}

#[test]
fn an_insert_of_a_present_row_is_an_upsert() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(&dir.path().join("a.db"));
    snapshot(&mut core);
    batch(&mut core, "10_0", &[insert(2, 2, "two, moved in again")]);
    assert_eq!(
        query(&core, "SELECT id, title FROM todos WHERE id = 2"),
        ["Integer(2)|Text(\"two, moved in again\")"]
    );
    assert_eq!(tag_rows(&core), 6);
}

/// Everything the store keeps about the app's rows and writes, as text.
fn state(core: &StoreCore) -> Vec<Vec<String>> {
    [
        "SELECT * FROM todos ORDER BY id",
        "SELECT * FROM _shapesync_shadow_todos ORDER BY _key",
        "SELECT seq, row_key, kind, col, value FROM _shapesync_overlays ORDER BY seq, rowid",
        "SELECT seq, row_key FROM _shapesync_outbox ORDER BY seq",
        "SELECT seq, txid FROM _shapesync_acked ORDER BY seq",
    ]
    .into_iter()
    .map(|sql| query(core, sql))
    .collect()
}

fn write(core: &mut StoreCore, op: WriteOp, values: Value) -> OutboxEntry {
    let write = LocalWrite {
        shape: "todos".into(),
        op,
        key: Default::default(),
        values: values.as_object().unwrap().clone(),
        merge: Default::default(),
    };
    let queued = core.enqueue(&write, 1_700_000_000_000_000).expect("queued");
    core.outbox_batch(100)
        .unwrap()
        .into_iter()
        .find(|e| e.seq == queued.seq)
        .expect("in the outbox")
}

/// Local writes on rows of project 1: one answered in transaction 700 (whose echo is
/// awaited), one still pending, and a new row; then project 1 leaves in transaction 700, by
/// `leave`.
fn writes_then(leave: &[Value]) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(&dir.path().join("a.db"));
    snapshot(&mut core);
    let answered = write(
        &mut core,
        WriteOp::Update,
        json!({"id": 1, "title": "mine"}),
    );
    let answer: shapes::mutations::MutationResponse = serde_json::from_value(
        json!({"txid": 700, "lsn": null, "results": [{"id": answered.mutation_id, "status": "applied"}]}),
    )
    .unwrap();
    core.record_results(&[answered], &BatchAnswer::Results(answer))
        .unwrap();
    write(
        &mut core,
        WriteOp::Update,
        json!({"id": 3, "title": "offline"}),
    );
    write(
        &mut core,
        WriteOp::Insert,
        json!({"id": 9, "project_id": 1, "title": "new"}),
    );
    batch(&mut core, "10_0", leave);
    state(&core)
}

#[test]
fn pending_writes_on_moved_out_rows_are_kept_as_for_a_server_delete() {
    let deletes: Vec<Value> = [1, 3]
        .map(|id| {
            json!({"key": id.to_string(), "value": {"id": id.to_string()},
            "headers": {"operation": "delete", "txids": [700], "tags": [hash(1)],
            "active_conditions": [false]}})
        })
        .into();
    let by_deletes = writes_then(&deletes);
    let by_move_out = writes_then(&[move_event("move-out", 1, 700)]);
    assert_eq!(by_move_out, by_deletes);
    // The answered write's echo settled it; the pending update stays on a row the server no
    // longer has (not shown), the new row is shown.
    assert_eq!(
        by_move_out[0].len(),
        2,
        "todos 2 and 9: {:?}",
        by_move_out[0]
    );
    assert_eq!(
        by_move_out[3].len(),
        2,
        "two writes pending: {:?}",
        by_move_out[3]
    );
    assert!(
        by_move_out[4].is_empty(),
        "the echo settled the answered write"
    );
}

#[test]
fn the_tag_state_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    {
        let mut core = open(&path);
        snapshot(&mut core);
    }
    let mut core = open(&path);
    assert!(core.shape("todos").unwrap().tagged);
    batch(&mut core, "10_0", &[move_event("move-out", 1, 700)]);
    assert_eq!(ids(&core), ["Integer(2)"]);
    // A delete without tag headers still ends the row's state.
    let delete = json!({"key": "2", "value": {"id": "2"}, "headers": {"operation": "delete"}});
    batch(&mut core, "20_0", &[delete]);
    assert_eq!(tag_rows(&core), 0);
}

#[test]
fn a_move_out_rolled_back_with_its_batch_leaves_rows_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(&dir.path().join("a.db"));
    snapshot(&mut core);
    apply(&mut core, &[move_event("move-out", 1, 700)]);
    assert_eq!(ids(&core), ["Integer(2)"], "inside the batch");
    core.batch_step("todos", BatchStep::Abort).unwrap();
    assert_eq!(ids(&core), ["Integer(1)", "Integer(2)", "Integer(3)"]);
    batch(&mut core, "10_0", &[move_event("move-out", 1, 700)]);
    assert_eq!(ids(&core), ["Integer(2)"], "the same move-out again");
}

#[test]
fn a_fetch_from_scratch_forgets_the_tags() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = open(&dir.path().join("a.db"));
    snapshot(&mut core);
    let reset = BatchStep::Reset {
        schema_json: SCHEMA.into(),
    };
    core.batch_step("todos", reset).unwrap();
    assert_eq!(tag_rows(&core), 0);
    // The new snapshot tags row 1 by project 5: a move-out of project 1 no longer takes it.
    batch(&mut core, "0_0", &[insert(1, 5, "one")]);
    batch(&mut core, "10_0", &[move_event("move-out", 1, 700)]);
    assert_eq!(ids(&core), ["Integer(1)"]);
    assert!(core.shape("todos").unwrap().tagged);
}
