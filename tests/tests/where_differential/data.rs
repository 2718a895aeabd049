//! The table the differential test runs on, and random rows full of edge values.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use shapes::schema::{PgType, TableSchema};
use shapes::testing::{array_of, base, column, enum_of, table};

/// (name, SQL type in CREATE TABLE, catalog type name, value pool).
pub struct ColumnSpec {
    pub name: &'static str,
    pub sql_type: &'static str,
    pub type_name: &'static str,
    pub pool: &'static [&'static str],
}

pub const INT2: &[&str] = &["0", "1", "-1", "7", "42", "-32768", "32767", "100", "3"];
pub const INT4: &[&str] = &[
    "0",
    "1",
    "-1",
    "7",
    "42",
    "-2147483648",
    "2147483647",
    "100",
    "3",
    "-7",
];
pub const INT8: &[&str] = &[
    "0",
    "1",
    "-1",
    "7",
    "42",
    "-9223372036854775808",
    "9223372036854775807",
    "100",
    "3",
    "4294967296",
];
pub const NUMERIC: &[&str] = &[
    "0",
    "1.5",
    "-1.50",
    "0.1",
    "1e20",
    "123456789.123456789",
    "NaN",
    "Infinity",
    "-Infinity",
    "0.000001",
    "3",
    "7.00",
    "-0.5",
    "2.5",
];
pub const FLOAT: &[&str] = &[
    "0",
    "-0",
    "0.1",
    "1.5",
    "-2.5",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e300",
    "1.7976931348623157e308",
    "5e-324",
    "16777217",
    "3",
    "7",
    "1e-05",
    "123456.7",
];
pub const FLOAT4: &[&str] = &[
    "0",
    "-0",
    "0.1",
    "1.5",
    "-2.5",
    "NaN",
    "Infinity",
    "-Infinity",
    "3.4028235e+38",
    "1e-45",
    "16777217",
    "3",
    "7",
    "1e-05",
    "123456.7",
    "0.3",
];
pub const TEXT: &[&str] = &[
    "",
    "a",
    "A",
    "b",
    "B",
    "Z",
    "z",
    "é",
    "É",
    "abc",
    "ABC",
    "a b",
    "ab  ",
    "😀",
    "ß",
    "a%b",
    "a_b",
    "x\\y",
    "it's",
    "ñ",
    "Å",
    "aa",
    "a-b",
    " a",
    "f",
    "ab",
    "Abc",
    "a\u{301}",
    // case mapping outside ASCII: accents, ß, Turkish dotted/dotless i, Greek with final
    // sigma, Cyrillic, titlecase digraphs, ligatures, the Kelvin sign, emoji
    "café",
    "CAFÉ",
    "Café",
    "straße",
    "STRASSE",
    "İstanbul",
    "ıi",
    "ISTANBUL",
    "ΣΟΦΟΣ",
    "σοφος",
    "Σοφός",
    "ΌΣΟΣ ΑΣ",
    "Москва",
    "МОСКВА",
    "ǅemal",
    "ǆ",
    "Ǆ",
    "ǈ",
    "ﬁne",
    "ŉ",
    "😀É",
    "ÀÉÎÕÜ",
    "\u{212A}elvin",
    "ΐ",
    "ᾈ",
    "Ꭰ",
    "ꭰ",
    "ǰ",
];
pub const BPCHAR: &[&str] = &["a", "ab", "ab  ", "A", "é", "", "b c", "z", "ÉÉ"];
pub const UUID: &[&str] = &[
    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "7fffffff-ffff-ffff-ffff-ffffffffffff",
];
pub const DATE: &[&str] = &[
    "2024-02-29",
    "2000-01-01",
    "1970-01-01",
    "0044-03-15 BC",
    "4714-11-24 BC",
    "5874897-12-31",
    "infinity",
    "-infinity",
    "2023-12-31",
    "0001-01-01",
    "0001-12-31 BC",
];
pub const TIME: &[&str] = &[
    "00:00:00",
    "12:00:00",
    "23:59:59.999999",
    "24:00:00",
    "13:45:30.5",
];
pub const TIMESTAMP: &[&str] = &[
    "2024-02-29 12:00:00",
    "2000-01-01 00:00:00",
    "infinity",
    "-infinity",
    "0044-03-15 10:00:00 BC",
    "294276-12-31 23:59:59.999999",
    "1999-12-31 23:59:59.999999",
    "4714-11-24 00:00:00 BC",
];
pub const TIMESTAMPTZ: &[&str] = &[
    "2024-02-29 12:00:00+00",
    "2000-01-01 05:30:00+05:30",
    "infinity",
    "-infinity",
    "1999-12-31 23:59:59.999999+00",
    "0044-03-15 10:00:00+00 BC",
    "2024-01-01 00:00:00-08",
];
pub const INTERVAL: &[&str] = &[
    "P1D",
    "PT24H",
    "P1M",
    "P30D",
    "P1Y2M3DT4H5M6.5S",
    "PT0S",
    "P-1D",
    "PT-1.5S",
    "-1 month",
    "PT0.000001S",
];
pub const JSON: &[&str] = &[
    r#"{"a": {"b": [1, "two", null]}, "n": 1.50, "s": "x\"y", "t": true}"#,
    r#"{"a":1,"a":"dup"}"#,
    r#"{"k": "\u0000"}"#,
    r#"{"k": "\u00e9", "a": [10, 20]}"#,
    r#"[1, {"a": "x"}, "s"]"#,
    r#""just a string""#,
    r#"{"n": 1e2, "k": null}"#,
    "  {\"k\" :\n \"v\" }  ",
];
pub const JSONB: &[&str] = &[
    r#"{"a": {"b": [1, "two", null]}, "n": 1.50, "s": "x\"y"}"#,
    r#"{"k": "v", "a": [10, 20]}"#,
    r#"[1, {"a": "x"}, "s"]"#,
    r#"{"n": 1e2, "k": null}"#,
    r#"{"k": "é", "a": 1}"#,
    "42",
];
pub const MOOD: &[&str] = &["sad", "ok", "happy"];
pub const INT_ARRAY: &[&str] = &[
    "{}",
    "{1,2,3}",
    "{1,NULL}",
    "{{1,2},{3,4}}",
    "{NULL}",
    "[0:1]={7,8}",
    "{3}",
    "{42,7}",
];
pub const TEXT_ARRAY: &[&str] = &[
    "{}",
    "{a,\"b c\",NULL}",
    "{\"x,y\"}",
    "{\"\"}",
    "{é,a}",
    "{A,B}",
    "{a}",
];
pub const BOOL: &[&str] = &["t", "f"];

pub const COLUMNS: &[ColumnSpec] = &[
    ColumnSpec {
        name: "i2",
        sql_type: "int2",
        type_name: "int2",
        pool: INT2,
    },
    ColumnSpec {
        name: "i4",
        sql_type: "int4",
        type_name: "int4",
        pool: INT4,
    },
    ColumnSpec {
        name: "i8",
        sql_type: "int8",
        type_name: "int8",
        pool: INT8,
    },
    ColumnSpec {
        name: "n",
        sql_type: "numeric",
        type_name: "numeric",
        pool: NUMERIC,
    },
    ColumnSpec {
        name: "f4",
        sql_type: "float4",
        type_name: "float4",
        pool: FLOAT4,
    },
    ColumnSpec {
        name: "f8",
        sql_type: "float8",
        type_name: "float8",
        pool: FLOAT,
    },
    ColumnSpec {
        name: "b",
        sql_type: "bool",
        type_name: "bool",
        pool: BOOL,
    },
    ColumnSpec {
        name: "t",
        sql_type: "text",
        type_name: "text",
        pool: TEXT,
    },
    ColumnSpec {
        name: "vc",
        sql_type: "varchar(20)",
        type_name: "varchar",
        pool: TEXT,
    },
    ColumnSpec {
        name: "c",
        sql_type: "char(4)",
        type_name: "bpchar",
        pool: BPCHAR,
    },
    ColumnSpec {
        name: "u",
        sql_type: "uuid",
        type_name: "uuid",
        pool: UUID,
    },
    ColumnSpec {
        name: "d",
        sql_type: "date",
        type_name: "date",
        pool: DATE,
    },
    ColumnSpec {
        name: "tm",
        sql_type: "time",
        type_name: "time",
        pool: TIME,
    },
    ColumnSpec {
        name: "ts",
        sql_type: "timestamp",
        type_name: "timestamp",
        pool: TIMESTAMP,
    },
    ColumnSpec {
        name: "tz",
        sql_type: "timestamptz",
        type_name: "timestamptz",
        pool: TIMESTAMPTZ,
    },
    ColumnSpec {
        name: "iv",
        sql_type: "interval",
        type_name: "interval",
        pool: INTERVAL,
    },
    ColumnSpec {
        name: "j",
        sql_type: "json",
        type_name: "json",
        pool: JSON,
    },
    ColumnSpec {
        name: "jb",
        sql_type: "jsonb",
        type_name: "jsonb",
        pool: JSONB,
    },
    ColumnSpec {
        name: "e",
        sql_type: "mood",
        type_name: "mood",
        pool: MOOD,
    },
    ColumnSpec {
        name: "ai",
        sql_type: "int4[]",
        type_name: "int4",
        pool: INT_ARRAY,
    },
    ColumnSpec {
        name: "at",
        sql_type: "text[]",
        type_name: "text",
        pool: TEXT_ARRAY,
    },
];

pub const SETUP_SQL: &str = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');";

pub fn create_table_sql() -> String {
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("\"{}\" {}", c.name, c.sql_type))
        .collect();
    format!("CREATE TABLE t (id int8 PRIMARY KEY, {})", cols.join(", "))
}

fn pg_type(spec: &ColumnSpec) -> PgType {
    match spec.name {
        "e" => enum_of("mood", MOOD),
        "ai" | "at" => array_of(base(spec.type_name)),
        _ => base(spec.type_name),
    }
}

/// The schema the proxy would read from the catalog for `t`.
pub fn table_schema() -> TableSchema {
    let id = PgType {
        oid: 20,
        ..base("int8")
    };
    let mut columns = vec![column("id", id).pk(0).not_null()];
    columns.extend(COLUMNS.iter().map(|spec| column(spec.name, pg_type(spec))));
    TableSchema {
        oid: 0,
        ..table("public", "t", columns)
    }
}

/// One random row's values (as input text, `None` = NULL), excluding `id`.
pub fn random_row(rng: &mut StdRng) -> Vec<Option<String>> {
    COLUMNS
        .iter()
        .map(|c| {
            if rng.random_bool(0.15) {
                None
            } else {
                c.pool.choose(rng).map(|s| s.to_string())
            }
        })
        .collect()
}
