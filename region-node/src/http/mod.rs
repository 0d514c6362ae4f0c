//! The HTTP API of a region node: router, shared state, and response helpers.

mod accounts;
mod api_keys;
mod context;
mod error;
mod extract;
mod failover;
mod forward;
mod internal;
mod system;
mod transfers;
mod write;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use ledger_wire::api::MAX_REFERENCE_LEN;
use ledger_wire::problem::PROBLEM_CONTENT_TYPE;
use ledger_wire::{ProblemType, HEADER_HOME_REGION, HEADER_IDEMPOTENT_REPLAYED};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use api_keys::{watch as watch_api_keys, ApiKeys};
pub use context::RequestContext;
pub use error::ApiError;
pub use ledger_wire::TraceParent;

use crate::home::Ownership;
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::store::{LedgerStore, StoreError, WriteContext, WriteOutcome};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ledger region node API",
        version = "1",
        description = "Accounts, deposits, withdrawals and transfers, served by every region. \
                       Errors are RFC 9457 problem documents; every write needs an Idempotency-Key."
    ),
    tags(
        (name = "accounts", description = "Accounts and their entries"),
        (name = "transfers", description = "Moving money between accounts"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
struct ApiDoc;

/// The OpenAPI document this node serves: the generated one with the deployment's region
/// names as the values `home_region` may take (known only at run time), and, when API
/// keys are on, the bearer scheme on every operation but the open ones with the 401,
/// 403 and 429 they may answer.
fn document(api: &utoipa::openapi::OpenApi, regions: &[String], keys: bool) -> String {
    let Ok(mut doc) = serde_json::to_value(api) else {
        return String::new();
    };
    if let Some(field) =
        doc.pointer_mut("/components/schemas/CreateAccountRequest/properties/home_region")
    {
        let one_of = serde_json::json!({
            "type": ["string", "null"],
            "enum": regions.iter().map(|r| serde_json::Value::from(r.as_str()))
                .chain(std::iter::once(serde_json::Value::Null)).collect::<Vec<_>>(),
            "description": "Region that should own the account (one of this deployment's regions); defaults to the region that receives the request.",
        });
        *field = one_of;
    }
    if keys {
        require_keys(&mut doc);
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// States the API key rule in `doc`: a bearer scheme, and per operation either no
/// security (the open routes) or the key with its refusals.
fn require_keys(doc: &mut serde_json::Value) {
    use serde_json::json;
    if let Some(components) = doc.get_mut("components").and_then(|c| c.as_object_mut()) {
        components.insert(
            "securitySchemes".into(),
            json!({"apiKey": {"type": "http", "scheme": "bearer",
                "description": "An API key (lk_...) made with `failover keys new`; GET routes need the read scope, the others write."}}),
        );
    }
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let open = api_keys::OPEN_ROUTES.contains(&path.as_str());
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut().filter_map(|o| o.as_object_mut()) {
            if open {
                operation.insert("security".into(), json!([]));
                continue;
            }
            operation.insert("security".into(), json!([{"apiKey": []}]));
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(|r| r.as_object_mut())
            else {
                continue;
            };
            for (status, kind) in [
                ("401", ProblemType::Unauthorized),
                ("403", ProblemType::Forbidden),
                ("429", ProblemType::RateLimited),
            ] {
                responses.entry(status).or_insert_with(|| json!({
                    "description": kind.title(),
                    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
                }));
            }
        }
    }
}

/// Limits and waits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The public API's keys; `None`: open.
    pub api_keys: Option<Arc<ApiKeys>>,
    pub max_body_bytes: usize,
    pub forward_timeout: Duration,
    pub ack_timeout: Duration,
    pub min_seq_wait: Duration,
    /// Every region's public URL (`GET /v1/regions`).
    pub public_urls: Vec<ledger_wire::api::RegionEndpoint>,
}

/// What every handler and middleware reads, behind one `Arc`: axum clones the state
/// for each of them on every request.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Debug)]
pub struct Shared {
    pub store: LedgerStore,
    pub ownership: Arc<Ownership>,
    pub peers: Arc<Peers>,
    pub settings: Arc<Settings>,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
    openapi: Arc<String>,
    region_header: HeaderValue,
}

impl Shared {
    fn write_context(
        &self,
        key: String,
        fingerprint: Vec<u8>,
        ctx: &RequestContext,
    ) -> WriteContext {
        WriteContext {
            idempotency_key: key,
            fingerprint,
            region: self.ownership.region().to_owned(),
            traceparent: Some(ctx.traceparent.clone()),
        }
    }

    /// Counts a write's outcome and turns store errors into API errors.
    fn record_write(
        &self,
        operation: &str,
        result: Result<WriteOutcome, StoreError>,
    ) -> Result<WriteOutcome, ApiError> {
        let label = match &result {
            Ok(o) if o.replayed => "replayed",
            Ok(o) if o.status < 300 => "committed",
            Ok(_) => "refused",
            Err(StoreError::Rejected { .. }) => "rejected",
            Err(_) => "failed",
        };
        self.metrics.observe_write(operation, label);
        result.map_err(ApiError::from)
    }
}

/// Builds the router with every route and its OpenAPI description from one list.
pub fn router(
    store: LedgerStore,
    ownership: Arc<Ownership>,
    peers: Arc<Peers>,
    metrics: Metrics,
    shutdown: CancellationToken,
    settings: Settings,
) -> Router {
    let (routes, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::create_account))
        .routes(routes!(accounts::get_account))
        .routes(routes!(accounts::deposit))
        .routes(routes!(accounts::withdraw))
        .routes(routes!(accounts::ledger_page))
        .routes(routes!(transfers::create_transfer))
        .routes(routes!(transfers::get_transfer))
        .routes(routes!(system::regions))
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi))
        .split_for_parts();
    let mut regions = peers.regions();
    regions.push(ownership.region().to_owned());
    regions.sort();
    let openapi = Arc::new(document(&api, &regions, settings.api_keys.is_some()));
    let region_header = HeaderValue::from_str(ownership.region())
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    let max_body_bytes = settings.max_body_bytes;
    let state = AppState(Arc::new(Shared {
        store,
        ownership,
        peers,
        settings: Arc::new(settings),
        metrics,
        shutdown,
        openapi,
        region_header,
    }));
    let internal = routes
        .clone()
        .route(
            ledger_wire::internal::REPLICA_ROUTE,
            axum::routing::get(internal::replica),
        )
        .merge(failover::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            internal::authenticate,
        ));
    routes
        .nest("/internal", internal)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api_keys::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::observe,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(ProblemType::NotFound, "no such route; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ProblemType::MethodNotAllowed,
        "this route does not take that method",
    )
}

/// The answer of a write: the body exactly as the database stored it.
fn write_response(outcome: WriteOutcome, home_region: &str) -> Response {
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        PROBLEM_CONTENT_TYPE
    };
    let mut response = (status, outcome.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(home) = HeaderValue::from_str(home_region) {
        headers.insert(HEADER_HOME_REGION, home);
    }
    if outcome.replayed {
        headers.insert(HEADER_IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

fn json_response(status: u16, body: &impl Serialize, home_region: &str) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => write_response(
            WriteOutcome {
                status,
                body: text,
                replayed: false,
            },
            home_region,
        ),
        Err(e) => ApiError::from(StoreError::Decode(e.to_string())).into_response(),
    }
}

/// What makes two requests "the same" for idempotency: the operation and its
/// normalised parameters (so `"12.5"` and `"12.50"` match), hashed.
fn fingerprint(parts: &impl Serialize) -> Vec<u8> {
    let canonical = serde_json::to_vec(parts).unwrap_or_default();
    Sha256::digest(&canonical).to_vec()
}

fn check_reference(reference: Option<&str>) -> Result<(), ApiError> {
    match reference {
        Some(r) if r.chars().count() > MAX_REFERENCE_LEN => Err(ApiError::new(
            ProblemType::InvalidBody,
            format!("reference must be at most {MAX_REFERENCE_LEN} characters"),
        )),
        // PostgreSQL text cannot hold NUL (a fuzzer's reference with one was a 500), and
        // no other control character belongs in text for an account holder.
        Some(r) if r.chars().any(char::is_control) => Err(ApiError::new(
            ProblemType::InvalidBody,
            "reference must not contain control characters",
        )),
        _ => Ok(()),
    }
}
