//! `chaos run` end to end, as an SRE runs it: a seeded schedule of process and link
//! faults (killed PostgreSQL, a one-way partition, killed replicator, a slow link, a
//! flaky link, killed broker, the Raft leader's voter paused, a node paused past its
//! lease, a killed voter; then a slow clock and a long link) against three regions in
//! network namespaces under the bank workload; every invariant holds after the heal and every fault's region takes writes again within
//! the run's quiet end. The run's evidence, read back by `ledger-check`, gives the same
//! verdicts, and fails once a violation is planted in it.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::Context;
use common::bin_dir;
use harness::dirs::WorkDir;

/// Every kind but the full partition and the region failover, which `partitions.rs`
/// and the transfers suite run; seed 151 draws all nine in 75 s.
const FAULTS: &str = "kill-broker,kill-replicator,kill-voter,kill-postgres,pause-node,\
                      pause-leader-voter,partition-one-way,reset-peer,bandwidth";
const SEED: &str = "151";
const SECONDS: &str = "75";

fn chaos(dir: &Path, base_port: u16, args: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(bin_dir().join("chaos"))
        .arg("--dir")
        .arg(dir)
        .args(["--base-port", &base_port.to_string()])
        .args(args)
        .output()
        .context("run chaos")?;
    Ok(output)
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_same_seed_replays_the_same_schedule() -> anyhow::Result<()> {
    let dir = WorkDir::temp("chaos-plan")?;
    let plan = |seed: &str| -> anyhow::Result<String> {
        let args = ["run", "--dry-run", "--seed", seed, "--seconds", "60"];
        let output = chaos(dir.path(), 7500, &args)?;
        anyhow::ensure!(output.status.success(), "dry run: {}", text(&output));
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let first = plan("7")?;
    assert!(
        first.contains("seed 7"),
        "every run prints its seed: {first}"
    );
    assert!(
        first.lines().count() > 3,
        "a minute holds several faults: {first}"
    );
    assert_eq!(first, plan("7")?, "the same seed, the same schedule");
    assert_ne!(first, plan("8")?, "another seed, another schedule");

    let refused = chaos(dir.path(), 7500, &["run", "--dry-run", "--seconds", "5"])?;
    assert!(!refused.status.success(), "too short a run is refused");
    assert!(
        text(&refused).contains("no room for a fault"),
        "and says why: {}",
        text(&refused)
    );
    let unknown = chaos(
        dir.path(),
        7500,
        &["run", "--dry-run", "--faults", "meteor"],
    )?;
    assert!(
        !unknown.status.success(),
        "an unknown fault kind is refused"
    );
    assert!(
        text(&unknown).contains("kill-broker"),
        "and the known kinds are listed: {}",
        text(&unknown)
    );
    Ok(())
}

#[test]
fn a_seeded_schedule_of_process_and_link_faults_keeps_every_invariant() -> anyhow::Result<()> {
    let dir = WorkDir::temp("chaos-run")?;
    let base = harness::free_block(chaos::topology::port_span(3))?;
    let args = [
        "run",
        "--seed",
        SEED,
        "--seconds",
        SECONDS,
        "--faults",
        FAULTS,
    ];
    let output = chaos(dir.path(), base, &args)?;
    let printed = text(&output);
    println!("{printed}");
    assert!(output.status.success(), "the run passes");
    assert!(
        printed.contains(&format!("seed {SEED}")),
        "the run prints its seed"
    );

    let run_dir = dir.join(&format!("seed-{SEED}"));
    let schedule: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("schedule.json"))?)?;
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        run_dir.join("report/report.json"),
    )?)?;

    let checks = report["invariants"]["checks"]
        .as_array()
        .context("checks")?;
    assert_eq!(checks.len(), 9, "every invariant was checked: {checks:?}");
    for check in checks {
        assert_eq!(check["ok"], true, "invariant holds: {check}");
    }

    let steps = schedule["steps"].as_array().context("steps")?;
    let faults = report["faults"].as_array().context("faults")?;
    assert_eq!(faults.len(), steps.len(), "every scheduled fault ran");
    let kinds: BTreeSet<&str> = faults.iter().filter_map(|f| f["fault"].as_str()).collect();
    assert_eq!(kinds.len(), 9, "nine kinds of fault: {kinds:?}");
    for (fault, step) in faults.iter().zip(steps) {
        assert_eq!(fault["fault"], step["fault"], "in the schedule's order");
        let injected = fault["injected_at_ms"].as_u64().context("injected")?;
        let at = step["at_ms"].as_u64().context("at")?;
        assert!(injected >= at, "no fault before its time: {fault}");
        // At least the quiet end (5 s) is left after each heal. A region that lost
        // its lease (a slow link delays renewals) first waits out its fence.
        assert!(
            fault["recovery_ms"].as_u64().is_some(),
            "writes to the affected region again before the run ended: {fault}"
        );
    }
    let acknowledged = report["transfers"]["acknowledged"].as_u64().unwrap_or(0);
    assert!(acknowledged >= 300, "{acknowledged} transfers acknowledged");

    the_checker_agrees_and_fails_on_planted_violations(&run_dir.join("report"))
}

/// `ledger-check` on the run's evidence: every invariant valid, as the drill said; then
/// a cent added to one region's balance, and an acknowledged transfer nobody booked
/// added to the history, each make it exit 1 naming the invariant they break.
fn the_checker_agrees_and_fails_on_planted_violations(report: &Path) -> anyhow::Result<()> {
    let check = |dir: &Path| -> anyhow::Result<(Option<i32>, String)> {
        let output = Command::new(bin_dir().join("ledger-check"))
            .arg("--dir")
            .arg(dir)
            .output()
            .context("run ledger-check")?;
        Ok((output.status.code(), text(&output)))
    };
    let (code, printed) = check(report)?;
    assert_eq!(code, Some(0), "the evidence passes: {printed}");
    assert_eq!(printed.matches("valid  ").count(), 9, "{printed}");
    assert!(printed.contains("requests"), "{printed}");

    let planted = report.with_file_name("planted-balance");
    copy_evidence(report, &planted)?;
    let region = planted.join("regions/eu-west.json");
    let mut snapshot: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&region)?)?;
    let balance = snapshot["accounts"][0]["balance"]
        .as_str()
        .context("a balance")?
        .parse::<rust_decimal::Decimal>()?;
    snapshot["accounts"][0]["balance"] = (balance + rust_decimal::Decimal::new(1, 2))
        .to_string()
        .into();
    std::fs::write(&region, serde_json::to_vec(&snapshot)?)?;
    let (code, printed) = check(&planted)?;
    assert_eq!(code, Some(1), "a planted cent fails: {printed}");
    assert!(printed.contains("INVALID money conserved"), "{printed}");
    assert!(printed.contains("INVALID convergence"), "{printed}");

    let planted = report.with_file_name("planted-ack");
    copy_evidence(report, &planted)?;
    let history = planted.join("history.jsonl");
    let mut lines = std::fs::read_to_string(&history)?;
    let first: serde_json::Value =
        serde_json::from_str(lines.lines().next().context("a history line")?)?;
    let mut forged = first.clone();
    forged["key"] = "never-sent".into();
    forged["op"] = "transfer".into();
    forged["outcome"] = "ok".into();
    forged["status"] = 201.into();
    lines.push_str(&format!("{forged}\n"));
    std::fs::write(&history, lines)?;
    let (code, printed) = check(&planted)?;
    assert_eq!(code, Some(1), "a planted acknowledgement fails: {printed}");
    assert!(
        printed.contains("INVALID no acknowledged write lost"),
        "{printed}"
    );
    Ok(())
}

fn copy_evidence(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to.join("regions"))?;
    for file in ["history.jsonl", "ownership-history.json"] {
        std::fs::copy(from.join(file), to.join(file)).with_context(|| format!("copy {file}"))?;
    }
    for entry in std::fs::read_dir(from.join("regions"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join("regions").join(entry.file_name()))?;
    }
    Ok(())
}

/// A node restarted with its clocks 1% slow (libfaketime: monotonic clock and sleeps
/// included), the configured maximum drift, believes its lease lasts longer than it
/// does; the survivors' fence covers it. Then a long link (100 ± 20 ms each way on
/// every link of one region). Under the mixed workload (writes, opens, `min_seq` and
/// strong reads) every invariant holds, reads included, each region serves again after
/// its heal, and the report's timeline plot shows both faults as bands; a read planted
/// in the evidence with an older seq than its `min_seq` fails `ledger-check`.
#[test]
fn a_slow_clock_and_a_long_link_keep_every_invariant() -> anyhow::Result<()> {
    let dir = WorkDir::temp("chaos-drift")?;
    let base = harness::free_block(chaos::topology::port_span(3))?;
    // Seed 2 draws clock-drift on us-east, then latency on ap-south, in 25 s.
    let args = [
        "run",
        "--seed",
        "2",
        "--seconds",
        "25",
        "--faults",
        "clock-drift,latency",
        "--workload",
        "mixed",
    ];
    let output = chaos(dir.path(), base, &args)?;
    let printed = text(&output);
    println!("{printed}");
    assert!(output.status.success(), "the run passes");
    assert!(
        printed.contains("node runs its clocks at x0.99") && printed.contains("at x1"),
        "the node ran drifted, then on real time"
    );
    assert!(
        printed.contains("delay each packet 100 ms ± 20 ms"),
        "the long link was made"
    );
    let report_dir = dir.join("seed-2/report");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json"))?)?;
    let faults = report["faults"].as_array().context("faults")?;
    let kinds: BTreeSet<&str> = faults.iter().filter_map(|f| f["fault"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["clock-drift", "latency"]),
        "{faults:?}"
    );
    for fault in faults {
        assert!(
            fault["recovery_ms"].as_u64().is_some(),
            "the faulted region took writes again: {fault}"
        );
    }
    let checks = report["invariants"]["checks"]
        .as_array()
        .context("checks")?;
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:?}");
    let reads = checks
        .iter()
        .find(|c| c["name"] == "reads keep their promises")
        .context("the read check")?;
    let summary = reads["summary"].as_str().unwrap_or_default();
    assert!(
        !summary.starts_with("0 reads") && !summary.contains(" 0 with min_seq"),
        "reads with min_seq were checked: {summary}"
    );
    a_read_older_than_its_min_seq_fails_the_checker(&report_dir)?;
    let html = std::fs::read_to_string(report_dir.join("report.html"))?;
    assert!(html.contains("<svg"), "the report has its timeline plot");
    for band in ["clock-drift us-east", "latency ap-south"] {
        assert!(html.contains(band), "the plot shows the {band} band");
    }
    // In a real browser: a page that is not blank, with the fault bands drawn.
    let picture =
        common::browser::screenshot(&report_dir.join("report.html"), &dir.join("report.png"))?;
    println!("report screenshot: {picture:?}");
    assert!(
        picture.not_white > (picture.width * picture.height / 50) as usize,
        "the rendered report is nearly blank: {picture:?}"
    );
    assert!(
        picture.band > 2_000,
        "the fault bands are visible: {picture:?}"
    );
    Ok(())
}

/// The run's evidence with one answered `min_seq` read changed to have seen one seq
/// less than it asked for: `ledger-check` exits 1 naming the read check.
fn a_read_older_than_its_min_seq_fails_the_checker(report: &Path) -> anyhow::Result<()> {
    let planted = report.with_file_name("planted-read");
    copy_evidence(report, &planted)?;
    let history = planted.join("history.jsonl");
    let mut planted_one = false;
    let mut lines = String::new();
    for line in std::fs::read_to_string(&history)?.lines() {
        let mut operation: serde_json::Value = serde_json::from_str(line)?;
        let min_seq = operation["min_seq"].as_i64();
        if !planted_one && operation["op"] == "read" && operation["status"] == 200 {
            if let Some(min_seq) = min_seq {
                operation["seq"] = (min_seq - 1).into();
                planted_one = true;
            }
        }
        lines.push_str(&format!("{operation}\n"));
    }
    assert!(planted_one, "the run answered a min_seq read");
    std::fs::write(&history, lines)?;
    let output = Command::new(bin_dir().join("ledger-check"))
        .arg("--dir")
        .arg(&planted)
        .output()
        .context("run ledger-check")?;
    let printed = text(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a stale read fails: {printed}"
    );
    assert!(
        printed.contains("INVALID reads keep their promises"),
        "{printed}"
    );
    Ok(())
}
