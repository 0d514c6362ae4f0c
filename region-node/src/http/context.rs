//! Per-request context: correlation id, W3C trace context, the request span, and the
//! HTTP metrics. Runs around every route.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use ledger_wire::{HEADER_REQUEST_ID, HEADER_SERVED_BY, HEADER_TRACEPARENT};
use rand::Rng;
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

/// A W3C trace context (`traceparent` header, version 00).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
    pub flags: String,
}

impl TraceParent {
    pub fn parse(header: &str) -> Option<TraceParent> {
        let mut parts = header.trim().split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let valid = version == "00"
            && parts.next().is_none()
            && hex(trace_id, 32)
            && hex(span_id, 16)
            && hex(flags, 2)
            && trace_id.bytes().any(|b| b != b'0')
            && span_id.bytes().any(|b| b != b'0');
        valid.then(|| TraceParent {
            trace_id: trace_id.to_owned(),
            span_id: span_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    /// A span of our own inside the caller's trace, or a new sampled trace.
    pub fn child_of(parent: Option<&TraceParent>, rng: &mut impl Rng) -> TraceParent {
        let span_id = format!("{:016x}", rng.random_range(1..=u64::MAX));
        match parent {
            Some(parent) => TraceParent {
                trace_id: parent.trace_id.clone(),
                span_id,
                flags: parent.flags.clone(),
            },
            None => TraceParent {
                trace_id: format!("{:032x}", rng.random_range(1..=u128::MAX)),
                span_id,
                flags: "01".into(),
            },
        }
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
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
    let trace = TraceParent::child_of(parent.as_ref(), &mut rand::rng());
    let span = tracing::info_span!(
        "http",
        method = %method,
        route = %route,
        request_id = %request_id,
        trace_id = %trace.trace_id,
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_continues_a_trace() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(header).expect("valid traceparent");
        let child = TraceParent::child_of(Some(&parent), &mut rand::rng());
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(TraceParent::parse(&child.header()), Some(child));
    }

    #[test]
    fn refuses_malformed_trace_context() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }
}
