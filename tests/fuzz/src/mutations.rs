//! The `POST /v1/mutations` body: JSON parsing, table names, per-mutation validation against
//! a writable table, and Yjs merges of the updates it carries.
//!
//! Input: the request body. Every mutation that parses is validated against `notes` (the
//! example app's table: uuid key, a Yjs `body`, a generated `slug`, a tombstone); every merge
//! that validates is applied to an empty document and then to the merged result.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proxy::mutations::config::{WriteConfig, YjsColumn};
use proxy::mutations::table::WritableTable;
use proxy::mutations::{validate, wire, yjs};
use shapes::schema::QualifiedName;
use shapes::testing::{base, column, table};

pub fn run(data: &[u8]) {
    let Ok(request) = wire::parse_request(data) else {
        return;
    };
    let notes = notes();
    for mutation in &request.mutations {
        let _ = shapes::table_name::parse_table_name(&mutation.table);
        let shown = |c: &str| c != "slug";
        let Ok(valid) = validate::validate(
            mutation,
            notes,
            &request.client_id,
            1_800_000_000_000_000,
            Duration::from_secs(60),
            &shown,
        ) else {
            continue;
        };
        for value in mutation.values.values() {
            let _ = validate::value_text(value);
        }
        for (_, update) in &valid.merges {
            if let Ok(merged) = yjs::merge(None, update) {
                yjs::merge(Some(&merged), update)
                    .unwrap_or_else(|e| panic!("a merged document refuses its own update: {e}"));
            }
        }
    }
}

/// `notes(id uuid pk, title text, body bytea [yjs], slug [generated], updated_at,
/// deleted_at [tombstone])`.
fn notes() -> &'static Arc<WritableTable> {
    static NOTES: OnceLock<Arc<WritableTable>> = OnceLock::new();
    NOTES.get_or_init(|| {
        let name = QualifiedName::new("public", "notes");
        let schema = table(
            "public",
            "notes",
            vec![
                column("id", base("uuid")).pk(0).not_null(),
                column("title", base("text")),
                column("body", base("bytea")),
                column("slug", base("text")).generated(),
                column("updated_at", base("timestamptz")),
                column("deleted_at", base("timestamptz")),
            ],
        );
        let config = WriteConfig {
            yjs_columns: vec![YjsColumn {
                table: name,
                column: "body".into(),
            }],
            ..WriteConfig::default()
        };
        let cast_types = schema.columns.iter().map(|c| c.ty.name.clone()).collect();
        let table = WritableTable::new(schema, cast_types, &config, Some("deleted_at"))
            .unwrap_or_else(|(_, e)| panic!("the notes table: {e}"));
        Arc::new(table)
    })
}
