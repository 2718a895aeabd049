//! Applying an application's SQL migrations: the example app under `migrations/` (embedded
//! in the binary) for `shapesync dev`, or a folder of the user's own with `--migrations DIR`.
//!
//! Files run in name order, each in its own transaction together with its record in
//! `shapesync.dev_migrations`, so a second start applies only files it has not seen. A file
//! whose content changed after it was applied is reported, not re-run.

use std::path::Path;

use tokio_postgres::Client;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// One SQL file.
#[derive(Debug, Clone)]
pub struct Migration {
    pub name: String,
    pub sql: String,
}

impl Migration {
    fn checksum(&self) -> String {
        // FNV-1a: stable across builds and platforms, enough to notice an edited file.
        let hash = self.sql.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{hash:016x}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("reading migrations from {dir}: {source}")]
    Read {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("migration {name} failed: {}", crate::postgres::describe(.source))]
    Apply {
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("recording migrations: {}", crate::postgres::describe(.0))]
    Bookkeeping(#[from] tokio_postgres::Error),
}

/// The example application's migrations, built into the binary.
pub fn embedded() -> Vec<Migration> {
    embedded::EMBEDDED
        .iter()
        .map(|(name, sql)| Migration {
            name: (*name).to_owned(),
            sql: (*sql).to_owned(),
        })
        .collect()
}

/// The `*.sql` files of `dir`, in name order.
pub fn from_dir(dir: &Path) -> Result<Vec<Migration>, MigrationError> {
    let read_err = |source| MigrationError::Read {
        dir: dir.display().to_string(),
        source,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let sql = std::fs::read_to_string(&path).map_err(read_err)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(Migration { name, sql })
        })
        .collect()
}

/// What [`apply`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub newly_applied: Vec<String>,
    pub already_applied: usize,
}

/// Applies the migrations not yet recorded, in order.
pub async fn apply(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Applied, MigrationError> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS shapesync;
             CREATE TABLE IF NOT EXISTS shapesync.dev_migrations (
                 name text PRIMARY KEY,
                 checksum text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let mut applied = Applied::default();
    for migration in migrations {
        let recorded = client
            .query_opt(
                "SELECT checksum FROM shapesync.dev_migrations WHERE name = $1",
                &[&migration.name],
            )
            .await?;
        if let Some(row) = recorded {
            let checksum: String = row.get(0);
            if checksum != migration.checksum() {
                tracing::warn!(
                    migration = %migration.name,
                    "migration changed after it was applied; not running it again (add a new file instead)"
                );
            }
            applied.already_applied += 1;
            continue;
        }
        let apply_err = |source| MigrationError::Apply {
            name: migration.name.clone(),
            source,
        };
        let tx = client.transaction().await?;
        tx.batch_execute(&migration.sql).await.map_err(apply_err)?;
        tx.execute(
            "INSERT INTO shapesync.dev_migrations (name, checksum) VALUES ($1, $2)",
            &[&migration.name, &migration.checksum()],
        )
        .await?;
        tx.commit().await.map_err(apply_err)?;
        tracing::info!(migration = %migration.name, "applied migration");
        applied.newly_applied.push(migration.name.clone());
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_the_example_app_in_order() {
        let names: Vec<String> = embedded().into_iter().map(|m| m.name).collect();
        assert!(names.len() >= 2, "{names:?}");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(embedded()[0].sql.contains("CREATE TABLE todos"));
    }

    #[test]
    fn checksum_changes_with_content() {
        let a = Migration {
            name: "a".into(),
            sql: "select 1".into(),
        };
        let b = Migration {
            name: "a".into(),
            sql: "select 2".into(),
        };
        assert_ne!(a.checksum(), b.checksum());
        assert_eq!(a.checksum(), a.clone().checksum());
    }
}
