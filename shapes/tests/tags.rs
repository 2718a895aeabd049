//! Electric's subquery tags for a `where` (`TagPlan`): positions of the expanded clause, the
//! tag strings byte for byte, active conditions, move patterns, on the examples Electric's
//! wire is known by.

mod common;

use std::collections::HashMap;

use common::subqueries::{Current, Db, Row, issues, members, parse_sub, projects, row_of};
use shapes::where_clause::{Condition, MAX_DISJUNCTS, TagPlan, WhereClause};

const SALT: &str = "single_stack95364187-1724230000000";

/// md5 of `SALT ‖ v:7`, Electric's own example.
const H7: &str = "2829038ff0f68a27e557b496cdb23bf3";
/// md5 of `SALT ‖ NULL`.
const H_NULL: &str = "ee34cdd30a19be4e9ea78e9d56b39c40";
/// md5 of `SALT ‖ v:1`.
const H1: &str = "64f7c5dbab7986dd304f8332d5355f27";
/// md5 of `SALT ‖ v:a`.
const H_A: &str = "c0f35798773e3cb6bec7d81a5024de6f";

fn plan_of(text: &str) -> (WhereClause, TagPlan) {
    let w = parse_sub(text, &[]).unwrap_or_else(|e| panic!("{text}: {e}"));
    let plan = TagPlan::of(&w).unwrap_or_else(|e| panic!("{text}: {e}"));
    (w, plan)
}

fn issue(values: &[(&str, &str)]) -> Row {
    row_of(&issues(), values)
}

/// A database of projects and members, each row given by its columns.
fn db(project_rows: &[&[(&str, &str)]], member_rows: &[&[(&str, &str)]]) -> Db {
    let (p, m) = (projects(), members());
    let rows = |t: &shapes::schema::TableSchema, rows: &[&[(&str, &str)]]| {
        rows.iter().map(|r| row_of(t, r)).collect::<Vec<_>>()
    };
    HashMap::from([
        (p.name.clone(), rows(&p, project_rows)),
        (m.name.clone(), rows(&m, member_rows)),
    ])
}

fn sub(subquery: usize, negated: bool) -> Condition {
    Condition::Subquery { subquery, negated }
}

const PLAIN: Condition = Condition::Plain { negated: false };

#[test]
fn a_single_subquery_position_has_no_separator() {
    let (_, plan) = plan_of("project_id IN (SELECT id FROM projects)");
    assert_eq!(plan.position_count(), 1);
    assert_eq!(plan.tags(&issue(&[("project_id", "7")]), SALT), [H7]);
}

#[test]
fn subquery_or_null_gives_one_tag_per_disjunct() {
    let (_, plan) = plan_of("project_id IN (SELECT id FROM projects) OR project_id IS NULL");
    assert_eq!(plan.disjuncts(), [0..1, 1..2]);
    assert_eq!(
        plan.conditions().collect::<Vec<_>>(),
        [sub(0, false), PLAIN]
    );
    let tags = plan.tags(&issue(&[("project_id", "7")]), SALT);
    assert_eq!(tags, [format!("{H7}/"), "/1".into()]);
}

#[test]
fn a_leaf_shared_by_two_disjuncts_has_a_position_in_each() {
    let (w, plan) =
        plan_of("(owner = 'a' OR title = 'b') AND project_id IN (SELECT id FROM projects)");
    assert_eq!(plan.position_count(), 4);
    assert_eq!(plan.disjuncts(), [0..2, 2..4]);
    assert_eq!(
        plan.conditions().collect::<Vec<_>>(),
        [PLAIN, sub(0, false), PLAIN, sub(0, false)]
    );
    let row = issue(&[("project_id", "7"), ("owner", "a"), ("title", "x")]);
    assert_eq!(
        plan.tags(&row, SALT),
        [format!("1/{H7}//"), format!("//1/{H7}")]
    );
    let current = Current::of(&w, &db(&[&[("id", "7")]], &[]));
    assert_eq!(
        plan.active_conditions(&row, &current),
        [true, true, false, true]
    );
}

#[test]
fn two_subqueries_tag_their_own_positions() {
    let (_, plan) = plan_of(
        "(project_id IN (SELECT id FROM projects) OR amount = 1) \
         AND owner IN (SELECT org FROM members)",
    );
    assert_eq!(
        plan.conditions().collect::<Vec<_>>(),
        [sub(0, false), sub(1, false), PLAIN, sub(1, false)]
    );
    let row = issue(&[("project_id", "7"), ("amount", "1"), ("owner", "a")]);
    assert_eq!(
        plan.tags(&row, SALT),
        [format!("{H7}/{H_A}//"), format!("//1/{H_A}")]
    );
}

#[test]
fn a_null_compared_value_hashes_as_null() {
    let (_, plan) = plan_of("project_id IN (SELECT id FROM projects)");
    assert_eq!(plan.tags(&issue(&[]), SALT), [H_NULL]);
}

#[test]
fn a_row_value_hashes_each_part_under_its_outer_column_name() {
    let (_, plan) = plan_of("(project_id, owner) IN (SELECT user_id, org FROM members)");
    let row = issue(&[("project_id", "7"), ("owner", "a")]);
    // md5 of SALT ‖ project_id:v:7owner:v:a (the outer names, not user_id and org)
    assert_eq!(plan.tags(&row, SALT), ["9cb4317a22bb967ec634e4c9121761a7"]);
    // md5 of SALT ‖ project_id:NULLowner:v:a: only the NULL part is NULL
    assert_eq!(
        plan.tags(&issue(&[("owner", "a")]), SALT),
        ["7f661065be5255080388445916dbc362"]
    );
}

#[test]
fn a_correlated_exists_is_a_subquery_position_over_its_outer_columns() {
    let (w, plan) = plan_of(
        "EXISTS (SELECT 1 FROM members m WHERE m.user_id = issues.project_id AND m.org = issues.owner)",
    );
    assert_eq!(plan.conditions().collect::<Vec<_>>(), [sub(0, false)]);
    let row = issue(&[("project_id", "7"), ("owner", "a")]);
    assert_eq!(plan.tags(&row, SALT), ["9cb4317a22bb967ec634e4c9121761a7"]);
    let data = db(&[], &[&[("id", "1"), ("user_id", "7"), ("org", "a")]]);
    let current = Current::of(&w, &data);
    assert_eq!(plan.active_conditions(&row, &current), [true]);
    // the member's key gives the pattern that matches the row's tag
    let key = w.subqueries()[0]
        .key_of_inner(&data[&members().name][0])
        .unwrap();
    assert_eq!(
        plan.patterns(0, &key, SALT),
        [(0, "9cb4317a22bb967ec634e4c9121761a7".to_owned())]
    );
}

#[test]
fn values_hash_as_their_key_in_the_comparison_type() {
    // numeric: 1.0 and 1 are one value
    let (w, plan) = plan_of("amount IN (SELECT budget FROM projects)");
    assert_eq!(plan.tags(&issue(&[("amount", "1.0")]), SALT), [H1]);
    let inner = w.subqueries()[0]
        .key_of_inner(&row_of(&projects(), &[("id", "1"), ("budget", "1.00")]))
        .unwrap();
    assert_eq!(plan.patterns(0, &inner, SALT), [(0, H1.to_owned())]);
    // int4 outer, int8 inner
    let (w, plan) = plan_of("project_id IN (SELECT id FROM projects)");
    let inner = w.subqueries()[0]
        .key_of_inner(&row_of(&projects(), &[("id", "7")]))
        .unwrap();
    assert_eq!(plan.patterns(0, &inner, SALT), [(0, H7.to_owned())]);
}

#[test]
fn patterns_name_every_position_of_the_subquery_and_no_other() {
    let (w, plan) = plan_of(
        "(owner = 'a' OR title = 'b') AND project_id IN (SELECT id FROM projects) \
         AND owner IN (SELECT org FROM members)",
    );
    let key = w.outer_key(0, &issue(&[("project_id", "7")])).unwrap();
    assert_eq!(
        plan.patterns(0, &key, SALT),
        [(1, H7.to_owned()), (4, H7.to_owned())]
    );
    let key = w.outer_key(1, &issue(&[("owner", "a")])).unwrap();
    assert_eq!(
        plan.patterns(1, &key, SALT),
        [(2, H_A.to_owned()), (5, H_A.to_owned())]
    );
}

#[test]
fn not_flips_a_subquery_position_and_keeps_its_hash() {
    for (text, negated) in [
        ("NOT (project_id IN (SELECT id FROM projects))", true),
        ("project_id NOT IN (SELECT id FROM projects)", true),
        ("NOT (project_id NOT IN (SELECT id FROM projects))", false),
        ("NOT NOT (project_id IN (SELECT id FROM projects))", false),
        (
            "NOT EXISTS (SELECT 1 FROM projects p WHERE p.id = issues.project_id)",
            true,
        ),
    ] {
        let (_, plan) = plan_of(text);
        assert_eq!(plan.condition(0), sub(0, negated), "{text}");
        assert_eq!(plan.all_positive(), !negated, "{text}");
        assert_eq!(
            plan.tags(&issue(&[("project_id", "7")]), SALT),
            [H7],
            "{text}"
        );
    }
}

#[test]
fn de_morgan_splits_a_negated_conjunction_into_negated_disjuncts() {
    let (_, plan) = plan_of("NOT (project_id IN (SELECT id FROM projects) AND owner = 'a')");
    assert_eq!(plan.disjuncts(), [0..1, 1..2]);
    assert_eq!(
        plan.conditions().collect::<Vec<_>>(),
        [sub(0, true), Condition::Plain { negated: true }]
    );
    assert!(!plan.all_positive());
    assert!(!plan.subquery_all_positive(0));
    let tags = plan.tags(&issue(&[("project_id", "7"), ("owner", "a")]), SALT);
    assert_eq!(tags, [format!("{H7}/"), "/1".into()]);
}

#[test]
fn a_negated_subquery_position_is_true_unless_the_value_is_in_it() {
    let data = db(&[&[("id", "7"), ("budget", "1")], &[("id", "8")]], &[]);
    // the subquery offers a NULL budget
    let (w, plan) = plan_of("amount NOT IN (SELECT budget FROM projects)");
    let current = Current::of(&w, &data);
    let two = issue(&[("amount", "2")]);
    // SQL: 2 NOT IN (1, NULL) is NULL, so the row is not in the shape; Electric's active
    // condition is NOT COALESCE(2 IN (…), false): true
    assert!(!w.matches_with(&two, &current));
    assert_eq!(plan.active_conditions(&two, &current), [true]);
    let one = issue(&[("amount", "1.0")]);
    assert_eq!(plan.active_conditions(&one, &current), [false]);
    // a NULL outer value is never contained: true as well
    let (w, plan) = plan_of("project_id NOT IN (SELECT id FROM projects)");
    let current = Current::of(&w, &data);
    assert!(!w.matches_with(&issue(&[]), &current));
    assert_eq!(plan.active_conditions(&issue(&[]), &current), [true]);
    let seven = issue(&[("project_id", "7")]);
    assert_eq!(plan.active_conditions(&seven, &current), [false]);
}

#[test]
fn a_null_plain_leaf_is_false_under_either_polarity() {
    let (_, plan) = plan_of("owner = 'a' OR NOT (title = 'b')");
    let none = Current::default();
    assert_eq!(plan.active_conditions(&issue(&[]), &none), [false, false]);
    let row = issue(&[("owner", "a"), ("title", "c")]);
    assert_eq!(plan.active_conditions(&row, &none), [true, true]);
}

#[test]
fn a_positive_subquery_position_is_false_for_a_null_value() {
    let (w, plan) = plan_of("project_id IN (SELECT id FROM projects)");
    let current = Current::of(&w, &db(&[&[("id", "7")]], &[]));
    assert_eq!(plan.active_conditions(&issue(&[]), &current), [false]);
}

#[test]
fn a_subquery_inside_a_non_connective_expression_is_a_mixed_position() {
    let (w, plan) =
        plan_of("coalesce(project_id IN (SELECT id FROM projects), false) OR owner = 'a'");
    assert_eq!(
        plan.conditions().collect::<Vec<_>>(),
        [Condition::Mixed { negated: false }, PLAIN]
    );
    assert!(plan.has_mixed());
    assert!(plan.all_positive());
    let row = issue(&[("project_id", "7")]);
    assert_eq!(plan.tags(&row, SALT), ["1/", "/1"]);
    let current = Current::of(&w, &db(&[&[("id", "7")]], &[]));
    assert_eq!(plan.active_conditions(&row, &current), [true, false]);
    let key = w.outer_key(0, &row).unwrap();
    assert_eq!(plan.patterns(0, &key, SALT), []);
}

#[test]
fn included_needs_one_disjunct_wholly_true() {
    let (_, plan) =
        plan_of("(owner = 'a' OR title = 'b') AND project_id IN (SELECT id FROM projects)");
    assert!(plan.included(&[true, true, false, true]));
    assert!(plan.included(&[false, false, true, true]));
    assert!(!plan.included(&[true, false, true, false]));
    assert!(!plan.included(&[]));
}

#[test]
fn removed_tags_are_the_old_ones_the_new_ones_lack_in_order() {
    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        TagPlan::removed_tags(&tags(&["a/", "/1", "b/"]), &tags(&["/1", "c/"])),
        tags(&["a/", "b/"])
    );
    assert_eq!(
        TagPlan::removed_tags(&tags(&["a/", "/1"]), &tags(&["/1", "a/"])),
        Vec::<String>::new()
    );
    // a list difference: one new tag cancels one old one
    assert_eq!(
        TagPlan::removed_tags(&tags(&["a", "a"]), &tags(&["a"])),
        tags(&["a"])
    );
}

#[test]
fn more_than_a_hundred_disjuncts_are_refused_with_the_limit_named() {
    // 3^4 = 81 disjuncts are fine, 3^5 = 243 are not
    let factor = |i: usize| {
        format!("(project_id = {i} OR owner = '{i}' OR project_id IN (SELECT id FROM projects))")
    };
    let text = |n: usize| (0..n).map(factor).collect::<Vec<_>>().join(" AND ");
    let (_, fine) = plan_of(&text(4));
    assert_eq!(fine.disjuncts().len(), 81);
    assert_eq!(fine.position_count(), 81 * 4);
    let w = parse_sub(&text(5), &[]).unwrap();
    let err = TagPlan::of(&w).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "where clause too complex for subquery tags: 243 disjuncts, at most {MAX_DISJUNCTS}"
        )
    );
}
