//! Reads of the map and its history: linearizable by default (confirmed with a
//! quorum through `ensure_linearizable`), and the watch, a long poll served from
//! this voter's applied state.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger_wire::ownership::WatchReply;
use openraft::error::{CheckIsLeaderError, Fatal, RaftError};
use openraft::BasicNode;
use serde::Deserialize;

use super::forward::{self, Replayable};
use super::{ApiError, AppState};
use crate::types::{NodeId, Raft};

const MAX_HISTORY_PAGE: usize = 10_000;
const MAX_WATCH_WAIT_MS: u64 = 60_000;
const WATCH_BATCH: usize = 1_000;

#[derive(Debug, Deserialize)]
pub struct ReadParams {
    /// `local` skips the quorum check and answers from this voter's state.
    #[serde(default)]
    pub consistency: Option<String>,
}

/// Makes this voter's state at least as new as every commit before the read began,
/// or answers the request elsewhere: `Ok(None)` means read locally now.
async fn linearize(state: &AppState, request: Replayable) -> Option<Response> {
    let checked = tokio::time::timeout(state.commit_timeout, read_barrier(&state.raft)).await;
    match checked {
        Ok(Ok(_)) => None,
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to)))) => {
            Some(forward::to_leader(state, to, request).await)
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => Some(
            ApiError::unavailable("no_quorum", format!("leadership not confirmed by a quorum: {e}"))
                .into_response(),
        ),
        Ok(Err(RaftError::Fatal(e))) => Some(
            ApiError::unavailable("raft_stopped", format!("this voter's raft stopped: {e}"))
                .into_response(),
        ),
        Err(_) => Some(
            ApiError::unavailable(
                "no_quorum",
                format!(
                    "leadership not confirmed within {} ms: this voter may be cut off from the majority",
                    state.commit_timeout.as_millis()
                ),
            )
            .into_response(),
        ),
    }
}

/// Confirms leadership with a quorum, then waits until this leader has applied every
/// entry of its log.
///
/// `ensure_linearizable` alone is not enough in openraft 0.9: its barrier is
/// max(the first entry of the leader's term, the committed index). A voter restarted
/// as leader of the same term (a whole-cluster restart; it resumes leadership without
/// an election) takes its term's *first* entry as that barrier, and the committed
/// index it reloads is saved without fsync, so it can be older than changes it had
/// acknowledged: a read served the map of version 61 after 62 was acknowledged (1 run
/// in about 30 of `whole_cluster_restart_keeps_map_and_history`). Every acknowledged
/// change is in the confirmed leader's log, so applying the log it holds closes the
/// gap; the cost is that a read waits for the writes in flight when it arrives.
async fn read_barrier(
    raft: &Raft,
) -> Result<(), RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>> {
    raft.ensure_linearizable().await?;
    let last_log = raft.metrics().borrow().last_log_index;
    raft.wait(None)
        .applied_index_at_least(last_log, "linearizable read")
        .await
        .map_err(|_| RaftError::Fatal(Fatal::Stopped))?;
    Ok(())
}

/// `GET /v1/map[?consistency=local]`: the whole ownership map with its version.
pub async fn map(
    State(state): State<AppState>,
    Query(params): Query<ReadParams>,
    request: Replayable,
) -> Response {
    if params.consistency.as_deref() != Some("local") {
        if let Some(elsewhere) = linearize(&state, request).await {
            return elsewhere;
        }
    }
    let map = state.view.read().state.map();
    Json(map).into_response()
}

#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    #[serde(default)]
    pub since: u64,
    #[serde(default = "default_history_limit")]
    pub limit: usize,
}

fn default_history_limit() -> usize {
    1_000
}

/// `GET /v1/history?since=V&limit=N`: ownership changes after version V, oldest first.
pub async fn history(
    State(state): State<AppState>,
    Query(params): Query<HistoryParams>,
    request: Replayable,
) -> Response {
    if params.limit == 0 || params.limit > MAX_HISTORY_PAGE {
        return ApiError::bad_request(format!("limit must be 1..={MAX_HISTORY_PAGE}"))
            .into_response();
    }
    if let Some(elsewhere) = linearize(&state, request).await {
        return elsewhere;
    }
    let changes = state
        .view
        .read()
        .state
        .changes_since(params.since, params.limit);
    Json(changes).into_response()
}

#[derive(Debug, Deserialize)]
pub struct WatchParams {
    pub since: u64,
    #[serde(default = "default_wait_ms")]
    pub wait_ms: u64,
}

fn default_wait_ms() -> u64 {
    10_000
}

/// `GET /v1/watch?since=V&wait_ms=W`: the changes after version V, waiting up to W ms
/// for the first one. An empty answer means nothing changed in that time. Served
/// from this voter's applied state (a voter cut off from the majority simply has
/// nothing new to say; lease renewals are what tell a region it lost a slot).
pub async fn watch(State(state): State<AppState>, Query(params): Query<WatchParams>) -> Response {
    if params.wait_ms > MAX_WATCH_WAIT_MS {
        return ApiError::bad_request(format!("wait_ms must be at most {MAX_WATCH_WAIT_MS}"))
            .into_response();
    }
    let mut versions = state.view.versions();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(params.wait_ms);
    loop {
        let reply = {
            let applied = state.view.read();
            WatchReply {
                version: applied.state.version(),
                changes: applied.state.changes_since(params.since, WATCH_BATCH),
            }
        };
        if !reply.changes.is_empty() {
            return Json(reply).into_response();
        }
        tokio::select! {
            changed = versions.changed() => {
                if changed.is_err() {
                    return Json(reply).into_response();
                }
            }
            () = tokio::time::sleep_until(deadline) => return Json(reply).into_response(),
        }
    }
}
