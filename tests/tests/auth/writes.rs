//! The write and delete attempts of the matrix: other owners' rows, rows moved or planted,
//! ops and columns the rules do not allow, SQL in names and values, bad credentials, and
//! what the secret may do.

use serde_json::json;

use crate::matrix::{
    Attempt, alice, alice_write, bob, delete, refused_write, secret, todo_write, write,
};
use crate::support::*;

pub(crate) fn writes() -> Vec<Attempt> {
    let alice_new = "a11ce000-0000-4000-8000-0000000000a7";
    vec![
        todo_write(
            "update own",
            "update",
            ALICE_TODO,
            json!({"title": "milk, oat"}),
            "applied",
        ),
        todo_write(
            "update other's",
            "update",
            BOB_TODO,
            json!({"title": "hijacked"}),
            "forbidden",
        ),
        todo_write("delete other's", "delete", BOB_TODO, json!({}), "forbidden"),
        todo_write(
            "insert for another owner",
            "insert",
            "a11ce000-0000-4000-8000-0000000000a4",
            json!({"owner_id": "bob", "title": "planted for bob"}),
            "forbidden",
        ),
        todo_write(
            "move own row to another owner",
            "update",
            ALICE_TODO,
            json!({"owner_id": "bob"}),
            "forbidden",
        ),
        todo_write(
            "upsert over other's row",
            "upsert",
            BOB_TODO,
            json!({"owner_id": "alice", "title": "mine now"}),
            "forbidden",
        ),
        todo_write(
            "insert own",
            "insert",
            alice_new,
            json!({"owner_id": "alice", "title": "new for alice"}),
            "applied",
        ),
        todo_write(
            "upsert own new row",
            "upsert",
            "a11ce000-0000-4000-8000-0000000000a8",
            json!({"owner_id": "alice", "title": "upserted"}),
            "applied",
        ),
        todo_write(
            "write a hidden column",
            "update",
            ALICE_TODO,
            json!({"position": 99}),
            "forbidden",
        ),
        todo_write(
            "SQL in a value",
            "update",
            ALICE_TODO,
            json!({"title": "x'); DROP TABLE todos; --"}),
            "applied",
        ),
        todo_write(
            "SQL in a column name",
            "update",
            ALICE_TODO,
            json!({"title\"; DROP TABLE todos; --": "x"}),
            "forbidden",
        ),
        // A column the table lacks is answered as a hidden one, and no answer lists the
        // columns the rules hide.
        todo_write(
            "write a column the table lacks",
            "update",
            ALICE_TODO,
            json!({"colour": "red"}),
            "forbidden",
        )
        .says("do not allow writing column \"colour\"; a token may write: \"owner_id\", \"title\", \"done\""),
        alice_write(
            "key naming a column the table lacks",
            "todos",
            "update",
            json!({"id": ALICE_TODO, "colour": "red"}),
            json!({"title": "x"}),
            NOW,
            "invalid_value",
        )
        .says("colour is not part of the primary key of \"public\".\"todos\"; the key names id"),
        alice_write(
            "key naming a hidden column",
            "todos",
            "update",
            json!({"id": ALICE_TODO, "position": 1}),
            json!({"title": "x"}),
            NOW,
            "invalid_value",
        )
        .says("position is not part of the primary key of \"public\".\"todos\"; the key names id"),
        write(
            "merge into a column the table lacks",
            alice(),
            batch(
                "alice-phone",
                json!({"id": "merge-colour", "table": "notes", "op": "update",
                       "key": {"id": ALICE_NOTE}, "merge": {"colour": "AAA="},
                       "timestamp": NOW}),
            ),
            "forbidden",
        )
        .says("\"colour\""),
        alice_write(
            "op the rules do not allow, with a column the table lacks",
            "notes",
            "insert",
            json!({"id": "a11ce000-0000-4000-8000-0000000000b2"}),
            json!({"colour": "red"}),
            NOW,
            "forbidden",
        )
        .says("do not allow insert"),
        alice_write(
            "SQL in the table name",
            "todos; DROP TABLE todos",
            "update",
            json!({"id": ALICE_TODO}),
            json!({"title": "x"}),
            NOW,
            "unknown_table",
        ),
        alice_write(
            "table without rules",
            "secrets",
            "update",
            json!({"id": 1}),
            json!({"code": "x"}),
            NOW,
            "forbidden",
        )
        .says("table \"public\".\"secrets\" has no rules, so tokens cannot write it"),
        alice_write(
            "table without rules, a column it lacks",
            "secrets",
            "update",
            json!({"id": 1}),
            json!({"colour": "x"}),
            NOW,
            "forbidden",
        )
        .says("table \"public\".\"secrets\" has no rules, so tokens cannot write it"),
        alice_write(
            "table without rules, a key it lacks",
            "secrets",
            "delete",
            json!({"colour": 1}),
            json!({}),
            NOW,
            "forbidden",
        )
        .says("table \"public\".\"secrets\" has no rules, so tokens cannot write it"),
        alice_write(
            "table that does not exist",
            "no_such_table",
            "insert",
            json!({"id": 1}),
            json!({"colour": "x"}),
            NOW,
            "forbidden",
        )
        .says("table \"public\".\"no_such_table\" has no rules, so tokens cannot write it"),
        alice_write(
            "rules allow the write, --writable does not",
            "team_docs",
            "update",
            json!({"id": 1}),
            json!({"body": "rewritten by alice"}),
            NOW,
            "not_writable",
        )
        .says(
            "table \"public\".\"team_docs\" does not accept writes: the rules allow this one, \
             but the proxy's --writable does not list \"public\".\"team_docs\" (both must \
             allow a write; add it to --writable)",
        ),
        alice_write(
            "op the rules do not allow (insert note)",
            "notes",
            "insert",
            json!({"id": "a11ce000-0000-4000-8000-0000000000b1"}),
            json!({"owner_id": "alice", "title": "n"}),
            NOW,
            "forbidden",
        ),
        alice_write(
            "op the rules do not allow (delete own note)",
            "notes",
            "delete",
            json!({"id": ALICE_NOTE}),
            json!({}),
            NOW,
            "forbidden",
        ),
        alice_write(
            "update other's note (check defaults to read)",
            "notes",
            "update",
            json!({"id": BOB_NOTE}),
            json!({"title": "hijacked"}),
            NOW,
            "forbidden",
        ),
        alice_write(
            "update own note",
            "notes",
            "update",
            json!({"id": ALICE_NOTE}),
            json!({"title": "Shopping (oat milk)"}),
            NOW,
            "applied",
        ),
        alice_write(
            "losing write shows the row without hidden columns",
            "todos",
            "update",
            json!({"id": ALICE_PLAN}),
            json!({"title": "stale"}),
            "2000-01-01T00:00:00Z",
            "conflict",
        ),
        todo_write(
            "applied write shows the row without hidden columns",
            "update",
            ALICE_PLAN,
            json!({"done": true}),
            "applied",
        ),
        write(
            "atomic batch with a forbidden mutation",
            alice(),
            json!({"client_id": "alice-phone", "atomic": true, "mutations": [
                mutation("atomic-own", "todos", "update", json!({"id": ALICE_TODO}),
                         json!({"title": "atomic-ok"}), NOW),
                mutation("atomic-other", "todos", "update", json!({"id": BOB_TODO}),
                         json!({"title": "atomic-hijack"}), NOW),
            ]}),
            "aborted",
        ),
        write(
            "token in the query",
            Cred::Query(hs256(&claims("alice"))),
            batch(
                "alice-phone",
                mutation(
                    "query-token",
                    "todos",
                    "update",
                    json!({"id": ALICE_TODO}),
                    json!({"done": true}),
                    NOW,
                ),
            ),
            "applied",
        ),
        write(
            "bob updates alice's row",
            bob(),
            batch(
                "bob-phone",
                mutation(
                    "bob-hijack",
                    "todos",
                    "update",
                    json!({"id": ALICE_TODO}),
                    json!({"title": "bob was here"}),
                    NOW,
                ),
            ),
            "forbidden",
        )
        .seen_by(Viewer::Bob),
        write(
            "the secret writes any row",
            secret(),
            batch(
                "server",
                mutation(
                    "secret-update",
                    "todos",
                    "update",
                    json!({"id": BOB_DENTIST}),
                    json!({"title": "dentist moved"}),
                    NOW,
                ),
            ),
            "applied",
        )
        .seen_by(Viewer::Anyone),
        write(
            "the secret writes a table without rules",
            secret(),
            batch(
                "server",
                mutation(
                    "secret-secrets",
                    "secrets",
                    "update",
                    json!({"id": 2}),
                    json!({"code": "SECRET-CODE-BOB-3"}),
                    NOW,
                ),
            ),
            "applied",
        )
        .seen_by(Viewer::Anyone),
        refused_write("write without credentials", Cred::None, 401),
        refused_write(
            "write with an expired token",
            Cred::Bearer(hs256(&claims_with(
                "alice",
                json!({"exp": jsonwebtoken::get_current_timestamp() - 60}),
            ))),
            401,
        ),
        refused_write(
            "write with alg none",
            Cred::Bearer(alg_none(&claims("alice"))),
            401,
        ),
        refused_write(
            "write with a wrong secret",
            Cred::Secret("guess".into()),
            401,
        ),
    ]
}

pub(crate) fn deletes() -> Vec<Attempt> {
    vec![
        delete(
            "delete a shape with a token",
            &[("table", "announcements")],
            alice(),
            403,
        )
        .says("secret"),
        delete(
            "delete a shape without credentials",
            &[("table", "announcements")],
            Cred::None,
            401,
        ),
        delete(
            "delete a shape with the secret",
            &[("table", "announcements")],
            secret(),
            202,
        ),
    ]
}
