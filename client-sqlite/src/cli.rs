//! Commands of `shapesync-client`. Errors are shown with their causes and exit with 1.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use client_sqlite::{
    Client, ClientConfig, ClientError, LocalWrite, ShapePhase, ShapeSpec, SyncOptions,
};
use shapes::lsn::Lsn;

/// shapesync-client: mirror shapes from a shapesync (or Electric) server into a local SQLite
/// database, keep working offline, and push local writes back.
#[derive(Debug, Parser)]
#[command(name = "shapesync-client", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Subscribe to shapes and keep the database in sync (until Ctrl-C, or with --once until
    /// everything is up to date and every local write is sent; --once fails at once when the
    /// server refuses a shape).
    Sync(SyncArgs),
    /// Show the sync status stored in the database: pending writes, conflicts, last sync,
    /// and each shape's position and row count.
    Status(StatusArgs),
    /// Queue a local write (JSON); it shows in the local table at once and is sent by `sync`
    /// (a `sync` already running on the same file sends it within a second). JSON:
    /// {"shape":"todos","op":"insert|update|upsert|delete","key":{…},"values":{…}}; from the
    /// argument, or standard input when it is `-`.
    Write(WriteArgs),
    /// List the local writes that lost (conflicts and rejections), with both versions.
    Conflicts(ConflictsArgs),
    /// Print the mirrored data: every table's rows (with pending local values).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct DbArgs {
    /// The SQLite database file (created by `sync`).
    #[arg(long)]
    db: PathBuf,
    /// Ask for the encryption key on the terminal (else SHAPESYNC_CLIENT_KEY, if set).
    #[arg(long)]
    ask_key: bool,
}

#[derive(Debug, Args)]
struct SyncArgs {
    /// The server's base URL, e.g. https://sync.example.com (http:// for local servers).
    #[arg(long)]
    url: String,
    #[command(flatten)]
    db: DbArgs,
    /// A shape: NAME=TABLE[?where=…&columns=…&params[1]=…&moves=events&priority=N]. NAME is
    /// the local table; priority 0 syncs first … 3 (the default) last; moves=events asks for
    /// rows leaving a subquery shape as move-out events (the client deletes them itself)
    /// instead of deletes. Repeatable.
    #[arg(long = "shape", required = true)]
    shapes: Vec<ShapeSpec>,
    /// Exit once every shape is up to date and the outbox is empty (exit 1 at once if the
    /// server refuses a shape: a bad `where`, unknown table, missing rights).
    #[arg(long)]
    once: bool,
    /// With --once: give up after this long (e.g. 30s, 5m).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
    /// Use long-polling instead of Server-Sent Events for live updates.
    #[arg(long)]
    long_poll: bool,
    /// Do not ask for gzip-compressed responses (faster on a local link, where compressing
    /// can cost the server more than sending).
    #[arg(long)]
    no_gzip: bool,
    /// Longest wait between retries when the server is unreachable.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    max_backoff: Duration,
    /// Extra request header (e.g. "authorization: Bearer …"). Repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct WriteArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The local table (if the JSON has no "shape").
    #[arg(long)]
    shape: Option<String>,
    /// The write as JSON, or `-` for standard input.
    json: String,
}

#[derive(Debug, Args)]
struct ConflictsArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Include conflicts already marked resolved.
    #[arg(long)]
    all: bool,
    /// Mark a conflict resolved (by id).
    #[arg(long)]
    resolve: Option<i64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Json,
}

#[derive(Debug, Args)]
struct ExportArgs {
    #[command(flatten)]
    db: DbArgs,
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Sync(args) => sync(args).await,
        Command::Status(args) => status(args).await,
        Command::Write(args) => write(args).await,
        Command::Conflicts(args) => conflicts(args).await,
        Command::Export(args) => export(args).await,
    }
}

fn config(url: &str, db: &DbArgs) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::new(url, db.db.clone());
    config.key = encryption_key(db.ask_key)?;
    Ok(config)
}

fn encryption_key(ask: bool) -> anyhow::Result<Option<String>> {
    if ask {
        eprint!("encryption key: ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the key")?;
        return Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()));
    }
    Ok(std::env::var("SHAPESYNC_CLIENT_KEY")
        .ok()
        .filter(|k| !k.is_empty()))
}

async fn sync(args: SyncArgs) -> anyhow::Result<()> {
    let mut config = config(&args.url, &args.db)?;
    config.shapes = args.shapes.clone();
    config.sync = SyncOptions {
        sse: !args.long_poll,
        backoff_max: args.max_backoff,
        gzip: !args.no_gzip,
        ..SyncOptions::default()
    };
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("--header {header:?}: expected NAME: VALUE"))?;
        config
            .headers
            .push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let client = Client::open(config).await?;
    let progress = crate::progress::show(&client);
    let outcome = if args.once {
        wait_synced_or_refused(&client, args.timeout).await
    } else {
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
    };
    progress.finish(&client.status());
    client.close().await;
    outcome
}

/// `--once`: until every shape includes every transaction committed before the sync started
/// (the server's sync-now position), everything is up to date and every local write is sent,
/// or the first shape in `error` (a refusal the client would retry only slowly, in vain until
/// someone changes the shape or the server). A server without `/v1/lsn` (an Electric server)
/// gets the plain up-to-date wait, with a warning.
async fn wait_synced_or_refused(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let work = async {
        match client.sync_now().await {
            Ok(_) => {}
            Err(ClientError::Refused { status: 404, .. }) => {
                tracing::warn!(
                    "the server has no /v1/lsn (not shapesync?): --once waits for up-to-date only, \
                     which may miss the newest commits"
                );
            }
            Err(ClientError::Shape { name, message }) => bail!("shape {name:?}: {message}"),
            Err(e) => return Err(anyhow::Error::new(e).context("syncing up to now")),
        }
        let mut status = client.watch_status();
        let done = status.wait_for(|s| {
            (s.all_up_to_date() && s.pending == 0)
                || s.shapes.values().any(|p| matches!(p, ShapePhase::Error(_)))
        });
        let Ok(status) = done.await.map(|s| s.clone()) else {
            bail!("the client stopped")
        };
        for (name, phase) in &status.shapes {
            if let ShapePhase::Error(message) = phase {
                bail!("shape {name:?}: {message}");
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => bail!(
            "not in sync after {timeout:?}: {} (see --timeout)",
            client.status().state
        ),
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = Client::open_offline(&config("http://localhost", &args.db)?).await?;
    let status = client.status();
    let shapes = client.shapes().await?;
    let last_sync = status
        .last_sync
        .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339())
        .unwrap_or_else(|| "never".into());
    // The position every mirror includes: the lowest of the shapes' (0 = not synced yet).
    let synced_up_to = shapes
        .iter()
        .map(|s| s.synced_up_to)
        .min()
        .filter(|&lsn| lsn > Lsn::ZERO);
    // A priority is ready when every shape of it or a higher one (a lower number) is.
    let priorities: std::collections::BTreeMap<u8, bool> = shapes
        .iter()
        .map(|s| {
            let ready = shapes
                .iter()
                .filter(|o| o.priority <= s.priority)
                .all(|o| o.ready);
            (s.priority, ready)
        })
        .collect();
    let state = match (status.conflicts, status.pending) {
        (0, 0) => "up-to-date (as of the last sync)".to_owned(),
        (0, n) => format!("pending({n})"),
        (n, _) => format!("conflicts({n})"),
    };
    if args.json {
        let value = serde_json::json!({"state": state, "pending": status.pending,
            "conflicts": status.conflicts, "last_sync": last_sync,
            "synced_up_to": synced_up_to.map(Lsn::as_u64), "priorities": priorities, "shapes": shapes});
        println!("{value}");
        return Ok(());
    }
    println!("state:     {state}");
    println!("pending:   {}", status.pending);
    println!("conflicts: {}", status.conflicts);
    println!("last sync: {last_sync}");
    match synced_up_to {
        Some(lsn) => println!("synced up to: {lsn} ({})", lsn.as_u64()),
        None => println!("synced up to: nothing yet"),
    }
    for (priority, ready) in &priorities {
        let word = if *ready { "ready" } else { "not ready" };
        println!("priority {priority}: {word}");
    }
    for s in shapes {
        println!(
            "shape {}: table {}, priority {}, {} rows, offset {}, synced up to {}",
            s.name,
            s.table,
            s.priority,
            s.rows,
            s.offset,
            s.synced_up_to.as_u64()
        );
    }
    Ok(())
}

async fn write(args: WriteArgs) -> anyhow::Result<()> {
    let text = if args.json == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the write from stdin")?
    } else {
        args.json.clone()
    };
    let mut write: LocalWrite =
        serde_json::from_str(&text).context("the write is not valid JSON of a write")?;
    if let Some(shape) = args.shape {
        write.shape = shape;
    }
    if write.shape.is_empty() {
        bail!("which shape? give --shape NAME or \"shape\" in the JSON");
    }
    let client = Client::open_offline(&config("http://localhost", &args.db)?).await?;
    let queued = client.write(write).await?;
    println!("{}", queued.mutation_id);
    Ok(())
}

async fn conflicts(args: ConflictsArgs) -> anyhow::Result<()> {
    let client = Client::open_offline(&config("http://localhost", &args.db)?).await?;
    if let Some(id) = args.resolve {
        client.resolve_conflict(id).await?;
    }
    for conflict in client.conflicts(args.all).await? {
        println!("{}", serde_json::to_string(&conflict)?);
    }
    Ok(())
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let Format::Json = args.format;
    let client = Client::open_offline(&config("http://localhost", &args.db)?).await?;
    let out = client
        .export_json(std::io::BufWriter::new(std::io::stdout()))
        .await?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .context("writing to stdout")?
        .flush()?;
    Ok(())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 30s, 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{text:?}: unknown unit (ms, s, m, h)")),
    }
}
