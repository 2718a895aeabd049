//! The rules file (`--rules rules.toml`): per table, which rows and columns a token may read
//! and which writes it may make. A table without a section is invisible to tokens.
//!
//! ```toml
//! [tables.todos]
//! read = "owner_id = $claims.sub"      # row filter, ANDed into every shape of the table
//! columns = ["id", "title", "done"]    # readable columns; default: all
//! write = ["insert", "update", "delete"]  # allowed ops; default: none
//! check = "owner_id = $claims.sub"     # must hold for the old and the new row; default: read
//! writable_columns = ["title", "done"] # default: columns
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use shapes::schema::{QualifiedName, TableSchema};
use shapes::table_name::{parse_table_name, reserved_table};
use shapes::where_clause::WhereClause;

use super::claims::{ClaimTemplate, Claims};
use crate::mutations::wire::Op;

/// A write operation a rule can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteOp {
    Insert,
    Update,
    Delete,
}

impl fmt::Display for WriteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteOp::Insert => "insert",
            WriteOp::Update => "update",
            WriteOp::Delete => "delete",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    tables: BTreeMap<String, TableSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSection {
    read: Option<String>,
    columns: Option<Vec<String>>,
    #[serde(default)]
    write: Vec<WriteOp>,
    check: Option<String>,
    writable_columns: Option<Vec<String>>,
}

/// The rules of one table.
#[derive(Debug, Clone)]
pub struct TableRule {
    pub table: QualifiedName,
    /// Row filter for reads; `None`: the table cannot be read with a token.
    pub read: Option<ClaimTemplate>,
    /// Readable columns; `None`: all.
    pub columns: Option<Vec<String>>,
    pub write: BTreeSet<WriteOp>,
    /// Must hold for the row before and after a write; `None`: no check.
    pub check: Option<ClaimTemplate>,
    /// Columns a write may set (besides the primary key, which names the row); `None`: all.
    pub writable_columns: Option<Vec<String>>,
}

impl TableRule {
    /// Whether `column` may be read.
    pub fn readable(&self, column: &str) -> bool {
        self.columns
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n == column))
    }

    /// Whether `column` may be written (key columns are checked by the caller).
    pub fn writable(&self, column: &str) -> bool {
        self.writable_columns
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n == column))
    }

    /// The ops a mutation's `op` needs: an upsert may insert or update.
    pub fn allows(&self, op: Op) -> Result<(), String> {
        let needed: &[WriteOp] = match op {
            Op::Insert => &[WriteOp::Insert],
            Op::Update => &[WriteOp::Update],
            Op::Delete => &[WriteOp::Delete],
            Op::Upsert => &[WriteOp::Insert, WriteOp::Update],
        };
        let missing: Vec<String> = needed
            .iter()
            .filter(|op| !self.write.contains(op))
            .map(ToString::to_string)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let allowed = if self.write.is_empty() {
            "none".to_owned()
        } else {
            self.write
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(format!(
            "the rules of {} do not allow {} (allowed writes: {allowed})",
            self.table,
            missing.join(" and ")
        ))
    }
}

/// Every table's rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    tables: HashMap<QualifiedName, TableRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("reading the rules file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the rules file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

impl TableRule {
    /// The tables the subqueries of its `read` and `check` expressions read.
    pub fn subquery_tables(&self) -> Vec<QualifiedName> {
        let mut out = Vec::new();
        for template in [&self.read, &self.check].into_iter().flatten() {
            let bound = template.bind(&Claims::new());
            if bound.text.contains('(')
                && let Ok(tables) = WhereClause::tables_named(&bound.text)
            {
                out.extend(tables);
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

impl Rules {
    /// Reads and checks a rules file (the tables are checked against the database later,
    /// by [`Rules::check_against`]).
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| RulesError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses the TOML text of a rules file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut tables = HashMap::new();
        for (name, section) in file.tables {
            let table = parse_table_name(&name)
                .map_err(|e| format!("[tables.{name}]: not a table name: {e}"))?;
            if let Some(reserved) = reserved_table(&table) {
                return Err(format!("[tables.{name}]: {reserved}"));
            }
            let template = |what: &str, text: Option<String>| match text {
                None => Ok(None),
                Some(t) if t.trim().is_empty() => Err(format!(
                    "[tables.{name}] {what} is empty; write \"true\" to allow every row"
                )),
                Some(t) => ClaimTemplate::parse(&t)
                    .map(Some)
                    .map_err(|e| format!("[tables.{name}] {what}: {e}")),
            };
            let read = template("read", section.read)?;
            let check = template("check", section.check)?.or_else(|| read.clone());
            let writable_columns = section.writable_columns.or_else(|| section.columns.clone());
            let rule = TableRule {
                table: table.clone(),
                read,
                columns: section.columns,
                write: section.write.into_iter().collect(),
                check,
                writable_columns,
            };
            if tables.insert(table.clone(), rule).is_some() {
                return Err(format!("table {table} has two sections"));
            }
        }
        Ok(Self { tables })
    }

    pub fn table(&self, name: &QualifiedName) -> Option<&TableRule> {
        self.tables.get(name)
    }

    pub fn tables(&self) -> impl Iterator<Item = &TableRule> {
        self.tables.values()
    }

    /// Problems of the rules of `rule.table` against its schema (every column of the table,
    /// generated ones included): unknown columns, a readable list without the primary key,
    /// expressions that do not type-check.
    /// `others` gives the schemas of the tables the expressions' subqueries read.
    pub fn check_against(
        rule: &TableRule,
        table: &TableSchema,
        others: &dyn Fn(&QualifiedName) -> Option<std::sync::Arc<TableSchema>>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let known = |list: &Option<Vec<String>>, what: &str, problems: &mut Vec<String>| {
            for name in list.iter().flatten() {
                if table.column_index(name).is_none() {
                    problems.push(format!(
                        "{what} names column \"{name}\", which {} lacks (it has: {})",
                        table.name,
                        table.column_list()
                    ));
                }
            }
        };
        known(&rule.columns, "columns", &mut problems);
        known(&rule.writable_columns, "writable_columns", &mut problems);
        if rule.columns.is_some() {
            for pk in table.primary_key() {
                let name = &table.columns[pk].name;
                if !rule.readable(name) {
                    problems.push(format!(
                        "columns must include the primary key column \"{name}\": every shape has it"
                    ));
                }
            }
        }
        for (what, template) in [("read", &rule.read), ("check", &rule.check)] {
            if let Some(template) = template {
                // Every claim NULL: checks the columns, operators and types of the expression.
                let bound = template.bind(&Claims::new());
                if let Err(e) =
                    WhereClause::parse_with_tables(&bound.text, &bound.params, table, others)
                {
                    problems.push(format!("{what} = {:?}: {e}", template.source()));
                }
            }
        }
        problems
            .into_iter()
            .map(|p| format!("[tables.{}] {p}", rule.table))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [tables.todos]
        read = "owner_id = $claims.sub"
        columns = ["id", "title", "owner_id"]
        write = ["insert", "update"]
        writable_columns = ["title"]

        [tables."app.Items"]
        read = "true"
    "#;

    #[test]
    fn a_rules_file_gives_each_table_its_rule() {
        let rules = Rules::parse(EXAMPLE).unwrap();
        let todos = rules.table(&QualifiedName::new("public", "todos")).unwrap();
        assert!(todos.readable("title") && !todos.readable("done"));
        assert!(todos.writable("title") && !todos.writable("owner_id"));
        assert_eq!(
            todos.check.as_ref().map(ClaimTemplate::source),
            Some("owner_id = $claims.sub"),
            "check defaults to read"
        );
        assert!(todos.allows(Op::Update).is_ok());
        let refused = todos.allows(Op::Delete).unwrap_err();
        assert!(refused.contains("do not allow delete"), "{refused}");
        assert!(todos.allows(Op::Upsert).is_ok());
        let items = rules.table(&QualifiedName::new("app", "items")).unwrap();
        assert!(items.read.as_ref().unwrap().is_true());
        assert!(items.write.is_empty());
        assert!(items.check.as_ref().is_some_and(ClaimTemplate::is_true));
        assert!(items.allows(Op::Insert).unwrap_err().contains("none"));
        assert!(
            rules
                .table(&QualifiedName::new("public", "notes"))
                .is_none()
        );
    }

    #[test]
    fn the_example_rules_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules.example.toml");
        let rules = Rules::load(&path).unwrap();
        let todos = rules.table(&QualifiedName::new("public", "todos")).unwrap();
        assert!(todos.read.as_ref().unwrap().uses_claims());
        assert!(!todos.readable("deleted_at") && !todos.writable("updated_at"));
        assert_eq!(rules.tables().count(), 4);
    }

    #[test]
    fn mistakes_in_the_file_are_named() {
        for (text, expected) in [
            ("[tables.todos]\nraed = \"true\"", "unknown field `raed`"),
            (
                "[tables.todos]\nwrite = [\"drop\"]",
                "unknown variant `drop`",
            ),
            ("[tables.todos]\nread = \"\"", "read is empty"),
            ("[tables.todos]\nread = \"a = $1\"", "cannot use $1"),
            ("[tables.\"a b\"]\nread = \"true\"", "not a table name"),
            ("[tables.todos]\n[tables.Todos]", "two sections"),
            (
                "[tables.\"shapesync.row_clocks\"]\nread = \"true\"",
                "[tables.shapesync.row_clocks]: table \"shapesync\".\"row_clocks\" belongs to \
                 shapesync itself",
            ),
            (
                "[tables.\"pg_catalog.pg_authid\"]\nread = \"true\"",
                "is in the system schema \"pg_catalog\"",
            ),
        ] {
            let err = Rules::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
