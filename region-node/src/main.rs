//! `region-node`: parses configuration, sets up logging and signals, runs the node.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use region_node::telemetry::{self, LogFormat};
use region_node::NodeConfig;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(version, about = "Regional ledger server")]
struct Cli {
    /// Address to serve the API on.
    #[arg(long, env = "LEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Log format on stderr.
    #[arg(long, env = "LEDGER_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,

    #[command(flatten)]
    node: NodeConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let region = cli.node.region.clone();
    let _telemetry =
        telemetry::init_service(cli.log_format, "region-node", &[("ledger.region", &region)]);
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("bind API listener on {}", cli.listen))?;
    let shutdown = CancellationToken::new();
    region_node::supervisor::cancel_on_signals(shutdown.clone())
        .context("install signal handlers")?;
    region_node::run(listener, cli.node, shutdown)
        .await
        .context("run region node")
}
