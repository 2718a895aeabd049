//! Tables for subquery tests, and the oracle a proxy would keep: for each subquery of a
//! clause, the keys of the inner rows matching its inner `where` (itself evaluated with the
//! rows of its own subqueries).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use shapes::schema::{QualifiedName, TableSchema};
use shapes::testing::{base, column, enum_of, table};
use shapes::where_clause::{WhereClause, WhereError};

pub type Row = Vec<Option<String>>;

/// The rows of each table.
pub type Db = HashMap<QualifiedName, Vec<Row>>;

pub fn issues() -> TableSchema {
    table(
        "public",
        "issues",
        vec![
            column("id", base("int8")).pk(0).not_null(),
            column("project_id", base("int4")),
            column("owner", base("text")),
            column("title", base("varchar")),
            column("amount", base("numeric")),
            column("ref", base("uuid")),
            column("mood", enum_of("mood", &["sad", "ok", "happy"])),
            column("doc", base("jsonb")),
        ],
    )
}

pub fn projects() -> TableSchema {
    table(
        "public",
        "projects",
        vec![
            column("id", base("int8")).pk(0).not_null(),
            column("org", base("text")),
            column("archived", base("bool")),
            column("budget", base("numeric")),
            column("code", base("varchar")),
        ],
    )
}

pub fn members() -> TableSchema {
    table(
        "public",
        "members",
        vec![
            column("id", base("int8")).pk(0).not_null(),
            column("org", base("text")),
            column("user_id", base("int8")),
            column("role", base("text")),
            column("owner", base("text")),
        ],
    )
}

pub fn orgs() -> TableSchema {
    table(
        "app",
        "orgs",
        vec![
            column("id", base("int8")).pk(0).not_null(),
            column("name", base("text")),
            column("plan", base("text")),
            column("mood", enum_of("mood", &["sad", "ok", "happy"])),
            column("refs", base("uuid")),
        ],
    )
}

pub fn logs() -> TableSchema {
    table(
        "public",
        "logs",
        vec![column("id", base("int8")), column("msg", base("text"))],
    )
}

/// The schemas `others` knows.
pub fn schemas() -> Vec<Arc<TableSchema>> {
    [projects(), members(), orgs(), logs(), issues()]
        .into_iter()
        .map(Arc::new)
        .collect()
}

pub fn others(name: &QualifiedName) -> Option<Arc<TableSchema>> {
    schemas().into_iter().find(|t| t.name == *name)
}

/// Parses `text` on `issues`, with `params`.
pub fn parse_sub(text: &str, params: &[(usize, &str)]) -> Result<WhereClause, WhereError> {
    let params: BTreeMap<usize, String> =
        params.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
    WhereClause::parse_with_tables(text, &params, &issues(), &others)
}

/// A row of `t` with the given columns set, the others NULL.
pub fn row_of(t: &TableSchema, values: &[(&str, &str)]) -> Row {
    let mut row = vec![None; t.columns.len()];
    for (name, v) in values {
        let i = t
            .column_index(name)
            .unwrap_or_else(|| panic!("no column {name} in {}", t.name));
        row[i] = Some((*v).to_string());
    }
    row
}

#[allow(unused_imports)]
pub use shapes::testing::{SubqueryMembers as Members, SubqueryRows as Current};
