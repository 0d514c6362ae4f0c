//! `ownership-server`: one voter of the ownership service. Parses flags, sets up
//! logging and signals, runs the voter.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use ownership::VoterConfig;
use service_kit::telemetry::{self, LogFormat};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(version, about = "Ownership service voter (openraft)")]
struct Cli {
    /// Address to serve the Raft RPCs and the client API on.
    #[arg(long, env = "OWNERSHIP_LISTEN", default_value = "127.0.0.1:7000")]
    listen: SocketAddr,

    /// Log format on stderr.
    #[arg(long, env = "LEDGER_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,

    #[command(flatten)]
    voter: VoterConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("bind listener on {}", cli.listen))?;
    let shutdown = CancellationToken::new();
    service_kit::cancel_on_signals(shutdown.clone()).context("install signal handlers")?;
    ownership::run(listener, cli.voter, shutdown)
        .await
        .context("run ownership voter")
}
