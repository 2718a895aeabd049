//! The benchmark suite's smoke run: `bench --quick` end to end (every scenario at a tenth of
//! its size), checking that every figure is produced and the JSON and the plot are written.
//! Nothing here looks at how fast anything was: benchmarks are benchmarks, not tests.

use std::process::Command;

use serde_json::Value;

/// Every figure the suite reports, by scenario.
const FIGURES: &[&str] = &[
    "throughput_big_txn",
    "throughput_big_txn.catch_up",
    "throughput_small_txn",
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
    "initial_sync_1m",
    "initial_sync_1m.client_rss",
    "initial_sync_1m.proxy_rss_growth",
    "initial_sync_1m.live_apply",
    "initial_sync_1m.http",
    "sse_10k",
    "mutations_batch",
    "mutations_single.p50",
    "mutations_single.p99",
];

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
    let figures = report["figures"].as_array().expect("figures");
    for name in FIGURES {
        let figure = figures
            .iter()
            .find(|f| f["name"] == *name)
            .unwrap_or_else(|| panic!("no figure {name} in {figures:?}"));
        for key in ["value", "unit", "baseline", "ratio"] {
            assert!(figure.get(key).is_some(), "{name} has no {key}: {figure}");
        }
        let value = figure["value"].as_f64();
        assert!(
            value.is_some_and(f64::is_finite),
            "{name} has no value: {figure}"
        );
    }
    let unexpected: Vec<_> = figures
        .iter()
        .filter_map(|f| f["name"].as_str())
        .filter(|name| !FIGURES.contains(name))
        .collect();
    assert!(
        unexpected.is_empty(),
        "figures the test does not know: {unexpected:?}"
    );
    for name in ["throughput_big_txn", "throughput_small_txn", "routing_100k"] {
        let figure = figures.iter().find(|f| f["name"] == name).expect("figure");
        assert!(figure["ratio"].as_f64().is_some(), "{name} has no ratio");
    }

    let png = std::fs::read(&plot).expect("the plot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the plot is not a PNG"
    );
}
