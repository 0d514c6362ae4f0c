//! `ledger-delay`: holds the packets queued to one netfilter queue for a latency with
//! jitter (see `chaos::delay`); `ledger-local delay` starts it in a region's namespace.

use std::time::Duration;

use anyhow::Context;
use chaos::delay::{self, DelayLine};
use clap::Parser;
use service_kit::telemetry::{self, LogFormat};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(about = "Delay the packets of a netfilter queue (a long link without netem)")]
struct Cli {
    /// The netfilter queue to bind (in this process's network namespace).
    #[arg(long, default_value_t = delay::QUEUE)]
    queue: u16,
    /// Delay of each packet, each way.
    #[arg(long)]
    latency_ms: u64,
    /// Each packet's delay varies by up to this much either way.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Seed of the jitter draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, env = "LEDGER_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let line = DelayLine::new(
        Duration::from_millis(cli.latency_ms),
        Duration::from_millis(cli.jitter_ms),
        cli.seed,
    )?;
    let shutdown = CancellationToken::new();
    service_kit::supervisor::cancel_on_signals(shutdown.clone())
        .context("install signal handlers")?;
    let queue = cli.queue;
    let counts = tokio::task::spawn_blocking(move || delay::run(line, queue, &shutdown))
        .await
        .context("join the delay loop")?
        .context("delay packets")?;
    tracing::info!(
        delayed = counts.delayed,
        most_held = counts.most_held,
        "delay loop stopped; every held packet let go"
    );
    Ok(())
}
