//! Properties of the `where` language: no input panics the parser, type checker or
//! evaluator; the canonical form reads back as the same condition.

mod common;

use proptest::prelude::*;

use common::{parse, table};

/// Valid `where`s covering the grammar; mutated and round-tripped below.
const CORPUS: &[&str] = &[
    "i4 = 1 AND t = 'x'",
    "i2 = 5 OR i8 IN (1, 2, NULL)",
    "n / 3 > 0.1 AND i4 / 2 = 3 AND i4 % 2 = 1",
    "-i8 * 2 + 1 <= 10",
    "f4 = 0.1 OR f8 = 'NaN' OR f8 > 1e300",
    "b IS NOT TRUE AND b IS DISTINCT FROM NULL",
    "t LIKE 'a\\%%' ESCAPE '\\' OR t ILIKE '_b%'",
    "vc NOT LIKE 'x!%' ESCAPE '!'",
    "c = 'ab' AND length(c) = 2 AND c || 'x' = 'abx'",
    "lower(t) = upper(vc) AND coalesce(t, vc, 'z') <> ''",
    "u = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
    "d BETWEEN '2024-01-01' AND '2024-12-31' OR d < '0044-03-15 BC'",
    "tm > '12:00' AND ts >= '2024-01-02 03:04:05.5' AND tz < '2024-01-01 00:00:00+05'",
    "iv > '1 day' OR iv = 'P1M'",
    "j->'a'->>'b' = 'x' AND jb->>0 IS NULL AND jb->'k'->> -1 = '2'",
    "e > 'sad' AND e IN ('ok', 'happy')",
    "ai @> '{1,2}' AND ai && ARRAY[i4, 3] AND ai <@ '{1,2,3,NULL}'",
    "i4 = ANY(ai) OR 3 > ALL('{1,2}') OR 'x' = ANY(at)",
    "i4::text = '5' AND CAST(i2 AS bigint) = 5 AND n::text LIKE '1.%'",
    "e::text = 'ok' AND b::text = 'true' AND jb::text <> '{}'",
    "NOT (i4 NOT BETWEEN 1 AND 5) AND i4 NOT IN (2, 3)",
    "\"Mixed Case\" = 'm' AND dom = 3",
    "div(i4, 2) = mod(i8, 3) AND i4 = ANY(ARRAY[1, 2])",
    "((i4 = 1 AND i8 = 2) AND t = 'x') OR (b AND NOT b)",
    "i2 = 40000 OR i4 = 3000000000 OR i8 = 9223372036854775808",
    "f8::numeric = 0.1 AND f4 < f8 AND i8::float8 = 1",
    "NULL::int4 IS NULL AND TRUE AND 'yes'",
    "at = '{a,\"b c\",NULL}' AND ai = '[0:1]={1,2}'",
    "CAST(2 AS bigint) = 5 OR 1::int2 + 1 = i4 OR i2 = -3 OR -3::int8 = i8",
    "-i8 * - + 1 <= 10 OR - + 2.5 < n OR -(3) = i4",
];

const TOKENS: &[&str] = &[
    "i4",
    "t",
    "b",
    "n",
    "f8",
    "ai",
    "j",
    "jb",
    "e",
    "c",
    "d",
    "tz",
    "iv",
    "=",
    "<>",
    "<",
    ">=",
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "TRUE",
    "(",
    ")",
    ",",
    "'x'",
    "'1'",
    "1",
    "-1",
    "1.5",
    "'NaN'",
    "+",
    "-",
    "*",
    "/",
    "%",
    "||",
    "::",
    "int4",
    "text",
    "LIKE",
    "ILIKE",
    "ESCAPE",
    "IN",
    "BETWEEN",
    "ANY",
    "ALL",
    "ARRAY[",
    "]",
    "@>",
    "<@",
    "&&",
    "->",
    "->>",
    "lower",
    "coalesce",
    "$1",
    "CAST",
    "AS",
    "'{1,2}'",
    "DISTINCT",
    "FROM",
    "\"",
    "'",
    "E'\\n'",
    "$$",
    "9223372036854775808",
    "1e400",
    "now()",
    "(SELECT 1)",
];

const VALUES: &[&str] = &[
    "",
    "0",
    "-1",
    "1.5",
    "NaN",
    "Infinity",
    "-0",
    "t",
    "f",
    "abc",
    "é",
    "{1,2}",
    "{NULL}",
    "{}",
    "[0:1]={1,2}",
    "{\"a\": 1}",
    "[1]",
    "\"s\"",
    "2024-02-29",
    "infinity",
    "P1D",
    "12:00:00",
    "2024-01-01 00:00:00+00",
    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "ok",
    "9223372036854775807",
    "1e308",
    "{{1},{2}}",
    "{\"k\": \"\\u0000\"}",
    "ab  ",
    "{",
    "\\",
    "'",
    "garbage",
];

fn value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        proptest::sample::select(VALUES).prop_map(|v| Some(v.to_string())),
        ".{0,8}".prop_map(Some),
    ]
}

fn row() -> impl Strategy<Value = Vec<Option<String>>> {
    proptest::collection::vec(value(), table().columns.len())
}

fn exercise(text: &str, rows: &[Vec<Option<String>>]) {
    if let Ok(w) = parse(text) {
        for r in rows {
            let _ = w.evaluate(r);
        }
        let _ = w.to_sql_with_offset(3);
        let _ = w.canonical();
        let _ = w.columns_used().count();
    }
}

/// Applies edit `k` at a position to a valid expression.
fn mutate(base: &str, at: usize, k: usize, token: &str) -> String {
    let chars: Vec<char> = base.chars().collect();
    let at = at % (chars.len() + 1);
    let mut out: Vec<char> = chars.clone();
    match k % 4 {
        0 => {
            let end = (at + 1 + k % 5).min(chars.len());
            out.drain(at.min(end)..end);
        }
        1 => {
            for (i, c) in format!(" {token} ").chars().enumerate() {
                out.insert(at + i, c);
            }
        }
        2 if at < out.len() => out[at] = token.chars().next().unwrap_or('x'),
        _ => out.truncate(at),
    }
    out.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_strings_never_panic(text in ".{0,60}", rows in proptest::collection::vec(row(), 2)) {
        exercise(&text, &rows);
    }

    #[test]
    fn random_token_soup_never_panics(
        tokens in proptest::collection::vec(proptest::sample::select(TOKENS), 0..14),
        rows in proptest::collection::vec(row(), 2),
    ) {
        exercise(&tokens.join(" "), &rows);
    }

    #[test]
    fn mutated_valid_expressions_never_panic(
        base in proptest::sample::select(CORPUS),
        at in 0usize..200,
        k in 0usize..100,
        token in proptest::sample::select(TOKENS),
        rows in proptest::collection::vec(row(), 3),
    ) {
        exercise(&mutate(base, at, k, token), &rows);
    }

    #[test]
    fn canonical_form_reads_back_as_the_same_condition(
        base in proptest::sample::select(CORPUS),
        at in 0usize..200,
        k in 0usize..100,
        token in proptest::sample::select(TOKENS),
        rows in proptest::collection::vec(row(), 4),
    ) {
        // the corpus itself and whatever mutations of it still parse
        for text in [base.to_string(), mutate(base, at, k, token)] {
            let Ok(first) = parse(&text) else { continue };
            let canonical = first.canonical();
            let second = parse(&canonical).unwrap_or_else(|e| panic!("{text} → {canonical}: {e}"));
            prop_assert_eq!(&second.canonical(), &canonical, "{}", text);
            for r in &rows {
                prop_assert_eq!(first.evaluate(r), second.evaluate(r), "{} on {:?}", text, r);
            }
            prop_assert_eq!(first.to_sql(), second.to_sql());
        }
    }
}

#[test]
fn every_corpus_entry_is_valid() {
    for text in CORPUS {
        if let Err(e) = parse(text) {
            panic!("{text}: {e}");
        }
    }
}
