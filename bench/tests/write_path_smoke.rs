//! The write-path benchmark for a second, against the debug builds: pgbench, the node
//! and the floor (`write-path-floor`, through `--compare-node`) each commit withdrawals
//! without an error, and the bench prints its table. It times nothing; the figures come
//! from the bench command itself.

use std::process::Command;

#[test]
fn the_bench_runs_pgbench_the_node_and_the_floor_without_errors() {
    let output = Command::new(env!("CARGO_BIN_EXE_write-path-bench"))
        .args(["--clients", "2", "--seconds", "1", "--rounds", "1"])
        .args(["--accounts", "50", "--compare-node"])
        .arg(env!("CARGO_BIN_EXE_write-path-floor"))
        .output()
        .expect("run write-path-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the bench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for label in [
        "pgbench (same SQL)",
        "node (HTTP API)",
        "node (--compare-node)",
    ] {
        // The first line naming the side is its row of the throughput table:
        // tx/s, p50 ms, p99 ms, errors.
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no line for {label} in: {stdout}"));
        let fields: Vec<&str> = line[label.len()..].split_whitespace().collect();
        assert_eq!(fields.len(), 4, "unexpected row: {line}");
        let per_second: f64 = fields[0].parse().expect("tx/s is a number");
        assert!(per_second > 0.0, "{label} committed nothing: {line}");
        assert_eq!(fields[3], "0", "{label} had errors: {line}");
    }
}
