//! What the consumer does for subquery shapes, between or at the end of transactions: take a
//! new shape's snapshot and read its levels in one Postgres snapshot, and move rows at the
//! commit of a transaction that changed a subquery. Both wait for a snapshot that sees the
//! last transaction applied (a commit can reach the stream a moment before it is visible).

use std::sync::Arc;
use std::time::Duration;

use shapes::lsn::{Xid, Xid32};
use shapes::routing::RowChange;
use shapes::schema::Row;
use shapes::wire::SnapshotInfo;
use tokio_postgres::Transaction;
use tokio_postgres::types::{ToSql, Type};

use super::SubqueryShape;
use super::moves::{self, text_columns};
use super::node::Node;
use super::resync;
use super::tags::Tagger;
use crate::read_path::router::{Router, SnapshotHolds};
use crate::read_path::snapshot::{self, SnapshotError};
use crate::read_path::{ShapeError, Shapes};
use crate::storage::shape_store::{Shape, ShapeState};

/// How long to wait, at most, for a transaction the stream delivered to become visible.
const VISIBLE_WITHIN: Duration = Duration::from_secs(10);

fn shape_error(e: SnapshotError) -> ShapeError {
    if e.is_transient() {
        ShapeError::unavailable(e.to_string())
    } else {
        ShapeError::Internal(e.to_string())
    }
}

/// Runs `work` in a `REPEATABLE READ` transaction whose snapshot sees `xid` (the last
/// transaction the consumer applied, or the one it is applying).
async fn in_snapshot_seeing<T>(
    shapes: &Shapes,
    xid: Option<Xid32>,
    work: impl AsyncFnOnce(&Transaction<'_>, &SnapshotHolds) -> Result<T, SnapshotError>,
) -> Result<T, ShapeError> {
    let mut client = shapes.snapshot_client().await?;
    let started = std::time::Instant::now();
    loop {
        let (tx, info, wal_lsn) = snapshot::begin(&mut client).await.map_err(shape_error)?;
        if xid.is_none_or(|x| sees(&info, x)) {
            let holds = SnapshotHolds {
                snapshot: info,
                below: wal_lsn,
            };
            let result = work(&tx, &holds).await.map_err(shape_error)?;
            tx.commit().await.map_err(|e| shape_error(e.into()))?;
            client.reuse();
            return Ok(result);
        }
        tx.rollback().await.map_err(|e| shape_error(e.into()))?;
        if started.elapsed() > VISIBLE_WITHIN {
            return Err(ShapeError::unavailable(
                "a transaction the stream delivered did not become visible",
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn sees(info: &SnapshotInfo, xid: Xid32) -> bool {
    info.sees(Xid::widen(xid, info.xmax))
}

/// Takes the snapshot of a new subquery shape and reads its levels, then starts routing to
/// it. Returns the snapshot's row count.
pub async fn create(
    shapes: &Shapes,
    router: &mut Router,
    shape: &Arc<Shape>,
) -> Result<(u64, SnapshotHolds), ShapeError> {
    // Removed while it waited for its turn (its table was rotated): never routed to.
    if shape.state() == ShapeState::Gone {
        return Err(ShapeError::unavailable(
            "the shape was removed before its snapshot was taken",
        ));
    }
    let mut levels = Box::new(SubqueryShape::new(
        shape.table.clone(),
        &shape.definition,
        shape.tombstone,
    ));
    let chunk_bytes = shapes.config.chunk_bytes;
    let (rows, holds) = in_snapshot_seeing(shapes, router.last_xid(), async |tx, holds| {
        // The levels first (in the same snapshot): the rows' headers say what they hold.
        read_level(tx, &mut levels.root, levels.tombstone).await?;
        levels.settle();
        let headers = row_headers(shape, &levels);
        let headers = headers.as_ref().map(|h| h as snapshot::RowHeaders<'_>);
        let rows =
            snapshot::write_in_with(tx, shape, chunk_bytes, &holds.snapshot, headers).await?;
        Ok((rows, holds.clone()))
    })
    .await?;
    router.register_subquery(shape.clone(), levels, &holds);
    Ok((rows, holds))
}

/// Reads what the outer level's subqueries offer as `tx`'s snapshot sees it (for the
/// active conditions of rows read in that snapshot: a subset's).
pub async fn read_views(
    tx: &Transaction<'_>,
    levels: &mut SubqueryShape,
) -> Result<(), SnapshotError> {
    for child in &mut levels.root.children {
        let rows = read_level(tx, &mut child.node, None).await?;
        for row in &rows {
            child.add(row);
        }
    }
    levels.settle();
    Ok(())
}

/// The headers of a subquery shape's rows read by a query (tags and active conditions
/// against `levels`); `None` for other shapes.
pub fn row_headers<'a>(
    shape: &Shape,
    levels: &'a SubqueryShape,
) -> Option<impl Fn(&[Option<&str>]) -> String + Sync + 'a> {
    let tagger = Tagger::new(shape.definition.where_clause(), &shape.handle.to_string())?;
    Some(move |texts: &[Option<&str>]| {
        let row: Row = texts.iter().map(|t| t.map(str::to_owned)).collect();
        tagger.headers(RowChange::Insert, &row, None, &levels.values())
    })
}

/// Reads the rows of a level (its subqueries' first) as the snapshot sees them.
fn read_level<'a>(
    tx: &'a Transaction<'_>,
    node: &'a mut Node,
    tombstone: Option<usize>,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<Row>, SnapshotError>> + Send + 'a>> {
    Box::pin(async move {
        for child in &mut node.children {
            let rows = read_level(tx, &mut child.node, None).await?;
            for row in &rows {
                child.add(row);
            }
        }
        let mut sql = format!(
            "SELECT {} FROM {}",
            text_columns(&node.layout),
            node.layout.name
        );
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        if let Some(c) = tombstone {
            conditions.push(format!(
                "{} IS NULL",
                shapes::schema::quote_identifier(&node.layout.columns[c].name)
            ));
        }
        if let Some(w) = &node.where_clause {
            let (where_sql, values) = w.to_sql();
            conditions.push(format!("({where_sql})"));
            params = values;
        }
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        let statement = tx
            .prepare_typed(&sql, &vec![Type::TEXT; params.len()])
            .await?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let width = node.layout.columns.len();
        let read: Vec<Row> = tx
            .query(&statement, &refs)
            .await?
            .iter()
            .map(|row| {
                (0..width)
                    .map(|i| row.get::<_, Option<String>>(i))
                    .collect()
            })
            .collect();
        Ok(node.admit_read(read))
    })
}

/// Moves the rows of every subquery shape whose subqueries the open transaction changed, and
/// appends the moves to their logs (inside that transaction).
pub async fn settle_open_transaction(
    shapes: &Shapes,
    router: &mut Router,
) -> Result<(), ShapeError> {
    let ids = router.unsettled();
    if ids.is_empty() {
        return Ok(());
    }
    let xid = router.open_xid();
    let moved = in_snapshot_seeing(shapes, xid, async |tx, holds| {
        let mut all = Vec::new();
        // One copy of the snapshot for every level it holds rows of.
        let holds = Arc::new(holds.clone());
        for &id in &ids {
            if let Some(levels) = router.subquery_mut(id) {
                all.push((id, moves::settle(levels, tx, &holds).await?));
            }
        }
        Ok(all)
    })
    .await?;
    for (id, moved) in moved {
        router
            .emit_moves(id, moved)
            .map_err(|e| ShapeError::unavailable(format!("storage: {e}")))?;
    }
    Ok(())
}

/// Brings back a subquery shape stored by an earlier run (see [`super::resync`]): reads its
/// levels at a new snapshot, appends the changes from what its log holds to what that
/// snapshot says, and routes to it. The changes become visible and durable with the first
/// transaction the stream delivers past the snapshot ([`Router::append_resync`]); the caller
/// makes sure one comes ([`Router::resync_waiting`]).
pub async fn resync(
    shapes: &Shapes,
    router: &mut Router,
    shape: &Arc<Shape>,
) -> Result<usize, ShapeError> {
    let storage = |e: std::io::Error| ShapeError::unavailable(format!("storage: {e}"));
    let log_shape = shape.clone();
    let held = tokio::task::spawn_blocking(move || resync::rows_in_log(&log_shape.log))
        .await
        .map_err(|e| ShapeError::Internal(format!("the log reader failed: {e}")))?
        .map_err(storage)?;
    let mut levels = Box::new(SubqueryShape::new(
        shape.table.clone(),
        &shape.definition,
        shape.tombstone,
    ));
    let (fresh, holds) = in_snapshot_seeing(shapes, router.last_xid(), async |tx, holds| {
        let rows = read_level(tx, &mut levels.root, levels.tombstone).await?;
        levels.settle();
        Ok((rows, holds.clone()))
    })
    .await?;
    let fresh: Vec<(String, Row)> = fresh
        .into_iter()
        .map(|row| (levels.root.key(&row).into(), row))
        .collect();
    let changes = resync::changes_to(
        &shape.table,
        shape.definition.selected_columns(),
        held,
        fresh,
    );
    let count = changes.len();
    router.register_subquery(shape.clone(), levels, &holds);
    // The changes are those of every transaction up to the new snapshot: they name its xmax,
    // which no snapshot taken before it holds.
    let txid = holds.snapshot.xmax.0;
    // Made visible (and fsynced) with the first transaction the stream delivers past it.
    router
        .append_resync(shape.id, changes, txid, holds.below)
        .map_err(storage)?;
    Ok(count)
}
