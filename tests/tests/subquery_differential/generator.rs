//! Four related tables, random `where` clauses with subqueries on the outer one (`todos`),
//! and random writes to all four.
//!
//! Values come from small pools so that subqueries find each other's values often; every
//! column but the key is NULL-able and often NULL. Integer columns are `int4` and `int8`
//! mixed (and compared with `numeric`), so the comparison types of subqueries convert.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

/// The families a subquery compares in (integers and `numeric` compare with one another).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    Number,
    Text,
    Bool,
    Uuid,
}

pub struct Column {
    pub name: &'static str,
    pub sql_type: &'static str,
}

impl Column {
    pub fn family(&self) -> Family {
        match self.sql_type {
            "int4" | "int8" | "numeric" => Family::Number,
            "text" => Family::Text,
            "bool" => Family::Bool,
            _ => Family::Uuid,
        }
    }
}

pub struct Table {
    pub name: &'static str,
    /// Prefix of the aliases of this table in subqueries.
    pub short: &'static str,
    /// `id` (the primary key) first.
    pub columns: &'static [Column],
    /// Rows inserted at the start.
    pub initial_rows: i64,
}

const fn col(name: &'static str, sql_type: &'static str) -> Column {
    Column { name, sql_type }
}

pub const ORGS: Table = Table {
    name: "orgs",
    short: "o",
    columns: &[
        col("id", "int8"),
        col("name", "text"),
        col("plan", "text"),
        col("active", "bool"),
        col("code", "uuid"),
    ],
    initial_rows: 4,
};

pub const PROJECTS: Table = Table {
    name: "projects",
    short: "p",
    columns: &[
        col("id", "int4"),
        col("org_id", "int8"),
        col("name", "text"),
        col("archived", "bool"),
        col("budget", "numeric"),
        col("lead", "uuid"),
    ],
    initial_rows: 6,
};

pub const MEMBERS: Table = Table {
    name: "members",
    short: "m",
    columns: &[
        col("id", "int8"),
        col("project_id", "int8"),
        col("org_id", "int4"),
        col("user_id", "text"),
        col("role", "text"),
        col("active", "bool"),
    ],
    initial_rows: 10,
};

pub const TODOS: Table = Table {
    name: "todos",
    short: "t",
    columns: &[
        col("id", "int8"),
        col("project_id", "int4"),
        col("org_id", "int8"),
        col("owner", "text"),
        col("title", "text"),
        col("done", "bool"),
        col("priority", "int4"),
        col("estimate", "numeric"),
        col("ref", "uuid"),
    ],
    initial_rows: 20,
};

pub const TABLES: [&Table; 4] = [&ORGS, &PROJECTS, &MEMBERS, &TODOS];

/// `CREATE TABLE`s and the initial rows.
pub fn schema_sql(rng: &mut StdRng) -> String {
    let mut out = String::new();
    for t in TABLES {
        let columns: Vec<String> = t
            .columns
            .iter()
            .map(|c| {
                let pk = if c.name == "id" { " PRIMARY KEY" } else { "" };
                format!("{} {}{pk}", c.name, c.sql_type)
            })
            .collect();
        out.push_str(&format!(
            "CREATE TABLE {} ({});\n",
            t.name,
            columns.join(", ")
        ));
        for id in 1..=t.initial_rows {
            out.push_str(&insert(rng, t, id));
            out.push_str(";\n");
        }
    }
    out
}

const INTS: &[&str] = &["0", "1", "2", "3", "4", "5", "6", "7"];
const NUMERICS: &[&str] = &["0", "1", "1.0", "2", "2.50", "2.5", "3.000", "4", "5.5"];
const TEXTS: &[&str] = &["u1", "u2", "u3", "dev", "owner", "", "U1", "a'b"];
const UUIDS: &[&str] = &[
    "0b7e7dd8-65b4-4e47-9a45-1ab1a4e6c0a1",
    "0B7E7DD8-65B4-4E47-9A45-1AB1A4E6C0A2",
    "ffffffff-0000-4000-8000-000000000003",
];

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A value of `c`'s type (not NULL), as the text a parameter would carry.
fn value_text(rng: &mut StdRng, c: &Column) -> String {
    let pick =
        |rng: &mut StdRng, pool: &[&str]| pool.choose(rng).copied().unwrap_or("").to_string();
    match c.sql_type {
        "int4" | "int8" => pick(rng, INTS),
        "numeric" => pick(rng, NUMERICS),
        "text" => pick(rng, TEXTS),
        "bool" => pick(rng, &["true", "false"]),
        _ => pick(rng, UUIDS),
    }
}

/// A literal of `c`'s type (not NULL).
fn literal(rng: &mut StdRng, c: &Column) -> String {
    let text = value_text(rng, c);
    match c.sql_type {
        "int4" | "int8" | "numeric" | "bool" if rng.random_bool(0.8) => text,
        _ => quote(&text),
    }
}

/// A literal, or NULL now and then.
fn nullable_literal(rng: &mut StdRng, c: &Column) -> String {
    if rng.random_bool(0.2) {
        "NULL".into()
    } else {
        literal(rng, c)
    }
}

fn insert(rng: &mut StdRng, t: &Table, id: i64) -> String {
    let values: Vec<String> = std::iter::once(id.to_string())
        .chain(t.columns[1..].iter().map(|c| nullable_literal(rng, c)))
        .collect();
    format!("INSERT INTO {} VALUES ({})", t.name, values.join(", "))
}

/// Random writes: the next id of each table (inserts and key changes take new ones).
pub struct Writer {
    next_id: [i64; 4],
}

impl Default for Writer {
    fn default() -> Self {
        Writer {
            next_id: TABLES.map(|t| t.initial_rows + 1),
        }
    }
}

impl Writer {
    /// One statement: an insert, a delete, an update of values (NULLs included), of many
    /// rows at once, or of a primary key.
    pub fn statement(&mut self, rng: &mut StdRng) -> String {
        let k = match rng.random_range(0..20) {
            0..3 => 0,
            3..8 => 1,
            8..13 => 2,
            _ => 3,
        };
        let t = TABLES[k];
        let existing = rng.random_range(1..self.next_id[k]);
        let column = |rng: &mut StdRng| &t.columns[rng.random_range(1..t.columns.len())];
        match rng.random_range(0..12) {
            0 | 1 => {
                let id = self.next_id[k];
                self.next_id[k] += 1;
                insert(rng, t, id)
            }
            2 => format!("DELETE FROM {} WHERE id = {existing}", t.name),
            3..=6 => {
                let c = column(rng);
                let mut set = format!("{} = {}", c.name, nullable_literal(rng, c));
                if rng.random_bool(0.3) {
                    let c2 = column(rng);
                    if c2.name != c.name {
                        set.push_str(&format!(", {} = {}", c2.name, nullable_literal(rng, c2)));
                    }
                }
                format!("UPDATE {} SET {set} WHERE id = {existing}", t.name)
            }
            7 => {
                // many rows at once
                let c = column(rng);
                let by = column(rng);
                let filter = if rng.random_bool(0.2) {
                    format!("{} IS NULL", by.name)
                } else {
                    format!("{} = {}", by.name, literal(rng, by))
                };
                format!(
                    "UPDATE {} SET {} = {} WHERE {filter}",
                    t.name,
                    c.name,
                    nullable_literal(rng, c)
                )
            }
            8 => {
                let id = self.next_id[k];
                self.next_id[k] += 1;
                format!("UPDATE {} SET id = {id} WHERE id = {existing}", t.name)
            }
            9 => {
                let c = column(rng);
                format!(
                    "DELETE FROM {} WHERE {} = {}",
                    t.name,
                    c.name,
                    literal(rng, c)
                )
            }
            _ => {
                // a bool flipped, or a value set to NULL
                let c = column(rng);
                let set = if c.sql_type == "bool" {
                    format!("{0} = NOT {0}", c.name)
                } else {
                    format!("{} = NULL", c.name)
                };
                format!("UPDATE {} SET {set} WHERE id = {existing}", t.name)
            }
        }
    }
}

/// The table a part of the clause is about, and how its columns may be written.
#[derive(Clone)]
struct Scope {
    table: &'static Table,
    /// Nesting level: 0 is the outer table.
    level: usize,
    /// The name that qualifies this level's columns (its alias or table name); `None` at
    /// the outer level, whose columns are written unqualified.
    qualifier: Option<String>,
    /// How many correlated `EXISTS` this level is in, one in another: Postgres evaluates
    /// those row by row, so the time its queries take grows as a power of it.
    correlated: usize,
}

/// A `where` being generated: its text and its `$n` parameters.
pub struct Gen<'a> {
    pub rng: &'a mut StdRng,
    /// Each parameter's value, and the SQL type of the column it is compared with.
    pub params: Vec<(String, &'static str)>,
    subqueries: usize,
    /// Whether a row value `(a, b) [NOT] IN (SELECT …)` was written (Postgres reads those
    /// differently when a NULL is in them: WHERE.md).
    pub row_value: bool,
}

const MAX_LEVEL: usize = 3;
const MAX_SUBQUERIES: usize = 8;

impl<'a> Gen<'a> {
    pub fn new(rng: &'a mut StdRng) -> Self {
        Gen {
            rng,
            params: Vec::new(),
            subqueries: 0,
            row_value: false,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// A `where` on `todos` with at least one subquery.
    pub fn clause(&mut self) -> String {
        loop {
            self.params.clear();
            self.subqueries = 0;
            self.row_value = false;
            let scope = Scope {
                table: &TODOS,
                level: 0,
                qualifier: None,
                correlated: 0,
            };
            let text = self.boolean(&scope, 3);
            if self.subqueries > 0 {
                return text;
            }
        }
    }

    fn boolean(&mut self, scope: &Scope, depth: u32) -> String {
        if depth > 0 && self.chance(0.45) {
            return match self.rng.random_range(0..5) {
                0 | 1 => format!(
                    "({} AND {})",
                    self.boolean(scope, depth - 1),
                    self.boolean(scope, depth - 1)
                ),
                2 | 3 => format!(
                    "({} OR {})",
                    self.boolean(scope, depth - 1),
                    self.boolean(scope, depth - 1)
                ),
                _ => format!("NOT ({})", self.boolean(scope, depth - 1)),
            };
        }
        let p_sub = if scope.level == 0 { 0.6 } else { 0.3 };
        if scope.level < MAX_LEVEL && self.subqueries < MAX_SUBQUERIES && self.chance(p_sub) {
            self.subquery(scope, depth)
        } else {
            self.plain(scope)
        }
    }

    /// A column of the scope's table, qualified or not.
    fn column_ref(&mut self, scope: &Scope, c: &Column) -> String {
        match &scope.qualifier {
            Some(q) if self.rng.random_bool(0.5) => format!("{q}.{}", c.name),
            _ => c.name.to_string(),
        }
    }

    /// A constant for comparing with `c`: a literal, or a `$n` parameter.
    fn constant(&mut self, c: &'static Column) -> String {
        if self.chance(0.3) {
            // reuse a parameter of the same type now and then
            let same: Vec<usize> = (0..self.params.len())
                .filter(|&i| self.params[i].1 == c.sql_type)
                .collect();
            if let Some(&i) = same.choose(self.rng)
                && self.chance(0.4)
            {
                return format!("${}", i + 1);
            }
            let value = value_text(self.rng, c);
            self.params.push((value, c.sql_type));
            return format!("${}", self.params.len());
        }
        literal(self.rng, c)
    }

    fn plain(&mut self, scope: &Scope) -> String {
        let c = scope
            .table
            .columns
            .choose(self.rng)
            .unwrap_or(&TODOS.columns[0]);
        let x = self.column_ref(scope, c);
        let orderable = c.family() == Family::Number;
        match self.rng.random_range(0..10) {
            0 => format!("{x} IS {}NULL", if self.chance(0.5) { "NOT " } else { "" }),
            1 => {
                let n = self.rng.random_range(1..4);
                let mut items: Vec<String> = (0..n).map(|_| literal(self.rng, c)).collect();
                if self.chance(0.3) {
                    items.push("NULL".into());
                }
                let not = if self.chance(0.4) { "NOT " } else { "" };
                format!("{x} {not}IN ({})", items.join(", "))
            }
            2 => format!(
                "{x} IS {}DISTINCT FROM {}",
                if self.chance(0.5) { "NOT " } else { "" },
                self.constant(c)
            ),
            3 if c.sql_type == "bool" => match self.rng.random_range(0..4) {
                0 => x,
                1 => format!("NOT {x}"),
                2 => format!("{x} IS NOT FALSE"),
                _ => format!("{x} IS UNKNOWN"),
            },
            3 if c.sql_type.starts_with("int") => {
                format!("{x} % 2 = {}", self.rng.random_range(0..2))
            }
            3 if c.sql_type == "text" => format!("{x} LIKE 'u%'"),
            4 => format!(
                "coalesce({x}, {}) = {}",
                literal(self.rng, c),
                self.constant(c)
            ),
            _ => {
                let ops: &[&str] = if orderable {
                    &["=", "<>", "<", "<=", ">", ">="]
                } else {
                    &["=", "<>", "!="]
                };
                let op = ops.choose(self.rng).copied().unwrap_or("=");
                format!("{x} {op} {}", self.constant(c))
            }
        }
    }

    /// A pair of columns, one of each table, in one family.
    fn pair(
        &mut self,
        outer: &'static Table,
        inner: &'static Table,
    ) -> (&'static Column, &'static Column) {
        loop {
            let o = outer.columns.choose(self.rng).unwrap_or(&outer.columns[0]);
            let candidates: Vec<&'static Column> = inner
                .columns
                .iter()
                .filter(|c| c.family() == o.family())
                .collect();
            if let Some(&i) = candidates.choose(self.rng) {
                return (o, i);
            }
        }
    }

    fn subquery(&mut self, scope: &Scope, depth: u32) -> String {
        self.subqueries += 1;
        let inner_table = loop {
            let t = *TABLES.choose(self.rng).unwrap_or(&&MEMBERS);
            if t.name != scope.table.name || self.chance(0.15) {
                break t;
            }
        };
        let level = scope.level + 1;
        // the same table as the level above must be aliased apart
        let alias = (inner_table.name == scope.table.name || self.chance(0.6))
            .then(|| format!("{}{level}", inner_table.short));
        let kind = self
            .rng
            .random_range(if scope.correlated < 2 { 0..10 } else { 0..6 });
        let inner = Scope {
            table: inner_table,
            level,
            qualifier: Some(
                alias
                    .clone()
                    .unwrap_or_else(|| inner_table.name.to_string()),
            ),
            correlated: if kind >= 6 { scope.correlated + 1 } else { 0 },
        };
        // `schema.table` now and then (its columns are still qualified by the table's name)
        let schema = if self.chance(0.15) { "public." } else { "" };
        let from = match &alias {
            Some(a) => format!("{schema}{} {a}", inner_table.name),
            None => format!("{schema}{}", inner_table.name),
        };
        let filter = self
            .chance(0.75)
            .then(|| self.boolean(&inner, depth.saturating_sub(1).max(1)));
        if kind >= 6 {
            return self.exists(scope, &inner, &from, filter, kind >= 8);
        }
        let negated = if kind >= 3 { "NOT " } else { "" };
        let distinct = if self.chance(0.2) { "DISTINCT " } else { "" };
        let where_ = filter.map(|f| format!(" WHERE {f}")).unwrap_or_default();
        if kind == 2 || kind == 5 {
            self.row_value = true;
            let (o1, i1) = self.pair(scope.table, inner_table);
            let (o2, i2) = self.pair(scope.table, inner_table);
            let (x1, x2) = (self.column_ref(scope, o1), self.column_ref(scope, o2));
            let (y1, y2) = (self.column_ref(&inner, i1), self.column_ref(&inner, i2));
            return format!(
                "({x1}, {x2}) {negated}IN (SELECT {distinct}{y1}, {y2} FROM {from}{where_})"
            );
        }
        let (o, i) = self.pair(scope.table, inner_table);
        let mut x = self.column_ref(scope, o);
        if o.sql_type.starts_with("int") && self.chance(0.1) {
            x = format!("({x} + 1)");
        } else if self.chance(0.08) {
            x = format!("coalesce({x}, {})", literal(self.rng, o));
        }
        let y = self.column_ref(&inner, i);
        format!("{x} {negated}IN (SELECT {distinct}{y} FROM {from}{where_})")
    }

    /// `[NOT] EXISTS (SELECT 1 FROM inner WHERE inner.a = outer.b [AND …] [AND filter])`.
    fn exists(
        &mut self,
        outer: &Scope,
        inner: &Scope,
        from: &str,
        filter: Option<String>,
        negated: bool,
    ) -> String {
        let outer_name = outer
            .qualifier
            .clone()
            .unwrap_or_else(|| outer.table.name.to_string());
        let inner_name = inner.qualifier.clone().unwrap_or_default();
        let mut conditions = Vec::new();
        for _ in 0..self.rng.random_range(1..3) {
            let (o, i) = self.pair(outer.table, inner.table);
            // unqualified on either side only where the name cannot be read as the other's
            let inner_has_it = inner.table.columns.iter().any(|c| c.name == o.name);
            let outer_ref = if !inner_has_it && self.chance(0.3) {
                o.name.to_string()
            } else {
                format!("{outer_name}.{}", o.name)
            };
            let inner_ref = if self.chance(0.3) {
                i.name.to_string()
            } else {
                format!("{inner_name}.{}", i.name)
            };
            conditions.push(if self.chance(0.2) {
                format!("{outer_ref} = {inner_ref}")
            } else {
                format!("{inner_ref} = {outer_ref}")
            });
        }
        conditions.extend(filter);
        let selected = match self.rng.random_range(0..3) {
            0 => "1",
            1 => "*",
            _ => "id",
        };
        format!(
            "{}EXISTS (SELECT {selected} FROM {from} WHERE {})",
            if negated { "NOT " } else { "" },
            conditions.join(" AND ")
        )
    }
}
