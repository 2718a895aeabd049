//! Moving rows in and out of a subquery shape's levels after its subqueries changed, deepest
//! level first: rows that leave are found among the kept rows; rows that come in are read in
//! one query per level, restricted to the changed values where the compared side is plain
//! columns, at a snapshot that sees the transaction being applied.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use shapes::schema::{Row, TableSchema, quote_identifier};
use shapes::wire::SnapshotInfo;
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::SubqueryShape;
use super::node::{Candidates, MovedValues, Node};
use crate::read_path::router::SnapshotHolds;
use crate::read_path::snapshot::text_cast_is_output;

/// What moved on the outer level: rows that left (as kept) and rows that came in (whole),
/// the values of its subqueries that moved them, and the snapshot the rows were read at.
#[derive(Debug, Default)]
pub struct Moved {
    pub out: Vec<Row>,
    pub r#in: Vec<Row>,
    pub values: MovedValues,
    pub snapshot: Option<SnapshotInfo>,
}

type Settling<'a> = Pin<Box<dyn Future<Output = Result<Moved, tokio_postgres::Error>> + Send + 'a>>;

/// Moves rows until no level is unsettled; returns the outer level's moves.
pub async fn settle(
    shape: &mut SubqueryShape,
    tx: &Transaction<'_>,
    holds: &Arc<SnapshotHolds>,
) -> Result<Moved, tokio_postgres::Error> {
    let mut moved = level(&mut shape.root, tx, holds, shape.tombstone).await?;
    moved.snapshot = Some(holds.snapshot.clone());
    Ok(moved)
}

/// Settles one level, its subqueries' first; `tombstone` (the outer level's) marks rows that
/// are not there.
fn level<'a>(
    node: &'a mut Node,
    tx: &'a Transaction<'_>,
    holds: &'a Arc<SnapshotHolds>,
    tombstone: Option<usize>,
) -> Settling<'a> {
    Box::pin(async move {
        for child in &mut node.children {
            let moved = level(&mut child.node, tx, holds, None).await?;
            for row in &moved.out {
                child.remove(row);
            }
            for row in &moved.r#in {
                child.add(row);
            }
        }
        if !node.unsettled() {
            return Ok(Moved::default());
        }
        let out = node.move_out();
        let candidates = node.move_in_candidates();
        let mut read = read_rows(tx, node, candidates).await?;
        if let Some(column) = tombstone {
            read.retain(|row| row.get(column).is_none_or(Option::is_none));
        }
        let came = node.admit_read(read);
        node.hold(holds, Some(&came));
        let values = node.moved_values();
        node.settle();
        Ok(Moved {
            out,
            r#in: came,
            values,
            snapshot: None,
        })
    })
}

/// `SELECT` list giving every column of `table` as Postgres' text output, in column order.
pub fn text_columns(table: &TableSchema) -> String {
    table
        .columns
        .iter()
        .map(|column| {
            let col = quote_identifier(&column.name);
            if column.dims == 0 && text_cast_is_output(&column.ty) {
                format!("{col}::text")
            } else {
                format!("CASE WHEN {col} IS NULL THEN NULL ELSE format('%s', {col}) END")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the rows of `node`'s table that a move may bring in: those offering one of the
/// changed values (`None`: every row).
async fn read_rows(
    tx: &Transaction<'_>,
    node: &Node,
    candidates: Option<Vec<Candidates>>,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let layout = &node.layout;
    let mut sql = format!("SELECT {} FROM {}", text_columns(layout), layout.name);
    let mut params: Vec<Vec<String>> = Vec::new();
    if let Some(candidates) = &candidates {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut alternatives = Vec::new();
        for c in candidates {
            let first = params.len() + 1;
            let (mut outer, mut inner, mut arrays, mut names) = (vec![], vec![], vec![], vec![]);
            for (j, (&column, ty)) in c.columns.iter().zip(&c.types).enumerate() {
                outer.push(format!(
                    "{}::{ty}",
                    quote_identifier(&layout.columns[column].name)
                ));
                names.push(format!("v{j}"));
                inner.push(format!("v{j}::{ty}"));
                arrays.push(format!("${}::text[]", first + j));
                params.push(
                    c.keys
                        .iter()
                        .map(|k| k.parts().get(j).map_or_else(String::new, |p| p.to_string()))
                        .collect(),
                );
            }
            alternatives.push(format!(
                "({}) IN (SELECT {} FROM unnest({}) AS u({}))",
                outer.join(", "),
                inner.join(", "),
                arrays.join(", "),
                names.join(", ")
            ));
        }
        sql.push_str(" WHERE ");
        sql.push_str(&alternatives.join(" OR "));
    }
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let rows = tx.query(&sql, &refs).await?;
    Ok(rows
        .iter()
        .map(|row| {
            (0..layout.columns.len())
                .map(|i| row.get::<_, Option<String>>(i))
                .collect()
        })
        .collect())
}
