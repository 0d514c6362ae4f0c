//! `ledger-check --dir D`: the invariants' verdicts on a run's evidence on disk (what
//! `failover drill` and `chaos run` write to their report directory). Exit code 0 when
//! every invariant holds, 1 when one does not, 2 when the evidence cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ledger_checker::evidence::Evidence;

#[derive(Parser)]
#[command(
    about = "Check the ledger's invariants on a run's evidence (history.jsonl, ownership-history.json, regions/*.json)"
)]
struct Args {
    /// The run's report directory.
    #[arg(long, env = "LEDGER_CHECK_DIR")]
    dir: PathBuf,
    /// Print the verdicts as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("ledger-check: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let evidence = Evidence::read(&args.dir).context("read the evidence")?;
    let report = evidence.check();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encode the verdicts")?
        );
    } else {
        println!(
            "{} requests, {} ownership changes, regions {}",
            evidence.operations.len(),
            evidence.ownership.len(),
            report.regions.join(", ")
        );
        for check in &report.checks {
            let verdict = format!("{:<7}", check.verdict_word());
            println!("{verdict} {}: {}", check.name, check.summary);
            for example in &check.examples {
                println!("          {example}");
            }
        }
    }
    Ok(report.ok())
}
