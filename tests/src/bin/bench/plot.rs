//! `--plot FILE`: the latency distributions as cumulative curves on one chart (log-scale
//! milliseconds), drawn by plotters into an RGB buffer and encoded as PNG. Text needs a
//! TrueType font, read at run time (no system font libraries are linked).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 700;
/// Latencies at or below this (including negative ones: see `latency`) sit at the left edge.
const FLOOR_MS: f64 = 0.01;

/// Registers the font plotters draws text with; fails, naming the file, when it is missing.
pub fn load_font() -> anyhow::Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT).map_err(|e| {
                format!(
                    "--plot needs the font {FONT} ({e}); on Debian/Ubuntu: apt-get install fonts-dejavu-core"
                )
            })?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT} is not a font plotters can read"))
        })
        .clone()
        .map_err(|message| anyhow!(message))
}

pub fn draw(path: &Path, distributions: &[(String, Vec<f64>)]) -> anyhow::Result<()> {
    load_font()?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    render(&mut pixels, distributions).map_err(|e| anyhow!("drawing the plot: {e}"))?;
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(())
}

fn render(
    pixels: &mut [u8],
    distributions: &[(String, Vec<f64>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let highest = distributions
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "shapesync latency distributions (cumulative)",
            ("sans-serif", 26),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d((FLOOR_MS..highest * 1.2).log_scale(), 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds (log scale)")
        .y_desc("% of samples at or below")
        .label_style(("sans-serif", 16))
        .draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (name, samples)) in distributions.iter().enumerate() {
        let color = colors[i % colors.len()];
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let points = sorted
            .iter()
            .enumerate()
            .map(|(k, v)| (v.max(FLOOR_MS), 100.0 * (k + 1) as f64 / n));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!("{name} (n={})", sorted.len()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
