//! Replication between regions (ARCHITECTURE.md, "Replication").
//!
//! - [`relay`]: this region's outbox -> this region's topic (one active relay per
//!   region, PostgreSQL advisory lock, LISTEN/NOTIFY with polling as fallback,
//!   idempotent producer, rows marked published only after the broker acknowledged).
//! - [`applier`]: each remote region's topic -> this region's replica rows, one
//!   transaction per batch holding the events and the new positions; dead letters to
//!   this region's DLQ topic.
//! - [`housekeeping`]: backlog and gap gauges, cleanup of published rows.
//!
//! [`run`] runs the parts a configuration asks for under one supervisor and serves
//! `/metrics`, `/healthz` and `/readyz` on the given listener. The `ledger-replicator`
//! binary wraps it; the region node can embed it the same way.

pub mod applier;
pub mod config;
pub mod db;
pub mod dlq;
pub mod dlq_admin;
pub mod envelope;
pub mod error;
pub mod housekeeping;
pub mod kafka;
pub mod lag;
pub mod metrics;
pub mod producer;
pub mod relay;
mod status;

use std::sync::Arc;

use service_kit::supervisor::Supervisor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{RemoteRegion, ReplicatorConfig};
pub use error::ReplicationError;
pub use metrics::Metrics;

/// Wait before a new session after one failed.
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs `session` until it ends cleanly or `shutdown` is cancelled, starting it again
/// (after a pause, with a log line) whenever it fails: the relay's and the appliers'
/// way of riding out an unreachable database or broker.
async fn restart_sessions<F, Fut>(what: &str, shutdown: &CancellationToken, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ReplicationError>>,
{
    while !shutdown.is_cancelled() {
        match session().await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "{what} session ended; starting a new one");
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }
}

/// Runs the relay (if configured), one applier per remote region and housekeeping until
/// `shutdown` is cancelled, serving metrics and health on `listener`.
pub async fn run(
    listener: TcpListener,
    config: ReplicatorConfig,
    shutdown: CancellationToken,
) -> Result<(), ReplicationError> {
    config.validate()?;
    let config = Arc::new(config);
    let metrics = Metrics::new(&config.region);
    let mut supervisor = Supervisor::new(shutdown.clone());
    let address = listener.local_addr().map_err(ReplicationError::Serve)?;
    supervisor.spawn(
        "http",
        status::serve(listener, config.clone(), metrics.clone(), shutdown.clone()),
    );
    if config.relay {
        supervisor.spawn(
            "relay",
            relay::run(config.clone(), metrics.clone(), shutdown.clone()),
        );
    }
    for origin in &config.apply_from {
        metrics.start_origin(&origin.name);
        supervisor.spawn(
            "applier",
            applier::run(
                config.clone(),
                origin.clone(),
                metrics.clone(),
                shutdown.clone(),
            ),
        );
    }
    supervisor.spawn(
        "housekeeping",
        housekeeping::run(config.clone(), metrics.clone(), shutdown.clone()),
    );
    tracing::info!(
        region = %config.region,
        relay = config.relay,
        apply_from = ?config.apply_from.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        %address,
        "replicator running"
    );
    supervisor.run(config.shutdown_grace()).await?;
    tracing::info!("replicator stopped");
    Ok(())
}
