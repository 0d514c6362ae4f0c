//! Health, readiness, this voter's view of the cluster, and its metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger_wire::ownership::ClusterStatus;
use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use super::{ApiError, AppState};
use crate::log_store::LogStore;
use crate::metrics::Metrics;
use crate::types::Raft;
use crate::OwnershipError;

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready once this voter knows a leader (so it can serve or forward requests).
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.raft.metrics().borrow().current_leader {
        Some(_) => (StatusCode::OK, "ready").into_response(),
        None => ApiError::unavailable("no_leader", "no leader known yet").into_response(),
    }
}

pub async fn metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}

/// `GET /v1/cluster`: this voter's view of Raft (no quorum check).
pub async fn cluster(State(state): State<AppState>) -> Json<ClusterStatus> {
    let metrics = state.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voter_ids: Vec<u64> = membership.voter_ids().collect();
    let mut voters = std::collections::BTreeMap::new();
    let mut learners = std::collections::BTreeMap::new();
    for (id, node) in membership.nodes() {
        if voter_ids.contains(id) {
            voters.insert(*id, node.addr.clone());
        } else {
            learners.insert(*id, node.addr.clone());
        }
    }
    Json(ClusterStatus {
        node_id: metrics.id,
        state: format!("{:?}", metrics.state),
        current_leader: metrics.current_leader,
        term: metrics.current_term,
        last_log_index: metrics.last_log_index,
        last_applied: metrics.last_applied.map(|l| l.index),
        snapshot_index: metrics.snapshot.map(|l| l.index),
        purged_index: metrics.purged.map(|l| l.index),
        voters,
        learners,
    })
}

fn as_gauge(value: Option<u64>) -> i64 {
    value.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// Mirrors openraft's metrics into Prometheus gauges whenever they change.
pub async fn publish_metrics(
    raft: Raft,
    metrics: Metrics,
    log_store: LogStore,
    shutdown: CancellationToken,
) -> Result<(), OwnershipError> {
    let mut watch = raft.metrics();
    loop {
        {
            let m = watch.borrow_and_update();
            metrics
                .is_leader
                .set(i64::from(m.state == ServerState::Leader));
            metrics.current_leader.set(as_gauge(m.current_leader));
            metrics.term.set(as_gauge(Some(m.current_term)));
            metrics.last_log_index.set(as_gauge(m.last_log_index));
            metrics
                .applied_index
                .set(as_gauge(m.last_applied.map(|l| l.index)));
            metrics
                .snapshot_index
                .set(as_gauge(m.snapshot.map(|l| l.index)));
            metrics
                .commit_index
                .set(as_gauge(log_store.committed_index()));
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            changed = watch.changed() => if changed.is_err() { return Ok(()) },
        }
    }
}
