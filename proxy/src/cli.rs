//! Command-line interface of the `shapesync` binary. Every flag has a `SHAPESYNC_*`
//! environment equivalent (and `DATABASE_URL` for the database).

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::auth::config::AuthArgs;
use crate::config::ServeConfig;
use crate::mutations::WriteArgs;
use crate::mutations::config::Retention;
use crate::observability::logging::LogFormat;
use crate::ops::dev::DevOptions;
use crate::tombstones::TombstoneSpec;

/// shapesync: sync Postgres to devices, live, over the ElectricSQL HTTP Shape API.
#[derive(Debug, Parser)]
#[command(
    name = "shapesync",
    version,
    propagate_version = true,
    long_about = "shapesync reads Postgres' write-ahead log through logical replication, cuts it \
into shapes (a table, a `where`, columns) and streams each shape live over HTTP to clients that \
mirror it (ElectricSQL HTTP Shape API v1: every Electric client works unchanged).\n\n\
Start with `shapesync dev`: a private Postgres with an example schema, and the proxy on \
http://127.0.0.1:3000. Beside your own Postgres, run `shapesync serve --database-url URL`."
)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log collectors. Levels come from RUST_LOG
    /// (default `info`).
    #[arg(
        long,
        global = true,
        env = "SHAPESYNC_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run shapesync on a private Postgres with the example schema, for development.
    ///
    /// Starts (and on first run creates) a PostgreSQL cluster under --data-dir with the
    /// machine's own PostgreSQL server binaries, applies the SQL files of the example app
    /// (or --migrations DIR) that it has not applied yet, and serves the proxy. Ctrl-C stops
    /// everything; the next run reuses the data.
    Dev(DevArgs),
    /// Run the proxy beside an existing Postgres (wal_level must be `logical`).
    Serve(ServeArgs),
    /// Purge old tombstones (rows deleted through /v1/mutations on tombstoned tables), the
    /// clocks of deleted rows, and old mutation ids, in small batches, then exit.
    Gc(GcArgs),
    /// Add tables to the publication with REPLICA IDENTITY FULL ahead of time.
    ///
    /// The first shape of a table otherwise does this itself, which takes an ACCESS EXCLUSIVE
    /// lock on the table for a moment. Run it at deploy time, as the table owner.
    Prepare(PrepareArgs),
    /// Remove what shapesync created in the database: the replication slot, the publication
    /// and the `shapesync` schema.
    ///
    /// A forgotten slot keeps WAL on the server forever and can fill its disk: run this when
    /// you retire a proxy. Stop the proxy first.
    Uninstall(UninstallArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PrepareArgs {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The publication shapesync streams (as for `serve`).
    #[arg(long, env = "SHAPESYNC_PUBLICATION", default_value = "shapesync")]
    pub publication: String,
    /// How long to wait for each table's lock.
    #[arg(long, env = "SHAPESYNC_LOCK_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
    /// Tables: `name`, `schema.name`, or quoted identifiers.
    #[arg(required = true)]
    pub tables: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct UninstallArgs {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[arg(long, env = "SHAPESYNC_SLOT", default_value = "shapesync")]
    pub slot: String,
    #[arg(long, env = "SHAPESYNC_PUBLICATION", default_value = "shapesync")]
    pub publication: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Clone, Args)]
pub struct GcArgs {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Purge tombstones (and deleted rows' clocks) older than this, e.g. `30d`; `off` keeps them.
    #[arg(long, default_value = "30d")]
    pub older_than: Retention,

    /// Tombstoned tables, as for `serve` (`table` or `table:column`), or `none` if no table
    /// has tombstones. Required unless --older-than is `off`: only these tables' tombstones
    /// are purged.
    #[arg(long, env = "SHAPESYNC_TOMBSTONES", value_delimiter = ',')]
    pub tombstones: Vec<GcTombstones>,

    /// Purge mutation ids recorded longer ago than this.
    #[arg(long, env = "SHAPESYNC_MUTATION_ID_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub mutation_id_retention: std::time::Duration,
}

/// One value of `--tombstones`: a tombstoned table, or `none` (so `SHAPESYNC_TOMBSTONES=none`
/// works for `serve` and `gc` alike).
#[derive(Debug, Clone)]
pub struct GcTombstones(Option<TombstoneSpec>);

impl FromStr for GcTombstones {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "none" {
            return Ok(Self(None));
        }
        s.parse().map(|spec| Self(Some(spec)))
    }
}

/// Where the HTTP API listens.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Address to listen on. Use 0.0.0.0 to accept connections from other machines.
    #[arg(long, env = "SHAPESYNC_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "SHAPESYNC_PORT", default_value_t = 3000)]
    pub port: u16,
    /// Let the next version listen on the same port while this one runs (SO_REUSEPORT),
    /// for a rolling deploy on one host: start the new shapesync with the same database,
    /// slot, storage directory and port (both with this flag); it stands by, serving the
    /// stored shapes, until you stop the old one (SIGTERM), then takes over. Both must run
    /// as the same user.
    #[arg(long, env = "SHAPESYNC_REUSE_PORT")]
    pub reuse_port: bool,
}

impl ListenArgs {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// Options shared by `dev` and `serve`.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub listen: ListenArgs,

    /// Name of the logical replication slot shapesync reads from (created if missing). Run one
    /// slot per proxy.
    #[arg(long, env = "SHAPESYNC_SLOT", default_value = "shapesync")]
    pub slot: String,

    /// Name of the publication the slot streams (created if missing; tables join it the first
    /// time a shape asks for them, or ahead of time with `shapesync prepare`).
    #[arg(long, env = "SHAPESYNC_PUBLICATION", default_value = "shapesync")]
    pub publication: String,

    /// Tables whose rows are soft-deleted, comma-separated: `table` or `table:column` (column
    /// default `deleted_at`), or `none`. A row whose tombstone is set is absent from every
    /// shape, and a delete through /v1/mutations sets it. Default: none for `serve`;
    /// `todos,notes` for `dev`.
    #[arg(long, env = "SHAPESYNC_TOMBSTONES", value_delimiter = ',')]
    pub tombstones: Option<Vec<GcTombstones>>,

    #[command(flatten)]
    pub writes: WriteArgs,
    /// Secret for server-to-server callers, as `?secret=` (Electric's): full access to shapes,
    /// DELETE and writes, and the status page (`/?secret=…`). Without it and without JWT auth,
    /// shapes, writes and the status page are open to anyone who can reach the proxy.
    #[arg(long, env = "SHAPESYNC_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// How long a live long-poll request waits for changes before answering up-to-date.
    #[arg(long, env = "SHAPESYNC_LONG_POLL_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub long_poll_timeout: Duration,

    /// How long a live SSE response stays open (the client reconnects after).
    #[arg(long, env = "SHAPESYNC_SSE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub sse_timeout: Duration,

    /// `max-age` of the `cache-control` of non-live shape responses other than `offset=-1`
    /// (Electric's `ELECTRIC_CACHE_MAX_AGE`): how long a browser or HTTP cache may reuse one
    /// without asking. Seconds (`60`) or a duration (`1m`).
    #[arg(long, env = "SHAPESYNC_CACHE_MAX_AGE", default_value = "60", value_parser = parse_seconds)]
    pub cache_max_age: Duration,

    /// `stale-while-revalidate` of the same responses (Electric's `ELECTRIC_CACHE_STALE_AGE`):
    /// how long after `max-age` a cache may still serve one while it fetches a fresh copy.
    /// Seconds (`300`) or a duration (`5m`).
    #[arg(long, env = "SHAPESYNC_CACHE_STALE_AGE", default_value = "300", value_parser = parse_seconds)]
    pub cache_stale_age: Duration,

    /// Shape logs are split into chunks of about this many bytes; a response never crosses a
    /// chunk, so every client asks the same URLs (good for HTTP caches).
    #[arg(long, env = "SHAPESYNC_CHUNK_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub chunk_bytes: u64,

    /// Most shapes kept at once; beyond, the least recently used shape is removed (its
    /// clients refetch).
    #[arg(long, env = "SHAPESYNC_MAX_SHAPES", default_value_t = 100_000)]
    pub max_shapes: usize,

    /// Most snapshots (initial and subset) taken at the same time, each on a Postgres
    /// connection of its own. New shapes queue for them, up to 16 per slot (beyond: 503 with
    /// `retry-after`); a subset snapshot that finds no free slot gets 503 at once.
    #[arg(long, env = "SHAPESYNC_MAX_CONCURRENT_SNAPSHOTS", default_value_t = 4)]
    pub max_concurrent_snapshots: usize,

    /// How long adding a table to the publication may wait for its lock (the ALTER needs an
    /// ACCESS EXCLUSIVE lock); past it the request gets 503 and retries.
    #[arg(long, env = "SHAPESYNC_LOCK_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,

    /// Log an ERROR (and expose it in `shapesync_slot_retained_wal_bytes`) while the
    /// replication slot retains more WAL than this many bytes on the database server.
    #[arg(long, env = "SHAPESYNC_MAX_LAG_BYTES", default_value_t = 1 << 30)]
    pub max_lag_bytes: u64,

    /// Close the replication connection after this long with no live client and no change
    /// streamed (for databases that scale to zero while nobody uses them), and open it again
    /// on the next shape request, which waits until every change made meanwhile is in its
    /// shape. Off by default. A duration: `5m`, `30s`.
    #[arg(long, env = "SHAPESYNC_REPLICATION_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub replication_idle_timeout: Option<Duration>,
    /// Turn off the status page. By default `GET /` serves an operator's page (replication
    /// lag, every shape with its `where`, live clients and rows, writes, recent errors,
    /// storage), updated live, with its data at `/v1/status` (JSON) and `/v1/status/stream`
    /// (SSE). With --secret it needs `?secret=…` (it shows every shape's `where`); with JWT
    /// auth but no --secret nobody can open it. With this flag all three answer 404.
    #[arg(long, env = "SHAPESYNC_NO_STATUS_PAGE")]
    pub no_status_page: bool,

    /// Compact a shape's log in the background once this much history (bytes; `16MiB`,
    /// `500kB`) piled up after its compacted part, and at least as much as the log keeps
    /// (snapshot + compacted part): older changes of a row are merged into one, so a new
    /// device downloads about the rows, not their history, and a row inserted and deleted
    /// there is never sent to it. Offsets clients hold stay valid. A history of nearly only
    /// inserts is left alone. `off` (or `0`) never compacts.
    #[arg(long, env = "SHAPESYNC_COMPACT_AFTER", default_value = "16MiB", value_parser = parse_compact_after)]
    pub compact_after: CompactAfter,
}

/// `--compact-after`: bytes, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactAfter(pub Option<u64>);

fn parse_compact_after(text: &str) -> Result<CompactAfter, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(CompactAfter(None));
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: give bytes (`16777216`, `16MiB`, `500kB`) or `off`"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "KiB" | "K" | "k" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" | "M" | "m" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" | "G" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "{other:?} is not a unit: B, kB, KiB, MB, MiB, GB, GiB"
            ));
        }
    };
    let bytes = n
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    Ok(CompactAfter((bytes > 0).then_some(bytes)))
}

impl ProxyArgs {
    /// The resolved configuration; `dev_defaults` fills what `dev` defaults differently.
    pub fn into_config(
        self,
        database_url: String,
        storage_dir: PathBuf,
        dev_defaults: bool,
    ) -> ServeConfig {
        let mut config = ServeConfig::new(database_url, self.listen.addr(), storage_dir);
        config.slot = self.slot;
        config.publication = self.publication;
        config.writes = self.writes.into_config(dev_defaults);
        config.secret = self.secret;
        config.auth = self.auth.into();
        config.long_poll_timeout = self.long_poll_timeout;
        config.sse_timeout = self.sse_timeout;
        config.cache_max_age = self.cache_max_age;
        config.cache_stale_age = self.cache_stale_age;
        config.chunk_bytes = self.chunk_bytes;
        config.max_shapes = self.max_shapes;
        config.max_concurrent_snapshots = self.max_concurrent_snapshots;
        config.lock_timeout = self.lock_timeout;
        config.max_lag_bytes = self.max_lag_bytes;
        config.reuse_port = self.listen.reuse_port;
        config.replication_idle_timeout = self.replication_idle_timeout;
        config.status_page = !self.no_status_page;
        config.compact_after = self.compact_after.0;
        config.tombstones = self.tombstones.map_or_else(
            || {
                if dev_defaults {
                    ["todos", "notes"]
                        .iter()
                        .filter_map(|t| t.parse().ok())
                        .collect()
                } else {
                    Vec::new()
                }
            },
            |tables| tables.into_iter().filter_map(|t| t.0).collect(),
        );
        config
    }
}

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Directory for the private cluster and the shape logs; created on first run.
    #[arg(long, env = "SHAPESYNC_DATA_DIR", default_value = "./.shapesync/dev")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub proxy: ProxyArgs,

    /// Port of the private Postgres on 127.0.0.1 (default: a free port).
    #[arg(long, env = "SHAPESYNC_PG_PORT")]
    pub pg_port: Option<u16>,

    /// Apply the *.sql files of this directory instead of the built-in example app.
    #[arg(long, env = "SHAPESYNC_MIGRATIONS")]
    pub migrations: Option<PathBuf>,

    /// Where shape logs are kept (default: DATA_DIR/storage).
    #[arg(long, env = "SHAPESYNC_STORAGE_DIR")]
    pub storage_dir: Option<PathBuf>,
}

impl DevArgs {
    /// What `dev` runs; the proxy's database URL is filled in once the private cluster is up.
    pub fn into_options(self) -> DevOptions {
        let storage_dir = self
            .storage_dir
            .unwrap_or_else(|| self.data_dir.join("storage"));
        DevOptions {
            proxy: self.proxy.into_config(String::new(), storage_dir, true),
            data_dir: self.data_dir,
            pg_port: self.pg_port,
            migrations: self.migrations,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Postgres connection URL, e.g. postgres://user:password@host:5432/db. The role needs the
    /// REPLICATION attribute (or superuser) for the replication slot.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    #[command(flatten)]
    pub proxy: ProxyArgs,

    /// Where shape logs are kept.
    #[arg(
        long,
        env = "SHAPESYNC_STORAGE_DIR",
        default_value = "./.shapesync/storage"
    )]
    pub storage_dir: PathBuf,
}

/// The `shapesync` program: parse the command line, run the command, exit with its status.
pub fn main() -> ExitCode {
    main_with_args(std::env::args_os())
}

/// The `shapesync` program on an argument list (the program name first, as in `argv`): for
/// programs that embed it, e.g. the benchmark suite, which runs the proxy as a process of its
/// own by re-executing itself.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    crate::observability::logging::init_logging(cli.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let result: anyhow::Result<()> = match cli.command {
        Command::Dev(args) => crate::ops::dev::run(args.into_options(), shutdown)
            .await
            .map_err(Into::into),
        Command::Gc(args) => run_gc(args).await,
        Command::Prepare(args) => crate::ops::install::prepare(
            &args.database_url,
            &args.publication,
            &args.tables,
            args.lock_timeout,
        )
        .await
        .map(|tables| {
            for table in tables {
                println!("prepared {table}");
            }
        })
        .map_err(Into::into),
        Command::Uninstall(args) => crate::ops::install::uninstall(
            &args.database_url,
            &args.slot,
            &args.publication,
            args.yes,
        )
        .await
        .map(|removed| {
            println!(
                "removed: slot {}, publication {}, schema shapesync {}",
                if removed.slot { "yes" } else { "(none)" },
                if removed.publication { "yes" } else { "(none)" },
                if removed.schema { "yes" } else { "(none)" },
            );
        })
        .map_err(Into::into),
        Command::Serve(args) => {
            let config = args
                .proxy
                .into_config(args.database_url, args.storage_dir, false);
            crate::serve::run(config, shutdown, None)
                .await
                .map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whole seconds (`60`, as Electric's `ELECTRIC_CACHE_*` settings take them) or a duration
/// (`1m`); `cache-control` carries whole seconds, so a fraction is refused rather than cut.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let duration = match text.trim().parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{e}: give whole seconds (`60`) or a duration (`1m`, `5m`)"))?,
    };
    if duration.subsec_nanos() != 0 {
        return Err(format!(
            "{text} is not a whole number of seconds (cache-control counts seconds)"
        ));
    }
    Ok(duration)
}

/// Shape logs, sockets of live clients and Postgres connections are all file descriptors:
/// lift the soft limit (often 1024) to the hard one.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `shapesync gc`: one purge, with a summary on stdout.
async fn run_gc(args: GcArgs) -> anyhow::Result<()> {
    if let (Some(older_than), true) = (args.older_than.0, args.tombstones.is_empty()) {
        // Purging nothing while saying "purged 0" would look like success, every night.
        anyhow::bail!(
            "no tombstoned tables given, so `--older-than {}` would purge no tombstones: pass \
             the tables `serve` has in --tombstones (e.g. `--tombstones todos,notes:deleted_at`, \
             or SHAPESYNC_TOMBSTONES), `--tombstones none` if no table has tombstones, or \
             `--older-than off` to purge only old mutation ids",
            humantime::format_duration(older_than)
        );
    }
    let policy = crate::mutations::gc::GcPolicy {
        tombstones: args.tombstones.into_iter().filter_map(|t| t.0).collect(),
        tombstone_retention: args.older_than.0,
        mutation_id_retention: args.mutation_id_retention,
    };
    let report = crate::mutations::gc::collect_once(&args.database_url, &policy).await?;
    println!(
        "purged {} tombstoned rows, {} row clocks, {} mutation ids",
        report.tombstones, report.clocks, report.mutation_ids
    );
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM: shut down in order.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_config(extra: &[&str]) -> Result<ServeConfig, clap::Error> {
        let args = ["shapesync", "serve", "--database-url", "postgres://x/y"];
        let cli = Cli::try_parse_from(args.iter().chain(extra))?;
        let Command::Serve(serve) = cli.command else {
            panic!("not serve");
        };
        Ok(serve
            .proxy
            .into_config("postgres://x/y".into(), "/tmp".into(), false))
    }

    fn serve_tombstones(extra: &[&str]) -> Vec<String> {
        let config = serve_config(extra).expect("parses");
        config.tombstones.iter().map(|t| format!("{t:?}")).collect()
    }

    #[test]
    fn cache_ages_take_seconds_or_durations_and_default_to_electrics() {
        let ages = |extra: &[&str]| {
            let config = serve_config(extra).expect("parses");
            (
                config.cache_max_age.as_secs(),
                config.cache_stale_age.as_secs(),
            )
        };
        assert_eq!(ages(&[]), (60, 300));
        assert_eq!(
            ages(&["--cache-max-age", "5", "--cache-stale-age", "2m"]),
            (5, 120)
        );
        assert_eq!(ages(&["--cache-max-age", "0"]), (0, 300));
        let refused = serve_config(&["--cache-max-age", "1500ms"])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("--cache-max-age") && refused.contains("whole number of seconds"),
            "{refused}"
        );
        let refused = serve_config(&["--cache-stale-age", "soon"])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("--cache-stale-age") && refused.contains("give whole seconds"),
            "{refused}"
        );
    }

    #[test]
    fn compact_after_takes_bytes_with_units_or_off_and_is_16_mib_by_default() {
        let after = |extra: &[&str]| serve_config(extra).expect("parses").compact_after;
        assert_eq!(after(&[]), Some(16 << 20));
        assert_eq!(after(&["--compact-after", "16MiB"]), Some(16 << 20));
        assert_eq!(after(&["--compact-after", "500kB"]), Some(500_000));
        assert_eq!(after(&["--compact-after", "2MiB"]), Some(2 << 20));
        assert_eq!(after(&["--compact-after", "4096"]), Some(4096));
        assert_eq!(after(&["--compact-after", "off"]), None);
        assert_eq!(after(&["--compact-after", "0"]), None);
        let refused = serve_config(&["--compact-after", "lots"])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("--compact-after"), "{refused}");
    }

    #[test]
    fn the_status_page_is_on_unless_turned_off() {
        assert!(serve_config(&[]).expect("parses").status_page);
        assert!(
            !serve_config(&["--no-status-page"])
                .expect("parses")
                .status_page
        );
    }

    #[test]
    fn tombstones_none_means_no_table_for_serve_too() {
        assert!(serve_tombstones(&[]).is_empty());
        assert!(serve_tombstones(&["--tombstones", "none"]).is_empty());
        let tables = serve_tombstones(&["--tombstones", "todos,notes:gone_at"]);
        assert_eq!(tables.len(), 2, "{tables:?}");
        assert!(tables[1].contains("gone_at"), "{tables:?}");
    }
}
