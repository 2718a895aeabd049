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
const STEPS: &[(&str, &str)] = &[
    (
        "0001_schema_steps",
        "COMMENT ON SCHEMA shapesync IS 'shapesync proxy objects: managed by the proxy, removed by shapesync uninstall'",
    ),
    ("0002_mutations", MUTATIONS_STEP),
];

/// The write path's objects (see `mutations`): last-write-wins registers per row, mutation ids
/// for idempotency, and the slow path of the value check.
const MUTATIONS_STEP: &str = "
CREATE TABLE shapesync.row_clocks (
    rel           oid     NOT NULL,
    key           text    NOT NULL,
    live          boolean NOT NULL,
    exists_us     bigint  NOT NULL,
    exists_client text    NOT NULL,
    columns       jsonb   NOT NULL DEFAULT '{}',
    lww_written   bigint,
    version       bigint  NOT NULL DEFAULT 1,
    PRIMARY KEY (rel, key)
) WITH (fillfactor = 80);
CREATE INDEX row_clocks_deleted_idx ON shapesync.row_clocks (exists_us) WHERE NOT live;
COMMENT ON TABLE shapesync.row_clocks IS 'last-write-wins registers of rows written through /v1/mutations: existence (live, exists_us, exists_client), columns (name -> [us, client]), and the LWW column value last written (to notice plain SQL writes)';

CREATE TABLE shapesync.mutation_ids (
    client_id   text        NOT NULL,
    mutation_id text        NOT NULL,
    result      jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, mutation_id)
);
CREATE INDEX mutation_ids_recorded_at_idx ON shapesync.mutation_ids (recorded_at);
COMMENT ON TABLE shapesync.mutation_ids IS 'first result of every mutation id, so that a retry returns it instead of applying again; purged after the retention';

-- Casts each value to its type alone and reports its error. Read-only, so the exception
-- blocks never get a transaction id (they do not fill the subtransaction cache).
CREATE FUNCTION shapesync.check_values(vals text[], types text[])
RETURNS TABLE (ord int, canonical text, err_code text, err_message text)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    FOR i IN 1 .. coalesce(array_length(vals, 1), 0) LOOP
        ord := i;
        canonical := NULL;
        err_code := NULL;
        err_message := NULL;
        BEGIN
            EXECUTE format('SELECT format(''%%s'', $1::%s)', types[i]::regtype)
                INTO canonical USING vals[i];
        EXCEPTION WHEN OTHERS THEN
            err_code := SQLSTATE;
            err_message := SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
END
$fn$;
";

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

#[cfg(test)]
mod tests {
    use shapes::table_name::PROXY_SCHEMA;

    /// Clients are kept out of the proxy's objects by the schema name `shapes` knows them by.
    #[test]
    fn every_object_lives_in_the_schema_clients_are_refused() {
        for (_, sql) in super::STEPS {
            for object in sql.split("CREATE TABLE ").skip(1) {
                assert!(object.starts_with(&format!("{PROXY_SCHEMA}.")), "{object}");
            }
        }
    }
}
