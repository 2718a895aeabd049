//! The proxy's own objects in the `shapesync` schema, created and upgraded by the proxy at
//! start (never by the application's migrations).
//!
//! Each step has a name and runs once, in list order, inside a transaction that holds an
//! advisory lock, so two proxies starting together do not race. Append steps; never edit one
//! that has shipped.

use tokio_postgres::Client;

/// Advisory lock key for schema upgrades ("shapesyn" in ASCII).
const UPGRADE_LOCK: i64 = 0x7368_6170_6573_796e;

/// (name, SQL) in the order they apply.
const STEPS: &[(&str, &str)] = &[(
    "0001_schema_steps",
    "COMMENT ON SCHEMA shapesync IS 'shapesync proxy objects: managed by the proxy, removed by shapesync uninstall'",
)];

/// Creates the schema if missing and applies the steps not yet applied.
pub async fn upgrade(client: &mut Client) -> Result<Vec<&'static str>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&UPGRADE_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS shapesync;
         CREATE TABLE IF NOT EXISTS shapesync.schema_steps (
             name text PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let done: Vec<String> = tx
        .query("SELECT name FROM shapesync.schema_steps", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut applied = Vec::new();
    for (name, sql) in STEPS {
        if done.iter().any(|d| d == name) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO shapesync.schema_steps (name) VALUES ($1)",
            &[name],
        )
        .await?;
        applied.push(*name);
    }
    tx.commit().await?;
    Ok(applied)
}
