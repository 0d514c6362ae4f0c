//! Prometheus metrics of a region node, on a registry of its own (so several nodes can
//! run in one test process).

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// A handle on the node's metric families: cloned into every request's state, so one
/// `Arc` (cloning the two dozen families themselves cost 7% of the node's CPU on the
/// write path, measured with perf).
#[derive(Debug, Clone)]
pub struct Metrics {
    families: Arc<Families>,
}

#[derive(Debug)]
struct Families {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    writes: IntCounterVec,
    pool_connections: IntGauge,
    pool_idle: IntGauge,
    lease_slots: IntGauge,
    lease_remaining: Gauge,
    clock_drift: Gauge,
    fenced_slots: IntGauge,
    fence_remaining: Gauge,
    max_clock_drift: Gauge,
    lease_renewals: IntCounterVec,
    /// Requests answered by another region: where, what, how it went.
    forwarded: IntCounterVec,
    forward_duration: HistogramVec,
    replicated_wait: HistogramVec,
    saga_steps: IntCounterVec,
    reconciled: IntCounterVec,
    late_handed_off: IntCounterVec,
    in_flight_transfers: IntGaugeVec,
    in_flight_amount: GaugeVec,
    in_flight_oldest: GaugeVec,
    key_refusals: IntCounterVec,
}

impl Metrics {
    pub fn new(region: &str) -> Self {
        let registry = Registry::new_custom(
            Some("ledger".into()),
            Some([("region".to_owned(), region.to_owned())].into()),
        )
        .unwrap_or_default();
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered"),
            &["method", "route", "status"],
        )
        .expect("static metric definition");
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            ),
            &["method", "route"],
        )
        .expect("static metric definition");
        let writes = IntCounterVec::new(
            Opts::new("writes_total", "Ledger writes by operation and outcome"),
            &["operation", "outcome"],
        )
        .expect("static metric definition");
        let pool_connections =
            IntGauge::new("db_pool_connections", "Open database connections").expect("static");
        let pool_idle =
            IntGauge::new("db_pool_idle_connections", "Idle database connections").expect("static");
        let lease_slots = IntGauge::new(
            "lease_slots",
            "Slots of this region's last lease grant, once recorded in its database",
        )
        .expect("static");
        let lease_remaining = Gauge::new(
            "lease_remaining_seconds",
            "Time left on this region's lease (last renewal sent + ttl), when scraped",
        )
        .expect("static");
        let clock_drift = Gauge::new(
            "clock_drift_ratio",
            "This node's clock rate against the ownership leader's over the last minute, minus one (negative: slow), from lease grants",
        )
        .expect("static");
        let fenced_slots = IntGauge::new(
            "lease_fenced_slots",
            "Slots granted to this region that wait out their fencing delay (an unplanned gain), when scraped",
        )
        .expect("static");
        let fence_remaining = Gauge::new(
            "lease_fence_remaining_seconds",
            "Longest fencing wait left among those slots, when scraped",
        )
        .expect("static");
        let max_clock_drift = Gauge::new(
            "clock_drift_max_ratio",
            "The clock-rate drift this node's fencing delay assumes at most (--max-clock-drift)",
        )
        .expect("static");
        let lease_renewals = IntCounterVec::new(
            Opts::new("lease_renewals_total", "Lease renewals by result"),
            &["result"],
        )
        .expect("static metric definition");
        let forwarded = IntCounterVec::new(
            Opts::new(
                "forwarded_requests_total",
                "Requests forwarded to another region, by target and result",
            ),
            &["to", "kind", "status"],
        )
        .expect("static metric definition");
        let forward_duration = HistogramVec::new(
            HistogramOpts::new(
                "forward_duration_seconds",
                "Round trip of a forwarded request to the home region",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["to"],
        )
        .expect("static metric definition");
        let replicated_wait = HistogramVec::new(
            HistogramOpts::new(
                "ack_replicated_wait_seconds",
                "Time from the home's commit until another region confirmed a copy",
            )
            .buckets(vec![0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["outcome"],
        )
        .expect("static metric definition");
        let saga_steps = IntCounterVec::new(
            Opts::new("saga_steps_total", "Cross-region transfer steps taken here"),
            &["step"],
        )
        .expect("static metric definition");
        let reconciled = IntCounterVec::new(
            Opts::new(
                "reconciled_total",
                "Late events settled here by outcome (replayed, flagged, duplicate)",
            ),
            &["outcome"],
        )
        .expect("static metric definition");
        let late_handed_off = IntCounterVec::new(
            Opts::new(
                "late_handed_off_total",
                "Late events of accounts owned elsewhere handed to their owner, by result",
            ),
            &["to", "result"],
        )
        .expect("static metric definition");
        let in_flight_transfers = IntGaugeVec::new(
            Opts::new(
                "money_in_flight_transfers",
                "Transfers debited in this region's ledger, not yet credited or refunded",
            ),
            &["currency"],
        )
        .expect("static metric definition");
        let in_flight_amount = GaugeVec::new(
            Opts::new("money_in_flight_amount", "Sum of those transfers"),
            &["currency"],
        )
        .expect("static metric definition");
        let in_flight_oldest = GaugeVec::new(
            Opts::new(
                "money_in_flight_oldest_seconds",
                "Age of the oldest of those transfers' debits",
            ),
            &["currency"],
        )
        .expect("static metric definition");
        let key_refusals = IntCounterVec::new(
            Opts::new(
                "api_key_refusals_total",
                "Public requests refused by the API key layer: missing, unknown, scope, rate",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(key_refusals.clone()),
            Box::new(late_handed_off.clone()),
            Box::new(in_flight_transfers.clone()),
            Box::new(in_flight_amount.clone()),
            Box::new(in_flight_oldest.clone()),
            Box::new(reconciled.clone()),
            Box::new(http_duration.clone()),
            Box::new(writes.clone()),
            Box::new(pool_connections.clone()),
            Box::new(pool_idle.clone()),
            Box::new(lease_slots.clone()),
            Box::new(lease_remaining.clone()),
            Box::new(clock_drift.clone()),
            Box::new(fenced_slots.clone()),
            Box::new(fence_remaining.clone()),
            Box::new(max_clock_drift.clone()),
            Box::new(lease_renewals.clone()),
            Box::new(forwarded.clone()),
            Box::new(forward_duration.clone()),
            Box::new(replicated_wait.clone()),
            Box::new(saga_steps.clone()),
        ] {
            // Registration fails only for duplicate names, which the definitions above exclude.
            let _ = registry.register(collector);
        }
        let families = Families {
            registry,
            http_requests,
            http_duration,
            writes,
            pool_connections,
            pool_idle,
            lease_slots,
            lease_remaining,
            clock_drift,
            fenced_slots,
            fence_remaining,
            max_clock_drift,
            lease_renewals,
            forwarded,
            forward_duration,
            replicated_wait,
            saga_steps,
            reconciled,
            late_handed_off,
            in_flight_transfers,
            in_flight_amount,
            in_flight_oldest,
            key_refusals,
        };
        Metrics {
            families: Arc::new(families),
        }
    }

    pub fn late_handed_off(&self, to: &str, result: &str, count: usize) {
        self.families
            .late_handed_off
            .with_label_values(&[to, result])
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// Replaces the money-in-flight gauges (a currency with nothing in flight drops out).
    pub fn set_money_in_flight(&self, figures: &[ledger_wire::failover::MoneyInFlight]) {
        self.families.in_flight_transfers.reset();
        self.families.in_flight_amount.reset();
        self.families.in_flight_oldest.reset();
        for f in figures {
            let labels = [f.currency.as_str()];
            self.families
                .in_flight_transfers
                .with_label_values(&labels)
                .set(f.transfers);
            self.families
                .in_flight_amount
                .with_label_values(&labels)
                .set(f.amount.parse().unwrap_or(f64::NAN));
            self.families
                .in_flight_oldest
                .with_label_values(&labels)
                .set(f.oldest_seconds);
        }
    }

    pub fn reconciled(&self, outcome: &str) {
        self.families.reconciled.with_label_values(&[outcome]).inc();
    }

    /// Time left on the lease, set when scraped (+Inf for static ownership).
    pub fn set_lease_remaining(&self, remaining: Option<Duration>) {
        self.families
            .lease_remaining
            .set(remaining.map_or(f64::INFINITY, |r| r.as_secs_f64()));
    }

    pub fn set_fenced(&self, (slots, longest): (usize, Duration)) {
        self.families
            .fenced_slots
            .set(i64::try_from(slots).unwrap_or(i64::MAX));
        self.families.fence_remaining.set(longest.as_secs_f64());
    }

    pub fn set_clock_drift(&self, ratio: f64) {
        self.families.clock_drift.set(ratio);
    }

    pub fn set_max_clock_drift(&self, ratio: f64) {
        self.families.max_clock_drift.set(ratio);
    }

    pub fn set_lease(&self, slots: usize) {
        self.families
            .lease_slots
            .set(i64::try_from(slots).unwrap_or(i64::MAX));
    }

    pub fn lease_renewed(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.families
            .lease_renewals
            .with_label_values(&[result])
            .inc();
    }

    pub fn observe_forward(&self, to: &str, kind: &str, status: u16, elapsed: Duration) {
        self.families
            .forwarded
            .with_label_values(&[to, kind, status_label(status)])
            .inc();
        self.families
            .forward_duration
            .with_label_values(&[to])
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_replicated_wait(&self, confirmed: bool, elapsed: Duration) {
        let outcome = if confirmed { "confirmed" } else { "timeout" };
        self.families
            .replicated_wait
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
    }

    pub fn saga_step(&self, step: &str) {
        self.families.saga_steps.with_label_values(&[step]).inc();
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.families
            .http_requests
            .with_label_values(&[method, route, status_label(status)])
            .inc();
        self.families
            .http_duration
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    pub fn count_key_refusal(&self, reason: &str) {
        self.families
            .key_refusals
            .with_label_values(&[reason])
            .inc();
    }

    pub fn observe_write(&self, operation: &str, outcome: &str) {
        self.families
            .writes
            .with_label_values(&[operation, outcome])
            .inc();
    }

    pub fn set_pool(&self, connections: usize, idle: usize) {
        self.families
            .pool_connections
            .set(i64::try_from(connections).unwrap_or(i64::MAX));
        self.families
            .pool_idle
            .set(i64::try_from(idle).unwrap_or(i64::MAX));
    }

    /// The registry in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.families.registry.gather(), &mut buffer)
        {
            tracing::error!(%error, "encoding metrics failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        400 => "400",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        500 => "500",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
