//! `/internal/v1/failover/*`: what the failover tool asks of a region (signed like any
//! internal call): drain a scope for a switchover, compare digests, take a planned
//! release, report status and an audit snapshot, list and acknowledge late events, and
//! take late events another region hands over (their account is ours).

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use ledger_wire::failover::{
    AcknowledgeRequest, AuditSnapshot, Digest, DrainReport, DrainRequest, LateDecision, LateEvent,
    LateHandoff, LatePush, NodeStatus, ReleaseReport, ReleaseRequest, Scope,
};
use ledger_wire::internal::failover as paths;
use ledger_wire::ProblemType;
use serde::Deserialize;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use super::AppState;
use crate::failover;

/// Longest a caller may make a drain or release wait.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often a release re-checks that the lease made the gain usable.
const RELEASE_POLL: Duration = Duration::from_millis(5);

/// Request bodies here name up to every slot of the deployment, or carry the events
/// survivors exchange before a promote.
pub const BODY_LIMIT: usize = 64 * 1024 * 1024;

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

fn timed_out(step: &str) -> ApiError {
    ApiError::new(
        ProblemType::Unavailable,
        format!("timed out while {step}; nothing was changed by this call"),
    )
}

/// Stops this region writing the scope for good and reports its high-water mark.
async fn drain(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<DrainRequest>,
) -> Result<Json<DrainReport>, ApiError> {
    let started = Instant::now();
    let until = started + Duration::from_millis(request.timeout_ms).min(MAX_WAIT);
    let pool = state.store.pool();
    // 1. The database no longer lets this region write the scope: a renewal granted
    //    at the freeze's map version (or later) is recorded without it.
    if state.ownership.is_dynamic()
        && !state
            .ownership
            .await_recorded(
                request.map_version,
                until.saturating_duration_since(Instant::now()),
            )
            .await
    {
        return Err(timed_out("recording the lease without the drained scope"));
    }
    // 2. Transactions that may have passed their lease check before that finish.
    let running = failover::running_transactions(pool).await?;
    if !failover::await_transactions(pool, &running, until).await? {
        return Err(timed_out("waiting for running transactions"));
    }
    // 3. Everything written for the scope is on this region's topic.
    let Some(published) = failover::await_published(pool, &request.scope, until).await? else {
        return Err(timed_out("publishing the outbox"));
    };
    let high_water = failover::digest(pool, &request.scope).await?;
    let report = DrainReport {
        region: state.ownership.region().to_owned(),
        waited_transactions: running.len(),
        published_while_draining: published,
        high_water,
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    tracing::info!(?report, "scope drained for a switchover");
    Ok(Json(report))
}

async fn digest(
    State(state): State<AppState>,
    JsonBody(scope): JsonBody<Scope>,
) -> Result<Json<Digest>, ApiError> {
    Ok(Json(failover::digest(state.store.pool(), &scope).await?))
}

/// Takes a planned release (the old owner drained), then waits until the gain is
/// usable here.
async fn release(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ReleaseRequest>,
) -> Result<Json<ReleaseReport>, ApiError> {
    let started = Instant::now();
    let until = started + Duration::from_millis(request.timeout_ms).min(MAX_WAIT);
    let slots: Vec<(u32, u64)> = request.slots.iter().map(|s| (s.slot, s.epoch)).collect();
    let accounts: Vec<_> = request
        .accounts
        .iter()
        .map(|a| (a.account, a.epoch))
        .collect();
    state.ownership.release(&slots, &accounts);
    let mut usable = state.ownership.usable(&slots, &accounts);
    while !usable && Instant::now() < until {
        tokio::time::sleep(RELEASE_POLL).await;
        usable = state.ownership.usable(&slots, &accounts);
    }
    // The database must agree before writes succeed: wait for the next recorded grant.
    if usable {
        let version = state.ownership.map().version;
        usable = state
            .ownership
            .await_recorded(version, until.saturating_duration_since(Instant::now()))
            .await;
    }
    Ok(Json(ReleaseReport {
        usable,
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

#[derive(Debug, Deserialize)]
struct ExportRequest {
    origin: String,
    since_s: u64,
}

async fn export(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ExportRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let since = Duration::from_secs(request.since_s);
    let events = failover::export_events(state.store.pool(), &request.origin, since).await?;
    Ok(Json(events))
}

async fn import(
    State(state): State<AppState>,
    JsonBody(events): JsonBody<serde_json::Value>,
) -> Result<Json<std::collections::BTreeMap<String, i64>>, ApiError> {
    let outcomes = failover::import_events(state.store.pool(), &events).await?;
    tracing::info!(?outcomes, "imported events another survivor held");
    Ok(Json(outcomes))
}

async fn status(State(state): State<AppState>) -> Result<Json<NodeStatus>, ApiError> {
    let ownership = &state.ownership;
    let status = failover::status(
        state.store.pool(),
        ownership.region(),
        ownership.map().version,
        ownership.lease_live(),
        ownership.held_slot_count(),
    )
    .await?;
    Ok(Json(status))
}

async fn audit(State(state): State<AppState>) -> Result<Json<AuditSnapshot>, ApiError> {
    Ok(Json(
        failover::audit(state.store.pool(), state.ownership.region()).await?,
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
    let events = failover::late_events(state.store.pool(), params.status.as_deref(), limit).await?;
    Ok(Json(events))
}

async fn acknowledge(
    State(state): State<AppState>,
    Path(event_id): Path<Uuid>,
    JsonBody(request): JsonBody<AcknowledgeRequest>,
) -> Result<Json<LateEvent>, ApiError> {
    failover::acknowledge(state.store.pool(), event_id, &request.by, &request.note)
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
