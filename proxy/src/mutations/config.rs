//! Configuration of the write path: the flags (`WriteArgs`, flattened into the options shared
//! by `dev` and `serve`) and what they resolve to ([`WriteConfig`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use shapes::schema::QualifiedName;
use shapes::table_name::{parse_table_column, parse_table_list, reserved_table};

/// Flags of `POST /v1/mutations`. Each has a `SHAPESYNC_*` environment equivalent.
#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// Tables that accept writes through POST /v1/mutations, comma-separated (`table` or
    /// `schema.table`), or `*` for every table with a primary key. Default: none for `serve`;
    /// `todos,notes` for `dev`.
    #[arg(long, env = "SHAPESYNC_WRITABLE")]
    pub writable: Option<Writable>,

    /// The last-write-wins column: set to the mutation's timestamp by every write, and kept
    /// current for plain SQL writes by a trigger (see the README). Clients cannot write it.
    #[arg(long, env = "SHAPESYNC_LWW_COLUMN", default_value = "updated_at")]
    pub lww_column: String,

    /// Columns holding Yjs documents (`table.column` or `schema.table.column`, comma-separated):
    /// written only by `merge`, never overwritten. Default: none for `serve`; `notes.body` for
    /// `dev`.
    #[arg(long, env = "SHAPESYNC_YJS_COLUMNS", value_delimiter = ',')]
    pub yjs_columns: Option<Vec<YjsColumn>>,

    /// How far in the future a mutation's timestamp may be; later ones are clamped to server
    /// time plus this (e.g. `60s`, `5m`).
    #[arg(long, env = "SHAPESYNC_MAX_CLOCK_SKEW", default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_clock_skew: Duration,

    /// Purge tombstoned rows (and the clocks of deleted rows) older than this, in the background
    /// (e.g. `30d`), or `off`. Default: off for `serve`; 30 days for `dev`.
    #[arg(long, env = "SHAPESYNC_TOMBSTONE_RETENTION")]
    pub tombstone_retention: Option<Retention>,

    /// How often the background job purges old tombstones (with --tombstone-retention) and
    /// old mutation ids; it also runs at start.
    #[arg(long, env = "SHAPESYNC_GC_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub gc_interval: Duration,

    /// How long mutation ids are remembered, so that a retried mutation returns its first
    /// result instead of applying again.
    #[arg(long, env = "SHAPESYNC_MUTATION_ID_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub mutation_id_retention: Duration,

    /// Largest accepted request body, after gzip decompression (bytes).
    #[arg(long, env = "SHAPESYNC_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long a write waits for its commit to come back through replication, to answer with
    /// its commit LSN (`lsn` is null after that).
    #[arg(long, env = "SHAPESYNC_LSN_WAIT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub lsn_wait: Duration,
}

impl WriteArgs {
    /// The resolved configuration; `dev_defaults` fills what `dev` defaults differently.
    pub fn into_config(self, dev_defaults: bool) -> WriteConfig {
        let defaults = if dev_defaults {
            WriteConfig::dev()
        } else {
            WriteConfig::default()
        };
        WriteConfig {
            writable: self.writable.unwrap_or(defaults.writable),
            lww_column: self.lww_column,
            yjs_columns: self.yjs_columns.unwrap_or(defaults.yjs_columns),
            max_clock_skew: self.max_clock_skew,
            tombstone_retention: self
                .tombstone_retention
                .map_or(defaults.tombstone_retention, |r| r.0),
            mutation_id_retention: self.mutation_id_retention,
            max_body_bytes: self.max_body_bytes,
            lsn_wait: self.lsn_wait,
            gc_interval: self.gc_interval,
            ..defaults
        }
    }
}

/// The write path's settings once flags and defaults are resolved.
#[derive(Debug, Clone)]
pub struct WriteConfig {
    pub writable: Writable,
    /// Name of the last-write-wins column (tables without it get no plain-SQL detection).
    pub lww_column: String,
    pub yjs_columns: Vec<YjsColumn>,
    pub max_clock_skew: Duration,
    /// `None`: tombstones are kept forever.
    pub tombstone_retention: Option<Duration>,
    pub mutation_id_retention: Duration,
    pub max_body_bytes: usize,
    pub lsn_wait: Duration,
    /// How often the background job purges old tombstones and mutation ids.
    pub gc_interval: Duration,
    /// Connections the write path keeps to Postgres.
    pub max_connections: usize,
}

impl Default for WriteConfig {
    /// The `serve` defaults: nothing writable.
    fn default() -> Self {
        Self {
            writable: Writable::Tables(Vec::new()),
            lww_column: "updated_at".to_owned(),
            yjs_columns: Vec::new(),
            max_clock_skew: Duration::from_secs(60),
            tombstone_retention: None,
            mutation_id_retention: Duration::from_secs(7 * 24 * 3600),
            max_body_bytes: 10 * 1024 * 1024,
            lsn_wait: Duration::from_secs(1),
            gc_interval: Duration::from_secs(3600),
            max_connections: 8,
        }
    }
}

impl WriteConfig {
    /// The `dev` defaults: the example app's tables are writable, `notes.body` is a Yjs
    /// document, tombstones are purged after 30 days.
    pub fn dev() -> Self {
        let example = |name: &str| QualifiedName::new("public", name);
        Self {
            writable: Writable::Tables(vec![example("todos"), example("notes")]),
            yjs_columns: vec![YjsColumn {
                table: example("notes"),
                column: "body".to_owned(),
            }],
            tombstone_retention: Some(Duration::from_secs(30 * 24 * 3600)),
            ..Self::default()
        }
    }

    /// Whether the configuration lets clients write `table` at all: `*` means the
    /// application's tables, never the proxy's own or the system's.
    pub fn is_writable(&self, table: &QualifiedName) -> bool {
        match &self.writable {
            Writable::All => reserved_table(table).is_none(),
            Writable::Tables(tables) => tables.contains(table),
        }
    }

    /// The Yjs columns of `table`.
    pub fn yjs_columns_of<'a>(&'a self, table: &'a QualifiedName) -> impl Iterator<Item = &'a str> {
        self.yjs_columns
            .iter()
            .filter(move |y| &y.table == table)
            .map(|y| y.column.as_str())
    }
}

/// Which tables accept writes: `*` or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writable {
    All,
    Tables(Vec<QualifiedName>),
}

impl FromStr for Writable {
    type Err = String;

    /// `*` or table names as SQL reads them (`shapes::table_name`); the proxy's own and the
    /// system tables are refused at start (and `*` never reaches them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "*" {
            return Ok(Self::All);
        }
        let tables = parse_table_list(s)
            .map_err(|e| format!("`{s}`: {e}; expected `table`, `schema.table`, or `*`"))?;
        if let Some(reserved) = tables.iter().find_map(reserved_table) {
            return Err(reserved.to_string());
        }
        Ok(Self::Tables(tables))
    }
}

/// A column declared as a Yjs document: `table.column` or `schema.table.column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YjsColumn {
    pub table: QualifiedName,
    pub column: String,
}

impl FromStr for YjsColumn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (table, column) = parse_table_column(s)
            .map_err(|e| format!("`{s}`: {e}; expected `table.column` or `schema.table.column`"))?;
        if let Some(reserved) = reserved_table(&table) {
            return Err(reserved.to_string());
        }
        Ok(Self { table, column })
    }
}

/// A retention period, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

impl FromStr for Retention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "none" | "0" => Ok(Self(None)),
            text => humantime::parse_duration(text)
                .map(|d| Self(Some(d)))
                .map_err(|e| format!("`{text}`: {e} (e.g. `30d`, `12h`, or `off`)")),
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some(d) => write!(f, "{}", humantime::format_duration(d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_accepts_a_star_or_a_list_of_tables() {
        assert_eq!("*".parse::<Writable>().unwrap(), Writable::All);
        assert_eq!(
            "todos, app.Notes".parse::<Writable>().unwrap(),
            Writable::Tables(vec![
                QualifiedName::new("public", "todos"),
                QualifiedName::new("app", "notes")
            ])
        );
        assert!("a b".parse::<Writable>().is_err());
        assert_eq!(
            r#"Ärger, "Odd,Name""#.parse::<Writable>().unwrap(),
            Writable::Tables(vec![
                QualifiedName::new("public", "Ärger"),
                QualifiedName::new("public", "Odd,Name")
            ])
        );
    }

    #[test]
    fn writable_refuses_the_proxy_schema_and_system_catalogs() {
        let err = "todos, shapesync.mutation_ids"
            .parse::<Writable>()
            .unwrap_err();
        assert_eq!(
            err,
            "table \"shapesync\".\"mutation_ids\" belongs to shapesync itself (schema \
             shapesync holds its clocks and mutation ids): it is never served or written; name \
             one of the application's tables"
        );
    }

    #[rstest::rstest]
    fn system_and_temporary_tables_are_never_writable(
        #[values(
            "pg_catalog.pg_description",
            "information_schema.tables",
            "pg_toast.pg_toast_1262",
            "pg_temp_3.t"
        )]
        system: &str,
    ) {
        assert!(system.parse::<Writable>().is_err(), "{system}");
    }

    #[test]
    fn yjs_columns_name_a_table_and_a_column() {
        let col: YjsColumn = "notes.body".parse().unwrap();
        assert_eq!(col.table, QualifiedName::new("public", "notes"));
        assert_eq!(col.column, "body");
        let col: YjsColumn = "app.notes.Body".parse().unwrap();
        assert_eq!(col.table, QualifiedName::new("app", "notes"));
        assert_eq!(col.column, "body");
        assert!("body".parse::<YjsColumn>().is_err());
        assert!("notes.".parse::<YjsColumn>().is_err());
    }

    #[test]
    fn retention_is_a_duration_or_off() {
        assert_eq!(
            "30d".parse::<Retention>().unwrap(),
            Retention(Some(Duration::from_secs(30 * 86400)))
        );
        assert_eq!("off".parse::<Retention>().unwrap(), Retention(None));
        assert!("soon".parse::<Retention>().is_err());
    }

    #[test]
    fn dev_makes_the_example_tables_writable_and_serve_nothing() {
        let notes = QualifiedName::new("public", "notes");
        assert!(WriteConfig::dev().is_writable(&notes));
        assert!(!WriteConfig::default().is_writable(&notes));
        assert_eq!(
            WriteConfig::dev()
                .yjs_columns_of(&notes)
                .collect::<Vec<_>>(),
            ["body"]
        );
    }
}
