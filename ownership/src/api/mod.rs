//! The voter's HTTP API: Raft RPCs between voters (`/raft/*`) and the client API
//! (`/v1/*`), plus health and metrics.
//!
//! Any voter accepts any client request. Commands and linearizable reads that reach
//! a follower are forwarded once to the leader it knows; the answer is relayed.
//!
//! Everything but health and metrics must be signed with the deployment's secret
//! (`internal_api::verify_request`): Raft RPCs, commands, voter changes and reads. An
//! unsigned or wrongly signed call is refused with 401 before any handler runs, so
//! nobody without the secret can move ownership, vote, or read the map.

pub mod commands;
mod forward;
pub mod raft;
pub mod reads;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Serialize;
use tracing::Instrument;

use crate::config::VoterConfig;
use crate::log_store::LogStore;
use crate::metrics::Metrics;
use crate::state_machine::StateView;
use crate::types::{NodeId, Raft};

/// Raft RPC bodies carry log entries and snapshot chunks (1 MiB of bytes as JSON).
const RAFT_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Client bodies are small commands.
const CLIENT_BODY_LIMIT: usize = 1024 * 1024;

/// Request header marking a request one voter forwarded to another.
pub const HEADER_FORWARDED_BY: &str = "x-ownership-forwarded-by";

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub raft: Raft,
    pub view: StateView,
    pub metrics: Metrics,
    pub log_store: LogStore,
    pub node_id: NodeId,
    pub commit_timeout: Duration,
    forward_http: reqwest::Client,
    signer: internal_api::Signer,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        raft: Raft,
        view: StateView,
        metrics: Metrics,
        log_store: LogStore,
        config: &VoterConfig,
    ) -> Self {
        let forward_http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .timeout(config.commit_timeout() + Duration::from_secs(1))
            .build()
            .unwrap_or_default();
        AppState(Arc::new(Inner {
            raft,
            view,
            metrics,
            log_store,
            node_id: config.node_id,
            commit_timeout: config.commit_timeout(),
            forward_http,
            signer: internal_api::Signer::new(&config.internal_secret),
        }))
    }
}

pub fn router(state: AppState) -> Router {
    let raft_routes = Router::new()
        .route(crate::network::ROUTE_APPEND, post(raft::append))
        .route(crate::network::ROUTE_VOTE, post(raft::vote))
        .route(crate::network::ROUTE_SNAPSHOT, post(raft::snapshot))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), RAFT_BODY_LIMIT),
            authenticate,
        ))
        .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT));
    let client_routes = Router::new()
        .route("/v1/commands", post(commands::command))
        .route("/v1/map", get(reads::map))
        .route("/v1/history", get(reads::history))
        .route("/v1/watch", get(reads::watch))
        .route("/v1/cluster", get(status::cluster))
        .route("/v1/voters", post(commands::add_voter))
        .route("/v1/voters/{id}", delete(commands::remove_voter))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), CLIENT_BODY_LIMIT),
            authenticate,
        ))
        .layer(DefaultBodyLimit::max(CLIENT_BODY_LIMIT));
    // Health and metrics stay open: load balancers and Prometheus hold no secret.
    let open_routes = Router::new()
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics));
    raft_routes
        .merge(client_routes)
        .merge(open_routes)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Lets a request through only with a valid signature of the deployment's secret.
async fn authenticate(
    State((state, body_limit)): State<(AppState, usize)>,
    request: Request,
    next: Next,
) -> Response {
    match internal_api::verify_request(&state.signer, request, body_limit).await {
        Ok(verified) => next.run(verified.request).await,
        Err(internal_api::Refusal::TooLarge) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body is larger than {body_limit} bytes"),
        )
        .into_response(),
        Err(internal_api::Refusal::Unauthorized(detail)) => {
            state.metrics.count_refused_call();
            tracing::warn!(%detail, "refused an unauthenticated call");
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response()
        }
    }
}

/// One span and one latency observation per request; the request id is kept or made.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let request_id = request
        .headers()
        .get(ledger_wire::HEADER_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map_or_else(new_request_id, str::to_owned);
    let span = tracing::info_span!("request", %route, request_id = %request_id);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span).await;
    if !route.starts_with("/raft/") {
        state
            .metrics
            .observe_request(&route, response.status().as_u16(), started.elapsed());
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(ledger_wire::HEADER_REQUEST_ID, value);
    }
    response
}

fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "own-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An error answer of the client API: `{"code": ..., "message": ...}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let mut response = (
            self.status,
            Json(ErrorBody {
                code: self.code,
                message: &self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        response
    }
}
