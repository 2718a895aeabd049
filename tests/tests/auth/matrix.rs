//! The attack matrix: every attempt with its exact expected status (and, for writes, the
//! result of its first mutation), run in order against one proxy; every response body is
//! scanned for values its viewer must never see, and (unless the secret asked) for names of
//! hidden columns the request did not give. Reads and credentials are here, subset
//! snapshots in `subsets`, writes and deletes in `writes`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;
use crate::{subsets, writes};

/// What an attempt must produce besides its status.
#[derive(Debug, Clone)]
pub enum Expect {
    /// A shape response (or subset snapshot) with exactly this many rows.
    Rows(usize),
    /// A mutation response whose first result has this status (`applied`, `conflict`,
    /// `aborted`) or this error code (`forbidden`, `unknown_table`, …).
    Result(&'static str),
    /// The body says this (an error message naming the table, column or claim).
    Says(&'static str),
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub name: &'static str,
    pub method: Method,
    pub path: String,
    pub cred: Cred,
    pub body: Option<Value>,
    pub status: u16,
    pub expect: Vec<Expect>,
    pub viewer: Viewer,
}

impl Attempt {
    pub(crate) fn rows(mut self, n: usize) -> Self {
        self.expect.push(Expect::Rows(n));
        self
    }

    pub(crate) fn says(mut self, text: &'static str) -> Self {
        self.expect.push(Expect::Says(text));
        self
    }

    pub(crate) fn seen_by(mut self, viewer: Viewer) -> Self {
        self.viewer = viewer;
        self
    }
}

/// A query string from parameters (values percent-encoded).
pub fn query(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub(crate) fn shape(
    name: &'static str,
    params: &[(&str, &str)],
    cred: Cred,
    status: u16,
) -> Attempt {
    let mut all = vec![("offset", "-1")];
    all.extend_from_slice(params);
    Attempt {
        name,
        method: Method::GET,
        path: format!("/v1/shape?{}", query(&all)),
        cred,
        body: None,
        status,
        expect: Vec::new(),
        viewer: Viewer::Alice,
    }
}

fn todos(name: &'static str, where_: &str, cred: Cred, status: u16) -> Attempt {
    shape(name, &[("table", "todos"), ("where", where_)], cred, status)
}

pub(crate) fn write(name: &'static str, cred: Cred, body: Value, result: &'static str) -> Attempt {
    Attempt {
        name,
        method: Method::POST,
        path: "/v1/mutations".into(),
        cred,
        body: Some(body),
        status: 200,
        expect: vec![Expect::Result(result)],
        viewer: Viewer::Alice,
    }
}

pub(crate) fn refused_write(name: &'static str, cred: Cred, status: u16) -> Attempt {
    let body = batch(
        "d",
        mutation(
            name,
            "todos",
            "update",
            json!({"id": ALICE_TODO}),
            json!({"title": "x"}),
            NOW,
        ),
    );
    Attempt {
        expect: Vec::new(),
        status,
        ..write(name, cred, body, "")
    }
}

pub(crate) fn delete(
    name: &'static str,
    params: &[(&str, &str)],
    cred: Cred,
    status: u16,
) -> Attempt {
    Attempt {
        name,
        method: Method::DELETE,
        path: format!("/v1/shape?{}", query(params)),
        cred,
        body: None,
        status,
        expect: Vec::new(),
        viewer: Viewer::Alice,
    }
}

pub(crate) fn alice() -> Cred {
    Cred::Bearer(hs256(&claims("alice")))
}

pub(crate) fn bob() -> Cred {
    Cred::Bearer(hs256(&claims("bob")))
}

pub(crate) fn secret() -> Cred {
    Cred::Secret(SECRET.into())
}

/// A mutation of alice's on `table`, at `ts`.
pub(crate) fn alice_write(
    name: &'static str,
    table: &str,
    op: &str,
    key: Value,
    values: Value,
    ts: &str,
    result: &'static str,
) -> Attempt {
    let m = mutation(name, table, op, key, values, ts);
    write(name, alice(), batch("alice-phone", m), result)
}

/// A mutation of alice's on todos.
pub(crate) fn todo_write(
    id: &'static str,
    op: &str,
    key: &str,
    values: Value,
    result: &'static str,
) -> Attempt {
    let m = mutation(id, "todos", op, json!({"id": key}), values, NOW);
    write(id, alice(), batch("alice-phone", m), result)
}

fn reads() -> Vec<Attempt> {
    let everything = "true";
    vec![
        todos("own rows", everything, alice(), 200).rows(3),
        shape("no where", &[("table", "todos")], alice(), 200).rows(3),
        todos("OR 1=1", "title <> '' OR 1=1", alice(), 200).rows(3),
        todos("NOT (own)", "NOT (owner_id = 'alice')", alice(), 200).rows(0),
        todos(
            "IS DISTINCT FROM",
            "owner_id IS DISTINCT FROM 'alice'",
            alice(),
            200,
        )
        .rows(0),
        todos("other owner by name", "owner_id = 'bob'", alice(), 200).rows(0),
        shape(
            "other owner by param",
            &[
                ("table", "todos"),
                ("where", "owner_id = $1"),
                ("params[1]", "bob"),
            ],
            alice(),
            200,
        )
        .rows(0),
        todos(
            "comments",
            "title = 'x' /* */ OR true -- AND owner_id = 'alice'",
            alice(),
            200,
        )
        .rows(3),
        todos(
            "casts",
            "owner_id::text = 'bob' OR id::text <> ''",
            alice(),
            200,
        )
        .rows(3),
        todos(
            "IN with every owner",
            "owner_id IN ('alice', 'bob')",
            alice(),
            200,
        )
        .rows(3),
        todos("hidden column in where", "position > 0", alice(), 403).says("\"position\""),
        todos(
            "hidden column behind OR",
            "title <> '' OR position > 4242",
            alice(),
            403,
        )
        .says("\"position\""),
        // would not type-check even on the whole table (a float cast to text): still a
        // hidden column, named, and nothing said of its type
        todos(
            "hidden column behind a cast",
            "position::text = '4242.125'",
            alice(),
            403,
        )
        .says("\"position\""),
        todos(
            "hidden column with a type error",
            "position = 'x'",
            alice(),
            403,
        )
        .says("\"position\""),
        todos(
            "two hidden columns, one behind a cast",
            "deleted_at IS NULL AND position::text = '1'",
            alice(),
            403,
        )
        .says("column \"deleted_at\", which is not readable"),
        // answered as a hidden column: a token cannot tell which guessed names exist
        todos("unknown column", "colour = 'red'", alice(), 403)
            .says("column \"colour\", which is not readable in \"public\".\"todos\""),
        shape(
            "hidden column requested",
            &[("table", "todos"), ("columns", "id,position")],
            alice(),
            403,
        )
        .says("\"position\""),
        shape(
            "tombstone column requested",
            &[("table", "todos"), ("columns", "id,title,deleted_at")],
            alice(),
            403,
        )
        .says("\"deleted_at\""),
        shape(
            "readable columns requested",
            &[("table", "todos"), ("columns", "id,title")],
            alice(),
            200,
        )
        .rows(3),
        shape("table without rules", &[("table", "secrets")], alice(), 403).says("secrets"),
        shape(
            "table without rules, where",
            &[("table", "secrets"), ("where", "owner_id = 'alice'")],
            alice(),
            403,
        ),
        shape(
            "table without rules, quoted and qualified",
            &[("table", "\"public\".\"secrets\"")],
            alice(),
            403,
        ),
        shape(
            "SQL in the table name",
            &[("table", "todos; DROP TABLE todos")],
            alice(),
            400,
        ),
        shape(
            "SQL in a column name",
            &[
                ("table", "todos"),
                ("columns", "id,\"title; DROP TABLE todos; --\""),
            ],
            alice(),
            403,
        ),
        todos(
            "SQL in a quoted identifier",
            "\"owner_id\"\" OR 1=1 --\" = 'x'",
            alice(),
            403,
        )
        .says("which is not readable"),
        todos(
            "SQL after the where",
            "owner_id = 'alice'; DROP TABLE todos",
            alice(),
            400,
        ),
        shape(
            "SQL in a param",
            &[
                ("table", "todos"),
                ("where", "title = $1"),
                ("params[1]", "x' OR '1'='1"),
            ],
            alice(),
            200,
        )
        .rows(0),
        // Its rules hide columns of todos: a subquery may read only tables a token reads whole.
        todos(
            "subquery over a table read in part",
            "owner_id IN (SELECT owner_id FROM todos)",
            alice(),
            403,
        ),
        todos(
            "subquery over a table without rules",
            "owner_id IN (SELECT owner_id FROM secrets WHERE code = 'x')",
            alice(),
            403,
        ),
        todos("where too long", &"a".repeat(5_000), alice(), 400),
        shape("array claim", &[("table", "team_docs")], alice(), 200).rows(1),
        shape(
            "array claim, where for the other team",
            &[("table", "team_docs"), ("where", "team = 'blue' OR true")],
            alice(),
            200,
        )
        .rows(1),
        shape(
            "claim-free table",
            &[("table", "announcements")],
            alice(),
            200,
        )
        .rows(1),
        shape("bob's rows", &[("table", "todos")], bob(), 200)
            .rows(2)
            .seen_by(Viewer::Bob),
        shape("bob's team", &[("table", "team_docs")], bob(), 200)
            .rows(0)
            .seen_by(Viewer::Bob),
        shape(
            "token in the query",
            &[("table", "todos")],
            Cred::Query(hs256(&claims("alice"))),
            200,
        )
        .rows(3),
        shape(
            "RS256 token",
            &[("table", "todos")],
            Cred::Bearer(rs256(&claims("alice"))),
            200,
        )
        .rows(3),
        shape(
            "no sub claim",
            &[("table", "todos")],
            Cred::Bearer(hs256(&claims_with("alice", json!({"sub": null})))),
            200,
        )
        .rows(0),
        shape(
            "SQL in the sub claim",
            &[("table", "todos")],
            Cred::Bearer(hs256(&claims_with(
                "alice",
                json!({"sub": "bob' OR '1'='1"}),
            ))),
            200,
        )
        .rows(0),
        shape(
            "a number as sub",
            &[("table", "todos")],
            Cred::Bearer(hs256(&claims_with("alice", json!({"sub": 42})))),
            200,
        )
        .rows(0),
        shape(
            "array claim of the wrong shape",
            &[("table", "team_docs")],
            Cred::Bearer(hs256(&claims_with(
                "alice",
                json!({"teams": {"red": true}}),
            ))),
            403,
        )
        .says("$claims.teams"),
        shape(
            "the secret sees everything",
            &[("table", "todos")],
            secret(),
            200,
        )
        .rows(5)
        .seen_by(Viewer::Anyone),
    ]
}

fn credentials() -> Vec<Attempt> {
    let todos_shape = |name, cred| shape(name, &[("table", "todos")], cred, 401);
    let public_key = std::fs::read(fixture("rs256-public.pem")).expect("public key");
    vec![
        todos_shape("no credentials", Cred::None),
        todos_shape(
            "expired",
            Cred::Bearer(hs256(&claims_with(
                "alice",
                json!({"exp": jsonwebtoken::get_current_timestamp() - 3600}),
            ))),
        )
        .says("expired"),
        todos_shape(
            "not yet valid",
            Cred::Bearer(hs256(&claims_with(
                "alice",
                json!({"nbf": jsonwebtoken::get_current_timestamp() + 3600}),
            ))),
        )
        .says("not valid yet"),
        todos_shape(
            "wrong audience",
            Cred::Bearer(hs256(&claims_with("alice", json!({"aud": "another-app"})))),
        )
        .says("audience"),
        todos_shape(
            "wrong issuer",
            Cred::Bearer(hs256(&claims_with(
                "alice",
                json!({"iss": "https://evil.test"}),
            ))),
        )
        .says("issuer"),
        todos_shape(
            "no expiry",
            Cred::Bearer(hs256(&claims_with("alice", json!({"exp": null})))),
        )
        .says("exp"),
        todos_shape(
            "tampered payload",
            Cred::Bearer(tampered(&claims("alice"), &claims("bob"))),
        )
        .says("signature"),
        todos_shape("alg none", Cred::Bearer(alg_none(&claims("alice")))).says("none"),
        todos_shape(
            "HS256 signed with the public key",
            Cred::Bearer(hs256_with(&claims("alice"), &public_key)),
        )
        .says("signature"),
        todos_shape(
            "ES256 when only RS256 is configured",
            Cred::Bearer(es256(&claims("alice"))),
        )
        .says("ES256"),
        todos_shape(
            "RS256 signature on an HS256 header",
            Cred::Bearer({
                let rs = rs256(&claims("alice"));
                let hs = hs256(&claims("alice"));
                let (rs_parts, hs_parts): (Vec<&str>, Vec<&str>) =
                    (rs.split('.').collect(), hs.split('.').collect());
                format!("{}.{}.{}", hs_parts[0], hs_parts[1], rs_parts[2])
            }),
        ),
        todos_shape("garbage token", Cred::Bearer("not.a.jwt".into())),
        todos_shape(
            "basic auth",
            Cred::Authorization("Basic YWxpY2U6cGFzc3dvcmQ=".into()),
        ),
        todos_shape("the secret as a bearer token", Cred::Bearer(SECRET.into())),
        todos_shape("the JWT key as the secret", Cred::Secret(JWT_KEY.into())),
        todos_shape("a wrong secret", Cred::Secret("guess".into())),
        todos_shape(
            "the JWT key as a bearer token",
            Cred::Bearer(JWT_KEY.into()),
        ),
    ]
}

/// Every attempt, in the order they run.
pub fn attempts() -> Vec<Attempt> {
    let mut all = reads();
    all.extend(subsets::subsets());
    all.extend(credentials());
    all.extend(writes::writes());
    all.extend(writes::deletes());
    all
}

/// Runs `attempt`; returns what went wrong, if anything.
pub async fn run(proxy: &tests::proxy_process::ProxyProcess, attempt: &Attempt) -> Vec<String> {
    let reply = send(
        proxy,
        attempt.method.clone(),
        &attempt.path,
        &attempt.cred,
        attempt.body.as_ref(),
    )
    .await;
    let mut problems = Vec::new();
    if reply.status != attempt.status {
        problems.push(format!(
            "status {} instead of {}: {}",
            reply.status,
            attempt.status,
            reply.text.chars().take(300).collect::<String>()
        ));
    }
    let leaks = reply.leaks(forbidden_for(attempt.viewer));
    if !leaks.is_empty() {
        problems.push(format!("the body shows {leaks:?}"));
    }
    if !matches!(attempt.cred, Cred::Secret(_)) {
        let request = format!(
            "{} {}",
            attempt.path,
            attempt
                .body
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default()
        );
        let unasked: Vec<&str> = HIDDEN_COLUMNS
            .iter()
            .copied()
            .filter(|name| !request.contains(name))
            .collect();
        let shown = reply.names_shown(&unasked);
        if !shown.is_empty() {
            problems.push(format!(
                "the body names hidden columns {shown:?}: {}",
                reply.text
            ));
        }
    }
    for expect in &attempt.expect {
        problems.extend(unmet(expect, &reply));
    }
    problems
        .into_iter()
        .map(|p| format!("{}: {p}", attempt.name))
        .collect()
}

/// What `reply` lacks of `expect`, if anything.
fn unmet(expect: &Expect, reply: &Reply) -> Option<String> {
    match expect {
        Expect::Rows(n) => {
            let rows = reply.rows().len();
            (rows != *n).then(|| format!("{rows} rows instead of {n}"))
        }
        Expect::Result(expected) => {
            let first = &reply.json()["results"][0];
            let got = first["error"]["code"]
                .as_str()
                .or_else(|| first["status"].as_str())
                .unwrap_or("none");
            (got != *expected).then(|| format!("result {got} instead of {expected}: {first}"))
        }
        Expect::Says(text) => {
            let said = reply.json().to_string().replace("\\\"", "\"");
            (!said.contains(text))
                .then(|| format!("the body does not say {text:?}: {}", reply.text))
        }
    }
}
