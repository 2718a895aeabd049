//! Percentiles of latency samples.

/// The `q` quantile (0..=1) of `sorted` by nearest rank; NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sort(samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
}
