//! The replicator's small HTTP surface: `/metrics`, `/healthz`, `/readyz`, and the
//! dead-letter routes the failover tool calls (`/internal/v1/dlq...`, signed with the
//! deployment's internal secret like every internal call; refused without it).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use internal_api::{Refusal, Signer};
use ledger_wire::dlq::{self, LetterId, ReplayRequest};
use ledger_wire::internal::PREFIX;
use ledger_wire::{Problem, ProblemType};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{dlq_admin, Metrics, ReplicationError, ReplicatorConfig};

/// Largest body the internal routes read (a replay request names letters).
const BODY_LIMIT: usize = 1 << 20;

#[derive(Clone)]
struct Shared {
    metrics: Metrics,
    config: Arc<ReplicatorConfig>,
    signer: Option<Signer>,
}

pub async fn serve(
    listener: TcpListener,
    config: Arc<ReplicatorConfig>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), ReplicationError> {
    let shared = Shared {
        metrics,
        signer: config.internal_secret.as_ref().map(|s| Signer::new(&s.0)),
        config,
    };
    let internal = Router::new()
        .route(dlq::LIST, get(list))
        .route(dlq::SHOW_ROUTE, get(show))
        .route(dlq::REPLAY, post(replay))
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate));
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .nest(PREFIX, internal)
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(ReplicationError::Serve)
}

async fn render(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
}

fn problem(kind: ProblemType, detail: impl Into<String>) -> Response {
    let problem = Problem::new(kind, detail);
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(CONTENT_TYPE, "application/problem+json")],
        Json(problem),
    )
        .into_response()
}

async fn authenticate(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let Some(signer) = shared.signer.as_ref() else {
        return problem(
            ProblemType::Unauthorized,
            "this replicator has no internal secret (LEDGER_INTERNAL_SECRET), so it accepts no internal calls",
        );
    };
    match internal_api::verify_request(signer, request, BODY_LIMIT).await {
        Ok(verified) => next.run(verified.request).await,
        Err(Refusal::TooLarge) => {
            problem(ProblemType::PayloadTooLarge, "request body is too large")
        }
        Err(Refusal::Unauthorized(detail)) => {
            tracing::warn!(%detail, "refused an internal call without valid credentials");
            problem(ProblemType::Unauthorized, detail)
        }
    }
}

/// A failure to reach this region's broker or database: the caller may try again.
fn unavailable(error: ReplicationError) -> Response {
    tracing::warn!(%error, "a dead-letter request failed");
    problem(ProblemType::Unavailable, error.to_string())
}

async fn list(State(shared): State<Shared>) -> Response {
    match dlq_admin::list(&shared.config).await {
        Ok(letters) => {
            shared.metrics.dlq_waiting.set(letters.waiting() as i64);
            Json(letters).into_response()
        }
        Err(error) => unavailable(error),
    }
}

async fn show(State(shared): State<Shared>, Path(letter): Path<String>) -> Response {
    let id: LetterId = match letter.parse() {
        Ok(id) => id,
        Err(detail) => return problem(ProblemType::InvalidParameter, detail),
    };
    match dlq_admin::show(&shared.config, id).await {
        Ok(Some(detail)) => Json(detail).into_response(),
        Ok(None) => problem(
            ProblemType::NotFound,
            format!("no letter {id} in this region's dead-letter topic"),
        ),
        Err(error) => unavailable(error),
    }
}

async fn replay(State(shared): State<Shared>, body: Bytes) -> Response {
    let request: ReplayRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return problem(ProblemType::InvalidBody, format!("replay request: {error}")),
    };
    if request.by.trim().is_empty() {
        return problem(ProblemType::InvalidBody, "say who replays (by)");
    }
    match dlq_admin::replay(&shared.config, &request).await {
        Ok(report) => {
            if let Ok(waiting) = dlq_admin::waiting(&shared.config).await {
                shared.metrics.dlq_waiting.set(waiting);
            }
            Json(report).into_response()
        }
        Err(error) => unavailable(error),
    }
}
