//! Helpers shared by the benchmark binaries.

pub mod cpu;
pub mod otlp_sink;

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

/// The directory of the running benchmark binary, where `cargo build --release
/// --workspace --bins` also puts the binaries it starts; fails naming any of `needed`
/// that is not there.
pub fn sibling_bin_dir(needed: &[&str]) -> anyhow::Result<std::path::PathBuf> {
    let exe =
        std::env::current_exe().map_err(|e| anyhow::anyhow!("locate benchmark binary: {e}"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("benchmark binary has no directory"))?
        .to_owned();
    for bin in needed {
        anyhow::ensure!(
            dir.join(bin).exists(),
            "{} missing: cargo build --release --workspace --bins",
            dir.join(bin).display()
        );
    }
    Ok(dir)
}
