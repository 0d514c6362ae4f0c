//! The internal API: the public routes again under `/internal`, for requests another
//! region forwards here, plus what only regions ask each other (does this region hold
//! an event yet). Everything under `/internal` must be signed with the deployment's
//! secret; the marker [`Forwarded`] tells handlers not to forward a second time.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger_wire::ProblemType;
use serde::Deserialize;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{self, QueryParams};
use super::AppState;
use crate::peers::{Credentials, ReplicaAnswer};
use crate::replica_reads::EventRef;

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
    let credentials = match credentials(&request) {
        Ok(c) => c,
        Err(detail) => {
            tracing::warn!(%detail, "refused an internal call without valid credentials");
            return ApiError::new(ProblemType::Unauthorized, detail).into_response();
        }
    };
    let (parts, body) = request.into_parts();
    // A switchover names thousands of slots; everything else is a small ledger request.
    let limit = if parts
        .uri
        .path()
        .contains(ledger_wire::internal::failover::PREFIX)
    {
        super::failover::BODY_LIMIT
    } else {
        state.settings.max_body_bytes
    };
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return ApiError::new(ProblemType::PayloadTooLarge, "request body is too large")
            .into_response();
    };
    let path = parts
        .extensions
        .get::<OriginalUri>()
        .and_then(|u| u.0.path_and_query().map(|p| p.as_str().to_owned()))
        .unwrap_or_default();
    if let Err(error) = signer.verify(&credentials, parts.method.as_str(), &path, &bytes) {
        tracing::warn!(caller = %credentials.caller, %error, "refused an internal call");
        return ApiError::new(ProblemType::Unauthorized, error.to_string()).into_response();
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(Forwarded {
        caller: credentials.caller,
    });
    next.run(request).await
}

fn credentials(request: &Request) -> Result<Credentials, String> {
    Credentials::from_headers(request.headers())
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
