//! Taking shapes out of service, the consumer task's alone: the router stops feeding a shape,
//! then [`Shapes`] forgets it and its clients get 409. A rotation is a removal its clients
//! refetch after (counted on the status page).

use std::sync::Arc;

use shapes::schema::QualifiedName;

use super::Shapes;
use super::router::Router;
use crate::storage::shape_store::Shape;

/// Takes a shape out of service. `None` if it was already gone.
pub(super) fn remove_shape(
    shapes: &Shapes,
    router: &mut Router,
    shape: &Shape,
    remove_dir: bool,
) -> Option<Arc<Shape>> {
    router.remove(shape.id);
    shapes.retire(&shape.handle, remove_dir)
}

/// Rotates one shape, saying why.
pub(super) fn rotate_shape(shapes: &Shapes, router: &mut Router, shape: &Shape, why: &str) {
    tracing::info!(handle = %shape.handle, table = %shape.definition.table(), why, "rotating shape");
    if remove_shape(shapes, router, shape, true).is_some() {
        shapes.note_rotation(shape);
    }
}

/// Rotates every shape of a table (truncated, renamed, …).
pub(super) fn rotate_table(shapes: &Shapes, router: &mut Router, table: &QualifiedName, why: &str) {
    shapes.table_changed(table);
    for shape in shapes.on_table(table) {
        rotate_shape(shapes, router, &shape, why);
    }
    rotate_subquery_readers(shapes, router, table, why);
}

/// Rotates the shapes whose subqueries read `table` (at any level): their kept rows and
/// values are of the table as it was.
pub(super) fn rotate_subquery_readers(
    shapes: &Shapes,
    router: &mut Router,
    table: &QualifiedName,
    why: &str,
) {
    let readers = router.subquery_readers(table);
    if readers.is_empty() {
        return;
    }
    for shape in shapes.all() {
        if readers.contains(&shape.id) {
            rotate_shape(shapes, router, &shape, why);
        }
    }
}

/// Rotates every shape (the database changed, or the slot was lost).
pub(super) fn rotate_all(shapes: &Shapes, router: &mut Router, why: &str) {
    for shape in shapes.all() {
        rotate_shape(shapes, router, &shape, why);
    }
}
