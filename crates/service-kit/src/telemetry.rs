//! Logging and tracing set-up for a service binary: structured JSON (or human text) logs
//! with the request id and trace id of the surrounding span, and, when
//! `LEDGER_OTLP_ENDPOINT` (or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`) names an OTLP
//! collector, every span exported to it over OTLP/HTTP (JSON) in batches. Spans that
//! continue a trace from another hop (an HTTP `traceparent`, an event's trace context)
//! are made by [`span_in_trace`], so that the exported span joins that trace and the
//! `traceparent` passed on names the exported span.

use std::sync::atomic::{AtomicBool, Ordering};

use ledger_wire::TraceParent;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Set once spans are exported: only then is it worth building trace links.
static EXPORTING: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Flushes the exporter when the service ends (spans still in the batch are sent).
#[must_use = "dropping the guard shuts the exporter down"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("could not flush the trace exporter: {error}");
            }
        }
    }
}

/// Whether spans are exported (an OTLP endpoint was configured).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The OTLP endpoint from the environment (base URL; `/v1/traces` is appended).
fn endpoint() -> Option<String> {
    ["LEDGER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .map(|v| v.trim_end_matches('/').to_owned())
}

/// Installs the global subscriber (logs only); the filter comes from `LEDGER_LOG`
/// (default `info`).
pub fn init(format: LogFormat) {
    let _ = install(format, None);
}

/// [`init`], plus OTLP export of every span when an endpoint is configured, with
/// `service.name` = `service` and the given resource attributes (the region).
pub fn init_service(format: LogFormat, service: &str, attributes: &[(&str, &str)]) -> Telemetry {
    let provider = endpoint().and_then(|endpoint| match provider(&endpoint, service, attributes) {
        Ok(provider) => Some(provider),
        Err(error) => {
            eprintln!("trace export to {endpoint} is off: {error}");
            None
        }
    });
    install(format, provider)
}

fn provider(
    endpoint: &str,
    service: &str,
    attributes: &[(&str, &str)],
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()?;
    let resource = Resource::builder()
        .with_service_name(service.to_owned())
        .with_attributes(
            attributes
                .iter()
                .map(|(k, v)| KeyValue::new((*k).to_owned(), (*v).to_owned())),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Logs and exported spans are filtered apart: `LEDGER_LOG` (default `info`) for the
/// logs, `LEDGER_OTLP_FILTER` (default `info`) for the spans, so quiet logs still
/// export every request's span.
fn install(format: LogFormat, provider: Option<SdkTracerProvider>) -> Telemetry {
    let filter = |variable: &str| {
        EnvFilter::try_from_env(variable).unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let export = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("ledger"))
            .with_filter(filter("LEDGER_OTLP_FILTER"))
    });
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter("LEDGER_LOG")))
        .with(export)
        .try_init();
    Telemetry { provider }
}

/// The OpenTelemetry context of a remote parent span.
fn remote(parent: &TraceParent) -> Option<Context> {
    let context = SpanContext::new(
        TraceId::from_hex(&parent.trace_id).ok()?,
        SpanId::from_hex(&parent.span_id).ok()?,
        TraceFlags::new(u8::from_str_radix(&parent.flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    Some(Context::new().with_remote_span_context(context))
}

/// Makes a span that continues `parent`'s trace (or starts one) and the `traceparent`
/// naming it, to pass on to what it causes. When spans are exported, the exported span
/// is a child of `parent` and the returned context names that span; otherwise a new
/// span id in the same trace.
pub fn span_in_trace(
    parent: Option<&TraceParent>,
    make: impl FnOnce() -> tracing::Span,
) -> (tracing::Span, TraceParent) {
    let span = make();
    if exporting() {
        if let Some(context) = parent.and_then(remote) {
            let _ = span.set_parent(context);
        }
        let context = span.context();
        let own = context.span().span_context().clone();
        if own.is_valid() {
            return (
                span,
                TraceParent {
                    trace_id: own.trace_id().to_string(),
                    span_id: own.span_id().to_string(),
                    flags: format!("{:02x}", own.trace_flags().to_u8()),
                },
            );
        }
    }
    let trace = TraceParent::child_of(parent, &mut rand::rng());
    (span, trace)
}

/// Links `span` to the spans named by `traces` (a batch span and the events it handles,
/// after the OpenTelemetry messaging conventions). Only when spans are exported.
pub fn link_all<'a>(span: &tracing::Span, traces: impl IntoIterator<Item = &'a TraceParent>) {
    if !exporting() {
        return;
    }
    for trace in traces {
        if let Some(context) = remote(trace) {
            span.add_link(context.span().span_context().clone());
        }
    }
}
