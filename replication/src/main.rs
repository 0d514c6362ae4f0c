//! `ledger-replicator`: the outbox relay and the cross-region appliers of one region.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use replication::ReplicatorConfig;
use service_kit::telemetry::{self, LogFormat};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Outbox relay and cross-region appliers of one region"
)]
struct Cli {
    /// Address to serve /metrics, /healthz and /readyz on.
    #[arg(
        long,
        env = "LEDGER_REPLICATOR_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    listen: SocketAddr,

    /// Log format on stderr.
    #[arg(long, env = "LEDGER_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,

    #[command(flatten)]
    replicator: ReplicatorConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let region = cli.replicator.region.clone();
    let _telemetry = telemetry::init_service(
        cli.log_format,
        "ledger-replicator",
        &[("ledger.region", &region)],
    );
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("bind metrics listener on {}", cli.listen))?;
    let shutdown = CancellationToken::new();
    service_kit::supervisor::cancel_on_signals(shutdown.clone())
        .context("install signal handlers")?;
    replication::run(listener, cli.replicator, shutdown)
        .await
        .context("run replicator")
}
