//! `chaos`: seeded fault schedules against a local deployment in network namespaces,
//! run under the failover tool's drill workload and audited (see `chaos::run`).

use std::path::PathBuf;

use anyhow::Context;
use chaos::run::{self, RunOptions, RunWorkload};
use chaos::schedule::{FaultKind, ALL_KINDS};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Seeded faults on every process and link of a local multi-region ledger")]
struct Cli {
    /// Where runs keep their deployment, schedule, report and logs.
    #[arg(long, default_value = "chaos-runs", global = true)]
    dir: PathBuf,
    /// Base port of the deployment (it runs in network namespaces named after it).
    #[arg(long, default_value_t = 7500, global = true)]
    base_port: u16,
    #[command(subcommand)]
    command: Action,
}

#[derive(Debug, clap::Args)]
struct Shared {
    /// Fault kinds to draw from, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<FaultKind>,
    /// Workload writes per second.
    #[arg(long, default_value_t = 40)]
    rate: u32,
    /// What the clients send.
    #[arg(long, value_enum, default_value_t = RunWorkload::Bank)]
    workload: RunWorkload,
    /// Ask for ack=replicated on every write.
    #[arg(long)]
    ack_replicated: bool,
    #[arg(long, default_value_t = 3)]
    regions: usize,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// One run: a schedule drawn from the seed, the workload, the verdicts.
    Run {
        /// The schedule's seed (default: random; every run prints its seed).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Print the schedule and stop (nothing is started).
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        shared: Shared,
    },
    /// Every fault kind alone, with seeds 1..=K: a table of verdicts and recovery
    /// times; exits non-zero on any invalid verdict.
    Matrix {
        #[arg(long, default_value_t = 5)]
        seeds: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[command(flatten)]
        shared: Shared,
    },
}

fn options(
    cli: &Cli,
    shared: &Shared,
    seed: u64,
    seconds: u64,
    dir: PathBuf,
) -> anyhow::Result<RunOptions> {
    Ok(RunOptions {
        seed,
        kinds: kinds(shared),
        seconds,
        rate: shared.rate,
        workload: shared.workload,
        ack_replicated: shared.ack_replicated,
        regions: shared.regions,
        base_port: cli.base_port,
        dir,
        bin_dir: std::env::current_exe()
            .context("locate chaos")?
            .parent()
            .context("binary directory")?
            .to_owned(),
    })
}

fn kinds(shared: &Shared) -> Vec<FaultKind> {
    if shared.faults.is_empty() {
        ALL_KINDS.to_vec()
    } else {
        shared.faults.clone()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Action::Run {
            seed,
            seconds,
            dry_run,
            shared,
        } => {
            let seed = seed.unwrap_or_else(rand::random);
            let dir = cli.dir.join(format!("seed-{seed}"));
            let options = options(&cli, shared, seed, *seconds, dir)?;
            if *dry_run {
                run::plan(&options)?;
                return Ok(());
            }
            let outcome = run::run(&options).await?;
            run::print_outcome(&outcome);
            anyhow::ensure!(outcome.passed(), "seed {seed}: the run failed");
        }
        Action::Matrix {
            seeds,
            seconds,
            shared,
        } => {
            let base = options(&cli, shared, 0, *seconds, cli.dir.join("matrix"))?;
            let rows = run::matrix(&base, &kinds(shared), *seeds).await;
            let table = run::matrix_table(&rows);
            println!("\n{table}");
            std::fs::write(cli.dir.join("matrix.txt"), &table).context("write matrix.txt")?;
            let failed: Vec<String> = rows
                .iter()
                .filter(|r| !r.failed_seeds.is_empty())
                .map(|r| format!("{} (seeds {:?})", r.kind, r.failed_seeds))
                .collect();
            anyhow::ensure!(failed.is_empty(), "matrix failed: {}", failed.join(", "));
        }
    }
    Ok(())
}
