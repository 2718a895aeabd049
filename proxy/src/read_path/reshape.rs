//! What the consumer does when a table's columns or constraints change (see
//! [`schema_change`] for which shapes survive what).

use std::sync::Arc;

use shapes::request::ShapeRequest;
use shapes::schema::TableSchema;

use super::Shapes;
use super::compile_definition;
use super::retire::rotate_shape;
use super::router::Router;
use super::schema_change::{self, CatalogChanges, Fit};
use crate::replication::event::Relation;

/// Routes every shape of `relation`'s table by the relation's columns: a shape that reads
/// only columns still there, unchanged, keeps its handle and log ([`Router::rebase`]); any
/// other is rotated.
pub(super) fn fit_shapes(shapes: &Shapes, router: &mut Router, relation: &Relation) {
    for shape in shapes.on_table(&relation.name) {
        let Some((layout, definition, tombstone)) = router.layout(shape.id) else {
            continue;
        };
        let request = ShapeRequest::from(&shape.meta.request);
        let fit = schema_change::fit(layout, definition, tombstone, &request, relation, |r, t| {
            compile_definition(r, t).map_err(|e| e.to_string())
        });
        match fit {
            Fit::Same => {}
            Fit::Rebase(rebased) => {
                tracing::info!(handle = %shape.handle, table = %relation.name, "kept shape: its table's columns changed, none it reads");
                router.rebase(
                    shape.id,
                    rebased.table,
                    rebased.definition,
                    rebased.tombstone,
                );
            }
            Fit::Rotate(why) => rotate_shape(shapes, router, &shape, &why),
        }
    }
}

/// Rotates the shapes of `catalog`'s table whose primary key, or NOT NULL of a column they
/// select, differs from what they were made with (a Relation message came again: something
/// invalidated the table's catalog entry).
pub(super) fn check_catalog(shapes: &Shapes, router: &mut Router, catalog: &TableSchema) {
    // Shapes made against one catalog entry share it: compare each entry once.
    let mut compared: Vec<(Arc<TableSchema>, CatalogChanges)> = Vec::new();
    for shape in shapes.on_table(&catalog.name) {
        let changes = match compared
            .iter()
            .find(|(made, _)| Arc::ptr_eq(made, &shape.table))
        {
            Some((_, changes)) => changes,
            None => {
                let changes = CatalogChanges::between(&shape.table, catalog);
                compared.push((shape.table.clone(), changes));
                &compared[compared.len() - 1].1
            }
        };
        if let Some(why) = changes.for_shape(shape.definition.selected_columns()) {
            rotate_shape(shapes, router, &shape, &why);
        }
    }
}

/// Rotates the shapes of a table that lost its primary key.
pub(super) fn key_dropped(shapes: &Shapes, router: &mut Router, relation: &Relation) {
    for shape in shapes.on_table(&relation.name) {
        rotate_shape(
            shapes,
            router,
            &shape,
            "its table's primary key was dropped",
        );
    }
}
