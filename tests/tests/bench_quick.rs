//! The benchmark suite's smoke run: `bench --quick` end to end (every scenario at a tenth of
//! its size), checking that every figure is produced and the JSON and the plot are written.
//! Nothing here looks at how fast anything was: benchmarks are benchmarks, not tests.

use std::process::Command;

use serde_json::Value;

/// Every figure the suite reports, by scenario.
const FIGURES: &[&str] = &[
    "throughput_big_txn",
    "throughput_big_txn.proxy_cpu_per_row",
    "throughput_big_txn.catch_up",
    "throughput_small_txn",
    "throughput_small_txn.proxy_cpu_per_row",
    "throughput_small_txn.catch_up",
    "latency_1.p50",
    "latency_1.p95",
    "latency_1.p99",
    "latency_1000.p50",
    "latency_1000.p95",
    "latency_1000.p99",
    "fanout_1000",
    "fanout_1000.max",
    "routing_10",
    "where_eval",
    "routing_1k",
    "routing_100k",
    "routing_100k.bytes_per_shape",
    "routing_100k.residual",
    "routing_100k.residual.bytes_per_shape",
    "shapes_100k.create_rate",
    "shapes_100k.rss_per_shape",
    "shapes_100k.open_files_per_shape",
    "shapes_100k.disk_per_shape",
    "shapes_100k.p50",
    "shapes_100k.p99",
    "initial_sync_1m",
    "initial_sync_1m.warm",
    "initial_sync_1m.client_rss",
    "initial_sync_1m.proxy_rss_growth",
    "initial_sync_1m.live_apply",
    "initial_sync_1m.http",
    "sse_10k",
    "mutations_batch",
    "mutations_single.p50",
    "mutations_single.p99",
    "rxdb_pull_100k",
    "rxdb_pull_100k.server",
    "rxdb_pull_100k.warm",
    "rxdb_pull_100k.warm_server",
    "watermelon_pull_100k",
    "watermelon_pull_100k.server",
    "watermelon_pull_100k.warm",
    "watermelon_pull_100k.warm_server",
    "watermelon_pull_100k.bytes",
    "watermelon_pull_100k.gzip_bytes",
    "rxdb_push",
    "rxdb_push.concurrent_4",
    "watermelon_push",
    "watermelon_push.concurrent_4",
    "cdn_fanout_10k.nginx.origin_per_commit",
    "cdn_fanout_10k.nginx.p50",
    "cdn_fanout_10k.nginx.p99",
    "cdn_fanout_10k.nginx.proxy_cpu_per_commit",
    "cdn_fanout_10k.nginx.cache_cpu_per_answer",
    "cdn_fanout_10k.nginx.clients_cpu_per_answer",
    "cdn_fanout_10k.varnish.origin_per_commit",
    "cdn_fanout_10k.varnish.p50",
    "cdn_fanout_10k.varnish.p99",
    "cdn_fanout_10k.varnish.proxy_cpu_per_commit",
    "cdn_fanout_10k.varnish.cache_cpu_per_answer",
    "cdn_fanout_10k.varnish.clients_cpu_per_answer",
    "cdn_fanout_10k.varnish_fanout.origin_per_commit",
    "cdn_fanout_10k.varnish_fanout.p50",
    "cdn_fanout_10k.varnish_fanout.p99",
    "cdn_fanout_10k.varnish_fanout.proxy_cpu_per_commit",
    "cdn_fanout_10k.varnish_fanout.cache_cpu_per_answer",
    "cdn_fanout_10k.varnish_fanout.clients_cpu_per_answer",
    "cdn_initial_10k.nginx",
    "cdn_initial_10k.varnish",
    "compaction.log_vs_snapshot",
    "compaction.initial_sync_speedup",
    "compaction.live_latency.p50",
    "compaction.live_latency.p99",
    "compaction.live_latency_quiet.p99",
    "compaction.churn_messages",
    "compaction.churn_bytes_per_gone_row",
    "moves_in_10k.p50",
    "moves_in_10k.max",
    "moves_out_10k.p50",
    "moves_out_10k.max",
    "moves_out_10k.log_bytes_per_move",
    "moves_out_10k.log_bytes_per_row",
    "moves_out_10k.events.p50",
    "moves_out_10k.events.max",
    "moves_out_10k.events.log_bytes_per_move",
    "moves_out_10k.events.log_bytes_per_row",
    "routing_subquery_10k",
    "routing_subquery_10k.spread",
    "routing_subquery_10k.shared",
    "routing_subquery_10k.rss_per_shape",
    "routing_subquery_10k.create_rate",
    "latency_subquery.p50",
    "latency_subquery.p99",
    "live_path_instructions",
    "peer_latency.shapesync.p50",
    "peer_latency.shapesync.p99",
    "peer_latency.shapesync_ts_client.p50",
    "peer_latency.shapesync_ts_client.p99",
    "peer_latency.zero.p50",
    "peer_latency.zero.p99",
];

/// The figures measured against a baseline (`pg_recvlogical`, or the 10-shape routing rate):
/// their `baseline` and `ratio` are positive numbers; every other figure's are `null`.
const WITH_BASELINE: &[&str] = &[
    "throughput_big_txn",
    "throughput_big_txn.catch_up",
    "throughput_small_txn",
    "throughput_small_txn.catch_up",
    "routing_1k",
    "routing_100k",
    "routing_100k.residual",
    "routing_subquery_10k",
    "routing_subquery_10k.spread",
    "routing_subquery_10k.shared",
];

/// Checks every figure of a report: present, with a finite value, and with a positive
/// baseline and a ratio of value / baseline exactly where a baseline is measured.
fn check_figures(report: &Value) -> Result<(), String> {
    let figures = report["figures"].as_array().ok_or("no figures")?;
    for name in FIGURES {
        let figure = figures
            .iter()
            .find(|f| f["name"] == *name)
            .ok_or_else(|| format!("no figure {name} in {figures:?}"))?;
        for key in ["value", "unit", "baseline", "ratio"] {
            if figure.get(key).is_none() {
                return Err(format!("{name} has no {key}: {figure}"));
            }
        }
        let value = figure["value"]
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{name} has no value: {figure}"))?;
        let positive = |key: &str| figure[key].as_f64().filter(|v| v.is_finite() && *v > 0.0);
        if WITH_BASELINE.contains(name) {
            let (Some(baseline), Some(ratio)) = (positive("baseline"), positive("ratio")) else {
                return Err(format!(
                    "{name} needs a positive baseline and ratio: {figure}"
                ));
            };
            let expected = value / baseline;
            if (ratio - expected).abs() > 1e-9 * expected.abs().max(1.0) {
                return Err(format!(
                    "{name}: ratio {ratio} is not value / baseline {expected}"
                ));
            }
        } else if !figure["baseline"].is_null() || !figure["ratio"].is_null() {
            return Err(format!(
                "{name} has a baseline it does not measure: {figure}"
            ));
        }
    }
    let unexpected: Vec<_> = figures
        .iter()
        .filter_map(|f| f["name"].as_str())
        .filter(|name| !FIGURES.contains(name))
        .collect();
    if !unexpected.is_empty() {
        return Err(format!("figures the test does not know: {unexpected:?}"));
    }
    Ok(())
}

/// The committed figures: the last full run (`latest.json`) with those of the scenarios run
/// apart, on another machine (`ecosystems.json`: RxDB and WatermelonDB; `cdn.json`: the
/// caches; `shapes.json`: routing, many shapes, the relabelled initial sync and mutations;
/// `compaction.json`: compaction of shape logs; `subquery.json`: subquery shapes;
/// `instructions.json`: instructions per row under callgrind; `peers.json`: the peer line; each
/// describes its machine). A later file's figure replaces an earlier one of the same name.
fn committed_report() -> Value {
    let read = |name: &str| -> Value {
        let path = format!("{}/bench-results/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(&path).expect(name)).expect("JSON")
    };
    let mut report = read("latest.json");
    let figures = report["figures"].as_array_mut().expect("figures");
    for more in [
        "ecosystems.json",
        "cdn.json",
        "shapes.json",
        "compaction.json",
        "subquery.json",
        "instructions.json",
        "peers.json",
        "throughput.json",
    ] {
        for figure in read(more)["figures"].as_array().expect("figures") {
            figures.retain(|f| f["name"] != figure["name"]);
            figures.push(figure.clone());
        }
    }
    report
}

/// The check itself, on the committed figures: it passes, and it fails when a
/// measured baseline or ratio is `null` or not positive.
#[test]
fn the_figure_check_needs_numbers_where_a_baseline_was_measured() {
    let report = committed_report();
    assert_eq!(check_figures(&report), Ok(()));
    for (figure, key, bad) in [
        ("throughput_big_txn", "baseline", Value::Null),
        ("routing_100k.residual", "ratio", Value::Null),
        ("throughput_small_txn", "baseline", serde_json::json!(0.0)),
        ("routing_1k", "ratio", serde_json::json!(-1.0)),
        ("latency_1.p50", "baseline", serde_json::json!(1.0)),
    ] {
        let mut broken = report.clone();
        let entry = broken["figures"]
            .as_array_mut()
            .expect("figures")
            .iter_mut()
            .find(|f| f["name"] == figure)
            .expect("figure");
        entry[key] = bad.clone();
        let verdict = check_figures(&broken);
        assert!(
            verdict.as_ref().is_err_and(|e| e.contains(figure)),
            "{figure}.{key} = {bad}: {verdict:?}"
        );
    }
}

#[test]
fn quick_suite_produces_every_figure_the_json_and_the_plot() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let json = dir.path().join("bench.json");
    let plot = dir.path().join("bench.png");
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--quick")
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench --quick failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON file")).expect("JSON");
    assert_eq!(report["quick"], true);
    let machine = &report["machine"];
    for field in [
        "cpu_model",
        "cores",
        "ram_mb",
        "kernel",
        "postgres_version",
        "load_average_start",
        "load_average_end",
    ] {
        assert!(
            !machine[field].is_null(),
            "machine.{field} missing: {machine}"
        );
    }
    if let Err(problem) = check_figures(&report) {
        panic!("{problem}");
    }

    let png = std::fs::read(&plot).expect("the plot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the plot is not a PNG"
    );
}
