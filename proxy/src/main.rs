use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use proxy::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    proxy::telemetry::init_logging(cli.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let result: anyhow::Result<()> = match cli.command {
        Command::Dev(args) => proxy::dev::run(args, shutdown).await.map_err(Into::into),
        Command::Gc(args) => run_gc(args).await,
        Command::Serve(args) => {
            let config = args
                .proxy
                .into_config(args.database_url, args.storage_dir, false);
            proxy::server::run(config, shutdown, None)
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

/// `shapesync gc`: one purge, with a summary on stdout.
async fn run_gc(args: proxy::cli::GcArgs) -> anyhow::Result<()> {
    let policy = proxy::mutations::gc::GcPolicy {
        tombstones: args.tombstones,
        tombstone_retention: args.older_than.0,
        mutation_id_retention: args.mutation_id_retention,
    };
    let report = proxy::mutations::gc::collect_once(&args.database_url, &policy).await?;
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
