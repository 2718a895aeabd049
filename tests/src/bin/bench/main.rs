//! shapesync's benchmark suite: the whole system against Postgres' own decoding limit, in one
//! run, on one machine.
//!
//! ```text
//! cargo run --release -p tests --bin bench -- [--quick] [--scenarios a,b] [--json FILE] [--plot FILE]
//! ```
//!
//! The suite starts a throwaway PostgreSQL cluster (the machine's own binaries, as the tests
//! do; `fsync=off`, which favours shapesync and the baseline alike), gives each scenario a
//! database of its own, and runs the proxy as a separate process: this very binary re-executed
//! as `bench proxy serve …` (see [`proxy_child`]), so that its memory is measured apart from
//! the bench's clients. Each scenario module documents what it measures and how. Figures are
//! printed as a table, with the target (the README's Benchmarks table) and whether the run met
//! it; `--json`
//! writes them with a description of the machine (CPU, memory, kernel, Postgres version, load
//! average at start and end: figures taken on a busy machine are not comparable), and `--plot`
//! draws the latency distributions.
//!
//! `--quick` runs every scenario at a tenth of its size, for CI smoke tests: its figures are
//! not the product's.
//!
//! This is a measurement, not a test: it asserts nothing about speed. It exits non-zero when a
//! scenario could not run.

mod alloc_count;
mod client_child;
mod cluster;
mod figures;
mod http_wire;
mod machine;
mod plot;
mod proxy_child;
mod recvlogical;
mod scenarios;
mod sse;
mod stats;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use cluster::BenchCluster;
use figures::Report;

#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;

/// shapesync's benchmark suite (targets and latest figures: the README's Benchmarks table).
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Options {
    /// Every scenario at a tenth of its size (CI smoke run; the figures are not the product's).
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Write the machine and every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the latency distributions (CDFs) as a PNG to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Rounds of the throughput scenarios (the median is reported; `--quick`: 1).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    #[value(name = "throughput_big_txn")]
    ThroughputBigTxn,
    #[value(name = "throughput_small_txn")]
    ThroughputSmallTxn,
    #[value(name = "latency_1")]
    Latency1,
    #[value(name = "latency_1000")]
    Latency1000,
    #[value(name = "fanout_1000")]
    Fanout1000,
    #[value(name = "routing_10")]
    Routing10,
    #[value(name = "routing_100k")]
    Routing100k,
    #[value(name = "shapes_100k")]
    Shapes100k,
    #[value(name = "initial_sync_1m")]
    InitialSync1m,
    #[value(name = "sse_10k")]
    Sse10k,
    #[value(name = "mutations_batch")]
    MutationsBatch,
    #[value(name = "mutations_single")]
    MutationsSingle,
    #[value(name = "rxdb_pull_100k")]
    RxdbPull100k,
    #[value(name = "watermelon_pull_100k")]
    WatermelonPull100k,
    #[value(name = "rxdb_push")]
    RxdbPush,
    #[value(name = "watermelon_push")]
    WatermelonPush,
    #[value(name = "cdn_fanout_10k")]
    CdnFanout10k,
    #[value(name = "cdn_initial_10k")]
    CdnInitial10k,
    #[value(name = "compaction")]
    Compaction,
    #[value(name = "moves_in_10k")]
    MovesIn10k,
    #[value(name = "moves_out_10k")]
    MovesOut10k,
    #[value(name = "routing_subquery_10k")]
    RoutingSubquery10k,
    #[value(name = "latency_subquery")]
    LatencySubquery,
    #[value(name = "live_path_instructions")]
    LivePathInstructions,
    #[value(name = "peer_latency")]
    PeerLatency,
}

impl Scenario {
    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// Sizes: the full run, or a tenth of it.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub quick: bool,
}

impl Scale {
    /// `full`, or a tenth of it with `--quick` (at least 1).
    pub fn of(self, full: usize) -> usize {
        if self.quick { (full / 10).max(1) } else { full }
    }
}

/// What every scenario gets: the cluster, the sizes, the report to add figures to.
pub struct Bench {
    pub machine: machine::Machine,
    /// Rounds of the throughput scenarios.
    pub rounds: usize,
    pub cluster: BenchCluster,
    pub scale: Scale,
    pub report: Report,
}

fn main() -> ExitCode {
    // `bench proxy serve …`: this process is the proxy (see `proxy_child`).
    if std::env::args_os().nth(1).is_some_and(|a| a == "proxy") {
        let args = std::iter::once(OsString::from("shapesync")).chain(std::env::args_os().skip(2));
        return proxy::cli::main_with_args(args);
    }
    // `bench client-sync …`: this process is the SQLite client (see `client_child`).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "client-sync")
    {
        let args: Vec<String> = std::env::args().skip(2).collect();
        return client_child::main(&args);
    }
    // `bench client-follow …`: this process follows a shape live (see `client_child`).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "client-follow")
    {
        let args: Vec<String> = std::env::args().skip(2).collect();
        return client_child::follow_main(&args);
    }
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the async runtime");
    match runtime.block_on(run(options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen scenarios; `Ok(false)` when one of them failed.
async fn run(options: Options) -> anyhow::Result<bool> {
    raise_open_file_limit();
    let scale = Scale {
        quick: options.quick,
    };
    let scenarios = if options.scenarios.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        options.scenarios.clone()
    };
    // Check the font before spending minutes measuring.
    if options.plot.is_some() {
        plot::load_font()?;
    }
    let machine_start = machine::LoadAverage::read();
    let cluster = BenchCluster::start().await?;
    let mut bench = Bench {
        machine: machine::Machine::describe(&cluster, machine_start).await,
        cluster,
        scale,
        rounds: if scale.quick {
            1
        } else {
            options.rounds.max(1)
        },
        report: Report::default(),
    };
    println!(
        "bench{}: {} — load average {}",
        if scale.quick { " --quick" } else { "" },
        bench.machine.summary(),
        machine_start
    );
    let mut all_ran = true;
    for scenario in scenarios {
        let name = scenario.name();
        println!("── {name} (load average {})", machine::LoadAverage::read());
        let started = std::time::Instant::now();
        if let Err(err) = run_scenario(&mut bench, scenario).await {
            eprintln!("bench: {name} failed: {err:#}");
            bench.report.failed(&name, &err);
            all_ran = false;
        }
        println!("   {name} took {:.1} s", started.elapsed().as_secs_f64());
    }
    bench.machine.load_average_end = machine::LoadAverage::read();
    println!();
    bench.report.print_table();
    if let Some(path) = &options.json {
        bench.report.write_json(path, &bench.machine, scale)?;
        println!("figures written to {}", path.display());
    }
    if let Some(path) = &options.plot {
        plot::draw(path, &bench.report.distributions)?;
        println!("latency plot written to {}", path.display());
    }
    Ok(all_ran)
}

async fn run_scenario(bench: &mut Bench, scenario: Scenario) -> anyhow::Result<()> {
    use scenarios::*;
    match scenario {
        Scenario::ThroughputBigTxn => throughput::run(bench, throughput::Workload::BigTxn).await,
        Scenario::ThroughputSmallTxn => {
            throughput::run(bench, throughput::Workload::SmallTxns).await
        }
        Scenario::Latency1 => latency::run(bench, latency::Spread::OneClient).await,
        Scenario::Latency1000 => latency::run(bench, latency::Spread::ShapePerClient).await,
        Scenario::Fanout1000 => fanout::run(bench).await,
        Scenario::Routing10 => routing::run(bench, routing::Size::Ten),
        Scenario::Routing100k => routing::run(bench, routing::Size::HundredThousand),
        Scenario::Shapes100k => shapes::run(bench).await,
        Scenario::InitialSync1m => initial_sync::run(bench).await,
        Scenario::Sse10k => sse_idle::run(bench).await,
        Scenario::MutationsBatch => mutations::run(bench, mutations::Mode::Batches).await,
        Scenario::MutationsSingle => mutations::run(bench, mutations::Mode::Single).await,
        Scenario::RxdbPull100k => ecosystem_pull::run(bench, ecosystem_pull::Protocol::Rxdb).await,
        Scenario::WatermelonPull100k => {
            ecosystem_pull::run(bench, ecosystem_pull::Protocol::Watermelon).await
        }
        Scenario::RxdbPush => ecosystem_push::run(bench, ecosystem_pull::Protocol::Rxdb).await,
        Scenario::WatermelonPush => {
            ecosystem_push::run(bench, ecosystem_pull::Protocol::Watermelon).await
        }
        Scenario::CdnFanout10k => cdn::fanout(bench).await,
        Scenario::CdnInitial10k => cdn::initial(bench).await,
        Scenario::Compaction => compaction::run(bench).await,
        Scenario::MovesIn10k => subquery::moves::run(bench, subquery::moves::Direction::In).await,
        Scenario::MovesOut10k => subquery::moves::run(bench, subquery::moves::Direction::Out).await,
        Scenario::RoutingSubquery10k => subquery::routing::run(bench).await,
        Scenario::LatencySubquery => subquery::latency::run(bench).await,
        Scenario::LivePathInstructions => instructions::run(bench).await,
        Scenario::PeerLatency => peer::run(bench).await,
    }
}

/// Thousands of sockets: lift the soft open-file limit to the hard one.
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
