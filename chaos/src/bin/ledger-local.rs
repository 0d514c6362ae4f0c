//! `ledger-local`: start, inspect and stop a ledger deployment on this machine.

use std::path::PathBuf;

use anyhow::Context;
use chaos::{Deployment, DEFAULT_BASE_PORT};
use clap::{Parser, Subcommand};
use harness::process::pid_alive;

#[derive(Debug, Parser)]
#[command(about = "Run a ledger deployment on loopback")]
struct Cli {
    /// Where regions keep their data and the deployment's state file.
    #[arg(
        long,
        env = "LEDGER_LOCAL_DIR",
        default_value = ".local",
        global = true
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Start the regions and wait until every node is ready.
    Up {
        #[arg(long, default_value_t = 1)]
        regions: usize,
        /// Region i uses ports base+10i (PostgreSQL) and base+10i+1 (API).
        #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
        base_port: u16,
    },
    /// Stop every process of the deployment (data is kept).
    Down,
    /// Show the regions, their processes and endpoints.
    Status,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Action::Up { regions, base_port } => {
            let bin_dir = std::env::current_exe()
                .context("locate ledger-local")?
                .parent()
                .context("binary directory")?
                .to_owned();
            let deployment = Deployment::up(&cli.data_dir, regions, base_port, &bin_dir).await?;
            print_status(&deployment);
        }
        Action::Down => match Deployment::down(&cli.data_dir)? {
            Some(d) => println!(
                "stopped {} region(s); data kept in {}",
                d.regions.len(),
                d.data_dir.display()
            ),
            None => println!("nothing running in {}", cli.data_dir.display()),
        },
        Action::Status => match Deployment::load(&cli.data_dir)? {
            Some(deployment) => print_status(&deployment),
            None => println!("nothing running in {}", cli.data_dir.display()),
        },
    }
    Ok(())
}

fn print_status(deployment: &Deployment) {
    println!(
        "{:<10} {:<24} {:<40} {:>8} {:>8}",
        "region", "api", "database", "node", "postgres"
    );
    for r in &deployment.regions {
        let state = |pid: u32| {
            if pid_alive(pid) {
                pid.to_string()
            } else {
                format!("{pid}✗")
            }
        };
        println!(
            "{:<10} {:<24} {:<40} {:>8} {:>8}",
            r.name,
            r.api_url(),
            r.database_url(),
            state(r.node_pid),
            state(r.pg_pid)
        );
    }
    println!("logs: <region dir>/node.log and postgres.log; stop with `ledger-local down`");
}
