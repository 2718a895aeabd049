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
    ("0003_plain_writes", PLAIN_WRITES_STEP),
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

/// Per-column plain SQL writes (see `mutations::lww`): the application's LWW trigger calls
/// `note_plain_write` on every plain UPDATE that changes something, which records, for a row
/// that has registers, the columns whose value changed and when (the row's new LWW value); the
/// next mutation of the row takes them (`DELETE … RETURNING`) and dates only those registers.
/// The trigger never touches `row_clocks` itself (only reads it): mutations lock `row_clocks`
/// then the data row, and a trigger holds the data row lock. SECURITY DEFINER, so roles that
/// write with SQL need no grant on this schema; it can only date registers, never change data.
/// Keys match `row_clocks.key` for key types whose JSON and text forms agree (integers,
/// numeric, text, uuid, …); for others nothing is recorded and the row keeps the
/// every-column behaviour.
const PLAIN_WRITES_STEP: &str = "
CREATE TABLE shapesync.plain_writes (
    rel    oid    NOT NULL,
    key    text   NOT NULL,
    col    text   NOT NULL,
    at_us  bigint NOT NULL,
    PRIMARY KEY (rel, key, col)
);
COMMENT ON TABLE shapesync.plain_writes IS 'columns that plain SQL UPDATEs changed in rows that have last-write-wins registers, and when; taken by the next mutation of the row';

CREATE FUNCTION shapesync.note_plain_write(table_oid oid, old_row jsonb, new_row jsonb, lww_column text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    root oid := coalesce(pg_partition_root(table_oid), table_oid);
    row_key text;
    lww_type oid;
    written_us bigint;
BEGIN
    SELECT to_json(array_agg(old_row ->> a.attname ORDER BY k.ord))::text INTO row_key
      FROM pg_index i
     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = root AND i.indisprimary;
    IF row_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM shapesync.row_clocks c WHERE c.rel = root AND c.key = row_key) THEN
        RETURN;
    END IF;
    -- Dated as the proxy dates the whole row: by the new value of the LWW column.
    SELECT a.atttypid INTO lww_type FROM pg_attribute a
     WHERE a.attrelid = root AND a.attname = lww_column AND NOT a.attisdropped;
    written_us := CASE
        WHEN new_row ->> lww_column IS NULL THEN NULL
        WHEN lww_type = 'timestamptz'::regtype
            THEN (extract(epoch FROM (new_row ->> lww_column)::timestamptz) * 1000000)::int8
        WHEN lww_type = 'timestamp'::regtype
            THEN (extract(epoch FROM (new_row ->> lww_column)::timestamp) * 1000000)::int8
    END;
    -- Every changed column, the LWW column too: an UPDATE of it alone then writes no data
    -- column (the proxy counts only its registers), where no record would mean all of them.
    INSERT INTO shapesync.plain_writes AS p (rel, key, col, at_us)
    SELECT root, row_key, n.key,
           coalesce(written_us, (extract(epoch FROM now()) * 1000000)::int8)
      FROM jsonb_each(new_row) AS n
     WHERE n.value IS DISTINCT FROM old_row -> n.key
    ON CONFLICT (rel, key, col) DO UPDATE SET at_us = greatest(p.at_us, excluded.at_us);
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
