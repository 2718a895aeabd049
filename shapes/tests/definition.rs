//! Shape definitions: validation, which parameter is at fault, canonical identity.

mod common;

use std::collections::BTreeMap;

use common::{parse, row, table};
use rstest::rstest;
use shapes::definition::{DefinitionError, LogMode, ReplicaMode, ShapeDefinition};

fn def(
    where_: Option<&str>,
    params: &[(usize, &str)],
    columns: Option<&str>,
) -> Result<ShapeDefinition, DefinitionError> {
    let params: BTreeMap<usize, String> =
        params.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
    ShapeDefinition::new(
        &table(),
        where_,
        &params,
        columns,
        ReplicaMode::Default,
        LogMode::Full,
    )
}

#[test]
fn selected_columns_are_in_table_order_and_default_to_all() {
    let d = def(None, &[], Some("t, id, \"Mixed Case\"")).unwrap();
    assert_eq!(d.selected_columns(), &[0, 8, 22]);
    let all = def(None, &[], None).unwrap();
    assert_eq!(all.selected_columns().len(), table().columns.len());
    assert!(all.where_clause().is_none());
}

/// What an error's message is expected to hold.
enum Message {
    Any,
    StartsWith(&'static str),
    Contains(&'static str),
}

#[rstest]
#[case::where_syntax(
    Some("i4 = "),
    &[],
    None,
    Some("where"),
    Message::StartsWith("At location 20: syntax error")
)]
#[case::where_unknown_column(Some("nope = 1"), &[], None, Some("where"), Message::Any)]
#[case::param_of_the_wrong_type(Some("i4 = $1"), &[(1, "x")], None, Some("params"), Message::Any)]
#[case::param_not_given(Some("i4 = $1"), &[], None, Some("params"), Message::Any)]
#[case::unknown_column(
    None,
    &[],
    Some("id,nope"),
    Some("columns"),
    Message::Contains("unknown column \"nope\"")
)]
#[case::columns_without_the_key(
    None,
    &[],
    Some("t"),
    None,
    Message::Contains("primary key; missing: id")
)]
#[case::repeated_column(None, &[], Some("id,id"), Some("columns"), Message::Any)]
#[case::unterminated_quote(None, &[], Some("id,\"t"), Some("columns"), Message::Any)]
fn errors_name_the_request_parameter_at_fault(
    #[case] where_: Option<&str>,
    #[case] params: &[(usize, &str)],
    #[case] columns: Option<&str>,
    #[case] param: Option<&str>,
    #[case] message: Message,
) {
    let e = def(where_, params, columns).unwrap_err();
    if let Some(param) = param {
        assert_eq!(e.param(), param);
    }
    match message {
        Message::Any => {}
        Message::StartsWith(start) => assert!(e.message().starts_with(start), "{}", e.message()),
        Message::Contains(part) => assert!(e.message().contains(part), "{}", e.message()),
    }
}

#[test]
fn the_same_shape_written_differently_has_one_identity() {
    let a = def(Some("i4 = 1 AND t = 'x'"), &[], Some("id,t")).unwrap();
    let variants = [
        def(
            Some(" I4=$1   and \"t\"=$2 "),
            &[(1, "1"), (2, "x")],
            Some("T, ID"),
        )
        .unwrap(),
        def(Some("(i4 = '1') AND (t = $$x$$)"), &[], Some("\"t\",id")).unwrap(),
    ];
    for v in &variants {
        assert_eq!(v.canonical(), a.canonical());
        assert_eq!(v.identity_hash(), a.identity_hash());
    }
}

#[test]
fn different_shapes_have_different_identities() {
    let base = def(Some("i4 = 1"), &[], None).unwrap();
    let others = [
        def(Some("i4 = 2"), &[], None).unwrap(),
        def(None, &[], None).unwrap(),
        def(Some("i4 = 1"), &[], Some("id,i4")).unwrap(),
        ShapeDefinition::new(
            &table(),
            Some("i4 = 1"),
            &BTreeMap::new(),
            None,
            ReplicaMode::Full,
            LogMode::Full,
        )
        .unwrap(),
        ShapeDefinition::new(
            &table(),
            Some("i4 = 1"),
            &BTreeMap::new(),
            None,
            ReplicaMode::Default,
            LogMode::ChangesOnly,
        )
        .unwrap(),
    ];
    for o in &others {
        assert_ne!(o.identity_hash(), base.identity_hash(), "{}", o.canonical());
    }
}

#[test]
fn identity_hash_is_stable_across_builds() {
    // a fixed value: changing it rotates every shape's handle, so it must be deliberate
    let d = def(Some("i4 = 1"), &[], Some("id,i4")).unwrap();
    assert_eq!(
        d.canonical(),
        "table=\"public\".\"things\"\nwhere=(\"i4\" = 1)\ncolumns=\"id\",\"i4\"\nreplica=default\nlog=full"
    );
    assert_eq!(
        d.identity_hash(),
        shapes::definition::fnv1a_64(d.canonical().as_bytes())
    );
    assert_eq!(
        d.identity_hash(),
        0xca6f_fa4f_214e_4f6e_u64,
        "{:#x}",
        d.identity_hash()
    );
}

#[test]
fn modes_parse_from_request_values() {
    assert_eq!("full".parse::<ReplicaMode>().unwrap(), ReplicaMode::Full);
    assert_eq!(
        "default".parse::<ReplicaMode>().unwrap(),
        ReplicaMode::Default
    );
    assert!("FULL".parse::<ReplicaMode>().is_err());
    assert_eq!(
        "changes_only".parse::<LogMode>().unwrap(),
        LogMode::ChangesOnly
    );
    assert_eq!("full".parse::<LogMode>().unwrap(), LogMode::Full);
    assert!("x".parse::<LogMode>().is_err());
}

#[test]
fn blank_where_means_no_where() {
    assert!(
        def(Some("   "), &[], None)
            .unwrap()
            .where_clause()
            .is_none()
    );
}

#[rstest]
fn a_filter_holds_whatever_the_where_says(
    #[values(
        "i4 = 1 OR true",
        "NOT (t = 'alice')",
        "t IS DISTINCT FROM 'alice'",
        "true OR t = 'bob'"
    )]
    widening: &str,
) {
    let filter = parse("t = 'alice'").unwrap();
    let d = def(Some(widening), &[], None).unwrap().with_filter(&filter);
    let w = d.where_clause().unwrap();
    assert!(
        !w.matches(&row(&[("id", "1"), ("i4", "1"), ("t", "bob")])),
        "{widening}"
    );
    let (sql, _) = w.to_sql();
    assert!(
        sql.starts_with(r#"((("t") COLLATE "C" = $1::text) AND "#),
        "{sql}"
    );
}

#[test]
fn a_filter_alone_is_the_where() {
    let filter = parse("t = 'alice'").unwrap();
    let plain = def(None, &[], None).unwrap().with_filter(&filter);
    assert_eq!(plain.where_clause(), Some(&filter));
}

#[test]
fn a_filtered_shape_never_shares_an_identity_with_an_unfiltered_one() {
    let filter = parse("t = 'alice'").unwrap();
    let filtered = def(None, &[], Some("id,t")).unwrap().with_filter(&filter);
    let same_rows_unfiltered = def(Some("t = 'alice'"), &[], Some("id,t")).unwrap();
    assert_ne!(filtered.canonical(), same_rows_unfiltered.canonical());
    assert_ne!(
        filtered.identity_hash(),
        same_rows_unfiltered.identity_hash()
    );
    assert!(
        filtered
            .canonical()
            .ends_with("\nfilter=(\"t\" = 'alice'::text)"),
        "{}",
        filtered.canonical()
    );
    let bob = def(None, &[], Some("id,t"))
        .unwrap()
        .with_filter(&parse("t = 'bob'").unwrap());
    assert_ne!(filtered.identity_hash(), bob.identity_hash());
    let again = def(None, &[], Some("t, id"))
        .unwrap()
        .with_filter(&parse("\"t\" = $$alice$$").unwrap());
    assert_eq!(again.identity_hash(), filtered.identity_hash());
}
