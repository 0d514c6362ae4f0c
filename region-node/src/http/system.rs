//! Operational routes: liveness, readiness, Prometheus metrics, the OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger_wire::api::{Health, Regions};
use ledger_wire::{Problem, ProblemType};

use super::error::ApiError;
use super::AppState;

/// How long readiness waits for the database.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/v1/regions", tag = "regions",
    responses((status = 200, description = "Every region of the deployment and its public URL, so that a client knowing one region finds the others", body = Regions)))]
pub async fn regions(State(state): State<AppState>) -> Json<Regions> {
    Json(Regions {
        regions: state.settings.public_urls.clone(),
    })
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        region: state.ownership.region().to_owned(),
    })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve: the database answers", body = Health),
        (status = 503, description = "Not ready", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            ProblemType::Unavailable,
            "the node is shutting down",
        ));
    }
    match tokio::time::timeout(READY_PROBE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(Health {
            status: "ready".into(),
            region: state.ownership.region().to_owned(),
        })),
        Ok(Err(error)) => Err(ApiError::new(
            ProblemType::Unavailable,
            format!("database not reachable: {error}"),
        )),
        Err(_) => Err(ApiError::new(
            ProblemType::Unavailable,
            "database did not answer in time",
        )),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let status = state.store.pool().status();
    state.metrics.set_pool(status.size, status.available);
    state
        .metrics
        .set_lease_remaining(state.ownership.lease_remaining());
    state.metrics.set_fenced(state.ownership.fenced());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json")))]
pub async fn openapi(State(state): State<AppState>) -> Response {
    let doc: Arc<String> = state.openapi.clone();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        doc.as_str().to_owned(),
    )
        .into_response()
}
