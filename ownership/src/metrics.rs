//! Prometheus metrics of one voter, on a registry of its own (several voters may run
//! in one test process).

use std::time::Duration;

use ledger_wire::ownership::{ChangeKind, Outcome};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::types::NodeId;

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub is_leader: IntGauge,
    pub current_leader: IntGauge,
    pub term: IntGauge,
    pub last_log_index: IntGauge,
    pub commit_index: IntGauge,
    pub applied_index: IntGauge,
    pub snapshot_index: IntGauge,
    pub snapshot_bytes: IntGauge,
    applied: IntCounterVec,
    lease_renewals: IntCounterVec,
    region_slots: IntGaugeVec,
    ownership_changes: IntCounterVec,
    request_duration: HistogramVec,
    refused_calls: IntCounter,
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("static metric definition")
}

impl Metrics {
    pub fn new(node_id: NodeId) -> Self {
        let registry = Registry::new_custom(
            Some("ledger_ownership".into()),
            Some([("voter".to_owned(), node_id.to_string())].into()),
        )
        .unwrap_or_default();
        let applied = IntCounterVec::new(
            Opts::new(
                "commands_applied_total",
                "Commands applied by this voter's state machine",
            ),
            &["command", "outcome"],
        )
        .expect("static metric definition");
        let region_slots = IntGaugeVec::new(
            Opts::new(
                "region_slots",
                "Slots each region's last applied lease renewal granted it (0 once promoted away)",
            ),
            &["region"],
        )
        .expect("static metric definition");
        let lease_renewals = IntCounterVec::new(
            Opts::new("lease_renewals_total", "Lease renewals applied, by region"),
            &["region"],
        )
        .expect("static metric definition");
        let ownership_changes = IntCounterVec::new(
            Opts::new(
                "ownership_changes_total",
                "Changes to the ownership map, by kind",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Client API latency at this voter (commands include the Raft commit)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "status"],
        )
        .expect("static metric definition");
        let refused_calls = IntCounter::new(
            "refused_calls_total",
            "Calls refused for missing or wrong credentials (someone without the deployment's secret, or a misconfigured voter)",
        )
        .expect("static metric definition");
        let metrics = Metrics {
            is_leader: gauge("is_leader", "1 if this voter is the Raft leader"),
            current_leader: gauge(
                "current_leader",
                "Node id of the leader this voter knows, -1 if none",
            ),
            term: gauge("term", "Current Raft term"),
            last_log_index: gauge("last_log_index", "Index of the last log entry"),
            commit_index: gauge(
                "commit_index",
                "Index of the last committed entry this voter knows",
            ),
            applied_index: gauge("applied_index", "Index of the last applied entry"),
            snapshot_index: gauge("snapshot_index", "Index the latest snapshot covers"),
            snapshot_bytes: gauge("snapshot_bytes", "Size of the latest snapshot's state"),
            applied,
            lease_renewals,
            region_slots,
            ownership_changes,
            request_duration,
            refused_calls,
            registry,
        };
        for collector in [
            Box::new(metrics.is_leader.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.current_leader.clone()),
            Box::new(metrics.term.clone()),
            Box::new(metrics.last_log_index.clone()),
            Box::new(metrics.commit_index.clone()),
            Box::new(metrics.applied_index.clone()),
            Box::new(metrics.snapshot_index.clone()),
            Box::new(metrics.snapshot_bytes.clone()),
            Box::new(metrics.applied.clone()),
            Box::new(metrics.lease_renewals.clone()),
            Box::new(metrics.region_slots.clone()),
            Box::new(metrics.ownership_changes.clone()),
            Box::new(metrics.request_duration.clone()),
            Box::new(metrics.refused_calls.clone()),
        ] {
            // Registration fails only for duplicate names, which the definitions above exclude.
            let _ = metrics.registry.register(collector);
        }
        metrics
    }

    pub fn record_applied(&self, command: &str, outcome: &Outcome) {
        let label = match outcome {
            Outcome::Applied { change, .. } => {
                if let Some(change) = change {
                    self.ownership_changes
                        .with_label_values(&[change.kind.name()])
                        .inc();
                    if let ChangeKind::Promote { region, .. } = &change.kind {
                        self.region_slots
                            .with_label_values(&[region.as_str()])
                            .set(0);
                    }
                }
                "applied"
            }
            Outcome::Lease(grant) => {
                self.lease_renewals
                    .with_label_values(&[grant.region.as_str()])
                    .inc();
                self.region_slots
                    .with_label_values(&[grant.region.as_str()])
                    .set(i64::try_from(grant.slot_numbers().count()).unwrap_or(i64::MAX));
                "applied"
            }
            Outcome::Rejected { .. } => "rejected",
        };
        self.applied.with_label_values(&[command, label]).inc();
    }

    pub fn count_refused_call(&self) {
        self.refused_calls.inc();
    }

    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.request_duration
            .with_label_values(&[route, &status.to_string()])
            .observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
