//! An OTLP/HTTP trace receiver that only counts: what a node exporting its spans sends
//! to (write-path-bench `--trace-export`), so the cost measured is the node's, not a
//! collector's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;

#[derive(Debug, Default)]
pub struct Received {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    /// Spans, counted by their `"spanId"` keys in the JSON bodies.
    pub spans: AtomicU64,
}

async fn receive(State(received): State<Arc<Received>>, body: Bytes) -> &'static str {
    received.requests.fetch_add(1, Ordering::Relaxed);
    received
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let spans = body.windows(9).filter(|w| w == b"\"spanId\":").count();
    received.spans.fetch_add(spans as u64, Ordering::Relaxed);
    "{}"
}

/// Serves `POST /v1/traces` on `port` until the process ends; the endpoint to give a
/// node is `http://127.0.0.1:<port>`.
pub async fn start(port: u16) -> anyhow::Result<Arc<Received>> {
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(received)
}
