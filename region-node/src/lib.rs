//! The regional ledger server.
//!
//! [`run`] is the whole node: it migrates the region's database, records the slot
//! leases the region holds, and serves the public API on the given listener until the
//! shutdown token is cancelled, then drains in-flight requests for the grace period.
//! Tests and tools drive it in-process; the `region-node` binary wraps it with config,
//! logging and signals.

pub mod config;
pub mod db;
pub mod http;
pub mod metrics;
pub mod outbox_notify;
pub mod ownership;
pub mod store;

pub use service_kit::{supervisor, telemetry};

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::NodeConfig;
pub use store::POST_ENTRY_SQL;

use crate::ownership::Ownership;
use crate::store::LedgerStore;
use crate::supervisor::Supervisor;

/// How long the node keeps retrying its database at start-up before giving up.
const DATABASE_START_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("database: {}", store::describe(.0))]
    Database(#[source] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(String),
    #[error("schema migration failed: {0}")]
    Migration(String),
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Supervisor(#[from] supervisor::SupervisorError),
}

/// Runs a region node on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    config: NodeConfig,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    config.validate()?;
    migrate_when_reachable(&config, &shutdown).await?;
    let pool = db::pool(&config)?;
    let ownership = Arc::new(Ownership::static_all(
        config.region.clone(),
        config.slot_count,
        config.static_epoch,
    ));
    db::record_leases(&pool, config.slot_count, config.static_epoch, None).await?;

    let metrics = metrics::Metrics::new(&config.region);
    let outbox_written = Arc::new(tokio::sync::Notify::new());
    let app = http::router(
        LedgerStore::new(pool.clone(), outbox_written.clone()),
        ownership,
        metrics,
        shutdown.clone(),
        config.max_body_bytes,
    );
    let address = listener.local_addr().map_err(NodeError::Serve)?;
    tracing::info!(region = %config.region, %address, "region node serving");

    let mut supervisor = Supervisor::new(shutdown.clone());
    let stop = shutdown.clone();
    supervisor.spawn("http", async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .map_err(NodeError::Serve)
    });
    supervisor.spawn(
        "outbox-notify",
        outbox_notify::run(
            pool,
            outbox_written,
            Duration::from_millis(config.outbox_notify_interval_ms),
            shutdown.clone(),
        ),
    );
    supervisor.run(config.shutdown_grace()).await?;
    tracing::info!("region node stopped");
    Ok(())
}

/// Migrates the schema, retrying while the database is still starting.
async fn migrate_when_reachable(
    config: &NodeConfig,
    shutdown: &CancellationToken,
) -> Result<(), NodeError> {
    let deadline = tokio::time::Instant::now() + DATABASE_START_DEADLINE;
    loop {
        match db::migrate(config).await {
            Ok(()) => return Ok(()),
            Err(NodeError::Database(e)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "database not reachable yet, retrying");
            }
            Err(other) => return Err(other),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(NodeError::Config("shut down while starting".into())),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
