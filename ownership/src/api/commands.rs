//! Commands that change the map (through a Raft commit on the leader) and changes
//! of the voter set.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger_wire::ownership::{CommandRequest, Outcome, RejectCode};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use super::forward::{self, Replayable};
use super::{ApiError, AppState};
use crate::state::Proposal;
use crate::types::NodeId;

/// `POST /v1/commands`: a [`CommandRequest`] in, an [`Outcome`] out (200 applied,
/// 409 refused by the state machine, 422 invalid argument, 503 not committed).
pub async fn command(State(state): State<AppState>, replayable: Replayable) -> Response {
    let request: CommandRequest = match serde_json::from_slice(&replayable.body) {
        Ok(request) => request,
        Err(e) => return ApiError::bad_request(format!("invalid command: {e}")).into_response(),
    };
    if request.actor.trim().is_empty() {
        return ApiError::bad_request("actor must name who asks (it goes into the history)")
            .into_response();
    }
    let proposal = Proposal {
        // The leader stamps the time; a follower forwards the request unstamped.
        at_ms: now_ms(),
        actor: request.actor,
        reason: request.reason,
        command: request.command,
    };
    let written =
        tokio::time::timeout(state.commit_timeout, state.raft.client_write(proposal)).await;
    match written {
        Err(_) => not_committed(&state).into_response(),
        Ok(Ok(reply)) => outcome_response(reply.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to)))) => {
            forward::to_leader(&state, to, replayable).await
        }
        Ok(Err(e)) => raft_failed(e).into_response(),
    }
}

fn outcome_response(outcome: Outcome) -> Response {
    let status = match &outcome {
        Outcome::Rejected {
            code: RejectCode::InvalidArgument,
            ..
        } => StatusCode::UNPROCESSABLE_ENTITY,
        Outcome::Rejected { .. } => StatusCode::CONFLICT,
        Outcome::Applied { .. } | Outcome::Lease(_) => StatusCode::OK,
    };
    (status, Json(outcome)).into_response()
}

fn not_committed(state: &AppState) -> ApiError {
    ApiError::unavailable(
        "not_committed",
        format!(
            "not committed within {} ms: this voter may be cut off from the majority; \
             the command may still be applied later, read the map before retrying",
            state.commit_timeout.as_millis()
        ),
    )
}

fn raft_failed<E: std::fmt::Display>(error: RaftError<NodeId, E>) -> ApiError {
    match error {
        RaftError::Fatal(fatal) => ApiError::unavailable(
            "raft_stopped",
            format!("this voter's raft stopped: {fatal}"),
        ),
        RaftError::APIError(e) => ApiError::new(StatusCode::CONFLICT, "membership", e.to_string()),
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AddVoter {
    pub node_id: NodeId,
    pub addr: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Voters {
    pub voters: BTreeMap<NodeId, String>,
}

/// `POST /v1/voters`: adds a voter (first as a learner, so it catches up before it
/// counts towards the quorum).
pub async fn add_voter(State(state): State<AppState>, request: Replayable) -> Response {
    let add: AddVoter = match serde_json::from_slice(&request.body) {
        Ok(add) => add,
        Err(e) => return ApiError::bad_request(format!("invalid voter: {e}")).into_response(),
    };
    let learner = state
        .raft
        .add_learner(add.node_id, BasicNode::new(add.addr.clone()), true)
        .await;
    match learner {
        Ok(_) => {}
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
            return forward::to_leader(&state, to, request).await
        }
        Err(e) => return raft_failed(e).into_response(),
    }
    change_voters(
        &state,
        ChangeMembers::AddVoterIds(BTreeSet::from([add.node_id])),
        request,
    )
    .await
}

/// `DELETE /v1/voters/{id}`: removes a voter from the cluster.
pub async fn remove_voter(
    State(state): State<AppState>,
    Path(id): Path<NodeId>,
    request: Replayable,
) -> Response {
    change_voters(
        &state,
        ChangeMembers::RemoveVoters(BTreeSet::from([id])),
        request,
    )
    .await
}

async fn change_voters(
    state: &AppState,
    change: ChangeMembers<NodeId, BasicNode>,
    request: Replayable,
) -> Response {
    match state.raft.change_membership(change, false).await {
        Ok(reply) => {
            let voters = reply
                .membership
                .as_ref()
                .map(|m| {
                    m.voter_ids()
                        .filter_map(|id| m.get_node(&id).map(|n| (id, n.addr.clone())))
                        .collect()
                })
                .unwrap_or_default();
            Json(Voters { voters }).into_response()
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
            forward::to_leader(state, to, request).await
        }
        Err(e) => raft_failed(e).into_response(),
    }
}
