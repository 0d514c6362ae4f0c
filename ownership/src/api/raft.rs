//! Raft RPC handlers: the receiving end of [`crate::network`].

use axum::extract::State;
use axum::Json;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::AppState;
use crate::types::{NodeId, TypeConfig};

type Answer<T, E = openraft::error::Infallible> = Json<Result<T, RaftError<NodeId, E>>>;

pub async fn append(
    State(state): State<AppState>,
    Json(request): Json<AppendEntriesRequest<TypeConfig>>,
) -> Answer<AppendEntriesResponse<NodeId>> {
    Json(state.raft.append_entries(request).await)
}

pub async fn vote(
    State(state): State<AppState>,
    Json(request): Json<VoteRequest<NodeId>>,
) -> Answer<VoteResponse<NodeId>> {
    Json(state.raft.vote(request).await)
}

pub async fn snapshot(
    State(state): State<AppState>,
    Json(request): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Answer<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
    Json(state.raft.install_snapshot(request).await)
}
