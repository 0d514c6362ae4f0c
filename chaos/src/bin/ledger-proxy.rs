//! `ledger-proxy`: the TCP links from one region to the others (see `chaos::proxy`).

use std::net::SocketAddr;

use anyhow::Context;
use chaos::proxy::{self, LinkSpec};
use clap::Parser;
use service_kit::telemetry::{self, LogFormat};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(about = "Per-pair TCP proxies with cut and latency toxics")]
struct Cli {
    /// `name=listen->target`, repeated (none in a one-region deployment: the proxy
    /// then only answers its admin API, which lists no links).
    #[arg(long = "link")]
    links: Vec<LinkSpec>,
    /// Admin API address (`GET /links`, `POST /links/{name}`).
    #[arg(long, default_value = "127.0.0.1:7099")]
    admin: SocketAddr,
    #[arg(long, env = "LEDGER_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let admin = tokio::net::TcpListener::bind(cli.admin)
        .await
        .with_context(|| format!("bind admin listener on {}", cli.admin))?;
    let shutdown = CancellationToken::new();
    service_kit::supervisor::cancel_on_signals(shutdown.clone())
        .context("install signal handlers")?;
    proxy::run(cli.links, admin, shutdown)
        .await
        .context("run proxies")
}
