//! Reading tables from the catalog, as shapes and mutations see them.

use proxy::postgres::catalog::{self, CatalogError};
use shapes::schema::{QualifiedName, TypeKind};
use tests::TestDb;

#[tokio::test]
async fn loads_columns_types_primary_key_enums_arrays_and_domains() {
    let db = TestDb::new("catalog").await;
    let mut client = db.connect().await;
    proxy::ops::migrations::apply(&mut client, &proxy::ops::migrations::embedded())
        .await
        .unwrap();
    client
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
             CREATE DOMAIN short_text AS varchar(10);
             CREATE TABLE \"Odd Table\" (
                 b int8, a text, m mood, s short_text, grid int4[][], n numeric(10,2),
                 g int8 GENERATED ALWAYS AS (b * 2) STORED,
                 PRIMARY KEY (a, b));
             ALTER TABLE \"Odd Table\" DROP COLUMN n;",
        )
        .await
        .unwrap();

    let todos = catalog::load_table(&client, &QualifiedName::new("public", "todos"))
        .await
        .unwrap();
    let names: Vec<&str> = todos.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "owner_id",
            "title",
            "done",
            "position",
            "updated_at",
            "deleted_at",
            "project_id"
        ]
    );
    assert_eq!(todos.primary_key(), vec![0]);
    assert_eq!(todos.columns[0].ty.name, "uuid");
    assert!(todos.columns[3].not_null);
    assert!(!todos.columns[6].not_null);
    assert_eq!(todos.columns[5].ty.name, "timestamptz");

    let odd = catalog::load_table(&client, &QualifiedName::new("public", "Odd Table"))
        .await
        .unwrap();
    let names: Vec<&str> = odd.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["b", "a", "m", "s", "grid", "g"],
        "dropped column skipped"
    );
    assert_eq!(odd.primary_key(), vec![1, 0], "key order, not column order");
    assert_eq!(
        odd.columns[2].ty.kind,
        TypeKind::Enum {
            labels: vec!["sad".into(), "ok".into(), "happy".into()]
        }
    );
    match &odd.columns[3].ty.kind {
        TypeKind::Domain { base } => assert_eq!(base.name, "varchar"),
        other => panic!("domain expected, got {other:?}"),
    }
    match &odd.columns[4].ty.kind {
        TypeKind::Array { element } => assert_eq!(element.name, "int4"),
        other => panic!("array expected, got {other:?}"),
    }
    assert_eq!(odd.columns[4].dims, 2);
    assert!(odd.columns[5].generated);
}

#[tokio::test]
async fn unknown_tables_and_views_are_refused_with_a_hint() {
    let db = TestDb::new("catalog_errors").await;
    let client = db.connect().await;
    client
        .batch_execute("CREATE TABLE \"Todos\" (id int PRIMARY KEY); CREATE VIEW v AS SELECT 1")
        .await
        .unwrap();
    let err = catalog::load_table(&client, &QualifiedName::new("public", "todos"))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::UnknownTable(_)));
    assert!(err.to_string().contains("quoted"), "{err}");
    let err = catalog::load_table(&client, &QualifiedName::new("public", "v"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CatalogError::NotATable { relkind: 'v', .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "\"public\".\"v\" is a view: shapesync serves and writes tables only (a view's rows \
         do not pass through the WAL); use the tables it reads"
    );
}
