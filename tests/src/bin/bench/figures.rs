//! Figures, their targets (the README's Benchmarks table lists them), the table and the JSON
//! file.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::Scale;
use crate::machine::Machine;

/// What a figure should reach.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// value ≥ this.
    AtLeast(f64),
    /// value ≤ this.
    AtMost(f64),
    /// value / baseline ≥ this.
    RatioAtLeast(f64),
}

impl Target {
    fn met(self, figure: &Figure) -> Option<bool> {
        let value = figure.value?;
        match self {
            Target::AtLeast(t) => Some(value >= t),
            Target::AtMost(t) => Some(value <= t),
            Target::RatioAtLeast(t) => figure.ratio.map(|r| r >= t),
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::AtLeast(t) => format!("≥ {} {unit}", number(t)),
            Target::AtMost(t) => format!("≤ {} {unit}", number(t)),
            Target::RatioAtLeast(t) => format!("≥ {t} × baseline"),
        }
    }
}

/// One measured figure. `value` is `None` when it could not be measured (`note` says why).
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: Option<f64>,
    pub unit: &'static str,
    /// The same quantity for the baseline (`pg_recvlogical`, or the 10-shape routing rate).
    pub baseline: Option<f64>,
    /// value / baseline.
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    /// Whether the target was met (`None`: no target, or nothing measured).
    pub met: Option<bool>,
    /// How it was measured, sizes, extra detail.
    pub note: String,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Self {
            name: name.into(),
            value: Some(value),
            unit,
            baseline: None,
            ratio: None,
            target: None,
            met: None,
            note: String::new(),
        }
    }

    /// A figure this run could not measure, and why.
    pub fn not_measured(name: impl Into<String>, unit: &'static str, why: &str) -> Self {
        Self {
            value: None,
            note: format!("not measured: {why}"),
            ..Self::new(name, 0.0, unit)
        }
    }

    pub fn baseline(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self.ratio = self
            .value
            .filter(|_| baseline > 0.0)
            .map(|value| value / baseline);
        self
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

/// Everything a run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    /// Latency samples (ms) per series, for the plot.
    pub distributions: Vec<(String, Vec<f64>)>,
}

impl Report {
    pub fn add(&mut self, mut figure: Figure) {
        figure.met = figure.target.and_then(|t| t.met(&figure));
        println!("   {}", line(&figure));
        self.figures.push(figure);
    }

    pub fn distribution(&mut self, series: impl Into<String>, samples_ms: Vec<f64>) {
        self.distributions.push((series.into(), samples_ms));
    }

    pub fn failed(&mut self, scenario: &str, err: &anyhow::Error) {
        self.figures.push(Figure {
            note: format!("failed: {err:#}"),
            ..Figure::not_measured(scenario, "", "")
        });
    }

    pub fn print_table(&self) {
        let width = self.figures.iter().map(|f| f.name.len()).max().unwrap_or(0);
        println!(
            "{:width$}  {:>14} {:9} {:>14} {:>7}  {:22} {:6}  note",
            "figure", "value", "unit", "baseline", "ratio", "target", "met"
        );
        for f in &self.figures {
            println!(
                "{:width$}  {:>14} {:9} {:>14} {:>7}  {:22} {:6}  {}",
                f.name,
                f.value.map(number).unwrap_or_else(|| "—".into()),
                f.unit,
                f.baseline.map(number).unwrap_or_default(),
                f.ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
                f.target.map(|t| t.describe(f.unit)).unwrap_or_default(),
                match f.met {
                    Some(true) => "yes",
                    Some(false) => "MISSED",
                    None => "",
                },
                f.note
            );
        }
    }

    pub fn write_json(&self, path: &Path, machine: &Machine, scale: Scale) -> anyhow::Result<()> {
        let document = serde_json::json!({
            "machine": machine,
            "quick": scale.quick,
            "figures": self.figures,
        });
        let text = serde_json::to_string_pretty(&document)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

fn line(f: &Figure) -> String {
    let mut out = format!(
        "{} = {} {}",
        f.name,
        f.value.map(number).unwrap_or_else(|| "—".into()),
        f.unit
    );
    if let (Some(b), Some(r)) = (f.baseline, f.ratio) {
        out.push_str(&format!(
            " (baseline {} {}, ratio {r:.2})",
            number(b),
            f.unit
        ));
    }
    if !f.note.is_empty() {
        out.push_str(&format!(" — {}", f.note));
    }
    out
}

/// Three significant digits, or a whole number for big values.
fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}
