//! The SQLite client against a real proxy process and a real Postgres: initial sync and live
//! changes, optimistic writes and their settlement, rollback of stale writes, resume after a
//! restart, 409 refetch with pending writes, schema migration, Yjs, and the seeded simulation.

mod atomicity;
mod gate;
mod settlement;
mod simulation;
mod support;

use client_sqlite::{ShapeSpec, SyncState};
use gate::{Hold, gated_todos_client};
use serde_json::json;
use support::{CLIENT_TODOS, PG_TODOS, count, env, eventually, object, rows, todos, uuid};

async fn insert_todos(env: &support::Env, ids: std::ops::Range<u32>) {
    for n in ids {
        env.sql(&format!(
            "INSERT INTO todos (id, owner_id, title, position) VALUES ('{}', 'alice', 'todo {n}', {n})",
            uuid(n)
        ))
        .await;
    }
}

#[tokio::test]
async fn initial_sync_mirrors_the_shape_and_live_changes_follow() {
    let env = env("client_initial").await;
    insert_todos(&env, 0..50).await;
    let client = env.open("a.db", &[todos()]).await;
    client.wait_synced(support::WAIT).await.expect("synced");
    assert_eq!(
        rows(&client, CLIENT_TODOS).await,
        env.pg_rows(PG_TODOS).await
    );
    env.sql(&format!(
        "UPDATE todos SET title = 'changed' WHERE id = '{}'; DELETE FROM todos WHERE id = '{}';",
        uuid(1),
        uuid(2)
    ))
    .await;
    insert_todos(&env, 50..52).await;
    eventually("live changes reach the mirror", || async {
        rows(&client, CLIENT_TODOS).await == env.pg_rows(PG_TODOS).await
    })
    .await;
    assert_eq!(client.status().state, SyncState::UpToDate);
    assert!(client.status().last_sync.is_some());
}

#[tokio::test]
async fn two_shapes_sync_side_by_side_each_in_its_own_transactions() {
    let env = env("client_two_shapes").await;
    insert_todos(&env, 0..300).await;
    env.sql(
        "INSERT INTO notes (id, owner_id, title)
         SELECT ('00000000-0000-4000-9000-' || lpad(g::text, 12, '0'))::uuid, 'bob', 'note ' || g
         FROM generate_series(1, 300) g",
    )
    .await;
    let mine = ShapeSpec::new("mine", "todos").with_where("position < 100");
    let client = env.open("a.db", &[mine, ShapeSpec::table("notes")]).await;
    client.wait_synced(support::WAIT).await.expect("synced");
    env.sql("UPDATE todos SET position = position - 50; UPDATE notes SET title = 'edited'")
        .await;
    eventually("both shapes follow", || async {
        let todos = rows(&client, "SELECT count(*) FROM mine").await;
        let notes = rows(&client, "SELECT count(*) FROM notes WHERE title = 'edited'").await;
        todos == vec![vec![Some("150".into())]] && notes == vec![vec![Some("300".into())]]
    })
    .await;
    assert!(client.status().rows_received >= 100 + 300 + 50 + 300);
}

#[tokio::test]
async fn a_local_update_shows_at_once_and_settles_after_the_echo() {
    let env = env("client_local_update").await;
    insert_todos(&env, 0..3).await;
    let client = env.open_ahead("a.db", &[todos()], 20).await;
    client.wait_synced(support::WAIT).await.expect("synced");
    client.set_online(false);
    let key = object(json!({"id": uuid(1)}));
    client
        .update("todos", key.clone(), object(json!({"title": "local"})))
        .await
        .expect("queued");
    let title = format!("SELECT title FROM todos WHERE id = '{}'", uuid(1));
    assert_eq!(
        rows(&client, &title).await,
        vec![vec![Some("local".into())]]
    );
    assert_eq!(client.status().pending, 1);
    // A server change of another column does not erase the local value (the local write is
    // newer: its clock runs ahead).
    env.sql(&format!(
        "UPDATE todos SET done = true WHERE id = '{}'",
        uuid(1)
    ))
    .await;
    client.set_online(true);
    eventually("the server's change arrives under the overlay", || async {
        let row = format!("SELECT title, done FROM todos WHERE id = '{}'", uuid(1));
        let now = rows(&client, &row).await;
        assert_eq!(
            now[0][0].as_deref(),
            Some("local"),
            "the overlay never goes"
        );
        now[0][1].as_deref() == Some("1")
    })
    .await;
    eventually("the write is sent and echoed", || async {
        let overlays = rows(&client, "SELECT count(*) FROM _shapesync_overlays").await;
        client.status().pending == 0 && overlays == vec![vec![Some("0".into())]]
    })
    .await;
    eventually("mirror equals Postgres", || async {
        rows(&client, CLIENT_TODOS).await == env.pg_rows(PG_TODOS).await
    })
    .await;
    let pg = env
        .pg_rows(&format!(
            "SELECT title, done FROM todos WHERE id = '{}'",
            uuid(1)
        ))
        .await;
    assert_eq!(pg, vec![vec![Some("local".into()), Some("t".into())]]);
}

#[tokio::test]
async fn a_stale_local_update_ends_as_the_server_row_plus_one_conflict() {
    let env = env("client_rollback").await;
    insert_todos(&env, 0..2).await;
    let client = env.open("a.db", &[todos()]).await;
    client.wait_synced(support::WAIT).await.expect("synced");
    let mut events = client.events();
    client.set_online(false);
    let key = object(json!({"id": uuid(1)}));
    client
        .update("todos", key, object(json!({"title": "stale"})))
        .await
        .expect("queued");
    // A newer write on the server (plain SQL counts at now(), after the local timestamp).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    env.sql(&format!(
        "UPDATE todos SET title = 'newer' WHERE id = '{}'",
        uuid(1)
    ))
    .await;
    client.set_online(true);
    let conflict = support::next_conflict(&mut events).await;
    assert_eq!(conflict.status, "conflict");
    assert_eq!(conflict.lost, vec!["title".to_owned()]);
    assert_eq!(conflict.server["title"], "newer");
    assert_eq!(conflict.local["values"]["title"], "stale");
    eventually("the mirror shows the server's row", || async {
        rows(&client, CLIENT_TODOS).await == env.pg_rows(PG_TODOS).await
    })
    .await;
    let recorded = client.conflicts(false).await.expect("conflicts");
    assert_eq!(recorded.len(), 1);
    assert_eq!(client.status().state, SyncState::Conflicts(1));
}

#[tokio::test]
async fn a_restarted_client_resumes_from_its_offset_without_refetching() {
    let env = env("client_resume").await;
    insert_todos(&env, 0..20).await;
    let client = env.open("a.db", &[todos()]).await;
    client.wait_synced(support::WAIT).await.expect("synced");
    assert_eq!(client.status().rows_received, 20);
    client.close().await;
    insert_todos(&env, 20..21).await;
    let client = env.open("a.db", &[todos()]).await;
    eventually("the new row arrives", || async {
        rows(&client, CLIENT_TODOS).await == env.pg_rows(PG_TODOS).await
    })
    .await;
    let status = client.status();
    assert_eq!(
        status.rows_received, 1,
        "only the new row came, not the shape again"
    );
    assert_eq!(status.refetches, 0);
}

#[tokio::test]
async fn a_must_refetch_replaces_the_rows_and_keeps_pending_writes() {
    let env = env("client_refetch").await;
    insert_todos(&env, 0..5).await;
    // The write is held before it reaches the proxy until the refetch has committed.
    let (gate, client) = gated_todos_client(&env, Hold::Requests, |_| {}).await;
    client
        .update(
            "todos",
            object(json!({"id": uuid(1)})),
            object(json!({"title": "mine"})),
        )
        .await
        .expect("queued");
    eventually("the write is sent (and held)", || async {
        gate.requests() == 1
    })
    .await;
    // TRUNCATE rotates the shape: the client gets a 409 and fetches it again.
    env.sql(&format!(
        "BEGIN; TRUNCATE todos;
         INSERT INTO todos (id, owner_id, title, position) VALUES
             ('{}', 'alice', 'todo 1', 1), ('{}', 'alice', 'todo 2', 2);
         COMMIT;",
        uuid(1),
        uuid(2)
    ))
    .await;
    let ids = "SELECT id FROM todos ORDER BY id";
    eventually("refetched: the old rows are gone", || async {
        client.status().refetches >= 1
            && rows(&client, ids).await == vec![vec![Some(uuid(1))], vec![Some(uuid(2))]]
    })
    .await;
    // Right after the refetch: the new rows, with the pending write still on top, and the
    // write still queued.
    let titles = rows(&client, "SELECT title FROM todos ORDER BY id").await;
    assert_eq!(
        titles,
        vec![vec![Some("mine".into())], vec![Some("todo 2".into())]]
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM _shapesync_outbox").await,
        1
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM _shapesync_overlays").await,
        1
    );
    assert_eq!(client.status().pending, 1);

    gate.release();
    eventually("pushed, echoed and settled", || async {
        client.status().pending == 0
            && count(&client, "SELECT count(*) FROM _shapesync_overlays").await == 0
            && rows(&client, CLIENT_TODOS).await == env.pg_rows(PG_TODOS).await
    })
    .await;
    let title = env
        .pg_rows(&format!("SELECT title FROM todos WHERE id = '{}'", uuid(1)))
        .await;
    assert_eq!(title, vec![vec![Some("mine".into())]]);
}

#[tokio::test]
async fn a_schema_change_migrates_the_local_table() {
    let env = env("client_migrate").await;
    insert_todos(&env, 0..3).await;
    let client = env.open("a.db", &[todos()]).await;
    client.wait_synced(support::WAIT).await.expect("synced");
    env.sql("ALTER TABLE todos ADD COLUMN priority int NOT NULL DEFAULT 7")
        .await;
    env.sql(&format!(
        "UPDATE todos SET priority = 1 WHERE id = '{}'",
        uuid(1)
    ))
    .await;
    eventually("the new column arrives", || async {
        let read = client
            .read(|c| {
                c.query_row("SELECT sum(priority), count(*) FROM todos", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
            })
            .await;
        read.ok() == Some((15, 3))
    })
    .await;
}

/// Waits until the `id,owner_id,title` mirror equals Postgres, no write is pending and todo
/// `written` has the title `mine` in Postgres; then checks todo `changed` has `title` locally
/// and that the shape was never fetched again.
async fn narrow_mirror_converges(
    env: &support::Env,
    client: &client_sqlite::Client,
    (written, mine): (u32, &str),
    (changed, title): (u32, &str),
) {
    let narrow_rows = "SELECT id, owner_id, title FROM todos ORDER BY id";
    let pg_narrow_rows = "SELECT id::text, owner_id, title FROM todos ORDER BY id";
    let written_title = format!("SELECT title FROM todos WHERE id = '{}'", uuid(written));
    eventually("the changes arrive, the write settles", || async {
        client.status().pending == 0
            && rows(client, narrow_rows).await == env.pg_rows(pg_narrow_rows).await
            && env.pg_rows(&written_title).await == vec![vec![Some(mine.into())]]
    })
    .await;
    let changed_title = format!("SELECT title FROM todos WHERE id = '{}'", uuid(changed));
    assert_eq!(
        rows(client, &changed_title).await,
        vec![vec![Some(title.into())]]
    );
    assert_eq!(client.status().refetches, 0, "the shape was kept");
}

#[tokio::test]
async fn a_shape_with_columns_is_kept_through_changes_of_other_columns() {
    let env = env("client_kept_shape").await;
    insert_todos(&env, 0..3).await;
    let narrow = todos().with_columns("id,owner_id,title");
    let client = env.open("a.db", &[narrow]).await;
    client.wait_synced(support::WAIT).await.expect("synced");
    let columns = "SELECT name, type FROM pragma_table_info('todos') ORDER BY name";
    let local_columns = rows(&client, columns).await;
    // A write of the mirror, on its way while the columns change.
    client
        .update(
            "todos",
            object(json!({"id": uuid(1)})),
            object(json!({"title": "mine"})),
        )
        .await
        .expect("queued");
    env.sql(
        "ALTER TABLE todos ADD COLUMN priority int NOT NULL DEFAULT 7;
         ALTER TABLE todos DROP COLUMN done;
         ALTER TABLE todos ALTER COLUMN position TYPE numeric USING position::numeric;",
    )
    .await;
    env.sql(&format!(
        "UPDATE todos SET title = 'after', priority = 1 WHERE id = '{}'",
        uuid(0)
    ))
    .await;
    narrow_mirror_converges(&env, &client, (1, "mine"), (0, "after")).await;
    // The local table was left as it was.
    assert_eq!(rows(&client, columns).await, local_columns);
}

#[tokio::test]
async fn a_shape_with_columns_is_kept_through_column_changes_made_while_the_proxy_was_down() {
    let mut env = env("client_kept_restart").await;
    insert_todos(&env, 0..3).await;
    let client = env
        .open("a.db", &[todos().with_columns("id,owner_id,title")])
        .await;
    client.wait_synced(support::WAIT).await.expect("synced");
    env.proxy.stop().await;
    // Offline: the write waits in the outbox.
    client
        .update(
            "todos",
            object(json!({"id": uuid(1)})),
            object(json!({"title": "offline"})),
        )
        .await
        .expect("queued");
    env.sql(&format!(
        "ALTER TABLE todos ADD COLUMN priority int NOT NULL DEFAULT 7;
         ALTER TABLE todos DROP COLUMN done;
         UPDATE todos SET title = 'while down', priority = 1 WHERE id = '{}';",
        uuid(2)
    ))
    .await;
    env.proxy.restart().await;
    narrow_mirror_converges(&env, &client, (1, "offline"), (2, "while down")).await;
}

#[tokio::test]
async fn a_type_change_and_a_dropped_column_keep_pending_writes_on_the_new_table() {
    let env = env("client_migrate_pending").await;
    insert_todos(&env, 0..3).await;
    // The writes are held before the proxy until the migration has committed.
    let (gate, client) = gated_todos_client(&env, Hold::Requests, |_| {}).await;
    let mut events = client.events();
    client
        .update(
            "todos",
            object(json!({"id": uuid(1)})),
            object(json!({"title": "mine", "position": 41.5})),
        )
        .await
        .expect("queued");
    client
        .update(
            "todos",
            object(json!({"id": uuid(2)})),
            object(json!({"done": true})),
        )
        .await
        .expect("queued");
    eventually("the writes are sent (and held)", || async {
        gate.requests() >= 1
    })
    .await;
    env.sql(
        "ALTER TABLE todos ALTER COLUMN position TYPE numeric USING position::numeric;
         ALTER TABLE todos DROP COLUMN done;",
    )
    .await;
    // The next change shows the proxy the new columns: the shape is fetched again.
    env.sql(&format!(
        "UPDATE todos SET title = 'after' WHERE id = '{}'",
        uuid(0)
    ))
    .await;
    let columns = "SELECT name, type FROM pragma_table_info('todos') ORDER BY name";
    let title_0 = format!("SELECT title FROM todos WHERE id = '{}'", uuid(0));
    eventually("the local table is migrated and refilled", || async {
        let columns = rows(&client, columns).await;
        client.status().refetches >= 1
            && !columns.iter().any(|c| c[0].as_deref() == Some("done"))
            && columns.contains(&vec![Some("position".into()), Some("TEXT".into())])
            && rows(&client, &title_0).await == vec![vec![Some("after".into())]]
    })
    .await;
    // The pending writes are still on top of the new rows: the changed column shows the local
    // value, the dropped one is simply gone; both writes are still queued.
    let row_1 = format!(
        "SELECT title, CAST(position AS REAL) FROM todos WHERE id = '{}'",
        uuid(1)
    );
    assert_eq!(
        rows(&client, &row_1).await,
        vec![vec![Some("mine".into()), Some("41.5".into())]]
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM _shapesync_outbox").await,
        2
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM _shapesync_overlays").await,
        3
    );

    gate.release();
    // The write to the dropped column is refused and rolled back; the other one is applied.
    let conflict = support::next_conflict(&mut events).await;
    assert_eq!(conflict.status, "rejected");
    assert_eq!(conflict.row_key, format!("[\"{}\"]", uuid(2)));
    assert!(conflict.reason.contains("done"), "{}", conflict.reason);
    let client_rows = "SELECT id, title, position FROM todos ORDER BY id";
    let pg_rows =
        "SELECT id::text, title, position::text FROM todos WHERE deleted_at IS NULL ORDER BY id";
    eventually("converged on the new columns", || async {
        client.status().pending == 0
            && count(&client, "SELECT count(*) FROM _shapesync_overlays").await == 0
            && rows(&client, client_rows).await == env.pg_rows(pg_rows).await
    })
    .await;
    let pg = env
        .pg_rows(&format!(
            "SELECT title, position::text FROM todos WHERE id = '{}'",
            uuid(1)
        ))
        .await;
    assert_eq!(pg, vec![vec![Some("mine".into()), Some("41.5".into())]]);
}

#[tokio::test]
async fn offline_yjs_edits_on_two_devices_both_survive() {
    use yrs::{GetString, Text, Transact};
    async fn body_of(
        client: &client_sqlite::Client,
        key: serde_json::Map<String, serde_json::Value>,
    ) -> String {
        let doc = client.yjs_doc("notes", key, "body").await.expect("doc");
        let text = doc.doc().get_or_insert_text("body");
        text.get_string(&doc.doc().transact())
    }
    let env = env("client_yjs").await;
    env.sql(&format!(
        "INSERT INTO notes (id, owner_id, title) VALUES ('{}', 'alice', 'shared')",
        uuid(1)
    ))
    .await;
    let notes = ShapeSpec::table("notes");
    let a = env.open("a.db", std::slice::from_ref(&notes)).await;
    let b = env.open("b.db", std::slice::from_ref(&notes)).await;
    a.wait_synced(support::WAIT).await.expect("a synced");
    b.wait_synced(support::WAIT).await.expect("b synced");
    let key = object(json!({"id": uuid(1)}));
    // A base text everyone has.
    let mut doc = a.yjs_doc("notes", key.clone(), "body").await.expect("doc");
    doc.doc()
        .get_or_insert_text("body")
        .insert(&mut doc.doc().transact_mut(), 0, "base.");
    a.save_yjs_doc(&mut doc).await.expect("saved");
    eventually("b has the base", || async {
        body_of(&b, key.clone()).await == "base."
    })
    .await;
    a.set_online(false);
    b.set_online(false);
    for (client, word) in [(&a, " from a"), (&b, " from b")] {
        let mut doc = client
            .yjs_doc("notes", key.clone(), "body")
            .await
            .expect("doc");
        let text = doc.doc().get_or_insert_text("body");
        let len = text.get_string(&doc.doc().transact()).len() as u32;
        text.insert(&mut doc.doc().transact_mut(), len, word);
        client.save_yjs_doc(&mut doc).await.expect("saved");
        assert!(
            body_of(client, key.clone()).await.contains(word),
            "shown locally at once"
        );
    }
    a.set_online(true);
    b.set_online(true);
    for client in [&a, &b] {
        eventually("both edits on both devices", || async {
            let body = body_of(client, key.clone()).await;
            client.status().pending == 0 && body.contains("from a") && body.contains("from b")
        })
        .await;
    }
}

#[tokio::test]
async fn seeded_simulation_converges_with_every_write_applied_once() {
    simulation::run("client_simulation").await;
}
