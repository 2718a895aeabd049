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

use shapes::schema::{QualifiedName, Row};

use crate::database::MetadataClient;
use crate::replication::Relation;

/// The partitioned tables above relation `oid`, nearest first (empty for a table that is not
/// a partition, or no longer exists).
pub async fn ancestors(
    metadata: &MetadataClient,
    oid: u32,
) -> Result<Vec<QualifiedName>, std::io::Error> {
    let failed = |e: &dyn std::fmt::Display| {
        std::io::Error::other(format!(
            "cannot read the partitioned tables above relation {oid}: {e}"
        ))
    };
    let client = metadata.get().await.map_err(|e| failed(&e))?;
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
        .map_err(|e| failed(&crate::database::describe(&e)))?;
    Ok(rows
        .iter()
        .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
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
