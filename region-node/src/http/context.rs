//! Per-request context: correlation id, W3C trace context, the request span, and the
//! HTTP metrics. Runs around every route.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use ledger_wire::{TraceParent, HEADER_REQUEST_ID, HEADER_SERVED_BY, HEADER_TRACEPARENT};
use tracing::Instrument;

use super::AppState;

/// Longest incoming `x-request-id` we adopt; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    /// `traceparent` naming this node's span, to pass on to whatever the request causes
    /// (outbox events, forwarded requests).
    pub traceparent: String,
}

pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let request_id = request
        .headers()
        .get(HEADER_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN)
        .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let parent = request
        .headers()
        .get(HEADER_TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    // Named after the OpenTelemetry HTTP server conventions ("{method} {route}").
    let (span, trace) = service_kit::telemetry::span_in_trace(parent.as_ref(), || {
        tracing::info_span!(
            "http",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            request_id = %request_id,
            trace_id = tracing::field::Empty,
            tenant = tracing::field::Empty,
        )
    });
    span.record("trace_id", trace.trace_id.as_str());
    request.extensions_mut().insert(RequestContext {
        request_id: request_id.clone(),
        traceparent: trace.header(),
    });

    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    span.in_scope(|| {
        tracing::debug!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered");
    });
    state
        .metrics
        .observe_request(&method, &route, status, elapsed);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(HEADER_REQUEST_ID, value);
    }
    headers.insert(HEADER_SERVED_BY, state.region_header.clone());
    response
}
