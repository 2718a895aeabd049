//! Reading tables and types from the Postgres catalog into [`shapes::schema`] terms.

use std::collections::HashMap;

use shapes::schema::{Column, PgType, QualifiedName, TableSchema, TypeKind};
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "table {0} does not exist. Names are case-folded like SQL: a table created as \"Todos\" \
         must be requested quoted, e.g. table=\"Todos\" (and schema-qualified when not in public)"
    )]
    UnknownTable(QualifiedName),
    /// A view, sequence, foreign table, …: `relkind` says which.
    #[error("{name} is {}", not_a_table(.relkind))]
    NotATable { name: QualifiedName, relkind: char },
    #[error(
        "table {0} is unlogged: its changes are not written to the WAL, so shapesync can \
         neither serve nor write it; make it logged with ALTER TABLE {0} SET LOGGED"
    )]
    Unlogged(QualifiedName),
    #[error("query failed: {}", crate::postgres::describe(.0))]
    Query(#[from] tokio_postgres::Error),
}

/// Reads a table's columns (attribute order), types, nullability and primary key.
pub async fn load_table(
    client: &Client,
    name: &QualifiedName,
) -> Result<TableSchema, CatalogError> {
    load_columns(client, name).await.map(|loaded| loaded.schema)
}

/// A table as one read of `pg_attribute` gives it: the parts always agree with each other.
#[derive(Debug, Clone)]
pub(crate) struct LoadedColumns {
    pub schema: TableSchema,
    /// Per column, the type to cast text to: `format_type` without the modifier, so that
    /// assignment applies the modifier (a too-long value is an error, not a truncation).
    pub cast_types: Vec<String>,
    /// Check constraints over one column: (constraint name, column position).
    pub checks: Vec<(String, usize)>,
}

pub(crate) async fn load_columns(
    client: &Client,
    name: &QualifiedName,
) -> Result<LoadedColumns, CatalogError> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relkind::text, c.relpersistence::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&name.schema, &name.name],
        )
        .await?
        .ok_or_else(|| CatalogError::UnknownTable(name.clone()))?;
    let oid: u32 = row.get(0);
    let relkind = row.get::<_, String>(1).chars().next().unwrap_or('?');
    if relkind != 'r' && relkind != 'p' {
        return Err(CatalogError::NotATable {
            name: name.clone(),
            relkind,
        });
    }
    // Temporary tables live in pg_temp_* schemas, which are refused before this.
    if row.get::<_, String>(2) == "u" {
        return Err(CatalogError::Unlogged(name.clone()));
    }
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attndims, a.attnotnull,
                    a.attgenerated <> '',
                    -- int2vector subscripts start at 0; do not assume either way.
                    (SELECT array_position(i.indkey::int2[], a.attnum)
                            - array_lower(i.indkey::int2[], 1)
                       FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary),
                    format_type(a.atttypid, NULL),
                    ARRAY(SELECT c.conname::text FROM pg_constraint c
                          WHERE c.conrelid = a.attrelid AND c.contype = 'c'
                            AND c.conkey = ARRAY[a.attnum])
             FROM pg_attribute a
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&oid],
        )
        .await?;
    let mut types = TypeCache::default();
    let mut columns = Vec::with_capacity(rows.len());
    let mut cast_types = Vec::with_capacity(rows.len());
    let mut checks = Vec::new();
    for row in rows {
        cast_types.push(row.get(7));
        let position = columns.len();
        checks.extend(
            row.get::<_, Vec<String>>(8)
                .into_iter()
                .map(|constraint| (constraint, position)),
        );
        let type_oid: u32 = row.get(1);
        let pk: Option<i32> = row.get(6);
        columns.push(Column {
            name: row.get(0),
            ty: types.resolve(client, type_oid).await?,
            type_mod: row.get(2),
            dims: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
            not_null: row.get(4),
            pk_index: pk.and_then(|p| usize::try_from(p).ok()),
            generated: row.get(5),
        });
    }
    let schema = TableSchema {
        name: name.clone(),
        oid,
        columns,
    };
    Ok(LoadedColumns {
        schema,
        cast_types,
        checks,
    })
}

/// What a relation that is not a table is, and why it cannot be synced (`pg_class.relkind`).
fn not_a_table(relkind: &char) -> &'static str {
    match relkind {
        'v' => {
            "a view: shapesync serves and writes tables only (a view's rows do not pass through \
             the WAL); use the tables it reads"
        }
        'm' => {
            "a materialized view: its refreshes are not replicated row by row, so shapesync \
             serves and writes tables only; use the tables it is built from"
        }
        'f' => {
            "a foreign table: its rows live on another server and never pass through this \
             database's WAL, so shapesync cannot serve or write it"
        }
        'S' => "a sequence, not a table",
        'i' | 'I' => "an index, not a table",
        'c' => "a composite type, not a table",
        't' => "a TOAST table, not a table",
        _ => "not a table",
    }
}

/// Resolves type oids (recursively for arrays and domains), caching within one load.
#[derive(Default)]
struct TypeCache {
    known: HashMap<u32, PgType>,
}

impl TypeCache {
    async fn resolve(&mut self, client: &Client, oid: u32) -> Result<PgType, CatalogError> {
        if let Some(ty) = self.known.get(&oid) {
            return Ok(ty.clone());
        }
        // Walk down arrays and domains iteratively, then build back up.
        let mut chain = Vec::new();
        let mut current = oid;
        let base = loop {
            let row = client
                .query_one(
                    "SELECT t.typname::text, t.typtype::text, t.typelem, t.typbasetype,
                            t.typcategory::text,
                            CASE WHEN t.typtype = 'e' THEN ARRAY(
                                SELECT e.enumlabel::text FROM pg_enum e
                                WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) END
                     FROM pg_type t WHERE t.oid = $1",
                    &[&current],
                )
                .await?;
            let name: String = row.get(0);
            let typtype: String = row.get(1);
            let elem: u32 = row.get(2);
            let basetype: u32 = row.get(3);
            let category: String = row.get(4);
            let labels: Option<Vec<String>> = row.get(5);
            if category == "A" && elem != 0 {
                chain.push((current, None));
                current = elem;
            } else if typtype == "d" {
                chain.push((current, Some(name)));
                current = basetype;
            } else {
                let kind = match (typtype.as_str(), labels) {
                    ("e", Some(labels)) => TypeKind::Enum { labels },
                    ("b", _) => TypeKind::Base,
                    _ => TypeKind::Other,
                };
                break PgType {
                    oid: current,
                    name,
                    kind,
                };
            };
        };
        self.known.insert(base.oid, base.clone());
        let mut ty = base;
        while let Some((oid, domain_name)) = chain.pop() {
            ty = match domain_name {
                None => PgType {
                    oid,
                    name: ty.name.clone(),
                    kind: TypeKind::Array {
                        element: Box::new(ty),
                    },
                },
                Some(name) => PgType {
                    oid,
                    name,
                    kind: TypeKind::Domain { base: Box::new(ty) },
                },
            };
            self.known.insert(oid, ty.clone());
        }
        Ok(ty)
    }
}
