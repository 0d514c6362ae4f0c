//! `chaos run` and `chaos matrix`: a deployment in network namespaces, a seeded fault
//! schedule run by the failover tool's drill under its workload, and the drill's
//! verdicts (the invariants it checks on every region after the heal) with each
//! fault's recovery time.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use ledger_wire::faults::FaultSchedule;
use serde::Deserialize;

use crate::network::Network;
use crate::schedule::{self, FaultKind, ScheduleSpec};
use crate::{Deployment, UpOptions};

/// Faults start after this much workload, and the last is healed this long before the
/// workload stops.
const QUIET_START_MS: u64 = 3_000;
const QUIET_END_MS: u64 = 5_000;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
    pub seconds: u64,
    pub rate: u32,
    pub workload: RunWorkload,
    pub ack_replicated: bool,
    pub regions: usize,
    pub base_port: u16,
    /// The run's own directory: deployment, schedule, report.
    pub dir: PathBuf,
    /// Where `ledger-local`, `failover` and the services are.
    pub bin_dir: PathBuf,
}

/// The drill workload a run writes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RunWorkload {
    /// Transfers only, 100.00 per account (the workload that found the money bugs).
    #[default]
    Bank,
    /// Deposits and withdrawals.
    Deposits,
    /// Transfers, deposits, withdrawals, opens, and reads with `min_seq` or `strong`.
    Mixed,
}

/// One invariant's verdict, as the drill's report gives it.
pub type Verdict = ledger_checker::Check;

/// One scheduled fault, as the drill's report gives it.
#[derive(Debug, Clone, Deserialize)]
pub struct FaultOutcome {
    pub fault: String,
    pub target: String,
    pub injected_at_ms: u64,
    pub healed_at_ms: u64,
    pub recovery_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub seed: u64,
    pub schedule: FaultSchedule,
    /// The drill exited 0 (every invariant held, every step ran).
    pub drill_passed: bool,
    pub verdicts: Vec<Verdict>,
    pub faults: Vec<FaultOutcome>,
    pub report_dir: PathBuf,
}

impl RunOutcome {
    pub fn passed(&self) -> bool {
        self.drill_passed && !self.verdicts.is_empty() && self.verdicts.iter().all(|v| v.ok)
    }
}

#[derive(Deserialize)]
struct ReportFile {
    invariants: Invariants,
    #[serde(default)]
    faults: Vec<FaultOutcome>,
}

#[derive(Deserialize)]
struct Invariants {
    checks: Vec<Verdict>,
}

/// The run's schedule, drawn from its seed (nothing is started), printed.
pub fn plan(options: &RunOptions) -> anyhow::Result<FaultSchedule> {
    let deployment_dir = options.dir.join("deployment");
    let ledger_local = format!(
        "{} --data-dir {}",
        options.bin_dir.join("ledger-local").display(),
        deployment_dir.display()
    );
    let spec = ScheduleSpec {
        seed: options.seed,
        kinds: options.kinds.clone(),
        regions: crate::REGION_NAMES[..options.regions]
            .iter()
            .map(|r| (*r).to_owned())
            .collect(),
        run_ms: options.seconds * 1_000,
        quiet_start_ms: QUIET_START_MS,
        quiet_end_ms: QUIET_END_MS,
        ledger_local,
    };
    let schedule = schedule::make(&spec).map_err(anyhow::Error::msg)?;
    println!(
        "chaos run: seed {} ({} faults; replay with --seed {})",
        options.seed,
        schedule.steps.len(),
        options.seed
    );
    for step in &schedule.steps {
        println!(
            "  at {:>6} ms for {:>5} ms: {} on {}",
            step.at_ms, step.hold_ms, step.fault, step.target
        );
    }
    Ok(schedule)
}

/// Runs one seeded schedule against a fresh deployment, which is stopped at the end
/// (its data and logs stay in the run's directory).
pub async fn run(options: &RunOptions) -> anyhow::Result<RunOutcome> {
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("create {}", options.dir.display()))?;
    let deployment_dir = options.dir.join("deployment");
    let schedule = plan(options)?;
    let schedule_file = options.dir.join("schedule.json");
    std::fs::write(&schedule_file, serde_json::to_string_pretty(&schedule)?)
        .with_context(|| format!("write {}", schedule_file.display()))?;

    let mut up = UpOptions::new(options.regions, options.base_port, options.bin_dir.clone());
    up.slot_count = 256;
    up.network = Network::namespaces_for(options.base_port);
    let deployment = Deployment::up(&deployment_dir, &up)
        .await
        .context("start the deployment")?;
    let report_dir = options.dir.join("report");
    let drill = drill(options, &deployment_dir, &schedule_file, &report_dir);
    // Whatever the drill did, stop what this run started (the state file knows the
    // pids of processes the drill's hooks restarted).
    match Deployment::load(&deployment_dir) {
        Ok(Some(saved)) => saved.stop(),
        _ => deployment.stop(),
    }
    let drill_passed = drill?;
    let text = std::fs::read_to_string(report_dir.join("report.json"))
        .context("read the drill's report (did the drill get that far?)")?;
    let report: ReportFile = serde_json::from_str(&text).context("parse the drill's report")?;
    Ok(RunOutcome {
        seed: options.seed,
        schedule,
        drill_passed,
        verdicts: report.invariants.checks,
        faults: report.faults,
        report_dir,
    })
}

/// Runs the failover tool's drill with the schedule; whether it exited 0.
fn drill(
    options: &RunOptions,
    deployment_dir: &Path,
    schedule_file: &Path,
    report_dir: &Path,
) -> anyhow::Result<bool> {
    let mut command = Command::new(options.bin_dir.join("failover"));
    command
        .arg("--deployment")
        .arg(deployment_dir)
        .args(["drill", "--scenario", "schedule", "--schedule-file"])
        .arg(schedule_file)
        .args(["--rate", &options.rate.to_string()])
        .args([
            "--accounts-per-region",
            "4",
            "--warmup-s",
            "0",
            "--observe-s",
            "0",
        ])
        .args(["--heal-timeout-s", "120", "--report-dir"])
        .arg(report_dir);
    match options.workload {
        // Little money per account, so refusals and overdraft replays happen.
        RunWorkload::Bank => {
            command.args(["--workload", "transfers", "--funding", "100.00"]);
        }
        RunWorkload::Mixed => {
            command.args(["--workload", "mixed", "--funding", "100.00"]);
        }
        RunWorkload::Deposits => {}
    }
    if options.ack_replicated {
        command.arg("--ack-replicated");
    }
    let status = command.status().context("run the failover drill")?;
    Ok(status.success())
}

/// Prints a run's verdicts and fault recoveries.
pub fn print_outcome(outcome: &RunOutcome) {
    println!("\nverdicts (seed {}):", outcome.seed);
    for v in &outcome.verdicts {
        let verdict = v.verdict_word();
        println!("  {verdict:<8} {}: {}", v.name, v.summary);
    }
    println!("faults:");
    for f in &outcome.faults {
        println!(
            "  {:<20} {:<20} {:>6} ms to {:>6} ms, recovery {}",
            f.fault,
            f.target,
            f.injected_at_ms,
            f.healed_at_ms,
            f.recovery_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"))
        );
    }
    println!(
        "run {} (seed {}; report {}/report.html)",
        if outcome.passed() { "PASSED" } else { "FAILED" },
        outcome.seed,
        outcome.report_dir.display()
    );
}

/// One row of the matrix: a fault kind over its seeds.
#[derive(Debug, Clone)]
pub struct MatrixRow {
    pub kind: FaultKind,
    pub runs: usize,
    pub failed_seeds: Vec<u64>,
    pub invalid: Vec<String>,
    pub recoveries_ms: Vec<u64>,
}

/// The `p`-th percentile (nearest rank) of `values`.
pub fn percentile(values: &[u64], p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Runs every kind alone with seeds `1..=seeds`, one run after another.
pub async fn matrix(base: &RunOptions, kinds: &[FaultKind], seeds: u64) -> Vec<MatrixRow> {
    let mut rows = Vec::new();
    for &kind in kinds {
        let mut row = MatrixRow {
            kind,
            runs: 0,
            failed_seeds: Vec::new(),
            invalid: Vec::new(),
            recoveries_ms: Vec::new(),
        };
        for seed in 1..=seeds {
            let options = RunOptions {
                seed,
                kinds: vec![kind],
                dir: base.dir.join(format!("{kind}-{seed}")),
                ..base.clone()
            };
            row.runs += 1;
            match run(&options).await {
                Ok(outcome) => {
                    print_outcome(&outcome);
                    row.recoveries_ms
                        .extend(outcome.faults.iter().filter_map(|f| f.recovery_ms));
                    row.invalid.extend(
                        outcome
                            .verdicts
                            .iter()
                            .filter(|v| !v.ok)
                            .map(|v| format!("seed {seed}: {}", v.name)),
                    );
                    if !outcome.passed() {
                        row.failed_seeds.push(seed);
                    }
                }
                Err(error) => {
                    eprintln!("{kind} seed {seed}: {error:#}");
                    row.failed_seeds.push(seed);
                }
            }
        }
        rows.push(row);
    }
    rows
}

/// The matrix as a table: fault x verdicts x recovery p50/p99.
pub fn matrix_table(rows: &[MatrixRow]) -> String {
    let mut out = format!(
        "{:<20} {:>5} {:>7} {:>9} {:>13} {:>13}  invalid verdicts\n",
        "fault", "runs", "passed", "recovered", "recovery p50", "recovery p99"
    );
    for row in rows {
        let fmt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
        out.push_str(&format!(
            "{:<20} {:>5} {:>7} {:>9} {:>13} {:>13}  {}\n",
            row.kind.name(),
            row.runs,
            row.runs - row.failed_seeds.len(),
            row.recoveries_ms.len(),
            fmt(percentile(&row.recoveries_ms, 50.0)),
            fmt(percentile(&row.recoveries_ms, 99.0)),
            if row.invalid.is_empty() {
                "-".to_owned()
            } else {
                row.invalid.join("; ")
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[30, 10, 20], 50.0), Some(20));
        assert_eq!(percentile(&[30, 10, 20], 99.0), Some(30));
        assert_eq!(percentile(&[5], 99.0), Some(5));
    }
}
