//! `live_path_instructions`: the instructions the proxy executes per row on the live path
//! (decode → route → encode → append → serve one SSE client), counted by valgrind's
//! `callgrind`, which counts the same whatever else the machine does: the figure to compare
//! two builds by, where the throughput ratios move with the machine's load.
//!
//! Two proxies, each under `valgrind --tool=callgrind`, each on a slot of its own, carry one
//! `INSERT … SELECT generate_series` transaction (the rows of `throughput_big_txn`) to one SSE
//! client of the table's shape: one of [`SMALL`] rows, one of [`LARGE`]. Callgrind counts
//! every instruction of the process (every thread) from when the SSE client is live
//! (`callgrind_control --zero`) until it has every row (`callgrind_control --dump`); the
//! difference of the two counts over the difference of the rows is what one more row costs,
//! and the fixed costs cancel out. Start-up and shutdown are outside the window because not
//! all of them are fixed: the metrics recorder calibrates its clock for a while at start-up,
//! 10.0 M instructions in one run and 15.8 M in the next (±145 per row in the figure).
//!
//! `BENCH_PROXY_BIN=<another build's bench binary>` measures that build's proxy with this
//! bench, e.g. an older commit's, for a before-and-after. `BENCH_CALLGRIND_DIR=<dir>` keeps
//! callgrind's two output files there (`callgrind.<rows>.out`), for `callgrind_annotate`.
//! Needs `valgrind` (`tests/run` installs it).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use proxy::replication::ensure_publication;

use crate::Bench;
use crate::cluster::Database;
use crate::figures::Figure;
use crate::proxy_child::{Launch, ProxyChild};
use crate::scenarios::throughput;
use crate::sse;

/// Rows of the two transactions (a fiftieth of them with `--quick`, where the proxy is a
/// debug build and every step only needs to run).
const SMALL: u64 = 10_000;
const LARGE: u64 = 50_000;

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let scale = if bench.scale.quick { 50 } else { 1 };
    let (small, large) = (SMALL / scale, LARGE / scale);
    let db = bench.cluster.database("live_path_instructions").await?;
    let mut client = db.connect().await?;
    ensure_publication(&client, "shapesync").await?;
    let work = tempfile::tempdir().context("a directory for callgrind's output")?;
    let keep = std::env::var_os("BENCH_CALLGRIND_DIR").map(std::path::PathBuf::from);
    let out_dir = keep.as_deref().unwrap_or(work.path());
    let mut counted = Vec::new();
    for rows in [small, large] {
        counted.push(count(&db, &mut client, rows, out_dir).await?);
    }
    let per_row = (counted[1] as f64 - counted[0] as f64) / (large - small) as f64;
    let exe = Launch::from_env()?.exe;
    bench.report.add(
        Figure::new("live_path_instructions", per_row, "instructions/row").note(format!(
            "instructions the proxy executed (callgrind, every thread, from the SSE \
             client live to its last row) to carry one transaction to one SSE client: {} for \
             {small} rows, {} for {large} rows; the difference per row (fixed costs cancel); \
             proxy: {}",
            counted[0],
            counted[1],
            exe.display()
        )),
    );
    Ok(())
}

/// Instructions a proxy under callgrind executed, from its start to its exit, carrying one
/// transaction of `rows` rows to one SSE client.
async fn count(
    db: &Database,
    client: &mut tokio_postgres::Client,
    rows: u64,
    work: &Path,
) -> anyhow::Result<u64> {
    let table = format!("rows_{rows}");
    throughput::create_rows_table(client, &table).await?;
    let out = work.join(format!("callgrind.{rows}.out"));
    let launch = Launch {
        wrapper: vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            format!("--callgrind-out-file={}", out.display()),
        ],
        ..Launch::from_env()?
    };
    let storage = tempfile::tempdir().context("a storage directory for the proxy")?;
    let slot = format!("live_path_instructions_{rows}");
    let proxy = ProxyChild::start_launched(db, &slot, storage, &[], &launch)
        .await
        .context("starting the proxy under valgrind (tests/run installs it)")?;
    let subscription = sse::fetch(proxy.addr, &format!("table={table}"), |_| {}).await?;
    let stream = sse::Live::open(proxy.addr, &subscription).await?;
    let counter = sse::count_changes(stream, rows);
    callgrind_control(proxy.pid(), "--zero").await?;
    client
        .execute(
            &format!(
                "INSERT INTO {table} (id, title, n)
                 SELECT g, 'title ' || g, g FROM generate_series(1, $1) g"
            ),
            &[&i32::try_from(rows)?],
        )
        .await?;
    tokio::time::timeout(Duration::from_secs(600), counter)
        .await
        .context("the SSE client did not receive every row within 10 minutes")???;
    callgrind_control(proxy.pid(), "--dump=live_path").await?;
    proxy.stop().await;
    // The dump asked for is the first, numbered 1; the one at exit follows it.
    let dump = Path::new(&format!("{}.1", out.display())).to_path_buf();
    let text = std::fs::read_to_string(&dump)
        .with_context(|| format!("reading callgrind's dump {}", dump.display()))?;
    match total_instructions(&text) {
        Some(total) => Ok(total),
        None => bail!("no `summary:` line in {}", dump.display()),
    }
}

/// Runs `callgrind_control <action> <pid>` (it reaches the process through valgrind's gdb
/// server, also while it waits in a system call).
async fn callgrind_control(pid: u32, action: &str) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("callgrind_control")
        .arg(action)
        .arg(pid.to_string())
        .output()
        .await
        .context("running callgrind_control (valgrind's; tests/run installs it)")?;
    if !output.status.success() {
        bail!(
            "callgrind_control {action} {pid}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The `summary:` line of a callgrind output file: the count of its first event (`Ir`).
fn total_instructions(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("summary:"))
        .and_then(|counts| counts.split_whitespace().next())
        .and_then(|ir| ir.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_gives_the_instruction_count() {
        let out = "version: 1\nevents: Ir\nfn=main\n0 12\nsummary: 123456789\ntotals: 123456789\n";
        assert_eq!(total_instructions(out), Some(123_456_789));
        assert_eq!(total_instructions("events: Ir\n"), None);
    }
}
