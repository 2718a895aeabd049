//! Client libraries on shapes whose `where` has subqueries, rows moving in and out live:
//! TanStack DB's electric collection (from npm, unchanged) holds exactly the rows Postgres
//! gives for the same `where` after every membership change.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tests::proxy_process::ProxyProcess;
use tests::tanstack::TanStackCollection;
use tests::{TestDb, shapesync_bin};

const WAIT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
    CREATE TABLE orgs (id int PRIMARY KEY, name text);
    CREATE TABLE org_members (org_id int, user_id text, PRIMARY KEY (org_id, user_id));
    CREATE TABLE projects (id int PRIMARY KEY, org_id int, archived bool NOT NULL DEFAULT false);
    CREATE TABLE members (project_id int, user_id text, role text NOT NULL DEFAULT 'dev',
        PRIMARY KEY (project_id, user_id));
    CREATE TABLE todos (id int PRIMARY KEY, project_id int, title text, done bool NOT NULL DEFAULT false);
    INSERT INTO orgs VALUES (1, 'one'), (2, 'two'), (3, 'three');
    INSERT INTO projects SELECT g, 1 + g % 3, g % 5 = 0 FROM generate_series(1, 9) g;
    INSERT INTO members VALUES (1, 'u1', 'dev'), (2, 'u1', 'owner'), (3, 'u2', 'dev');
    INSERT INTO org_members VALUES (1, 'u1'), (2, 'u2');
    INSERT INTO todos SELECT g, 1 + g % 9, 'todo ' || g, g % 2 = 0 FROM generate_series(1, 60) g;";

/// Postgres' todos for `where_` with `params` ($n as text), keyed by id as text, each row as
/// the collection parses it (ints are numbers, bools are booleans).
async fn expected(
    sql: &tokio_postgres::Client,
    where_: &str,
    params: &[&str],
) -> BTreeMap<String, Value> {
    let query = format!(
        "SELECT id::text, json_build_object('id', id, 'project_id', project_id, 'title', title, \
         'done', done)::text FROM todos WHERE {where_}"
    );
    let statement = sql
        .prepare_typed(
            &query,
            &vec![tokio_postgres::types::Type::TEXT; params.len()],
        )
        .await
        .expect(&query);
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    sql.query(&statement, &params)
        .await
        .expect(&query)
        .iter()
        .map(|row| (row.get(0), serde_json::from_str(row.get(1)).unwrap()))
        .collect()
}

/// A shape followed by a TanStack DB collection.
struct Collection {
    where_: &'static str,
    params: &'static [&'static str],
    collection: TanStackCollection,
}

impl Collection {
    fn start(proxy: &ProxyProcess, where_: &'static str, params: &'static [&'static str]) -> Self {
        let param_map: Map<String, Value> = params
            .iter()
            .enumerate()
            .map(|(i, p)| ((i + 1).to_string(), json!(p)))
            .collect();
        let collection = TanStackCollection::start(
            &proxy.url,
            json!({"table": "todos", "where": where_, "params": param_map}),
            "id",
        );
        Self {
            where_,
            params,
            collection,
        }
    }

    /// Waits until the collection holds exactly Postgres' rows, with no refetch and no error.
    async fn converges(&mut self, sql: &tokio_postgres::Client, step: &str) {
        let want = expected(sql, self.where_, self.params).await;
        let report = self
            .collection
            .wait_rows(WAIT, |rows| {
                rows.len() == want.len() && rows.iter().all(|(k, v)| want.get(k) == Some(v))
            })
            .await;
        let name = format!("{} {:?} after {step}", self.where_, self.params);
        assert_eq!(report["initialRequests"], 1, "{name}: refetched");
        assert_eq!(report["conflicts"], 0, "{name}: a 409");
        assert!(
            self.collection.errors.is_empty(),
            "{name}: {:?}",
            self.collection.errors
        );
    }
}

#[tokio::test]
async fn tanstack_db_collections_follow_rows_moving_in_and_out() {
    let db = TestDb::new("subquery_tanstack").await;
    let sql = db.connect().await;
    sql.batch_execute(SCHEMA).await.unwrap();
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let mut shapes = vec![
        Collection::start(
            &proxy,
            "project_id IN (SELECT project_id FROM members WHERE user_id = $1)",
            &["u1"],
        ),
        Collection::start(
            &proxy,
            "project_id NOT IN (SELECT project_id FROM members WHERE role = $1) OR done",
            &["owner"],
        ),
        // Three levels: todos of live projects of the organisations the user belongs to.
        Collection::start(
            &proxy,
            "project_id IN (SELECT id FROM projects WHERE NOT archived AND org_id IN \
             (SELECT org_id FROM org_members WHERE user_id = $1))",
            &["u2"],
        ),
        Collection::start(
            &proxy,
            "EXISTS (SELECT 1 FROM members m WHERE m.project_id = todos.project_id \
             AND m.user_id = $1) AND NOT done",
            &["u2"],
        ),
    ];
    for shape in &mut shapes {
        shape.converges(&sql, "the start").await;
    }
    let steps = [
        (
            "grant u1 project 4",
            "INSERT INTO members VALUES (4, 'u1', 'dev')",
        ),
        (
            "grant u2 project 5",
            "INSERT INTO members VALUES (5, 'u2', 'dev')",
        ),
        (
            "revoke u1 project 1",
            "DELETE FROM members WHERE project_id = 1 AND user_id = 'u1'",
        ),
        (
            "promote to owner",
            "UPDATE members SET role = 'owner' WHERE project_id = 3",
        ),
        (
            "hand a membership to another user",
            "UPDATE members SET user_id = 'u2' WHERE project_id = 4 AND user_id = 'u1'",
        ),
        (
            "move a todo out",
            "UPDATE todos SET project_id = 9 WHERE id = 4",
        ),
        (
            "move a todo in",
            "UPDATE todos SET project_id = 4 WHERE id = 5",
        ),
        (
            "finish todos",
            "UPDATE todos SET done = true WHERE id IN (5, 12, 13)",
        ),
        (
            "grant and write in one transaction",
            "BEGIN; INSERT INTO todos VALUES (100, 7, 'new', false); \
             INSERT INTO members VALUES (7, 'u1', 'dev'); \
             INSERT INTO todos VALUES (101, 7, 'newer', false); COMMIT",
        ),
        (
            "revoke, write, grant again in one transaction",
            "BEGIN; DELETE FROM members WHERE project_id = 7 AND user_id = 'u1'; \
             UPDATE todos SET title = 'while out' WHERE project_id = 7; \
             INSERT INTO members VALUES (7, 'u1', 'owner'); COMMIT",
        ),
        (
            "grant, write, revoke in one transaction",
            "BEGIN; INSERT INTO members VALUES (6, 'u1', 'dev'); \
             UPDATE todos SET title = 'while in' WHERE project_id = 6; \
             DELETE FROM members WHERE project_id = 6 AND user_id = 'u1'; COMMIT",
        ),
        (
            "join an organisation",
            "INSERT INTO org_members VALUES (3, 'u2')",
        ),
        (
            "archive a project",
            "UPDATE projects SET archived = true WHERE id = 2",
        ),
        (
            "move a project between organisations",
            "UPDATE projects SET org_id = 1 WHERE id = 4",
        ),
        (
            "leave an organisation",
            "DELETE FROM org_members WHERE org_id = 2",
        ),
        (
            "a new owner",
            "INSERT INTO members VALUES (8, 'u3', 'owner')",
        ),
        ("no owners left", "DELETE FROM members WHERE role = 'owner'"),
        (
            "delete moved rows",
            "DELETE FROM todos WHERE project_id = 4",
        ),
    ];
    for (step, statement) in steps {
        sql.batch_execute(statement).await.expect(statement);
        for shape in &mut shapes {
            shape.converges(&sql, step).await;
        }
    }
    // Nothing arrives late that would take a collection away from Postgres' rows.
    for shape in &mut shapes {
        shape.collection.settle(Duration::from_millis(500)).await;
        shape.converges(&sql, "the last step, settled").await;
    }
}
