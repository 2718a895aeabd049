//! Notices that the table of a shape was dropped or renamed. Neither shows in the replication
//! stream until a row of the table changes (a dropped table never does), so the catalog is
//! asked, once a second while the stream is open: a shape whose table is gone (or answers
//! to another name) is rotated at once, and its clients' refetch names the problem.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shapes::schema::QualifiedName;
use tokio_util::sync::CancellationToken;

use super::Shapes;
use super::idle::Stream;

/// Which tables of shapes are gone, and why, by `pg_class.oid`.
const QUERY: &str = "SELECT t.oid, n.nspname::text, c.relname::text
    FROM unnest($1::oid[]) AS t(oid)
    LEFT JOIN pg_catalog.pg_class c ON c.oid = t.oid
    LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace";

/// Asks every `every` until `shutdown`.
pub(super) async fn watch_tables(
    shapes: Arc<Shapes>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        // Closed for idleness: leave the database alone.
        if shapes.demand().stream() != Stream::Open {
            continue;
        }
        let tables = shapes.tables();
        if tables.is_empty() {
            continue;
        }
        let gone = match gone_tables(&shapes, &tables).await {
            Ok(gone) => gone,
            Err(err) => {
                tracing::debug!(error = %err, "cannot check the tables of shapes");
                continue;
            }
        };
        for (oid, why) in gone {
            // New requests must not find the table in the cache.
            if let Some(name) = tables.get(&oid) {
                shapes.table_changed(name);
            }
            let handles = shapes
                .all()
                .into_iter()
                .filter(|shape| shape.table.oid == oid)
                .map(|shape| shape.handle.clone())
                .collect();
            shapes.rotate(handles, why).await;
        }
    }
}

/// The tables of `tables` the catalog no longer has under their name, with why.
async fn gone_tables(
    shapes: &Shapes,
    tables: &BTreeMap<u32, QualifiedName>,
) -> Result<Vec<(u32, String)>, String> {
    let client = shapes.metadata().get().await.map_err(|e| e.to_string())?;
    let oids: Vec<u32> = tables.keys().copied().collect();
    let rows = client
        .query(QUERY, &[&oids])
        .await
        .map_err(|e| crate::postgres::describe(&e))?;
    let mut gone = Vec::new();
    for row in rows {
        let oid: u32 = row.get(0);
        let Some(name) = tables.get(&oid) else {
            continue;
        };
        let now: Option<(String, String)> = row.get::<_, Option<String>>(1).zip(row.get(2));
        match now {
            None => gone.push((oid, format!("its table {name} was dropped"))),
            Some((schema, table)) if schema != name.schema || table != name.name => {
                let now = QualifiedName::new(schema, table);
                gone.push((oid, format!("its table {name} was renamed to {now}")));
            }
            Some(_) => {}
        }
    }
    Ok(gone)
}
