//! Random `where` expressions from the supported grammar, typed so that most are accepted.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use super::data;

pub struct Gen<'a> {
    pub rng: &'a mut StdRng,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

const CMP: &[&str] = &["=", "<>", "!=", "<", "<=", ">", ">="];

/// The families of values a comparison can be made in.
#[derive(Clone, Copy, Debug)]
enum Family {
    Int,
    Number,
    Text,
    Bool,
    Uuid,
    Date,
    Time,
    Ts,
    Tz,
    Interval,
    Enum,
    IntArray,
    TextArray,
}

const FAMILIES: &[Family] = &[
    Family::Int,
    Family::Int,
    Family::Number,
    Family::Number,
    Family::Text,
    Family::Text,
    Family::Text,
    Family::Bool,
    Family::Uuid,
    Family::Date,
    Family::Time,
    Family::Ts,
    Family::Tz,
    Family::Interval,
    Family::Enum,
    Family::IntArray,
    Family::TextArray,
];

impl Gen<'_> {
    fn pick<'p>(&mut self, items: &'p [&'p str]) -> &'p str {
        items.choose(self.rng).copied().unwrap_or("")
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// A boolean expression.
    pub fn boolean(&mut self, depth: u32) -> String {
        let leaf = depth == 0 || self.chance(0.35);
        if !leaf {
            match self.rng.random_range(0..6) {
                0 => {
                    return format!(
                        "({} AND {})",
                        self.boolean(depth - 1),
                        self.boolean(depth - 1)
                    );
                }
                1 => {
                    return format!(
                        "({} OR {})",
                        self.boolean(depth - 1),
                        self.boolean(depth - 1)
                    );
                }
                2 => return format!("NOT ({})", self.boolean(depth - 1)),
                3 => {
                    let test = self.pick(&[
                        "IS TRUE",
                        "IS NOT TRUE",
                        "IS FALSE",
                        "IS NOT FALSE",
                        "IS NULL",
                        "IS NOT NULL",
                    ]);
                    return format!("({}) {test}", self.boolean(depth - 1));
                }
                _ => {}
            }
        }
        self.predicate(depth.saturating_sub(1))
    }

    fn predicate(&mut self, depth: u32) -> String {
        let family = *FAMILIES.choose(self.rng).unwrap_or(&Family::Int);
        match self.rng.random_range(0..24) {
            20 | 21 => self.datetime(),
            22 | 23 => self.jsonb(),
            0 => "b".into(),
            1 | 2 => {
                let v = self.operand(family, depth);
                format!("{v} {}", self.pick(&["IS NULL", "IS NOT NULL"]))
            }
            3 => {
                let (a, b) = (self.operand(family, depth), self.operand(family, depth));
                let op = self.pick(&["IS DISTINCT FROM", "IS NOT DISTINCT FROM"]);
                format!("{a} {op} {b}")
            }
            4 | 5 => {
                let x = self.operand(family, depth);
                let n = self.rng.random_range(1..5);
                let items: Vec<String> = (0..n)
                    .map(|_| {
                        if self.chance(0.25) {
                            self.operand(family, 0)
                        } else {
                            self.literal_or_null(family)
                        }
                    })
                    .collect();
                let not = if self.chance(0.3) { "NOT " } else { "" };
                format!("{x} {not}IN ({})", items.join(", "))
            }
            6 => {
                let (x, lo, hi) = (
                    self.operand(family, depth),
                    self.literal(family),
                    self.literal(family),
                );
                let not = if self.chance(0.3) { "NOT " } else { "" };
                format!("{x} {not}BETWEEN {lo} AND {hi}")
            }
            7 | 8 => self.like(depth),
            9 => self.quantified(depth),
            10 => self.array_op(),
            11 => self.json(),
            _ => {
                let (a, b) = (self.operand(family, depth), self.operand(family, depth));
                format!("{a} {} {b}", self.pick(CMP))
            }
        }
    }

    fn like(&mut self, depth: u32) -> String {
        let subject = if self.chance(0.2) {
            "c".to_string()
        } else {
            self.operand(Family::Text, depth)
        };
        let op = self.pick(&["LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"]);
        let pieces = [
            "a", "A", "%", "_", "é", "b", " ", "\\%", "\\_", "x\\\\y", "ab", "Z", "É", "ß", "SS",
            "σ", "ς", "Σ", "İ", "ı", "i", "ǅ", "ǆ", "М", "к", "k",
        ];
        let n = self.rng.random_range(0..4);
        let mut pattern: String = (0..n).map(|_| self.pick(&pieces)).collect();
        if self.chance(0.2) {
            // a letter as the escape character: ILIKE must not lower it before it escapes
            let escape = self.pick(&["!", "!", "É"]);
            pattern = pattern.replace('\\', escape);
            return format!("{subject} {op} {} ESCAPE '{escape}'", quote(&pattern));
        }
        format!("{subject} {op} {}", quote(&pattern))
    }

    fn quantified(&mut self, depth: u32) -> String {
        let q = self.pick(&["ANY", "ALL"]);
        let op = self.pick(CMP);
        if self.chance(0.5) {
            let arr = self.pick(&[
                "ai",
                "'{1,2,3}'",
                "ARRAY[1, i4]",
                "'{}'",
                "'{NULL,7}'",
                "ARRAY[i2, NULL]",
            ]);
            format!("{} {op} {q}({arr})", self.operand(Family::Int, depth))
        } else {
            let arr = self.pick(&["at", "'{a,B,é}'", "ARRAY[t, 'x']", "'{}'"]);
            format!("{} {op} {q}({arr})", self.operand(Family::Text, depth))
        }
    }

    fn array_op(&mut self) -> String {
        let op = self.pick(&["@>", "<@", "&&"]);
        if self.chance(0.6) {
            let a = self.pick(&[
                "ai",
                "'{1,2,3}'",
                "ARRAY[i4, 1]",
                "'{NULL}'",
                "'{}'",
                "'{3}'",
            ]);
            let b = self.pick(&[
                "ai",
                "'{1}'",
                "'{7,8}'",
                "ARRAY[1, 2]",
                "'{NULL}'",
                "'{}'",
                "'{{1,2},{3,4}}'",
            ]);
            format!("{a} {op} {b}")
        } else {
            let a = self.pick(&["at", "'{a,\"b c\"}'", "ARRAY[t]", "'{}'"]);
            let b = self.pick(&["at", "'{a}'", "'{A,B}'", "ARRAY['x,y', vc]", "'{\"\"}'"]);
            format!("{a} {op} {b}")
        }
    }

    /// Date and time arithmetic, and timestamp compared with timestamptz.
    fn datetime(&mut self) -> String {
        let cmp = self.pick(CMP);
        let days = self.pick(&[
            "1",
            "-1",
            "i2",
            "i4",
            "0",
            "2147483647",
            "(-2147483647)",
            "365",
        ]);
        let iv = quote(self.pick(data::INTERVAL));
        let iv = match self.rng.random_range(0..3) {
            0 => format!("{iv}::interval"),
            1 => format!("interval {iv}"),
            _ => iv,
        };
        let date = quote(self.pick(data::DATE));
        let ts = quote(self.pick(data::TIMESTAMP));
        let tz = quote(self.pick(data::TIMESTAMPTZ));
        match self.rng.random_range(0..9) {
            0 => format!("(d + {days}) {cmp} {date}"),
            1 => format!("(d - {days}) {cmp} {date}"),
            2 => format!("({days} + d) {cmp} d"),
            3 => format!("(d - {date}) {cmp} {days}"),
            4 => format!("(d - d) {cmp} 0"),
            5 => format!("(ts {} {iv}) {cmp} {ts}", self.pick(&["+", "-"])),
            6 => format!("(tz {} {iv}) {cmp} {tz}", self.pick(&["+", "-"])),
            7 => format!("({iv} + ts) {cmp} ts"),
            _ => match self.rng.random_range(0..4) {
                0 => format!("ts {cmp} tz"),
                1 => format!("tz {cmp} ts"),
                2 => format!("ts {cmp} {tz}::timestamptz"),
                _ => format!("tz {cmp} {ts}::timestamp"),
            },
        }
    }

    /// jsonb equality, containment and key existence.
    fn jsonb(&mut self) -> String {
        let doc = quote(self.pick(&[
            r#"{"k": "v"}"#,
            r#"{"a": [10]}"#,
            r#"{"n": 100}"#,
            r#"{"n": 1.5}"#,
            "[1]",
            r#"["s"]"#,
            "1",
            "42",
            "{}",
            "[]",
            r#"{"a": {"b": [1]}}"#,
            r#"[{"a": "x"}]"#,
            r#"{"k": null, "n": 1e2}"#,
            r#""s""#,
        ]));
        let key = quote(self.pick(&["k", "a", "n", "s", "x", "b", "é"]));
        let keys = self.pick(&[
            "'{k,a}'",
            "'{x}'",
            "'{}'",
            "'{a,NULL}'",
            "ARRAY['s', t]",
            "at",
        ]);
        match self.rng.random_range(0..9) {
            0 => format!("jb @> {doc}"),
            1 => format!("jb <@ {doc}"),
            2 => format!("{doc} @> jb"),
            3 => format!("jb ? {key}"),
            4 => format!("jb ?| {keys}"),
            5 => format!("jb ?& {keys}"),
            6 => format!("jb {} {doc}", self.pick(&["=", "<>", "!="])),
            7 => format!("(jb -> 'a') @> {doc}"),
            _ => "jb = jb".to_string(),
        }
    }

    fn json_text(&mut self) -> String {
        let doc = self.pick(&["j", "jb"]);
        let path = self.pick(&[
            "->'a'->'b'->>1",
            "->>'s'",
            "->>'n'",
            "->>'k'",
            "->'a'->>0",
            "->>0",
            "->>-1",
            "->'a'->>'b'",
            "->>'a'",
            "->'a'->'b'->>-1",
            "->>2",
        ]);
        format!("({doc}{})", path.replace("->>-", "->> -"))
    }

    fn json(&mut self) -> String {
        let text = self.json_text();
        match self.rng.random_range(0..3) {
            0 => format!("{text} IS NULL"),
            1 => format!(
                "{text} = {}",
                quote(self.pick(&[
                    "x\"y",
                    "1.50",
                    "two",
                    "1",
                    "dup",
                    "é",
                    "v",
                    "x",
                    "10",
                    "100",
                    "s",
                    "{\"b\": [1, \"two\", null]}"
                ]))
            ),
            _ => format!(
                "{text} {} {}",
                self.pick(CMP),
                quote(self.pick(&["a", "1", "t"]))
            ),
        }
    }

    fn literal_or_null(&mut self, family: Family) -> String {
        if self.chance(0.1) {
            "NULL".into()
        } else {
            self.literal(family)
        }
    }

    /// A constant of the family.
    fn literal(&mut self, family: Family) -> String {
        match family {
            Family::Int => self
                .pick(data::INT4)
                .replace("-2147483648", "(-2147483648)")
                .to_string(),
            Family::Number => match self.rng.random_range(0..4) {
                0 => self
                    .pick(&["1.5", "0.1", "1e20", "3.0", "0.5", "7", "-2.5", "100"])
                    .to_string(),
                1 => format!("{}::numeric", quote(self.pick(data::NUMERIC))),
                2 => format!("{}::float8", quote(self.pick(data::FLOAT))),
                _ => self.pick(data::INT8).to_string(),
            },
            Family::Text => quote(self.pick(data::TEXT)),
            Family::Bool => self.pick(&["true", "false", "'t'", "'no'"]).to_string(),
            Family::Uuid => quote(self.pick(data::UUID)),
            Family::Date => quote(self.pick(data::DATE)),
            Family::Time => quote(self.pick(data::TIME)),
            Family::Ts => quote(self.pick(data::TIMESTAMP)),
            Family::Tz => quote(self.pick(data::TIMESTAMPTZ)),
            Family::Interval => quote(self.pick(data::INTERVAL)),
            Family::Enum => quote(self.pick(data::MOOD)),
            Family::IntArray => quote(self.pick(data::INT_ARRAY)),
            Family::TextArray => quote(self.pick(data::TEXT_ARRAY)),
        }
    }

    /// A column, constant or compound value of the family.
    fn operand(&mut self, family: Family, depth: u32) -> String {
        let compound = depth > 0 && self.chance(0.4);
        let column = self.chance(0.6);
        match family {
            Family::Int if compound => match self.rng.random_range(0..6) {
                0 => {
                    let op = self.pick(&["+", "-", "*", "/", "%"]);
                    format!(
                        "({} {op} {})",
                        self.operand(Family::Int, depth - 1),
                        self.operand(Family::Int, depth - 1)
                    )
                }
                1 => format!("-{}", self.operand(Family::Int, depth - 1)),
                2 => format!("length({})", self.operand(Family::Text, depth - 1)),
                3 => format!(
                    "coalesce({}, {})",
                    self.operand(Family::Int, depth - 1),
                    self.literal(Family::Int)
                ),
                4 => format!("{}::int8", self.operand(Family::Int, depth - 1)),
                _ => format!("CAST({} AS bigint)", self.operand(Family::Int, depth - 1)),
            },
            Family::Int if column => self.pick(&["i2", "i4", "i8", "id"]).to_string(),
            Family::Number if compound => match self.rng.random_range(0..5) {
                0 => {
                    let op = self.pick(&["+", "-", "*", "/", "%"]);
                    format!(
                        "({} {op} {})",
                        self.numeric_operand(depth - 1),
                        self.numeric_operand(depth - 1)
                    )
                }
                1 => format!("-{}", self.operand(Family::Number, depth - 1)),
                2 => format!("{}::numeric", self.pick(&["f8", "f4", "i4", "i8"])),
                3 => format!("{}::float8", self.pick(&["f4", "i4", "i8", "i2"])),
                _ => format!(
                    "coalesce({}, {})",
                    self.numeric_operand(depth - 1),
                    self.literal(Family::Int)
                ),
            },
            Family::Number if column => self
                .pick(&["n", "f4", "f8", "i4", "i8", "n", "f8"])
                .to_string(),
            Family::Text if compound => match self.rng.random_range(0..7) {
                0 => format!("lower({})", self.operand(Family::Text, depth - 1)),
                1 => format!("upper({})", self.operand(Family::Text, depth - 1)),
                2 => format!(
                    "({} || {})",
                    self.operand(Family::Text, depth - 1),
                    self.operand(Family::Text, depth - 1)
                ),
                3 => format!(
                    "coalesce({}, {})",
                    self.operand(Family::Text, depth - 1),
                    self.literal(Family::Text)
                ),
                4 => format!(
                    "{}::text",
                    self.pick(&["i4", "n", "b", "u", "e", "c", "i8", "jb", "j", "vc"])
                ),
                5 => self.json_text(),
                _ => format!("CAST({} AS text)", self.pick(&["i2", "n", "c"])),
            },
            Family::Text if column => self.pick(&["t", "vc", "c", "t"]).to_string(),
            Family::Bool if column => "b".to_string(),
            Family::Uuid if column => "u".to_string(),
            Family::Date if column => "d".to_string(),
            Family::Time if column => "tm".to_string(),
            Family::Ts if column => "ts".to_string(),
            Family::Tz if column => "tz".to_string(),
            Family::Interval if column => "iv".to_string(),
            Family::Enum if column => "e".to_string(),
            Family::IntArray if column => "ai".to_string(),
            Family::TextArray if column => "at".to_string(),
            f => self.literal(f),
        }
    }

    fn numeric_operand(&mut self, depth: u32) -> String {
        if self.chance(0.5) {
            self.operand(Family::Int, depth)
        } else if self.chance(0.5) {
            "n".to_string()
        } else {
            self.pick(&[
                "1.5",
                "0.1",
                "3",
                "'NaN'::numeric",
                "'Infinity'::numeric",
                "2.50",
                "0",
            ])
            .to_string()
        }
    }
}
