//! The Postgres objects replication stands on, made ready over an ordinary connection: the
//! slot, the publication, and each table's membership in it with REPLICA IDENTITY FULL.
//!
//! All three are idempotent: they look first and change only what is missing, so they are
//! safe to run on every start and on every shape request, by several proxies at once.
//!
//! Errors say who must do what: a missing privilege names the statement an administrator
//! has to run; a lock that could not be taken in time is transient (the HTTP layer answers
//! 503 with `retry-after`), everything else definite unless the connection broke.

use std::time::Duration;

use shapes::lsn::Lsn;
use shapes::schema::{QualifiedName, quote_identifier};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "could not lock table {table} within {timeout:?} to prepare it for replication (other \
         transactions hold locks on it); try again shortly"
    )]
    LockTimeout {
        table: QualifiedName,
        timeout: Duration,
    },
    #[error("role {role} may not {action}: {message}. To fix it, {fix}")]
    MissingPrivilege {
        role: String,
        action: String,
        message: String,
        /// What an administrator must run, as SQL.
        fix: String,
    },
    #[error("table {0} does not exist")]
    UnknownTable(QualifiedName),
    #[error("{0} is not a table (views, sequences and foreign tables cannot be replicated)")]
    NotATable(QualifiedName),
    #[error(
        "replication slot {slot} exists but is a {slot_type} slot with plugin {plugin:?} in \
         database {database:?}; shapesync needs its own logical pgoutput slot in this database. \
         Configure another slot name, or drop this one: SELECT pg_drop_replication_slot('{slot}');"
    )]
    ForeignSlot {
        slot: String,
        slot_type: String,
        plugin: String,
        database: String,
    },
    #[error(
        "publication {publication} does not publish {missing}, so those changes would never \
         reach shapes. Run: ALTER PUBLICATION {quoted} SET (publish = 'insert, update, delete, \
         truncate');",
        quoted = quote_identifier(.publication)
    )]
    PublicationOmits {
        publication: String,
        missing: String,
    },
    #[error(
        "publication {publication} publishes changes of partitions under their partitioned \
         table (publish_via_partition_root = true), so shapes of a partition would miss them, \
         and it cannot be changed: {message}. Run: ALTER PUBLICATION {quoted} SET \
         (publish_via_partition_root = false);",
        quoted = quote_identifier(.publication)
    )]
    PublicationViaRoot {
        publication: String,
        message: String,
    },
    #[error(
        "replication slot {slot} must be recreated but is in use by another process{}",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    SlotInUse { slot: String, pid: Option<i32> },
    #[error("query failed: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
}

impl SetupError {
    /// Worth retrying with backoff, as opposed to needing a person (or a different request).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::LockTimeout { .. } | Self::SlotInUse { .. } => true,
            Self::Query(err) => crate::postgres::is_transient(err),
            Self::MissingPrivilege { .. }
            | Self::UnknownTable(_)
            | Self::NotATable(_)
            | Self::ForeignSlot { .. }
            | Self::PublicationOmits { .. }
            | Self::PublicationViaRoot { .. } => false,
        }
    }
}

/// What [`ensure_slot`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// The slot was there and usable.
    Existing { confirmed_flush: Option<Lsn> },
    /// There was no slot; it was created, consistent from `lsn`.
    Created { lsn: Lsn },
    /// Postgres had invalidated the slot (`wal_status = 'lost'`): it was dropped and created
    /// again, consistent from `lsn`. Changes between the old position and `lsn` are gone.
    Recreated { lsn: Lsn, reason: String },
}

/// Makes sure the logical pgoutput slot `slot` exists in this database and can stream;
/// creates it when missing, and drops and recreates it when Postgres invalidated it (or when
/// `force_recreate`, after the stream was told it is invalidated).
pub async fn ensure_slot(
    client: &Client,
    slot: &str,
    force_recreate: bool,
) -> Result<SlotState, SetupError> {
    let row = client
        .query_opt(
            "SELECT slot_type::text, coalesce(plugin::text, ''), coalesce(database::text, ''),
                    database = current_database(), coalesce(wal_status, ''), active_pid,
                    confirmed_flush_lsn::text, current_setting('max_slot_wal_keep_size')
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    let Some(row) = row else {
        return Ok(SlotState::Created {
            lsn: create_slot(client, slot).await?,
        });
    };
    let (slot_type, plugin, database): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    let same_database: Option<bool> = row.get(3);
    if slot_type != "logical" || plugin != "pgoutput" || same_database != Some(true) {
        return Err(SetupError::ForeignSlot {
            slot: slot.to_owned(),
            slot_type,
            plugin,
            database,
        });
    }
    let wal_status: String = row.get(4);
    if wal_status != "lost" && !force_recreate {
        let confirmed: Option<String> = row.get(6);
        return Ok(SlotState::Existing {
            confirmed_flush: confirmed.and_then(|text| text.parse().ok()),
        });
    }
    if let Some(pid) = row.get::<_, Option<i32>>(5) {
        return Err(SetupError::SlotInUse {
            slot: slot.to_owned(),
            pid: Some(pid),
        });
    }
    let keep_size: String = row.get(7);
    let reason = if wal_status == "lost" {
        format!(
            "Postgres invalidated it (wal_status = 'lost'): the slot fell more than \
             max_slot_wal_keep_size ({keep_size}) behind and the WAL it needed was removed"
        )
    } else {
        "Postgres reported it invalidated when streaming started".to_owned()
    };
    if let Err(err) = client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
    {
        return Err(slot_error(client, err, slot).await);
    }
    let lsn = create_slot(client, slot).await?;
    Ok(SlotState::Recreated { lsn, reason })
}

async fn create_slot(client: &Client, slot: &str) -> Result<Lsn, SetupError> {
    let created = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await;
    let row = match created {
        Ok(row) => row,
        // Another proxy (or an earlier attempt of ours) created it first.
        Err(err) if err.code() == Some(&SqlState::DUPLICATE_OBJECT) => {
            let row = client
                .query_one(
                    "SELECT coalesce(confirmed_flush_lsn, '0/0')::text
                     FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await?;
            return Ok(row.get::<_, String>(0).parse().unwrap_or_default());
        }
        Err(err) => return Err(slot_error(client, err, slot).await),
    };
    Ok(row.get::<_, String>(0).parse().unwrap_or_default())
}

/// A slot function failed: a missing REPLICATION attribute is a privilege error.
async fn slot_error(client: &Client, err: tokio_postgres::Error, slot: &str) -> SetupError {
    if err.code() == Some(&SqlState::OBJECT_IN_USE) {
        return SetupError::SlotInUse {
            slot: slot.to_owned(),
            pid: None,
        };
    }
    if err.code() != Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        return SetupError::Query(err);
    }
    let role = current_role(client).await;
    SetupError::MissingPrivilege {
        action: format!("create or drop the replication slot {slot}"),
        message: db_message(&err),
        fix: format!(
            "as a superuser run: ALTER ROLE {} WITH REPLICATION;",
            quote_identifier(&role)
        ),
        role,
    }
}

async fn current_role(client: &Client) -> String {
    match client.query_one("SELECT current_user::text", &[]).await {
        Ok(row) => row.get(0),
        Err(_) => "(this role)".to_owned(),
    }
}

fn db_message(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map(|db| db.message().to_owned())
        .unwrap_or_else(|| err.to_string())
}

/// A driver error with the server's message and SQLSTATE (its `Display` says only "db
/// error").
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => err.to_string(),
    }
}

/// Whether [`ensure_publication`] had to create the publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicationState {
    Existing,
    Created,
}

/// Makes sure `publication` exists (created empty if missing: tables join it one by one in
/// [`prepare_table`]) and publishes every kind of change.
pub async fn ensure_publication(
    client: &Client,
    publication: &str,
) -> Result<PublicationState, SetupError> {
    let mut state = PublicationState::Existing;
    let mut row = publication_row(client, publication).await?;
    if row.is_none() {
        // Changes of a partition are published under the partition itself, so that shapes
        // of the partition see them; the consumer hands them to the shapes of the
        // partitioned tables above it too (see `read_path::partitions`).
        let created = client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} WITH (publish_via_partition_root = false)",
                quote_identifier(publication)
            ))
            .await;
        match created {
            Ok(()) => state = PublicationState::Created,
            Err(err) if err.code() == Some(&SqlState::DUPLICATE_OBJECT) => {}
            Err(err) if err.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                let role = current_role(client).await;
                return Err(SetupError::MissingPrivilege {
                    action: format!("create the publication {publication}"),
                    message: db_message(&err),
                    fix: format!(
                        "as a superuser or the database owner run: GRANT CREATE ON DATABASE {} \
                         TO {}; (or create it yourself: CREATE PUBLICATION {};)",
                        quote_identifier(&current_database(client).await),
                        quote_identifier(&role),
                        quote_identifier(publication),
                    ),
                    role,
                });
            }
            Err(err) => return Err(err.into()),
        }
        row = publication_row(client, publication).await?;
    }
    if let Some([.., false]) = row {
        // Created by an earlier version (publishing partitions as their root): shapes of a
        // partition would see nothing. Transactions decoded before this ALTER still arrive
        // under the root, whose shapes get them as before.
        client
            .batch_execute(&format!(
                "ALTER PUBLICATION {} SET (publish_via_partition_root = false)",
                quote_identifier(publication)
            ))
            .await
            .map_err(|err| SetupError::PublicationViaRoot {
                publication: publication.to_owned(),
                message: db_message(&err),
            })?;
    }
    let missing: Vec<&str> = match row {
        Some(flags) => ["insert", "update", "delete", "truncate"]
            .into_iter()
            .zip(flags)
            .filter(|(_, on)| !on)
            .map(|(kind, _)| kind)
            .collect(),
        None => Vec::new(),
    };
    if missing.is_empty() {
        Ok(state)
    } else {
        Err(SetupError::PublicationOmits {
            publication: publication.to_owned(),
            missing: missing.join(", "),
        })
    }
}

/// The publication's `insert`, `update`, `delete`, `truncate` flags, and whether it publishes
/// partitions as themselves (`publish_via_partition_root = false`).
async fn publication_row(
    client: &Client,
    publication: &str,
) -> Result<Option<[bool; 5]>, SetupError> {
    let row = client
        .query_opt(
            "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication
             WHERE pubname = $1",
            &[&publication],
        )
        .await?;
    Ok(row.map(|r| [r.get(0), r.get(1), r.get(2), r.get(3), !r.get::<_, bool>(4)]))
}

async fn current_database(client: &Client) -> String {
    match client
        .query_one("SELECT current_database()::text", &[])
        .await
    {
        Ok(row) => row.get(0),
        Err(_) => "<database>".to_owned(),
    }
}

/// What [`prepare_table`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TablePrepared {
    pub added_to_publication: bool,
    pub replica_identity_set: bool,
}

/// Where a table stands, read before changing anything.
struct TableState {
    in_publication: bool,
    identity_full: bool,
    owner: String,
    publication_owner: Option<String>,
    role: String,
}

/// Adds `table` to `publication` and sets `REPLICA IDENTITY FULL`, whichever is missing, in
/// one committed transaction under `SET LOCAL lock_timeout` (the ALTER TABLE takes an ACCESS
/// EXCLUSIVE lock, and waiting in its queue would block every reader of the table).
pub async fn prepare_table(
    client: &mut Client,
    publication: &str,
    table: &QualifiedName,
    lock_timeout: Duration,
) -> Result<TablePrepared, SetupError> {
    // A concurrent prepare of the same table may win the race: look again, once.
    for attempt in 0..2 {
        let state = table_state(client, publication, table).await?;
        if state.in_publication && state.identity_full {
            return Ok(TablePrepared::default());
        }
        match alter_table(client, publication, table, lock_timeout, &state).await {
            Err(err) if attempt == 0 && err.code() == Some(&SqlState::DUPLICATE_OBJECT) => {}
            Err(err) => {
                return Err(classify_alter_error(
                    err,
                    publication,
                    table,
                    lock_timeout,
                    &state,
                ));
            }
            Ok(()) => {
                return Ok(TablePrepared {
                    added_to_publication: !state.in_publication,
                    replica_identity_set: !state.identity_full,
                });
            }
        }
    }
    Ok(TablePrepared::default())
}

async fn table_state(
    client: &Client,
    publication: &str,
    table: &QualifiedName,
) -> Result<TableState, SetupError> {
    let row = client
        .query_opt(
            "SELECT c.relkind::text,
                    c.relreplident = 'f'
                    AND NOT EXISTS (SELECT 1 FROM pg_partition_tree(c.oid) t
                                    JOIN pg_class m ON m.oid = t.relid
                                    WHERE m.relkind IN ('r', 'p') AND m.relreplident <> 'f'),
                    pg_get_userbyid(c.relowner)::text,
                    -- A partitioned table is a member itself, but pg_publication_tables
                    -- lists its partitions in its place.
                    EXISTS (SELECT 1 FROM pg_publication_tables p
                            WHERE p.pubname = $3 AND p.schemaname = n.nspname
                              AND p.tablename = c.relname)
                    OR EXISTS (SELECT 1 FROM pg_publication_rel r
                               JOIN pg_publication p ON p.oid = r.prpubid
                               WHERE p.pubname = $3 AND r.prrelid = c.oid),
                    (SELECT pg_get_userbyid(pubowner)::text FROM pg_publication
                     WHERE pubname = $3),
                    current_user::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&table.schema, &table.name, &publication],
        )
        .await?
        .ok_or_else(|| SetupError::UnknownTable(table.clone()))?;
    let relkind: String = row.get(0);
    if relkind != "r" && relkind != "p" {
        return Err(SetupError::NotATable(table.clone()));
    }
    Ok(TableState {
        identity_full: row.get(1),
        owner: row.get(2),
        in_publication: row.get(3),
        publication_owner: row.get(4),
        role: row.get(5),
    })
}

async fn alter_table(
    client: &mut Client,
    publication: &str,
    table: &QualifiedName,
    lock_timeout: Duration,
    state: &TableState,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}ms'",
        lock_timeout.as_millis().max(1)
    ))
    .await?;
    if !state.identity_full {
        // The ALTERs below need this lock anyway; taking it first (LOCK recurses to the
        // partitions) keeps the partition lookup's weaker lock from being upgraded later, which
        // deadlocks two proxies' (or two requests') preparations of the same table.
        tx.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .await?;
        // A partitioned table's own setting does not reach its partitions (and a partition
        // created or attached later starts with its own): every member of the tree needs it.
        let members = tx
            .query(
                "SELECT format('%I.%I', n.nspname, m.relname)
                 FROM (SELECT $1::text::regclass AS relid, 0 AS level
                       UNION
                       SELECT relid, level FROM pg_partition_tree($1::text::regclass)) t
                 JOIN pg_class m ON m.oid = t.relid
                 JOIN pg_namespace n ON n.oid = m.relnamespace
                 WHERE m.relkind IN ('r', 'p') AND m.relreplident <> 'f'
                 ORDER BY t.level",
                &[&table.to_string()],
            )
            .await?;
        for member in members {
            let member: String = member.get(0);
            tx.batch_execute(&format!("ALTER TABLE {member} REPLICA IDENTITY FULL"))
                .await?;
        }
    }
    if !state.in_publication {
        tx.batch_execute(&format!(
            "ALTER PUBLICATION {} ADD TABLE {table}",
            quote_identifier(publication)
        ))
        .await?;
    }
    tx.commit().await
}

fn classify_alter_error(
    err: tokio_postgres::Error,
    publication: &str,
    table: &QualifiedName,
    lock_timeout: Duration,
    state: &TableState,
) -> SetupError {
    match err.code() {
        Some(code) if *code == SqlState::LOCK_NOT_AVAILABLE => SetupError::LockTimeout {
            table: table.clone(),
            timeout: lock_timeout,
        },
        Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => {
            let mut statements = Vec::new();
            if !state.identity_full {
                statements.push(format!("ALTER TABLE {table} REPLICA IDENTITY FULL;"));
            }
            if !state.in_publication {
                statements.push(format!(
                    "ALTER PUBLICATION {} ADD TABLE {table};",
                    quote_identifier(publication)
                ));
            }
            let owners = match &state.publication_owner {
                Some(p) if *p != state.owner && !state.in_publication => format!(
                    "a role that owns both the table (owned by {}) and the publication (owned \
                     by {p}), e.g. a superuser",
                    state.owner
                ),
                _ => format!("the table owner ({}) or a superuser", state.owner),
            };
            SetupError::MissingPrivilege {
                role: state.role.clone(),
                action: format!("prepare table {table} for replication"),
                message: db_message(&err),
                fix: format!(
                    "run as {owners}: {} (or make this role a member of the owner: GRANT {} TO \
                     {};)",
                    statements.join(" "),
                    quote_identifier(&state.owner),
                    quote_identifier(&state.role),
                ),
            }
        }
        _ => SetupError::Query(err),
    }
}
