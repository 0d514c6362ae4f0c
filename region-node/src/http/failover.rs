//! `/internal/v1/failover/*`: what the failover tool asks of a region (signed like any
//! internal call): drain a scope for a switchover, compare digests, take a planned
//! release, report status and an audit snapshot, list and acknowledge late events, and
//! take late events another region hands over (their account is ours).

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use ledger_wire::failover::{
    AcknowledgeRequest, AuditCursor, AuditSnapshot, Digest, DrainReport, DrainRequest, ExportPage,
    ExportRequest, ImportReport, ImportRequest, LateDecision, LateEvent, LateHandoff, LatePush,
    NodeStatus, ReleaseReport, ReleaseRequest, Scope,
};
use ledger_wire::internal::failover as paths;
use ledger_wire::ProblemType;
use serde::Deserialize;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use super::AppState;
use crate::sre;
use crate::sre::drain::DrainError;

/// Longest a caller may make a drain or release wait.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Accounts (with their entries) and transfers per audit page, by default and at most.
const AUDIT_PAGE: i64 = 500;
const MAX_AUDIT_PAGE: i64 = 5_000;

/// Request bodies here name up to every slot of the deployment, or carry one page of
/// the events survivors exchange before a promote (at most `sre::exchange::MAX_PAGE`).
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(paths::DRAIN, post(drain))
        .route(paths::DIGEST, post(digest))
        .route(paths::RELEASE, post(release))
        .route(paths::STATUS, get(status))
        .route(paths::EXPORT, post(export))
        .route(paths::IMPORT, post(import))
        .route(paths::AUDIT, get(audit))
        .route(paths::LATE, get(late))
        .route(paths::LATE_ACK_ROUTE, post(acknowledge))
        .route(paths::LATE_HANDOFF, post(handoff))
        .route(paths::LATE_PUSH, post(push))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
}

/// Stops this region writing the scope for good and reports its high-water mark.
async fn drain(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<DrainRequest>,
) -> Result<Json<DrainReport>, ApiError> {
    let until = Instant::now() + Duration::from_millis(request.timeout_ms).min(MAX_WAIT);
    let report = sre::drain::drain(&state.ownership, state.store.pool(), &request, until)
        .await
        .map_err(|error| match error {
            DrainError::TimedOut(_) => ApiError::new(ProblemType::Unavailable, error.to_string()),
            DrainError::Store(store) => store.into(),
        })?;
    tracing::info!(?report, "scope drained for a switchover");
    Ok(Json(report))
}

async fn digest(
    State(state): State<AppState>,
    JsonBody(scope): JsonBody<Scope>,
) -> Result<Json<Digest>, ApiError> {
    Ok(Json(sre::drain::digest(state.store.pool(), &scope).await?))
}

/// Takes a planned release (the old owner drained), then waits until the gain is
/// usable here.
async fn release(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ReleaseRequest>,
) -> Result<Json<ReleaseReport>, ApiError> {
    let until = Instant::now() + Duration::from_millis(request.timeout_ms).min(MAX_WAIT);
    Ok(Json(
        sre::drain::release(&state.ownership, &request, until).await,
    ))
}

/// One page of what this region holds of a dead region's recent events.
async fn export(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ExportRequest>,
) -> Result<Json<ExportPage>, ApiError> {
    Ok(Json(
        sre::exchange::export_page(state.store.pool(), &request).await?,
    ))
}

async fn import(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ImportRequest>,
) -> Result<Json<ImportReport>, ApiError> {
    let outcomes = sre::exchange::import(state.store.pool(), request.events).await?;
    tracing::info!(?outcomes, "imported events another survivor held");
    Ok(Json(outcomes))
}
async fn status(State(state): State<AppState>) -> Result<Json<NodeStatus>, ApiError> {
    let ownership = &state.ownership;
    let mut status = sre::status::status(
        state.store.pool(),
        ownership.region(),
        ownership.map().version,
        ownership.lease_live(),
        ownership.held_slot_count(),
    )
    .await?;
    status.fence_delay_ms = ownership
        .fence_delay()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Ok(Json(status))
}

#[derive(Debug, Deserialize)]
struct AuditParams {
    after_account: Option<String>,
    after_transfer: Option<Uuid>,
    #[serde(default)]
    accounts_done: bool,
    #[serde(default)]
    transfers_done: bool,
    limit: Option<i64>,
}

/// One page of the audit snapshot (the failover tool follows `next`).
async fn audit(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<AuditParams>,
) -> Result<Json<AuditSnapshot>, ApiError> {
    let cursor = AuditCursor {
        account: params.after_account,
        transfer: params.after_transfer,
        accounts_done: params.accounts_done,
        transfers_done: params.transfers_done,
    };
    let limit = params.limit.unwrap_or(AUDIT_PAGE).clamp(1, MAX_AUDIT_PAGE);
    Ok(Json(
        sre::audit::audit(state.store.pool(), state.ownership.region(), &cursor, limit).await?,
    ))
}

#[derive(Debug, Deserialize)]
struct LateParams {
    status: Option<String>,
    limit: Option<i64>,
}

async fn late(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<LateParams>,
) -> Result<Json<Vec<LateEvent>>, ApiError> {
    let limit = params.limit.unwrap_or(100).clamp(1, 10_000);
    let events =
        sre::late::late_events(state.store.pool(), params.status.as_deref(), limit).await?;
    Ok(Json(events))
}

async fn acknowledge(
    State(state): State<AppState>,
    Path(event_id): Path<Uuid>,
    JsonBody(request): JsonBody<AcknowledgeRequest>,
) -> Result<Json<LateEvent>, ApiError> {
    sre::late::acknowledge(state.store.pool(), event_id, &request.by, &request.note)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                ProblemType::NotFound,
                format!("no flagged late event {event_id} in this region"),
            )
        })
}

/// Late events of accounts this region owns, handed over by a region that holds them.
async fn handoff(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<LateHandoff>,
) -> Result<Json<Vec<LateDecision>>, ApiError> {
    let events = request.events.len();
    let decided = crate::late_handoff::receive(state.store.pool(), request).await?;
    tracing::info!(
        events,
        already_decided = decided.len(),
        "received late events from another region"
    );
    Ok(Json(decided))
}

/// An SRE's push: hand every pending late event of an account owned elsewhere to its
/// owner now, without waiting for the background task's schedule.
async fn push(State(state): State<AppState>) -> Result<Json<LatePush>, ApiError> {
    let handoff = crate::late_handoff::Handoff {
        pool: state.store.pool().clone(),
        ownership: state.ownership.clone(),
        peers: state.peers.clone(),
        metrics: state.metrics.clone(),
        poll: Duration::ZERO,
    };
    Ok(Json(handoff.pass(Duration::ZERO, Duration::ZERO).await?))
}
