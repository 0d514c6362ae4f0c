//! Forwarding a client request from a follower to the leader, once.

use axum::body::Bytes;
use axum::extract::{FromRequest, OriginalUri, Request};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use openraft::error::ForwardToLeader;
use openraft::BasicNode;

use super::{ApiError, AppState, HEADER_FORWARDED_BY};
use crate::types::NodeId;

/// The parts of a request needed to send it again to another voter (an extractor:
/// handlers that may forward take the request in this form, body included).
pub struct Replayable {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Replayable {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let uri = request
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| request.uri().clone(), |original| original.0.clone());
        let method = request.method().clone();
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Replayable {
            method,
            uri,
            headers,
            body,
        })
    }
}

/// Sends `request` to the leader named in `to` and relays its answer. A request that
/// was already forwarded once is not forwarded again (two voters disagreeing about
/// the leader means an election is under way; the client retries). A read whose
/// leader does not answer is reported as retryable, a command as of unknown outcome.
pub async fn to_leader(
    state: &AppState,
    to: ForwardToLeader<NodeId, BasicNode>,
    request: Replayable,
) -> Response {
    if request.headers.contains_key(HEADER_FORWARDED_BY) {
        return ApiError::unavailable(
            "no_leader",
            "forwarded to a voter that is not the leader either; an election is probably under way",
        )
        .into_response();
    }
    let (Some(leader_id), Some(leader)) = (to.leader_id, to.leader_node) else {
        return ApiError::unavailable(
            "no_leader",
            "no leader known: an election is under way or this voter is cut off from the majority",
        )
        .into_response();
    };
    let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
    // A read changes nothing, so a read the leader never answered is simply not served:
    // the client may ask again anywhere. Only a command's lost answer is "unknown".
    let read_only = request.method == Method::GET;
    let mut outgoing = state
        .forward_http
        .request(request.method, format!("http://{}{path}", leader.addr))
        .header(HEADER_FORWARDED_BY, state.node_id.to_string())
        .header("content-type", "application/json")
        .body(request.body);
    // The caller's own signature goes along: it covers method, path and body, which
    // are sent unchanged, so the leader checks the original caller's credentials.
    for name in [
        ledger_wire::HEADER_REQUEST_ID,
        ledger_wire::HEADER_TRACEPARENT,
        ledger_wire::HEADER_CALLER_REGION,
        ledger_wire::HEADER_SIGNED_AT,
        ledger_wire::HEADER_SIGNATURE,
    ] {
        if let Some(value) = request.headers.get(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    match outgoing.send().await {
        Ok(answer) => {
            let status = answer.status();
            let mut headers = HeaderMap::new();
            for name in ["content-type", "retry-after"] {
                if let Some(value) = answer.headers().get(name) {
                    headers.insert(name, value.clone());
                }
            }
            match answer.bytes().await {
                Ok(body) => (status, headers, body).into_response(),
                Err(e) => ApiError::unavailable(
                    "leader_unreachable",
                    format!("reading the answer of leader {leader_id} at {} failed: {e}", leader.addr),
                )
                .into_response(),
            }
        }
        Err(e) if e.is_connect() || read_only => ApiError::unavailable(
            "leader_unreachable",
            format!("leader {leader_id} at {} is unreachable: {e}", leader.addr),
        )
        .into_response(),
        // The leader may have got the request: say so rather than inviting a blind retry.
        Err(e) => ApiError::unavailable(
            "outcome_unknown",
            format!(
                "no answer from leader {leader_id} at {} ({e}); the command may have been applied, read the map before retrying",
                leader.addr
            ),
        )
        .into_response(),
    }
}
