//! Ours against the usual alternative, one PostgreSQL primary with a streaming standby
//! (asynchronous; `--sync` for synchronous), under the same simulated geography and the same clients-in-places
//! workload, each losing the same region halfway (`chaos::active_passive`).
//!
//!   cargo build --release --workspace --bins
//!   target/release/ledger-local --data-dir /tmp/geo up --geo
//!   target/release/active-passive-bench --data-dir /tmp/geo --seconds 30 --rate 10
//!   target/release/ledger-local --data-dir /tmp/geo down
//!
//! The alternative runs first (its servers sit in the deployment's first two regions'
//! namespaces on ports of their own), then ours, which kills the deployment's first
//! region and promotes it away: restart it or bring the deployment down after.

use std::path::PathBuf;

use anyhow::Context;
use chaos::active_passive::Replication;
use chaos::Deployment;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Ours vs a primary with a streaming standby, same geography")]
struct Cli {
    /// The running deployment's data dir (`ledger-local up --geo`).
    #[arg(long, env = "LEDGER_LOCAL_DIR", default_value = ".local")]
    data_dir: PathBuf,
    /// Seconds of traffic for each side; the loss comes halfway.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Requests per second per location.
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// Our controller promotes with `--force`: at once, the fencing delay alone
    /// guarding, instead of waiting for the lost region's lease to run out first.
    #[arg(long)]
    force: bool,
    /// The standby is synchronous: every commit waits for its flush (no acknowledged
    /// write lost, one round trip to the standby on every write).
    #[arg(long)]
    sync: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.seconds >= 4,
        "--seconds must leave time before and after the loss"
    );
    let mut deployment = Deployment::load(&cli.data_dir)?
        .context("nothing running; run `ledger-local up --geo` first")?;
    if deployment.bin_dir.as_os_str().is_empty() {
        deployment.bin_dir = std::env::current_exe()
            .context("locate this binary")?
            .parent()
            .context("this binary's directory")?
            .to_owned();
    }
    let replication = if cli.sync {
        Replication::Synchronous
    } else {
        Replication::Asynchronous
    };
    println!(
        "active-passive ({}): primary in {}, standby in {}; a client next to every region, {} requests/s each for {} s (half reads of any account, half deposits to the location's own), the primary's region lost halfway",
        replication.describe(),
        deployment.regions[0].name,
        deployment.regions[1].name,
        cli.rate,
        cli.seconds
    );
    let alternative =
        chaos::active_passive::run_alternative(&deployment, cli.seconds, cli.rate, replication)
            .await?;
    println!(
        "ours: the same clients through ledger-client, each location writing the accounts homed in its region; {} lost halfway",
        deployment.regions[0].name
    );
    let promote = if cli.force {
        chaos::active_passive::OurPromote::Force
    } else {
        chaos::active_passive::OurPromote::WaitForLease
    };
    let ours = chaos::active_passive::run_ours(&deployment, cli.seconds, cli.rate, promote).await?;
    chaos::active_passive::print_comparison(&alternative, &ours);
    Ok(())
}
