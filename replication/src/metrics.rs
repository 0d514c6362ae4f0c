//! Prometheus metrics of a replicator (`ledger_replication_*`), on a registry of its own
//! so several replicators can run in one test process.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub relay_active: IntGauge,
    pub outbox_backlog: IntGauge,
    pub outbox_oldest_seconds: prometheus::Gauge,
    pub events_published: IntCounter,
    pub publish_errors: IntCounter,
    pub relay_batch_events: Histogram,
    pub cleaned_rows: IntCounterVec,
    pub events_applied: IntCounterVec,
    pub apply_batches: IntCounterVec,
    pub apply_batch_seconds: HistogramVec,
    pub apply_delay_seconds: HistogramVec,
    pub lag_seconds: prometheus::GaugeVec,
    pub lag_events: IntGaugeVec,
    pub applier_idle: IntGaugeVec,
    pub dlq_events: IntCounterVec,
    pub dlq_waiting: IntGauge,
    pub offsets_skipped: IntCounterVec,
    pub late_events_stored: IntGauge,
    pub waiting_events: IntGauge,
    pub waiting_oldest_seconds: prometheus::Gauge,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

impl Metrics {
    pub fn new(region: &str) -> Self {
        let registry = Registry::new_custom(
            Some("ledger_replication".into()),
            Some([("region".to_owned(), region.to_owned())].into()),
        )
        .unwrap_or_default();
        let delay_buckets = vec![
            0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
        ];
        let metrics = Metrics {
            registry,
            relay_active: IntGauge::new("relay_active", "1 while this relay holds the lock")
                .expect("static"),
            outbox_backlog: IntGauge::new("outbox_backlog", "Outbox rows not yet published")
                .expect("static"),
            outbox_oldest_seconds: prometheus::Gauge::new(
                "outbox_oldest_seconds",
                "Age of the oldest unpublished outbox row",
            )
            .expect("static"),
            events_published: IntCounter::new(
                "events_published_total",
                "Events the broker acknowledged",
            )
            .expect("static"),
            publish_errors: IntCounter::new(
                "publish_errors_total",
                "Relay sessions ended by a failed delivery",
            )
            .expect("static"),
            relay_batch_events: Histogram::with_opts(
                HistogramOpts::new("relay_batch_events", "Outbox rows per read")
                    .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]),
            )
            .expect("static"),
            cleaned_rows: counter_vec(
                "cleaned_rows_total",
                "Rows deleted by the cleanup schedule",
                &["table"],
            ),
            events_applied: counter_vec(
                "events_applied_total",
                "Events read by the appliers, by origin region and outcome",
                &["origin", "outcome"],
            ),
            apply_batches: counter_vec(
                "apply_batches_total",
                "Applier transactions, by origin and result",
                &["origin", "result"],
            ),
            apply_batch_seconds: HistogramVec::new(
                HistogramOpts::new("apply_batch_seconds", "One applier transaction")
                    .buckets(vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0]),
                &["origin"],
            )
            .expect("static"),
            apply_delay_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "apply_delay_seconds",
                    "From the home's commit to applied here, per event",
                )
                .buckets(delay_buckets),
                &["origin"],
            )
            .expect("static"),
            lag_seconds: prometheus::GaugeVec::new(
                Opts::new(
                    "lag_seconds",
                    "Age of the newest applied event while events are waiting; 0 when caught up",
                ),
                &["origin"],
            )
            .expect("static"),
            lag_events: IntGaugeVec::new(
                Opts::new(
                    "lag_events",
                    "Events in the origin's topic not yet applied here",
                ),
                &["origin"],
            )
            .expect("static"),
            applier_idle: IntGaugeVec::new(
                Opts::new(
                    "applier_idle",
                    "1 while the applier of an origin has stopped fetching (nothing arrived lately) and only reads the origin's partition ends now and then",
                ),
                &["origin"],
            )
            .expect("static"),
            dlq_events: counter_vec(
                "dlq_events_total",
                "Events sent to the dead-letter topic",
                &["origin"],
            ),
            dlq_waiting: IntGauge::new(
                "dlq_waiting",
                "Letters in this region's dead-letter topic that no replay has settled",
            )
            .expect("static"),
            offsets_skipped: counter_vec(
                "offsets_skipped_total",
                "Offsets of an origin's topic an applier found deleted before it read them (an alarm: those events were never applied here)",
                &["origin"],
            ),
            late_events_stored: IntGauge::new("late_events", "Late events awaiting reconciliation")
                .expect("static"),
            waiting_events: IntGauge::new(
                "waiting_events",
                "Events waiting for an earlier seq of their account (gaps)",
            )
            .expect("static"),
            waiting_oldest_seconds: prometheus::Gauge::new(
                "waiting_oldest_seconds",
                "How long the oldest waiting event has waited",
            )
            .expect("static"),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.relay_active.clone()),
            Box::new(metrics.outbox_backlog.clone()),
            Box::new(metrics.outbox_oldest_seconds.clone()),
            Box::new(metrics.events_published.clone()),
            Box::new(metrics.publish_errors.clone()),
            Box::new(metrics.relay_batch_events.clone()),
            Box::new(metrics.cleaned_rows.clone()),
            Box::new(metrics.events_applied.clone()),
            Box::new(metrics.apply_batches.clone()),
            Box::new(metrics.apply_batch_seconds.clone()),
            Box::new(metrics.apply_delay_seconds.clone()),
            Box::new(metrics.lag_seconds.clone()),
            Box::new(metrics.lag_events.clone()),
            Box::new(metrics.applier_idle.clone()),
            Box::new(metrics.dlq_events.clone()),
            Box::new(metrics.dlq_waiting.clone()),
            Box::new(metrics.offsets_skipped.clone()),
            Box::new(metrics.late_events_stored.clone()),
            Box::new(metrics.waiting_events.clone()),
            Box::new(metrics.waiting_oldest_seconds.clone()),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        metrics
    }

    /// Makes the alarm counters of an origin's applier exist at 0 from the start, so
    /// an alert on `increase(...)` sees the first dead letter or skipped offset (a
    /// series that first appears at 1 shows no increase).
    pub fn start_origin(&self, origin: &str) {
        self.dlq_events.with_label_values(&[origin]);
        self.offsets_skipped.with_label_values(&[origin]);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for want of space; a failure would be a bug in
        // a metric, and an empty page is the honest answer then.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}
