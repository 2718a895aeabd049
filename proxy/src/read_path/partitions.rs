//! Partitioned tables on the read path.
//!
//! The publication publishes each change under the partition it was made on
//! (`publish_via_partition_root = false`): that is the only way a shape of a partition can see
//! its changes, since a change published under the root no longer says which partition it
//! came from. A change on a partition therefore belongs to the shapes of that partition *and*
//! of every partitioned table above it; the consumer routes it to each, once, with the row
//! rearranged into each table's column order (an attached table may order its columns
//! differently or have dropped ones). An update that moves a row to another partition arrives
//! as a delete on one partition and an insert on the other.

use std::time::Duration;

use shapes::lsn::Xid32;
use shapes::schema::{QualifiedName, Row};
use tokio_postgres::Client;

use crate::postgres::MetadataClient;
use crate::replication::Relation;

/// How long to wait for a decoded transaction to become visible to catalog queries.
const VISIBLE_WITHIN: Duration = Duration::from_secs(10);

/// The partitioned tables above relation `oid`, nearest first (empty for a table that is not
/// a partition, or no longer exists), as of transaction `xid` (the one being applied) or
/// later.
///
/// A transaction's commit record reaches the WAL, and so the stream, a moment before other
/// sessions see the transaction: a partition created or attached by it would look like a
/// plain table to a query made at once. So the query waits until `xid` is visible.
pub async fn ancestors(
    metadata: &MetadataClient,
    oid: u32,
    xid: Option<Xid32>,
) -> Result<Vec<QualifiedName>, std::io::Error> {
    let failed = |e: &dyn std::fmt::Display| {
        std::io::Error::other(format!(
            "cannot read the partitioned tables above relation {oid}: {e}"
        ))
    };
    let client = metadata.get().await.map_err(|e| failed(&e))?;
    if let Some(xid) = xid {
        let deadline = tokio::time::Instant::now() + VISIBLE_WITHIN;
        while !visible(&client, xid)
            .await
            .map_err(|e| failed(&crate::postgres::describe(&e)))?
        {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    %xid,
                    oid,
                    "a decoded transaction is still not visible; reading the partitions as they are"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text
             FROM pg_partition_ancestors($1::oid::regclass) WITH ORDINALITY AS a(relid, level)
             JOIN pg_class c ON c.oid = a.relid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE a.relid::oid <> $1::oid
             ORDER BY a.level",
            &[&oid],
        )
        .await
        .map_err(|e| failed(&crate::postgres::describe(&e)))?;
    Ok(rows
        .iter()
        .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// Whether the (32-bit) `xid` of a committed transaction is visible to a new snapshot: widened
/// against the snapshot's `xmax` (an xid at or past it has not completed for this session).
async fn visible(client: &Client, xid: Xid32) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "WITH s AS (SELECT pg_current_snapshot() AS snap),
                  x AS (SELECT snap, pg_snapshot_xmax(snap)::text::bigint AS xmax FROM s),
                  d AS (SELECT snap, xmax, (xmax - $1::bigint) & 4294967295 AS back FROM x)
             SELECT back BETWEEN 1 AND 2147483647
                    AND pg_visible_in_snapshot((xmax - back)::text::xid8, snap)
             FROM d",
            &[&i64::from(xid.0)],
        )
        .await?;
    Ok(row.get(0))
}

/// For each column of a table (by name, in its order), its position in `relation`'s rows;
/// `None` when one is missing (the tables disagree: their shapes must be rebuilt).
pub fn column_map(relation: &Relation, columns: &[&str]) -> Option<Vec<usize>> {
    columns
        .iter()
        .map(|name| relation.column_index(name))
        .collect()
}

/// `row` (in `relation`'s order) in the order `map` gives.
pub fn rearrange(row: &Row, map: &[usize]) -> Row {
    map.iter().map(|&i| row.get(i).cloned().flatten()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::{RelationColumn, ReplicaIdentity};

    fn relation(columns: &[&str]) -> Relation {
        Relation {
            oid: 1,
            name: QualifiedName::new("public", "leaf"),
            replica_identity: ReplicaIdentity::Full,
            columns: columns
                .iter()
                .map(|name| RelationColumn {
                    name: (*name).to_owned(),
                    type_oid: 25,
                    type_mod: -1,
                    is_key: false,
                })
                .collect(),
        }
    }

    #[test]
    fn a_partition_row_is_rearranged_into_the_parent_column_order() {
        let leaf = relation(&["v", "id", "w"]);
        let map = column_map(&leaf, &["id", "v", "w"]).unwrap();
        let row = vec![Some("b".to_owned()), Some("1".to_owned()), None];
        assert_eq!(
            rearrange(&row, &map),
            vec![Some("1".to_owned()), Some("b".to_owned()), None]
        );
    }

    #[test]
    fn a_parent_column_the_partition_lacks_has_no_map() {
        assert_eq!(column_map(&relation(&["id"]), &["id", "v"]), None);
    }
}
