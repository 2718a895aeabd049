//! The subset snapshot attempts of the matrix (`subset__*` parameters on GET, and the JSON
//! body of POST): a subset is part of the caller's shape, so it can neither use columns the
//! rules hide (in `where` or `order_by`) nor reach rows outside the rule's filter.

use reqwest::Method;
use serde_json::{Value, json};

use crate::matrix::{Attempt, alice, bob, query, secret, shape};
use crate::support::*;

/// A subset of alice's todos shape (`offset=-1`: no handle needed) by GET, with `subset`
/// as `subset__*` parameters.
fn get(name: &'static str, subset: &[(&str, &str)], cred: Cred, status: u16) -> Attempt {
    let params: Vec<(String, &str)> = subset
        .iter()
        .map(|(k, v)| (format!("subset__{k}"), *v))
        .collect();
    let mut all: Vec<(&str, &str)> = vec![("table", "todos")];
    all.extend(params.iter().map(|(k, v)| (k.as_str(), *v)));
    shape(name, &all, cred, status)
}

/// The same by POST, with `body` as the JSON body.
fn post(name: &'static str, body: Value, cred: Cred, status: u16) -> Attempt {
    Attempt {
        method: Method::POST,
        path: format!(
            "/v1/shape?{}",
            query(&[("table", "todos"), ("offset", "-1")])
        ),
        body: Some(body),
        ..shape(name, &[], cred, status)
    }
}

pub(crate) fn subsets() -> Vec<Attempt> {
    vec![
        get("subset: own rows", &[("where", "true")], alice(), 200).rows(3),
        get(
            "subset: hidden column in where",
            &[("where", "position = 4242.125")],
            alice(),
            403,
        )
        .says("\"position\"")
        .says("subset__where"),
        get(
            "subset: hidden column behind OR",
            &[("where", "title <> '' OR position > 4242")],
            alice(),
            403,
        )
        .says("\"position\""),
        get(
            "subset: hidden column behind a cast",
            &[("where", "position::text = '4242.125'")],
            alice(),
            403,
        )
        .says("\"position\""),
        get(
            "subset: hidden column with a type error",
            &[("where", "position = 'x'")],
            alice(),
            403,
        )
        .says("\"position\""),
        get(
            "subset: hidden column in a param's place",
            &[
                ("where", "position = $1"),
                ("params", r#"{"1": "4242.125"}"#),
            ],
            alice(),
            403,
        )
        .says("\"position\""),
        get(
            "subset: hidden column in order_by",
            &[("order_by", "position DESC"), ("limit", "1")],
            alice(),
            403,
        )
        .says("\"position\"")
        .says("subset__order_by"),
        get(
            "subset: hidden column after a readable one in order_by",
            &[("order_by", "title, deleted_at"), ("limit", "1")],
            alice(),
            403,
        )
        .says("\"deleted_at\""),
        get(
            "subset: unknown column in where",
            &[("where", "colour = 'red'")],
            alice(),
            403,
        )
        .says("\"colour\", which is not readable"),
        get(
            "subset: unknown column in order_by",
            &[("order_by", "colour"), ("limit", "1")],
            alice(),
            403,
        )
        .says("\"colour\", which is not readable"),
        get(
            "subset: OR true",
            &[("where", "true OR true")],
            alice(),
            200,
        )
        .rows(3),
        get(
            "subset: other owner OR 1=1",
            &[("where", "owner_id = 'bob' OR 1=1")],
            alice(),
            200,
        )
        .rows(3),
        get(
            "subset: NOT (own)",
            &[("where", "NOT (owner_id = 'alice')")],
            alice(),
            200,
        )
        .rows(0),
        get(
            "subset: other owner by param",
            &[("where", "owner_id = $1"), ("params", r#"{"1": "bob"}"#)],
            alice(),
            200,
        )
        .rows(0),
        get(
            "subset: comment trick",
            &[("where", "title = 'x' /* */ OR true -- ) OR (true")],
            alice(),
            200,
        )
        .rows(3),
        get(
            "subset: ordered and limited own rows",
            &[("order_by", "title DESC"), ("limit", "2")],
            alice(),
            200,
        )
        .rows(2),
        shape(
            "subset: table without rules",
            &[("table", "secrets"), ("subset__where", "id = 1")],
            alice(),
            403,
        ),
        post(
            "subset POST: hidden column in where",
            json!({"where": "position > 4000"}),
            alice(),
            403,
        )
        .says("\"position\""),
        post(
            "subset POST: hidden column in order_by",
            json!({"order_by": "position", "limit": 1}),
            alice(),
            403,
        )
        .says("\"position\""),
        post(
            "subset POST: OR true",
            json!({"where": "owner_id = 'bob' OR true", "order_by": "title", "limit": 10}),
            alice(),
            200,
        )
        .rows(3),
        post(
            "subset POST: unknown column",
            json!({"where": "colour = $1", "params": {"1": "red"}}),
            alice(),
            403,
        )
        .says("\"colour\", which is not readable"),
        post(
            "subset POST: bob asks for alice's rows",
            json!({"where": "title = 'alice private plan' OR true"}),
            bob(),
            200,
        )
        .rows(2)
        .seen_by(Viewer::Bob),
        get(
            "subset: the secret may use every column",
            &[("where", "position = 4242.125")],
            secret(),
            200,
        )
        .rows(1)
        .seen_by(Viewer::Anyone),
    ]
}
