//! Operator commands: `shapesync prepare` (get tables ready ahead of time) and
//! `shapesync uninstall` (remove everything the proxy created in the database).

use std::io::{BufRead, Write};
use std::time::Duration;

use shapes::schema::QualifiedName;
use shapes::table_name::{parse_table_name, reserved_table};

use crate::postgres::{self, DatabaseError};
use crate::replication::setup::{self, SetupError};

#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("table {text:?}: {message}")]
    TableName { text: String, message: String },
    #[error(
        "the replication slot {slot:?} is in use by process {pid} (a running shapesync?): stop it first"
    )]
    SlotActive { slot: String, pid: i32 },
    #[error("uninstall cancelled")]
    Cancelled,
    #[error("reading the confirmation: {0}")]
    Io(#[from] std::io::Error),
}

/// Adds each table to the publication with `REPLICA IDENTITY FULL` (creating the publication
/// if needed), so the first shape of a table does not take the ACCESS EXCLUSIVE lock itself.
pub async fn prepare(
    database_url: &str,
    publication: &str,
    tables: &[String],
    lock_timeout: Duration,
) -> Result<Vec<QualifiedName>, OperationError> {
    // Every name is checked before anything is done, so a bad one changes nothing.
    let names = tables
        .iter()
        .map(|text| {
            let refused = |message: String| OperationError::TableName {
                text: text.clone(),
                message,
            };
            let name = parse_table_name(text).map_err(|e| refused(e.to_string()))?;
            match reserved_table(&name) {
                Some(reserved) => Err(refused(reserved.to_string())),
                None => Ok(name),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut client = postgres::connect(database_url).await?;
    postgres::check_wal_level(&client).await?;
    setup::ensure_publication(&client, publication).await?;
    for name in &names {
        setup::prepare_table(&mut client, publication, name, lock_timeout).await?;
    }
    Ok(names)
}

/// What `uninstall` removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub slot: bool,
    pub publication: bool,
    pub schema: bool,
}

/// Drops the replication slot, the publication and the `shapesync` schema. Asks on the
/// terminal first unless `yes`.
pub async fn uninstall(
    database_url: &str,
    slot: &str,
    publication: &str,
    yes: bool,
) -> Result<Removed, OperationError> {
    let client = postgres::connect(database_url).await?;
    if !yes {
        confirm(&format!(
            "This drops the replication slot {slot:?}, the publication {publication:?} and the \
             `shapesync` schema (mutation clocks and ids) from {}.\nShape logs on disk become \
             useless. Type `yes` to go on: ",
            client_target(database_url)
        ))?;
    }
    let active: Option<Option<i32>> = client
        .query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(DatabaseError::Query)?
        .map(|row| row.get(0));
    if let Some(Some(pid)) = active {
        return Err(OperationError::SlotActive {
            slot: slot.to_owned(),
            pid,
        });
    }
    let mut removed = Removed::default();
    if active.is_some() {
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
            .map_err(DatabaseError::Query)?;
        removed.slot = true;
    }
    let quoted = shapes::schema::quote_identifier(publication);
    removed.publication = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(DatabaseError::Query)?
        .is_some();
    removed.schema = client
        .query_opt(
            "SELECT 1 FROM pg_namespace WHERE nspname = 'shapesync'",
            &[],
        )
        .await
        .map_err(DatabaseError::Query)?
        .is_some();
    client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {quoted}; DROP SCHEMA IF EXISTS shapesync CASCADE;"
        ))
        .await
        .map_err(DatabaseError::Query)?;
    Ok(removed)
}

fn client_target(url: &str) -> String {
    url.parse::<tokio_postgres::Config>()
        .map(|c| postgres::describe_target(&c))
        .unwrap_or_else(|_| "the database".to_owned())
}

fn confirm(question: &str) -> Result<(), OperationError> {
    let mut stderr = std::io::stderr();
    stderr.write_all(question.as_bytes())?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim().eq_ignore_ascii_case("yes") {
        Ok(())
    } else {
        Err(OperationError::Cancelled)
    }
}
