//! OTLP export on three real regions: nodes started with `LEDGER_OTLP_ENDPOINT` send
//! their spans (OTLP/HTTP, JSON) to a collector this test runs in-process. One
//! cross-region transfer, asked of a region that is not the source account's home,
//! makes one trace with spans from two regions: the answering region's request span
//! (child of the client's), the home's request span (child of that: the forward carried
//! the trace), and the credit the saga takes in the destination's region (child of the
//! home's span: the transfer keeps its trace). The trace context stored with the
//! transfer names the home's exported span. An `ack: replicated` write's wait is a span
//! whose children are the replica checks it sent to other regions.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use common::{eventually, Regions};
use serde_json::{json, Value};

/// Every OTLP export request received.
type Received = Arc<Mutex<Vec<Value>>>;

async fn collect(State(received): State<Received>, Json(body): Json<Value>) -> Json<Value> {
    if let Ok(mut all) = received.lock() {
        all.push(body);
    }
    Json(json!({}))
}

/// One received span: its region (resource attribute), name, ids.
#[derive(Debug, Clone)]
struct Span {
    region: String,
    service: String,
    name: String,
    span_id: String,
    parent: String,
}

fn attribute(attributes: &Value, key: &str) -> Option<String> {
    attributes.as_array()?.iter().find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
        .map(str::to_owned)
}

fn spans_of_trace(received: &Received, trace_id: &str) -> Vec<Span> {
    let all = received.lock().map(|r| r.clone()).unwrap_or_default();
    let mut spans = Vec::new();
    for request in &all {
        for resource in request["resourceSpans"].as_array().into_iter().flatten() {
            let attributes = &resource["resource"]["attributes"];
            let region = attribute(attributes, "ledger.region").unwrap_or_default();
            let service = attribute(attributes, "service.name").unwrap_or_default();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    if span["traceId"].as_str() == Some(trace_id) {
                        spans.push(Span {
                            region: region.clone(),
                            service: service.clone(),
                            name: span["name"].as_str().unwrap_or_default().to_owned(),
                            span_id: span["spanId"].as_str().unwrap_or_default().to_owned(),
                            parent: span["parentSpanId"].as_str().unwrap_or_default().to_owned(),
                        });
                    }
                }
            }
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_cross_region_transfer_is_one_trace_across_two_regions() -> anyhow::Result<()> {
    let received: Received = Arc::default();
    let port = harness::free_block(1)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let app = Router::new()
        .route("/v1/traces", post(collect))
        .with_state(received.clone());
    let collector = tokio::spawn(async move { axum::serve(listener, app).await });

    let endpoint = format!("http://127.0.0.1:{port}");
    let regions = Regions::start(
        "trace-export",
        &[
            ("LEDGER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await?;
    let (eu, us) = (regions.name(0), regions.name(1));
    let from = regions.open(0, 0, "50").await?;
    let to = regions.open(1, 1, "0").await?;

    // The client's own span: the trace it starts.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/v1/transfers",
            regions.deployment.regions[1].api_url
        ))
        .header("idempotency-key", "trace-export-1")
        .header("traceparent", &traceparent)
        .json(&json!({"from": from, "to": to, "amount": "5.00"}))
        .send()
        .await?;
    assert_eq!(answer.status(), 201, "{}", answer.text().await?);

    let spans = eventually(
        "the transfer's spans reach the collector",
        Duration::from_secs(30),
        || async {
            let spans = spans_of_trace(&received, trace_id);
            let credit = spans
                .iter()
                .any(|s| s.region == us && s.name == "transfer completed");
            let home = spans
                .iter()
                .any(|s| s.region == eu && s.name.starts_with("POST "));
            // Processes export in their own batches: the answering region's span may
            // come last.
            let answering = spans
                .iter()
                .any(|s| s.region == us && s.name.starts_with("POST "));
            (credit && home && answering).then_some(spans)
        },
    )
    .await
    .with_context(|| {
        format!(
            "spans of the trace: {:#?}",
            spans_of_trace(&received, trace_id)
        )
    })?;

    let answering = spans
        .iter()
        .find(|s| s.region == us && s.name.starts_with("POST ") && s.parent == client_span)
        .with_context(|| format!("{us}'s request span, child of the client's: {spans:#?}"))?;
    let home = spans
        .iter()
        .find(|s| s.region == eu && s.name.starts_with("POST "))
        .context("the home's request span")?;
    assert_eq!(
        home.parent, answering.span_id,
        "the forward carried the trace: {spans:#?}"
    );
    let credit = spans
        .iter()
        .find(|s| s.region == us && s.name == "transfer completed")
        .context("the credit")?;
    assert_eq!(
        credit.parent, home.span_id,
        "the saga continued the debit's span: {spans:#?}"
    );
    assert!(
        spans.iter().all(|s| s.service == "region-node"),
        "{spans:#?}"
    );

    let stored: Option<String> = regions
        .db(0)
        .await?
        .query_one("SELECT traceparent FROM ledger.transfers", &[])
        .await?
        .get(0);
    assert_eq!(
        stored,
        Some(format!("00-{trace_id}-{}-01", home.span_id)),
        "the transfer keeps the context of the home's exported span"
    );

    // ack: replicated: the wait is a span of the request, and the replica checks it
    // sends are its children in the regions asked.
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4737";
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/v1/accounts/{from}/deposits",
            regions.deployment.regions[0].api_url
        ))
        .header("idempotency-key", "trace-export-2")
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .header("ack", "replicated")
        .json(&json!({"amount": "1.00"}))
        .send()
        .await?;
    assert_eq!(answer.status(), 201, "{}", answer.text().await?);
    // Each process exports in its own batches: wait for all three kinds of span (the
    // other regions' checks can arrive before the home's own request and wait spans).
    let spans = eventually(
        "the replicated wait's spans",
        Duration::from_secs(30),
        || async {
            let spans = spans_of_trace(&received, trace_id);
            let remote_check = spans
                .iter()
                .any(|s| s.region != eu && s.name.contains("/internal/v1/replicas/"));
            let request = spans
                .iter()
                .any(|s| s.region == eu && s.name.starts_with("POST "));
            let wait = spans.iter().any(|s| s.name == "ack replicated wait");
            (remote_check && request && wait).then_some(spans)
        },
    )
    .await
    .with_context(|| format!("spans: {:#?}", spans_of_trace(&received, trace_id)))?;
    let request = spans
        .iter()
        .find(|s| s.region == eu && s.name.starts_with("POST "))
        .context("the deposit's span")?;
    let wait = spans
        .iter()
        .find(|s| s.name == "ack replicated wait")
        .context("the wait's span")?;
    assert_eq!(wait.parent, request.span_id, "{spans:#?}");
    assert!(
        spans
            .iter()
            .filter(|s| s.name.contains("/internal/v1/replicas/"))
            .all(|s| s.parent == wait.span_id && s.region != eu),
        "every replica check is a child of the wait, in another region: {spans:#?}"
    );
    collector.abort();
    Ok(())
}
