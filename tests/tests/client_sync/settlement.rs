//! How local writes settle against the real proxy (the scripted-server tests of client-sqlite
//! force each ordering in isolation; these show the proxy's txids and LSNs drive them): writes
//! to a row outside the shape and out of it, an echo that overtakes its answer (held at the
//! gate), and a write queued by another connection to the same file while a client syncs.

use std::time::Duration;

use client_sqlite::{Client, ShapeSpec};
use serde_json::json;

use crate::gate::{Gate, Hold, gated_todos_client};
use crate::support::{
    CLIENT_TODOS, PG_TODOS, WAIT, clock_ahead, count, env, eventually, object, rows, todos, uuid,
};

/// Only an echo or an LSN can settle a write within a test (no grace sweep).
const NO_GRACE: Duration = Duration::from_secs(600);

async fn insert_todos(env: &crate::support::Env, ids: std::ops::Range<u32>) {
    for n in ids {
        env.sql(&format!(
            "INSERT INTO todos (id, owner_id, title, position) VALUES ('{}', 'alice', 'todo {n}', {n})",
            uuid(n)
        ))
        .await;
    }
}

async fn leftovers(client: &Client) -> [i64; 3] {
    [
        count(client, "SELECT count(*) FROM _shapesync_overlays").await,
        count(client, "SELECT count(*) FROM _shapesync_outbox").await,
        count(client, "SELECT count(*) FROM _shapesync_acked").await,
    ]
}

#[tokio::test]
async fn writes_to_a_row_outside_the_shape_or_out_of_it_settle_and_leave_the_mirror() {
    let env = env("client_settle_outside").await;
    insert_todos(&env, 0..3).await;
    let mine = ShapeSpec::new("mine", "todos").with_where("owner_id = 'alice'");
    let mut config = env.config("a.db", std::slice::from_ref(&mine));
    config.ack_grace = NO_GRACE;
    let client = Client::open(config).await.expect("open");
    client.wait_synced(WAIT).await.expect("synced");
    // A row the shape never carries (no echo will come: only an up-to-date's LSN can settle
    // it), and a row the write moves out of the shape (its echo is a delete).
    client
        .insert(
            "mine",
            object(json!({"id": uuid(9), "owner_id": "bob", "title": "elsewhere"})),
        )
        .await
        .expect("queued");
    client
        .update(
            "mine",
            object(json!({"id": uuid(1)})),
            object(json!({"owner_id": "bob"})),
        )
        .await
        .expect("queued");
    let ids = "SELECT id FROM mine ORDER BY id";
    assert_eq!(rows(&client, ids).await.len(), 4, "both shown at once");
    eventually("both settle and leave the mirror", || async {
        client.status().pending == 0
            && leftovers(&client).await == [0, 0, 0]
            && rows(&client, ids).await == vec![vec![Some(uuid(0))], vec![Some(uuid(2))]]
    })
    .await;
    let pg = env
        .pg_rows("SELECT count(*) FROM todos WHERE owner_id = 'bob'")
        .await;
    assert_eq!(pg, vec![vec![Some("2".into())]]);
}

#[tokio::test]
async fn an_echo_that_overtakes_its_answer_settles_the_write_when_the_answer_lands() {
    let env = env("client_settle_echo_first").await;
    insert_todos(&env, 0..3).await;
    let (gate, client) =
        gated_todos_client(&env, Hold::Answers, |config| config.ack_grace = NO_GRACE).await;
    client
        .update(
            "todos",
            object(json!({"id": uuid(1)})),
            object(json!({"title": "local"})),
        )
        .await
        .expect("queued");
    eventually("the proxy answered (held)", || async {
        gate.held_answers().len() == 1
    })
    .await;
    let answer = &gate.held_answers()[0];
    assert_eq!(answer["results"][0]["status"], "applied", "{answer}");
    let lsn: i64 = answer["lsn"]
        .as_str()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("the answer has an LSN: {answer}"));
    eventually("the echo arrives first", || async {
        count(
            &client,
            "SELECT global_lsn FROM _shapesync_shapes WHERE name = 'todos'",
        )
        .await
            >= lsn
    })
    .await;
    let shadow = rows(&client, "SELECT title FROM _shapesync_shadow_todos").await;
    assert_eq!(shadow, vec![vec![Some("local".into())]], "the echo, under");
    assert_eq!(leftovers(&client).await, [1, 1, 0], "still unanswered");

    gate.release();
    eventually("settled by the answer", || async {
        leftovers(&client).await == [0, 0, 0] && client.status().pending == 0
    })
    .await;
    assert_eq!(
        rows(&client, CLIENT_TODOS).await,
        env.pg_rows(PG_TODOS).await
    );
}

#[tokio::test]
async fn a_write_queued_by_another_connection_stays_over_server_changes_and_is_sent() {
    let env = env("client_settle_other_writer").await;
    insert_todos(&env, 0..3).await;
    let gate = Gate::start(&env.proxy.url).await;
    gate.hold(Hold::Requests);
    let mut config = env.config("a.db", &[todos()]);
    config.url = gate.url.clone();
    let syncing = Client::open(config.clone()).await.expect("open");
    syncing.wait_synced(WAIT).await.expect("synced");

    // Another connection to the same file queues a write (as `shapesync-client write` does
    // while `sync` runs), with a clock ahead of the SQL below so the write wins.
    config.clock = Some(clock_ahead(20));
    let writer = Client::open_offline(&config).await.expect("open offline");
    writer
        .update(
            "todos",
            object(json!({"id": uuid(1)})),
            object(json!({"title": "from cli"})),
        )
        .await
        .expect("queued");
    writer.close().await;

    // The server changes the same row: it must go under the overlay, not over it.
    env.sql(&format!(
        "UPDATE todos SET title = 'server', done = true WHERE id = '{}'",
        uuid(1)
    ))
    .await;
    eventually("the change lands in the shadow", || async {
        rows(&syncing, "SELECT title FROM _shapesync_shadow_todos").await
            == vec![vec![Some("server".into())]]
    })
    .await;
    let row = format!("SELECT title, done FROM todos WHERE id = '{}'", uuid(1));
    assert_eq!(
        rows(&syncing, &row).await,
        vec![vec![Some("from cli".into()), Some("1".into())]]
    );
    eventually("the running client sends it", || async {
        gate.requests() == 1
    })
    .await;

    gate.release();
    eventually("settled and converged", || async {
        syncing.status().pending == 0
            && leftovers(&syncing).await == [0, 0, 0]
            && rows(&syncing, CLIENT_TODOS).await == env.pg_rows(PG_TODOS).await
    })
    .await;
    assert_eq!(
        rows(&syncing, &row).await,
        vec![vec![Some("from cli".into()), Some("1".into())]]
    );
}
