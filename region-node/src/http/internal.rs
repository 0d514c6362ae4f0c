//! The internal API: the public routes again under `/internal`, for requests another
//! region forwards here, plus what only regions ask each other (does this region hold
//! an event yet). Everything under `/internal` must be signed with the deployment's
//! secret; the marker [`Forwarded`] tells handlers not to forward a second time.

use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger_wire::ProblemType;
use serde::Deserialize;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{self, QueryParams};
use super::AppState;
use crate::peers::ReplicaAnswer;
use crate::replica_reads::EventRef;
use internal_api::Refusal;

/// Longest a caller may make this region wait for an event.
const MAX_REPLICA_WAIT: Duration = Duration::from_secs(30);

/// Set on requests that came from another region through the internal API.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub caller: String,
}

pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(signer) = state.peers.signer() else {
        return ApiError::new(
            ProblemType::Unauthorized,
            "this node has no internal secret, so it accepts no internal calls",
        )
        .into_response();
    };
    // A switchover names thousands of slots; everything else is a small ledger request.
    let limit = if request
        .uri()
        .path()
        .contains(ledger_wire::internal::failover::PREFIX)
    {
        super::failover::BODY_LIMIT
    } else {
        state.settings.max_body_bytes
    };
    match internal_api::verify_request(signer, request, limit).await {
        Ok(verified) => {
            let mut request = verified.request;
            request.extensions_mut().insert(Forwarded {
                caller: verified.caller,
            });
            next.run(request).await
        }
        Err(Refusal::TooLarge) => {
            ApiError::new(ProblemType::PayloadTooLarge, "request body is too large").into_response()
        }
        Err(Refusal::Unauthorized(detail)) => {
            tracing::warn!(%detail, "refused an internal call without valid credentials");
            ApiError::new(ProblemType::Unauthorized, detail).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ReplicaParams {
    seq: i64,
    event_id: Uuid,
    #[serde(default)]
    wait_ms: u64,
}

/// Whether this region holds event `event_id` (seq `seq`) of the account, waiting up
/// to `wait_ms` for it to arrive.
pub async fn replica(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<ReplicaParams>,
) -> Result<Json<ReplicaAnswer>, ApiError> {
    let account = extract::account_id(&id, state.ownership.slot_count())?;
    let event = EventRef {
        account,
        seq: params.seq,
        event_id: params.event_id,
    };
    let wait = Duration::from_millis(params.wait_ms).min(MAX_REPLICA_WAIT);
    let present = state.store.wait_for_event(&event, wait).await?;
    Ok(Json(ReplicaAnswer { present }))
}
