//! `active-passive-client`: one location's client of the active-passive comparison's
//! database (`chaos::active_passive::client`), started in a region's namespace by
//! `active-passive-bench`. Samples as JSON lines on stdout.

use std::time::Duration;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "One location's client of a primary with a streaming standby")]
struct Cli {
    /// `region=host:port` of the primary, then of the standby.
    #[arg(long, value_delimiter = ',', required = true)]
    servers: Vec<String>,
    /// Account ids read (any of them).
    #[arg(long, value_delimiter = ',', required = true)]
    reads: Vec<i64>,
    /// Account ids written (this location's own).
    #[arg(long, value_delimiter = ',')]
    writes: Vec<i64>,
    #[arg(long)]
    seconds: u64,
    /// Requests per second.
    #[arg(long)]
    rate: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    chaos::active_passive::client::run_client(
        &cli.servers,
        &cli.reads,
        &cli.writes,
        Duration::from_secs(cli.seconds),
        cli.rate,
    )
    .await
}
