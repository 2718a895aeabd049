//! STAND-IN until the `where` language lands (issue 3): shape definitions without `where`.

use std::collections::BTreeMap;

use crate::schema::{QualifiedName, TableSchema};
use crate::where_clause::WhereClause;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaMode {
    Default,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogMode {
    Full,
    ChangesOnly,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DefinitionError {
    pub param: &'static str,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct ShapeDefinition {
    table: QualifiedName,
    where_clause: Option<WhereClause>,
    columns: Vec<usize>,
    replica: ReplicaMode,
    log: LogMode,
    canonical: String,
}

impl ShapeDefinition {
    pub fn new(
        table: &TableSchema,
        where_: Option<&str>,
        params: &BTreeMap<usize, String>,
        columns: Option<&str>,
        replica: ReplicaMode,
        log: LogMode,
    ) -> Result<Self, DefinitionError> {
        let where_clause = match where_ {
            Some(text) => Some(WhereClause::parse(text, params, table).map_err(|e| {
                DefinitionError {
                    param: "where",
                    message: e.message,
                }
            })?),
            None => None,
        };
        let columns: Vec<usize> = match columns {
            None => (0..table.columns.len()).collect(),
            Some(list) => {
                let mut picked = Vec::new();
                for name in list.split(',') {
                    let name = name.trim().to_lowercase();
                    let i = table.column_index(&name).ok_or_else(|| DefinitionError {
                        param: "columns",
                        message: format!("unknown column {name}"),
                    })?;
                    picked.push(i);
                }
                for pk in table.primary_key() {
                    if !picked.contains(&pk) {
                        return Err(DefinitionError {
                            param: "columns",
                            message: format!(
                                "must include all primary key columns, missing: {}",
                                table.columns[pk].name
                            ),
                        });
                    }
                }
                picked.sort_unstable();
                picked.dedup();
                picked
            }
        };
        let canonical = format!(
            "{}|{:?}|{:?}|{:?}|{:?}",
            table.name, where_, columns, replica, log
        );
        Ok(Self {
            table: table.name.clone(),
            where_clause,
            columns,
            replica,
            log,
            canonical,
        })
    }

    pub fn table(&self) -> &QualifiedName {
        &self.table
    }
    pub fn canonical(&self) -> &str {
        &self.canonical
    }
    pub fn identity_hash(&self) -> u64 {
        self.canonical.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }
    pub fn selected_columns(&self) -> &[usize] {
        &self.columns
    }
    pub fn where_clause(&self) -> Option<&WhereClause> {
        self.where_clause.as_ref()
    }
    pub fn replica(&self) -> ReplicaMode {
        self.replica
    }
    pub fn log_mode(&self) -> LogMode {
        self.log
    }
}
