//! The ownership service: one openraft voter per region, together keeping the map of
//! slots and accounts to home regions, the epochs, the region leases and the history
//! of every ownership change.
//!
//! [`run`] is a whole voter (storage, Raft, HTTP API) on a listener until the
//! shutdown token is cancelled; the `ownership-server` binary wraps it with flags,
//! logging and signals. Regions and tools talk to the cluster through the
//! `ownership-client` crate, which links neither openraft nor redb.

pub mod api;
pub mod config;
pub mod error;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod spread;
pub mod state;
pub mod state_machine;
pub mod types;

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::error::{InitializeError, RaftError};
use openraft::BasicNode;
use service_kit::Supervisor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::VoterConfig;
pub use error::OwnershipError;

use crate::log_store::LogStore;
use crate::metrics::Metrics;
use crate::network::HttpNetwork;
use crate::state_machine::StateMachineStore;
use crate::types::Raft;

/// Runs one voter on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    config: VoterConfig,
    shutdown: CancellationToken,
) -> Result<(), OwnershipError> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(OwnershipError::io(format!(
        "create {}",
        config.data_dir.display()
    )))?;
    let local = listener
        .local_addr()
        .map_err(OwnershipError::io("read listen address"))?;
    let metrics = Metrics::new(config.node_id);
    let log_store = LogStore::open(&config.data_dir)?;
    let (state_machine, view) = StateMachineStore::open(&config.data_dir, metrics.clone())?;
    let raft = Raft::new(
        config.node_id,
        Arc::new(config.raft_config()?),
        HttpNetwork::new(config.node_id, &config.internal_secret),
        log_store.clone(),
        state_machine,
    )
    .await
    .map_err(|e| OwnershipError::Raft(e.to_string()))?;

    let state = api::AppState::new(
        raft.clone(),
        view,
        metrics.clone(),
        log_store.clone(),
        &config,
    );
    let app = api::router(state);
    let mut supervisor = Supervisor::new(shutdown.clone());
    let stop = shutdown.clone();
    supervisor.spawn("http", async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .map_err(OwnershipError::io("serve HTTP"))
    });
    supervisor.spawn(
        "raft-metrics",
        api::status::publish_metrics(raft.clone(), metrics, log_store, shutdown.clone()),
    );
    tracing::info!(node_id = config.node_id, address = %local, "ownership voter serving");

    // Serving first: the other voters must reach us for the first election.
    bootstrap(&raft, &config).await?;
    let result = supervisor.run(config.shutdown_grace()).await;
    if let Err(error) = raft.shutdown().await {
        tracing::warn!(%error, "raft did not shut down cleanly");
    }
    tracing::info!("ownership voter stopped");
    Ok(result?)
}

/// Makes a brand-new cluster out of the bootstrap voters. Every voter may call it
/// with the same list; a voter whose log already holds a cluster refuses, which is
/// what makes restarts with the same flags harmless.
async fn bootstrap(raft: &Raft, config: &VoterConfig) -> Result<(), OwnershipError> {
    if config.bootstrap_voters.is_empty() {
        return Ok(());
    }
    let members: BTreeMap<u64, BasicNode> = config
        .bootstrap_voters
        .iter()
        .map(|v| (v.id, BasicNode::new(v.addr.clone())))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(
                voters = config.bootstrap_voters.len(),
                "new cluster initialised"
            );
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            tracing::info!("data dir already holds a cluster; bootstrap list ignored");
            Ok(())
        }
        Err(e) => Err(OwnershipError::Raft(e.to_string())),
    }
}
