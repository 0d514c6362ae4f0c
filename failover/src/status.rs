//! `failover status`: the ownership map (regions, leases, slots, epochs) with every
//! node's own view (replication lag per origin, outbox, late events), as a table or
//! JSON; and the checks a region must pass before a failback.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use ledger_wire::failover::NodeStatus;
use ledger_wire::internal::failover as paths;
use ledger_wire::ownership::RegionStatus;
use serde::Serialize;

use crate::{Cluster, FailoverError};

const NODE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub map_version: u64,
    pub epoch: u64,
    pub slot_count: u32,
    pub lease_ttl_ms: u64,
    pub regions: Vec<RegionReport>,
    /// Accounts homed by override, per region.
    pub overrides: BTreeMap<String, usize>,
    /// Late events awaiting reconciliation, summed over reachable regions.
    pub late_pending: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionReport {
    pub name: String,
    pub status: RegionStatus,
    pub weight: u32,
    /// Milliseconds of lease left by the ownership service's clock (negative: expired).
    pub lease_left_ms: Option<i64>,
    pub slots: usize,
    pub frozen_slots: usize,
    /// Lowest and highest epoch among its slots.
    pub epochs: Option<(u64, u64)>,
    pub node: Option<NodeStatus>,
    pub node_error: Option<String>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Every node's status, asked at once; unreachable nodes give their error.
pub async fn node_statuses(cluster: &Cluster) -> BTreeMap<String, Result<NodeStatus, String>> {
    let asks = cluster.regions().map(|region| async move {
        let answer = cluster
            .get::<NodeStatus>(region, paths::STATUS, NODE_TIMEOUT)
            .await
            .map_err(|e| e.to_string());
        (region.to_owned(), answer)
    });
    futures::future::join_all(asks).await.into_iter().collect()
}

pub async fn status(cluster: &Cluster) -> Result<StatusReport, FailoverError> {
    let map = cluster.map().await?;
    let mut nodes = node_statuses(cluster).await;
    let now = now_ms();
    let regions = map
        .regions
        .iter()
        .map(|info| {
            let owned: Vec<_> = map.slots.iter().filter(|s| s.region == info.name).collect();
            let epochs = owned.iter().map(|s| s.epoch);
            let (node, node_error) = match nodes.remove(&info.name) {
                Some(Ok(node)) => (Some(node), None),
                Some(Err(error)) => (None, Some(error)),
                None => (None, Some("no node address given".to_owned())),
            };
            RegionReport {
                name: info.name.clone(),
                status: info.status,
                weight: info.weight,
                lease_left_ms: info.lease_expires_at_ms.map(|at| at - now),
                slots: owned.len(),
                frozen_slots: owned.iter().filter(|s| s.frozen).count(),
                epochs: epochs.clone().min().zip(epochs.max()),
                node,
                node_error,
            }
        })
        .collect::<Vec<_>>();
    let mut overrides = BTreeMap::new();
    for owner in map.overrides.values() {
        *overrides.entry(owner.region.clone()).or_insert(0) += 1;
    }
    let late_pending = regions
        .iter()
        .filter_map(|r| r.node.as_ref())
        .map(|n| n.late_events.get("pending").copied().unwrap_or(0))
        .sum();
    Ok(StatusReport {
        map_version: map.version,
        epoch: map.epoch,
        slot_count: map.slot_count,
        lease_ttl_ms: map.lease_ttl_ms,
        regions,
        overrides,
        late_pending,
    })
}

fn lease_text(left: Option<i64>) -> String {
    match left {
        None => "never renewed".into(),
        Some(ms) if ms >= 0 => format!("live {:.1}s", ms as f64 / 1000.0),
        Some(ms) => format!("EXPIRED {:.1}s ago", -ms as f64 / 1000.0),
    }
}

/// The report as a terminal table.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ownership map v{} (epoch {}), {} slots, lease ttl {} ms",
        report.map_version, report.epoch, report.slot_count, report.lease_ttl_ms
    );
    let _ = writeln!(
        out,
        "\n{:<10} {:<9} {:>6} {:<18} {:>6} {:>7} {:>10} {:>9} {:>8} {:>10}",
        "region",
        "status",
        "weight",
        "lease",
        "slots",
        "frozen",
        "epochs",
        "overrides",
        "outbox",
        "late"
    );
    for r in &report.regions {
        let epochs = r.epochs.map_or("-".into(), |(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}..{hi}")
            }
        });
        let (outbox, late) = match &r.node {
            Some(n) => (
                n.outbox_unpublished.to_string(),
                n.late_events
                    .iter()
                    .filter(|(_, count)| **count > 0)
                    .map(|(status, count)| format!("{status}={count}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            None => ("?".into(), "?".into()),
        };
        let _ = writeln!(
            out,
            "{:<10} {:<9} {:>6} {:<18} {:>6} {:>7} {:>10} {:>9} {:>8} {:>10}",
            r.name,
            format!("{:?}", r.status).to_lowercase(),
            r.weight,
            lease_text(r.lease_left_ms),
            r.slots,
            r.frozen_slots,
            epochs,
            report.overrides.get(&r.name).copied().unwrap_or(0),
            outbox,
            if late.is_empty() { "-".into() } else { late },
        );
    }
    let _ = writeln!(
        out,
        "\nreplication lag (row applies events from column's region):"
    );
    let names: Vec<&str> = report.regions.iter().map(|r| r.name.as_str()).collect();
    let _ = write!(out, "{:<10}", "");
    for name in &names {
        let _ = write!(out, " {name:>16}");
    }
    let _ = writeln!(out);
    for r in &report.regions {
        let _ = write!(out, "{:<10}", r.name);
        for origin in &names {
            let cell = if *origin == r.name {
                "-".to_owned()
            } else {
                match &r.node {
                    None => "unreachable".to_owned(),
                    Some(n) => n
                        .replication
                        .iter()
                        .find(|l| l.origin == *origin)
                        .map_or("no data".into(), |l| {
                            format!("{} ev / {:.0} ms", l.lag_events, l.lag_seconds * 1000.0)
                        }),
                }
            };
            let _ = write!(out, " {cell:>16}");
        }
        let _ = writeln!(out);
    }
    for r in report.regions.iter().filter(|r| r.node_error.is_some()) {
        let _ = writeln!(
            out,
            "{}: node unreachable: {}",
            r.name,
            r.node_error.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(
        out,
        "\nlate events awaiting reconciliation: {}",
        report.late_pending
    );
    let _ = writeln!(
        out,
        "money in flight (debited, not yet credited or refunded):"
    );
    for r in &report.regions {
        let Some(node) = &r.node else { continue };
        if node.money_in_flight.is_empty() {
            let _ = writeln!(out, "  {:<10} none", r.name);
        }
        for f in &node.money_in_flight {
            let _ = writeln!(
                out,
                "  {:<10} {} {} in {} transfers, oldest {:.1} s",
                r.name, f.amount, f.currency, f.transfers, f.oldest_seconds
            );
        }
    }
    out
}

/// `None` when `region` may take its slots back: its node answers, its outbox is
/// published, and no region holds late events still awaiting reconciliation.
pub async fn failback_readiness(
    cluster: &Cluster,
    region: &str,
) -> Result<Option<String>, FailoverError> {
    let nodes = node_statuses(cluster).await;
    let Some(own) = nodes.get(region) else {
        return Err(FailoverError::UnknownRegion(region.to_owned()));
    };
    let own = match own {
        Ok(own) => own,
        Err(error) => return Ok(Some(format!("its node does not answer ({error})"))),
    };
    if own.outbox_unpublished > 0 {
        return Ok(Some(format!(
            "{} outbox rows are not published yet",
            own.outbox_unpublished
        )));
    }
    for (name, answer) in &nodes {
        if let Ok(node) = answer {
            let pending = node.late_events.get("pending").copied().unwrap_or(0);
            if pending > 0 {
                return Ok(Some(format!(
                    "{name} holds {pending} late events awaiting reconciliation"
                )));
            }
        }
    }
    Ok(None)
}
