//! Helpers shared by the benchmark binaries.

/// The `p`-th percentile (0-100, nearest rank) of microsecond samples, in ms.
pub fn percentile_ms(samples_us: &[u64], p: f64) -> f64 {
    let mut sorted = samples_us.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}
