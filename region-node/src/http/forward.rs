//! Answers produced by another region: forwarding a request to the account's home and
//! relaying its answer, and the `ack: replicated` wait after a commit at the home.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use internal_api::CallError;
use ledger_wire::TraceParent;
use ledger_wire::{
    ProblemType, HEADER_ACK, HEADER_FORWARDED_TO, HEADER_HOME_REGION, HEADER_IDEMPOTENCY_KEY,
    HEADER_IDEMPOTENT_REPLAYED, HEADER_REQUEST_ID, HEADER_TRACEPARENT,
};
use serde::Serialize;
use tracing::Instrument;

use super::context::RequestContext;
use super::error::ApiError;
use super::internal::Forwarded;
use super::AppState;
use crate::peers::{PeerError, ReplicaQuery};
use crate::replica_reads::EventRef;

/// The durability a write asks for (header `ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    Local,
    Replicated,
}

impl Ack {
    pub fn from_headers(headers: &HeaderMap) -> Result<Ack, ApiError> {
        match headers.get(HEADER_ACK).map(|v| v.to_str().unwrap_or("?")) {
            None | Some("local") => Ok(Ack::Local),
            Some("replicated") => Ok(Ack::Replicated),
            Some(other) => Err(ApiError::new(
                ProblemType::InvalidParameter,
                format!("header {HEADER_ACK} must be 'local' or 'replicated', not {other:?}"),
            )),
        }
    }
}

/// A request to pass on to another region.
#[derive(Debug)]
pub struct Onward<'a> {
    pub method: Method,
    pub path: String,
    pub idempotency_key: Option<&'a str>,
    pub ack: Ack,
    pub body: Option<Vec<u8>>,
}

impl<'a> Onward<'a> {
    pub fn get(path: String) -> Self {
        Onward {
            method: Method::GET,
            path,
            idempotency_key: None,
            ack: Ack::Local,
            body: None,
        }
    }

    pub fn write(path: String, key: &'a str, ack: Ack, body: &impl Serialize) -> Self {
        Onward {
            method: Method::POST,
            path,
            idempotency_key: Some(key),
            ack,
            body: Some(serde_json::to_vec(body).unwrap_or_default()),
        }
    }
}

/// Refuses to forward a request that was itself forwarded here: the two regions'
/// maps disagree for a moment, and bouncing would loop.
pub fn refuse_second_hop(forwarded: Option<&Forwarded>, home: &str) -> Result<(), ApiError> {
    match forwarded {
        Some(f) => Err(ApiError::new(
            ProblemType::NotOwner,
            format!(
                "{} forwarded this request here, but this region's map names {home} as the home; \
                 ownership is moving, retry shortly",
                f.caller
            ),
        )),
        None => Ok(()),
    }
}

/// Sends `onward` to `region` and relays its answer, naming the region it went to.
pub async fn forward(
    state: &AppState,
    ctx: &RequestContext,
    region: &str,
    onward: Onward<'_>,
) -> Result<Response, ApiError> {
    let mut headers = vec![(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    let mut add = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.push((HeaderName::from_static(name), value));
        }
    };
    add(HEADER_REQUEST_ID, &ctx.request_id);
    add(HEADER_TRACEPARENT, &ctx.traceparent);
    if let Some(key) = onward.idempotency_key {
        add(HEADER_IDEMPOTENCY_KEY, key);
    }
    if onward.ack == Ack::Replicated {
        add(HEADER_ACK, "replicated");
    }
    let mut timeout = state.settings.forward_timeout;
    if onward.ack == Ack::Replicated {
        timeout += state.settings.ack_timeout;
    }
    let started = Instant::now();
    let kind = if onward.method == Method::GET {
        "read"
    } else {
        "write"
    };
    let answer = state
        .peers
        .call(
            region,
            onward.method,
            &onward.path,
            headers,
            Bytes::from(onward.body.unwrap_or_default()),
            timeout,
        )
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            state
                .metrics
                .observe_forward(region, kind, 503, started.elapsed());
            let detail = match error {
                PeerError::Call(CallError::Unreachable { .. }) if kind == "write" => format!(
                    "{error}; nothing was written in this region. The home may or may not have \
                     committed: retry with the same Idempotency-Key"
                ),
                other => other.to_string(),
            };
            return Err(ApiError::new(ProblemType::HomeUnreachable, detail));
        }
    };
    state
        .metrics
        .observe_forward(region, kind, answer.status, started.elapsed());
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::builder()
        .status(status)
        .body(Body::from(answer.body))
        .map_err(|e| ApiError::new(ProblemType::Internal, e.to_string()))?;
    let relayed = response.headers_mut();
    for name in [
        header::CONTENT_TYPE.as_str(),
        header::RETRY_AFTER.as_str(),
        HEADER_HOME_REGION,
        HEADER_IDEMPOTENT_REPLAYED,
    ] {
        if let Some(value) = answer.headers.get(name) {
            relayed.insert(HeaderName::from_static(name), value.clone());
        }
    }
    if let Ok(value) = HeaderValue::from_str(region) {
        relayed.insert(HEADER_FORWARDED_TO, value);
    }
    Ok(response)
}

/// Waits until another region holds a copy of every event, or answers 504.
pub async fn await_replicated(
    state: &AppState,
    ctx: &RequestContext,
    events: Vec<EventRef>,
) -> Result<(), ApiError> {
    if state.peers.regions().is_empty() {
        return Err(ApiError::new(
            ProblemType::Unavailable,
            "ack: replicated needs another region, and none is configured",
        ));
    }
    let started = Instant::now();
    let wait: Duration = state.settings.ack_timeout;
    // The wait is a span of the request's trace; the replica checks it sends are its
    // children in the regions asked.
    let (span, trace) = service_kit::telemetry::span_in_trace(
        TraceParent::parse(&ctx.traceparent).as_ref(),
        || {
            tracing::info_span!(
                "ack",
                otel.name = "ack replicated wait",
                events = events.len()
            )
        },
    );
    let traceparent = trace.header();
    let confirmations = events.iter().map(|e| {
        let query = ReplicaQuery {
            account: e.account,
            seq: e.seq,
            event_id: e.event_id,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let traceparent = traceparent.as_str();
        async move {
            state
                .peers
                .confirm_replicated(&query, wait, traceparent)
                .await
        }
    });
    let all = futures::future::join_all(confirmations)
        .instrument(span)
        .await;
    let confirmed = all.iter().all(|c| *c);
    state
        .metrics
        .observe_replicated_wait(confirmed, started.elapsed());
    if confirmed {
        Ok(())
    } else {
        Err(ApiError::new(
            ProblemType::ReplicationTimeout,
            format!(
                "the write is committed at its home, but no other region confirmed a copy within \
                 {} ms; retry with the same Idempotency-Key to wait again",
                wait.as_millis()
            ),
        ))
    }
}
