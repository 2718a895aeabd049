//! Subqueries in the `where` language: what is accepted and refused (with the exact
//! messages), NULL semantics of IN / NOT IN / EXISTS / NOT EXISTS, row values, nesting, keys,
//! the rebuilt SQL and the canonical text.

mod common;

use std::collections::HashMap;

use common::subqueries::{
    Current, Db, Members, issues, members, orgs, parse_sub, projects, row_of,
};
use rstest::rstest;
use shapes::schema::QualifiedName;
use shapes::where_clause::{NoSubqueryRows, WhereClause, WhereError};

/// The message of an error without its position.
fn message(e: &WhereError) -> String {
    let text = e.to_string();
    match text.strip_prefix("At location ") {
        Some(rest) => rest
            .split_once(": ")
            .map_or(text.clone(), |(_, m)| m.to_owned()),
        None => text,
    }
}

fn refused(text: &str) -> String {
    match parse_sub(text, &[(1, "7")]) {
        Ok(w) => panic!("{text} was accepted: {}", w.canonical()),
        Err(e) => message(&e),
    }
}

const ONLY: &str =
    "a subquery may only be (SELECT [DISTINCT] columns FROM table [alias] [WHERE condition])";

#[rstest]
#[case::join("project_id IN (SELECT p.id FROM projects p JOIN members m ON m.org = p.org)", format!("JOIN is not supported in a subquery; {ONLY}"))]
#[case::two_tables("project_id IN (SELECT id FROM projects, members)", format!("reading several tables (FROM a, b) is not supported in a subquery; {ONLY}"))]
#[case::group_by("project_id IN (SELECT id FROM projects GROUP BY id)", format!("GROUP BY is not supported in a subquery; {ONLY}"))]
#[case::having("project_id IN (SELECT id FROM projects HAVING true)", format!("HAVING is not supported in a subquery; {ONLY}"))]
#[case::aggregate("project_id IN (SELECT max(id) FROM projects)", "only plain columns can be selected in a subquery, not `max(id)`".to_owned())]
#[case::limit("project_id IN (SELECT id FROM projects LIMIT 1)", format!("LIMIT/OFFSET is not supported in a subquery; {ONLY}"))]
#[case::offset("project_id IN (SELECT id FROM projects OFFSET 1)", format!("LIMIT/OFFSET is not supported in a subquery; {ONLY}"))]
#[case::order_by("project_id IN (SELECT id FROM projects ORDER BY id)", format!("ORDER BY is not supported in a subquery; {ONLY}"))]
#[case::fetch("project_id IN (SELECT id FROM projects FETCH FIRST 1 ROWS ONLY)", format!("FETCH is not supported in a subquery; {ONLY}"))]
#[case::union("project_id IN (SELECT id FROM projects UNION SELECT id FROM members)", format!("UNION/INTERSECT/EXCEPT is not supported in a subquery; {ONLY}"))]
#[case::except("project_id IN (SELECT id FROM projects EXCEPT SELECT id FROM members)", format!("UNION/INTERSECT/EXCEPT is not supported in a subquery; {ONLY}"))]
#[case::with("project_id IN (WITH p AS (SELECT id FROM projects) SELECT id FROM p)", format!("WITH is not supported in a subquery; {ONLY}"))]
#[case::star("project_id IN (SELECT * FROM projects)", "SELECT * is not supported in a subquery: name the column(s) to compare".to_owned())]
#[case::expression("project_id IN (SELECT id + 1 FROM projects)", "only plain columns can be selected in a subquery, not `id + 1`".to_owned())]
#[case::no_from("project_id IN (SELECT 1)", format!("a subquery needs FROM a table; {ONLY}"))]
#[case::derived("project_id IN (SELECT id FROM (SELECT id FROM projects) p)", format!("a subquery in FROM is not supported in a subquery; {ONLY}"))]
#[case::distinct_on("project_id IN (SELECT DISTINCT ON (org) id FROM projects)", format!("DISTINCT ON is not supported in a subquery; {ONLY}"))]
#[case::scalar("project_id = (SELECT id FROM projects)", "scalar subqueries `(SELECT …)` used as a value are not supported; write x IN (SELECT …)".to_owned())]
#[case::any("project_id = ANY(SELECT id FROM projects)", "op ANY (SELECT …) and op ALL (SELECT …) subqueries are not supported; write x IN (SELECT …) or x NOT IN (SELECT …)".to_owned())]
#[case::all("project_id <> ALL(SELECT id FROM projects)", "op ANY (SELECT …) and op ALL (SELECT …) subqueries are not supported; write x IN (SELECT …) or x NOT IN (SELECT …)".to_owned())]
#[case::too_many_columns("project_id IN (SELECT id, org FROM projects)", "the subquery selects 2 column(s) to compare with 1 value(s) on the left of IN".to_owned())]
#[case::too_few_columns("(project_id, owner) IN (SELECT id FROM projects)", "the subquery selects 1 column(s) to compare with 2 value(s) on the left of IN".to_owned())]
#[case::incomparable("owner IN (SELECT id FROM projects)", "cannot compare text with the subquery's column of type int8".to_owned())]
#[case::json("doc IN (SELECT id FROM projects)", "cannot compare jsonb with the subquery's column of type int8".to_owned())]
#[case::unknown_table("project_id IN (SELECT id FROM nope)", r#"table "public"."nope" does not exist"#.to_owned())]
#[case::unknown_schema_table("project_id IN (SELECT id FROM app.projects)", r#"table "app"."projects" does not exist"#.to_owned())]
#[case::no_primary_key("project_id IN (SELECT id FROM logs)", r#"table "public"."logs" has no primary key; subqueries need one"#.to_owned())]
#[case::unknown_inner_column("project_id IN (SELECT nope FROM projects)", r#"unknown column "nope"; the table "public"."projects" has: id, org, archived, budget, code"#.to_owned())]
#[case::outer_column_unqualified("project_id IN (SELECT id FROM projects WHERE org = title)", r#"column "title" is not in "public"."projects" (the subquery's table) but in the outer table "public"."issues": a subquery may use the outer row only in EXISTS, as inner_column = "issues".title"#.to_owned())]
#[case::outer_column_qualified("project_id IN (SELECT id FROM projects WHERE org = issues.owner)", "issues.owner is a column of the outer table \"public\".\"issues\": a subquery may use the outer row only in EXISTS, as inner_column = issues.owner".to_owned())]
#[case::hidden_by_alias("project_id IN (SELECT id FROM projects p WHERE projects.org = 'a')", "projects.org: the subquery reads no table projects; its table is \"public\".\"projects\" as p".to_owned())]
#[case::volatile_inside("project_id IN (SELECT id FROM projects WHERE random() > 0.5)", "random() is not deterministic: a shape's where clause must give the same answer whenever it is evaluated".to_owned())]
#[case::exists_uncorrelated("EXISTS (SELECT 1 FROM projects WHERE archived)", "EXISTS (SELECT …) must be correlated with the outer row, as in EXISTS (SELECT 1 FROM t WHERE t.column = outer_table.column AND …); otherwise use IN (SELECT …)".to_owned())]
#[case::exists_inequality("EXISTS (SELECT 1 FROM projects p WHERE p.id > issues.project_id)", "in EXISTS, the outer row may be used only in equalities inner_column = outer_column, joined to the other conditions by AND (not `p.id > issues.project_id`)".to_owned())]
#[case::exists_under_or("EXISTS (SELECT 1 FROM projects p WHERE p.id = issues.project_id OR p.archived)", "in EXISTS, the outer row may be used only in equalities inner_column = outer_column, joined to the other conditions by AND (not `p.id = issues.project_id OR p.archived`)".to_owned())]
#[case::exists_shadowed("EXISTS (SELECT 1 FROM members m WHERE m.user_id = issues.project_id + id)", "column \"id\" would name the subquery's own column here; write the outer one as \"issues\".id".to_owned())]
#[case::exists_expression_selected("EXISTS (SELECT id + 1 FROM projects p WHERE p.id = issues.project_id)", "EXISTS ignores what its subquery selects: write EXISTS (SELECT 1 FROM …)".to_owned())]
#[case::missing_param("project_id IN (SELECT id FROM projects WHERE org = $2)", "the where clause uses $2 but params[2] is not given".to_owned())]
fn unsupported_subqueries_are_refused_with_a_message_saying_what_is_supported(
    #[case] text: &str,
    #[case] expected: String,
) {
    assert_eq!(refused(text), expected, "{text}");
}

#[test]
fn plain_parse_refuses_subqueries_for_want_of_other_tables() {
    let err = WhereClause::parse(
        "project_id IN (SELECT id FROM projects)",
        &Default::default(),
        &issues(),
    )
    .unwrap_err();
    assert_eq!(
        message(&err),
        "subqueries are not supported here: the where clause was checked without the schemas of other tables"
    );
}

/// `project_id IN (SELECT id FROM projects WHERE …)` nested `depth` levels.
fn chain(depth: usize) -> String {
    let mut text = "id > 0".to_owned();
    for _ in 0..depth {
        text = format!("id IN (SELECT id FROM projects WHERE {text})");
    }
    text
}

#[test]
fn subqueries_nest_eight_levels_and_no_more() {
    let w = parse_sub(&chain(8), &[]).unwrap();
    let mut depth = 0;
    let mut clause = Some(&w);
    while let Some(c) = clause {
        clause = c
            .subqueries()
            .first()
            .and_then(|s| s.where_clause.as_deref());
        depth += 1;
    }
    assert_eq!(depth, 9, "the shape's clause and eight levels");
    assert_eq!(
        message(&parse_sub(&chain(9), &[]).unwrap_err()),
        "subqueries may be nested at most 8 levels deep"
    );
}

#[test]
fn a_where_has_at_most_sixteen_subqueries() {
    let many = |n: usize| {
        (0..n)
            .map(|i| format!("project_id IN (SELECT id FROM projects WHERE id > {i})"))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    assert_eq!(parse_sub(&many(16), &[]).unwrap().subqueries().len(), 16);
    assert_eq!(
        message(&parse_sub(&many(17), &[]).unwrap_err()),
        "a where clause may have at most 16 subqueries"
    );
    // nested ones count too
    let nested = format!("{} OR {}", many(15), chain(2));
    assert_eq!(
        message(&parse_sub(&nested, &[]).unwrap_err()),
        "a where clause may have at most 16 subqueries"
    );
}

const T: Option<bool> = Some(true);
const F: Option<bool> = Some(false);
const N: Option<bool> = None;

fn db(projects_rows: &[&[(&str, &str)]]) -> Db {
    let p = projects();
    HashMap::from([(
        p.name.clone(),
        projects_rows.iter().map(|r| row_of(&p, r)).collect(),
    )])
}

/// `where` on an issue with `project_id` (None: NULL) against projects with these ids
/// (None: a NULL id is impossible for a key, so NULLs go in `budget` compared instead).
fn membership(text: &str, outer: Option<&str>, inner: &[Option<&str>]) -> Option<bool> {
    let w = parse_sub(text, &[]).unwrap_or_else(|e| panic!("{text}: {e}"));
    let rows: Vec<Vec<(&str, &str)>> = inner
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let id: &'static str = Box::leak((i + 1).to_string().into_boxed_str());
            let mut r = vec![("id", id)];
            if let Some(v) = v {
                r.push(("budget", v));
            }
            r
        })
        .collect();
    let refs: Vec<&[(&str, &str)]> = rows.iter().map(Vec::as_slice).collect();
    let current = Current::of(&w, &db(&refs));
    let issue = match outer {
        Some(v) => row_of(&issues(), &[("id", "1"), ("amount", v)]),
        None => row_of(&issues(), &[("id", "1")]),
    };
    w.evaluate_with(&issue, &current)
}

#[rstest]
// found
#[case(Some("1"), &[Some("1.0"), None], T, F, T, F)]
// not found, no NULL among the inner values
#[case(Some("2"), &[Some("1")], F, T, F, T)]
// not found, a NULL among the inner values: unknown
#[case(Some("2"), &[Some("1"), None], N, N, F, T)]
// outer NULL, inner rows: unknown
#[case(None, &[Some("1")], N, N, F, T)]
// outer NULL, no inner rows: IN is false, NOT IN true (as in SQL)
#[case(None, &[], F, T, F, T)]
// no inner rows
#[case(Some("2"), &[], F, T, F, T)]
fn in_not_in_exists_and_not_exists_follow_sql_three_valued_logic(
    #[case] outer: Option<&str>,
    #[case] inner: &[Option<&str>],
    #[case] in_: Option<bool>,
    #[case] not_in: Option<bool>,
    #[case] exists: Option<bool>,
    #[case] not_exists: Option<bool>,
) {
    let cases = [
        ("amount IN (SELECT budget FROM projects)", in_),
        ("amount NOT IN (SELECT budget FROM projects)", not_in),
        ("NOT (amount IN (SELECT budget FROM projects))", not_in),
        (
            "EXISTS (SELECT 1 FROM projects p WHERE p.budget = issues.amount)",
            exists,
        ),
        (
            "NOT EXISTS (SELECT 1 FROM projects WHERE issues.amount = budget)",
            not_exists,
        ),
        (
            "NOT (EXISTS (SELECT 1 FROM projects p WHERE amount = p.budget))",
            not_exists,
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(
            membership(text, outer, inner),
            expected,
            "{text} with {outer:?} against {inner:?}"
        );
    }
}

#[test]
fn without_an_oracle_every_subquery_is_empty() {
    let w = parse_sub(
        "project_id IN (SELECT id FROM projects) OR owner NOT IN (SELECT org FROM projects)",
        &[],
    )
    .unwrap();
    let issue = row_of(&issues(), &[("id", "1"), ("project_id", "1")]);
    assert!(w.matches(&issue));
    assert_eq!(w.evaluate(&issue), w.evaluate_with(&issue, &NoSubqueryRows));
    assert!(w.has_subqueries());
    assert!(!parse_sub("id = 1", &[]).unwrap().has_subqueries());
}

/// Evaluates `(project_id, owner) IN (SELECT id, org …)` against projects `(id, org)`.
fn row_value(
    negated: bool,
    outer: (Option<&str>, Option<&str>),
    inner: &[(&str, Option<&str>)],
) -> Option<bool> {
    let text = if negated {
        "(project_id, owner) NOT IN (SELECT id, org FROM projects)"
    } else {
        "(project_id, owner) IN (SELECT id, org FROM projects)"
    };
    let w = parse_sub(text, &[]).unwrap();
    let rows: Vec<Vec<(&str, &str)>> = inner
        .iter()
        .map(|(id, org)| {
            let mut r = vec![("id", *id)];
            if let Some(o) = org {
                r.push(("org", o));
            }
            r
        })
        .collect();
    let refs: Vec<&[(&str, &str)]> = rows.iter().map(Vec::as_slice).collect();
    let current = Current::of(&w, &db(&refs));
    let mut values = vec![("id", "1")];
    if let Some(p) = outer.0 {
        values.push(("project_id", p));
    }
    if let Some(o) = outer.1 {
        values.push(("owner", o));
    }
    w.evaluate_with(&row_of(&issues(), &values), &current)
}

#[test]
fn row_values_match_only_whole_rows_and_a_null_anywhere_is_unknown() {
    let inner = [("1", Some("a")), ("2", Some("b"))];
    assert_eq!(row_value(false, (Some("1"), Some("a")), &inner), T);
    assert_eq!(row_value(false, (Some("1"), Some("b")), &inner), F);
    assert_eq!(row_value(true, (Some("1"), Some("b")), &inner), T);
    // a NULL part of the row value: unknown (Postgres alone would say false here, pair by pair)
    assert_eq!(row_value(false, (Some("3"), None), &inner), N);
    assert_eq!(row_value(true, (Some("3"), None), &inner), N);
    // and false when there are no inner rows
    assert_eq!(row_value(true, (None, None), &[]), T);
    // an inner row with a NULL: unknown when not found
    let with_null = [("1", Some("a")), ("2", None)];
    assert_eq!(row_value(false, (Some("1"), Some("a")), &with_null), T);
    assert_eq!(row_value(false, (Some("1"), Some("z")), &with_null), N);
    assert_eq!(row_value(true, (Some("1"), Some("z")), &with_null), N);
}

#[test]
fn keys_equal_exactly_when_postgres_equality_holds() {
    let w = parse_sub("amount IN (SELECT budget FROM projects)", &[]).unwrap();
    let sq = &w.subqueries()[0];
    let inner = |v: &str| sq.key_of_inner(&row_of(&projects(), &[("id", "1"), ("budget", v)]));
    assert_eq!(inner("1.0"), inner("1"));
    assert_eq!(inner("NaN"), inner("NaN"));
    assert_ne!(inner("1.01"), inner("1"));
    assert_eq!(inner("1.50").unwrap().parts(), ["1.5".into()]);
    assert_eq!(
        w.outer_key(0, &row_of(&issues(), &[("amount", "1.000")])),
        inner("1")
    );
    assert_eq!(w.outer_key(0, &row_of(&issues(), &[])), None);
    assert_eq!(w.outer_key(1, &row_of(&issues(), &[("amount", "1")])), None);

    // int4 against int8: compared (and keyed) as int8
    let w = parse_sub("project_id IN (SELECT id FROM projects)", &[]).unwrap();
    assert_eq!(w.subqueries()[0].types[0].to_string(), "int8");
    assert_eq!(
        w.outer_key(0, &row_of(&issues(), &[("project_id", "5")])),
        w.subqueries()[0].key_of_inner(&row_of(&projects(), &[("id", "5")]))
    );

    // uuid in any spelling
    let w = parse_sub("ref IN (SELECT refs FROM app.orgs)", &[]).unwrap();
    let upper = w.outer_key(
        0,
        &row_of(
            &issues(),
            &[("ref", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")],
        ),
    );
    let lower = w.subqueries()[0].key_of_inner(&row_of(
        &orgs(),
        &[("id", "1"), ("refs", "a0eebc999c0b4ef8bb6d6bb9bd380a11")],
    ));
    assert_eq!(upper, lower);
    assert_eq!(
        upper.unwrap().parts(),
        ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()]
    );

    // enums by label, text and varchar as text
    let w = parse_sub(
        "mood IN (SELECT mood FROM app.orgs) AND title IN (SELECT name FROM app.orgs)",
        &[],
    )
    .unwrap();
    assert_eq!(
        w.outer_key(0, &row_of(&issues(), &[("mood", "ok")]))
            .unwrap()
            .parts(),
        ["ok".into()]
    );
    assert_eq!(w.subqueries()[1].types[0].to_string(), "text");
}

#[test]
fn exists_maps_its_correlation_onto_compared_columns() {
    let w = parse_sub(
        "NOT EXISTS (SELECT 1 FROM members m WHERE m.role = 'admin' AND m.user_id = issues.project_id AND (issues.owner = m.org AND m.id > $1))",
        &[(1, "3")],
    )
    .unwrap();
    let sq = &w.subqueries()[0];
    let m = members();
    assert_eq!(sq.table, QualifiedName::new("public", "members"));
    assert_eq!(
        sq.columns,
        [
            m.column_index("user_id").unwrap(),
            m.column_index("org").unwrap()
        ]
    );
    assert_eq!(
        sq.types.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["int8", "text"]
    );
    // the outer columns read are the correlated ones
    let i = issues();
    assert_eq!(
        w.columns_used().collect::<Vec<_>>(),
        [
            i.column_index("project_id").unwrap(),
            i.column_index("owner").unwrap()
        ]
    );
    let (sql, params) = w.to_sql();
    assert_eq!(
        sql,
        r#"(NOT COALESCE(((("project_id")::int8, ("owner") COLLATE "C") IN (SELECT "s1"."user_id", ("s1"."org") COLLATE "C" FROM "public"."members" AS "s1" WHERE ((("s1"."role") COLLATE "C" = $1::text) AND ("s1"."id" > $2::int8)))), FALSE))"#
    );
    assert_eq!(params, ["admin", "3"]);
}

#[test]
fn unqualified_outer_names_are_read_in_an_exists_correlation() {
    // `title` is not a column of projects: Postgres reads it from the outer row
    let w = parse_sub("EXISTS (SELECT 1 FROM projects WHERE code = title)", &[]).unwrap();
    assert_eq!(w.subqueries()[0].types[0].to_string(), "varchar");
    assert_eq!(w.subqueries()[0].where_clause, None);
}

#[test]
fn nested_subqueries_three_levels_deep_evaluate_with_their_own_rows() {
    let text = "project_id IN (SELECT id FROM projects p WHERE p.org IN \
                (SELECT org FROM members WHERE user_id = $1 AND org IN \
                (SELECT name FROM app.orgs o WHERE o.plan = $2)))";
    let w = parse_sub(text, &[(1, "7"), (2, "pro")]).unwrap();
    assert_eq!(
        WhereClause::tables_named(text).unwrap(),
        [
            QualifiedName::new("public", "projects"),
            QualifiedName::new("public", "members"),
            QualifiedName::new("app", "orgs"),
        ]
    );
    let (p, m, o) = (projects(), members(), orgs());
    let mut data: Db = HashMap::new();
    data.insert(
        p.name.clone(),
        vec![
            row_of(&p, &[("id", "1"), ("org", "acme")]),
            row_of(&p, &[("id", "2"), ("org", "initech")]),
            row_of(&p, &[("id", "3"), ("org", "globex")]),
        ],
    );
    data.insert(
        m.name.clone(),
        vec![
            row_of(&m, &[("id", "1"), ("org", "acme"), ("user_id", "7")]),
            row_of(&m, &[("id", "2"), ("org", "initech"), ("user_id", "7")]),
            row_of(&m, &[("id", "3"), ("org", "globex"), ("user_id", "8")]),
        ],
    );
    data.insert(
        o.name.clone(),
        vec![
            row_of(&o, &[("id", "1"), ("name", "acme"), ("plan", "pro")]),
            row_of(&o, &[("id", "2"), ("name", "initech"), ("plan", "free")]),
            row_of(&o, &[("id", "3"), ("name", "globex"), ("plan", "pro")]),
        ],
    );
    let current = Current::of(&w, &data);
    let issue = |project: &str| row_of(&issues(), &[("id", "1"), ("project_id", project)]);
    // acme: a member's org on the pro plan; initech: free; globex: user 8 only
    assert_eq!(w.evaluate_with(&issue("1"), &current), T);
    assert_eq!(w.evaluate_with(&issue("2"), &current), F);
    assert_eq!(w.evaluate_with(&issue("3"), &current), F);

    let (sql, params) = w.to_sql_with_offset(3);
    assert_eq!(
        sql,
        r#"(("project_id")::int8 IN (SELECT "s1"."id" FROM "public"."projects" AS "s1" WHERE (("s1"."org") COLLATE "C" IN (SELECT ("s2"."org") COLLATE "C" FROM "public"."members" AS "s2" WHERE (("s2"."user_id" = $3::int8) AND (("s2"."org") COLLATE "C" IN (SELECT ("s3"."name") COLLATE "C" FROM "app"."orgs" AS "s3" WHERE (("s3"."plan") COLLATE "C" = $4::text))))))))"#
    );
    assert_eq!(params, ["7", "pro"]);
    assert_sql_parses(&sql);
}

/// The SQL reads as Postgres SQL (sqlparser with Postgres' dialect, as a `WHERE`).
fn assert_sql_parses(sql: &str) {
    let statement = format!("SELECT 1 FROM \"public\".\"issues\" WHERE {sql}");
    if let Err(e) =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &statement)
    {
        panic!("{statement}: {e}");
    }
}

#[test]
fn row_values_are_rebuilt_so_that_a_null_is_unknown_as_a_whole() {
    let w = parse_sub(
        "(project_id, owner) NOT IN (SELECT id, org FROM projects WHERE archived)",
        &[],
    )
    .unwrap();
    let (sql, params) = w.to_sql();
    assert_eq!(
        sql,
        r#"(NOT (CASE WHEN ((("project_id")::int8, ("owner") COLLATE "C") IN (SELECT "s1"."id", ("s1"."org") COLLATE "C" FROM "public"."projects" AS "s1" WHERE "s1"."archived")) THEN TRUE WHEN ((("project_id")::int8 IS NULL) OR ("owner" IS NULL)) AND EXISTS (SELECT "s1"."id", ("s1"."org") COLLATE "C" FROM "public"."projects" AS "s1" WHERE "s1"."archived") THEN NULL WHEN EXISTS (SELECT "s1"."id", ("s1"."org") COLLATE "C" FROM "public"."projects" AS "s1" WHERE "s1"."archived" AND (("s1"."id" IS NULL) OR ("s1"."org" IS NULL))) THEN NULL ELSE FALSE END))"#
    );
    assert!(params.is_empty());
    assert_sql_parses(&sql);
}

#[test]
fn params_are_shared_across_levels_and_numbered_on_through_inner_clauses() {
    let w = parse_sub(
        "owner = $1 AND project_id IN (SELECT id FROM projects WHERE org = $1 AND budget > $2) AND title <> $2",
        &[(1, "acme"), (2, "10")],
    )
    .unwrap();
    let (sql, params) = w.to_sql();
    assert_eq!(params, ["acme", "acme", "10", "10"]);
    assert!(
        sql.contains("$3::numeric") && sql.contains("$4::varchar"),
        "{sql}"
    );
    assert_sql_parses(&sql);
}

#[test]
fn canonical_text_tells_subqueries_apart() {
    let canonical = |t: &str| parse_sub(t, &[(1, "5")]).unwrap().canonical();
    let base = canonical("project_id IN (SELECT id FROM projects WHERE org = 'a')");
    assert_eq!(
        base,
        canonical("project_id in (select ID from PROJECTS p where p.org = 'a')")
    );
    assert_eq!(
        base,
        r#"(("project_id")::int8 IN (SELECT "s1"."id" FROM "public"."projects" AS "s1" WHERE ("s1"."org" = 'a'::text)))"#
    );
    for other in [
        "project_id IN (SELECT id FROM projects WHERE org = 'b')",
        "project_id NOT IN (SELECT id FROM projects WHERE org = 'a')",
        "project_id IN (SELECT id FROM members WHERE org = 'a')",
        "project_id IN (SELECT user_id FROM members WHERE org = 'a')",
        "project_id IN (SELECT id FROM projects WHERE org = 'a' AND id IN (SELECT id FROM members))",
        "EXISTS (SELECT 1 FROM projects p WHERE p.id = issues.project_id AND org = 'a')",
    ] {
        assert_ne!(canonical(other), base, "{other}");
    }
    assert_ne!(
        canonical("EXISTS (SELECT 1 FROM projects p WHERE p.id = issues.project_id)"),
        canonical("project_id IN (SELECT id FROM projects)")
    );
}

#[test]
fn joining_clauses_renumbers_the_subqueries_of_the_second() {
    let a = parse_sub(
        "project_id IN (SELECT id FROM projects WHERE archived)",
        &[],
    )
    .unwrap();
    let b = parse_sub("owner IN (SELECT org FROM members)", &[]).unwrap();
    let both = a.and(&b);
    assert_eq!(both.subqueries().len(), 2);
    let issue = row_of(
        &issues(),
        &[("id", "1"), ("project_id", "4"), ("owner", "x")],
    );
    let current = Current(vec![
        Members {
            keys: [a.outer_key(0, &issue).unwrap()].into(),
            has_null: false,
            rows: 1,
        },
        Members {
            keys: [b.outer_key(0, &issue).unwrap()].into(),
            has_null: false,
            rows: 1,
        },
    ]);
    assert!(both.matches_with(&issue, &current));
    assert_eq!(both.outer_key(1, &issue), b.outer_key(0, &issue));
    assert!(both.canonical().contains("\"public\".\"members\""));
}

#[test]
fn tables_named_lists_every_level_once_and_reports_syntax_errors() {
    assert_eq!(
        WhereClause::tables_named(
            "EXISTS (SELECT 1 FROM members m WHERE m.org = issues.owner) OR \
             project_id IN (SELECT id FROM \"projects\" WHERE id IN (SELECT id FROM Members)) \
             OR NOT (owner IN (SELECT name FROM app.orgs))"
        )
        .unwrap(),
        [
            QualifiedName::new("public", "members"),
            QualifiedName::new("public", "projects"),
            QualifiedName::new("app", "orgs"),
        ]
    );
    assert!(WhereClause::tables_named("id = 1").unwrap().is_empty());
    let err = WhereClause::tables_named("id IN (SELECT id FROM").unwrap_err();
    assert_eq!(
        err,
        WhereClause::parse("id IN (SELECT id FROM", &Default::default(), &issues()).unwrap_err()
    );
}

#[test]
fn distinct_and_whatever_exists_selects_change_nothing() {
    let canonical = |t: &str| parse_sub(t, &[]).unwrap().canonical();
    assert_eq!(
        canonical("project_id IN (SELECT DISTINCT id FROM public.projects AS p)"),
        canonical("project_id IN (SELECT id FROM projects)")
    );
    let exists = canonical("EXISTS (SELECT 1 FROM projects p WHERE p.id = issues.project_id)");
    for selected in ["*", "p.org", "'x'"] {
        assert_eq!(
            canonical(&format!(
                "EXISTS (SELECT {selected} FROM projects p WHERE p.id = issues.project_id)"
            )),
            exists
        );
    }
}
