//! Unplanned failover (DESIGN.md, "Failover"): a dead region's slots and accounts move
//! to the survivors by weight. Before the move the survivors get a bounded time to
//! apply what they can still read of the dead region's topic (its lease has run out,
//! so nothing new can appear there); after it each new owner waits out the fencing
//! delay on its own (the region node enforces it) and then serves. An automatic mode
//! promotes a region whose lease has been expired for a detection time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ledger_wire::internal::failover as paths;
use ledger_wire::ownership::{Outcome, RegionStatus, Target};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::status::{node_statuses, now_ms};
use crate::{Cluster, FailoverError};

const APPLY_POLL: Duration = Duration::from_millis(50);
/// A replicator's lag measurement older than this is not trusted as "caught up".
const FRESH_LAG_MS: i64 = 2_000;

#[derive(Debug, Clone, Copy)]
pub struct PromoteOptions {
    pub force: bool,
    /// How long survivors may spend applying the dead region's readable topic.
    pub apply_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromoteReport {
    pub region: String,
    pub forced: bool,
    /// Per survivor: whether it had applied everything readable of the dead region's
    /// topic before the move, and the events it still lagged by.
    pub applied_before_move: BTreeMap<String, (bool, Option<i64>)>,
    pub apply_wait_ms: u64,
    /// Per survivor: what it took from the other survivors' copies of the dead
    /// region's recent events (outcome -> count).
    pub exchanged: BTreeMap<String, BTreeMap<String, i64>>,
    pub epoch: u64,
    /// Slots each survivor received.
    pub slots_to: BTreeMap<String, usize>,
    pub accounts_moved: usize,
    /// The fencing delay the new owners wait before serving.
    pub fence_ms: u64,
}

/// Promotes `region`'s slots to the survivors.
pub async fn promote(
    cluster: &Cluster,
    region: &str,
    options: PromoteOptions,
) -> Result<PromoteReport, FailoverError> {
    let map = cluster.map().await?;
    let info = map
        .regions
        .iter()
        .find(|r| r.name == region)
        .ok_or_else(|| FailoverError::Invalid(format!("no region named {region}")))?;
    if info.status == RegionStatus::Down {
        return Err(FailoverError::Refused(format!(
            "{region} is already down (promoted)"
        )));
    }
    let left = info.lease_expires_at_ms.map(|at| at - now_ms());
    if let Some(left) = left.filter(|l| *l > 0) {
        if !options.force {
            return Err(FailoverError::Refused(format!(
                "{region}'s lease is live for {left} ms more; a live region may still be writing. \
                 Wait for it to expire or pass --force if you know it is gone"
            )));
        }
    }
    let survivors: Vec<String> = map
        .regions
        .iter()
        .filter(|r| r.name != region && r.status != RegionStatus::Down)
        .map(|r| r.name.clone())
        .collect();
    let apply_started = Instant::now();
    let applied_before_move =
        await_applied(cluster, region, &survivors, options.apply_timeout).await;
    let exchanged = exchange(cluster, region, &survivors).await?;
    let apply_wait_ms = u64::try_from(apply_started.elapsed().as_millis()).unwrap_or(u64::MAX);

    let reason = format!(
        "promote: {region} lost ({})",
        left.map_or("never renewed".into(), |l| format!(
            "lease expired {} ms ago",
            -l
        ))
    );
    let outcome = cluster
        .ownership
        .promote(region, options.force, &reason)
        .await?;
    let Outcome::Applied { epoch, change, .. } = outcome else {
        return Err(FailoverError::Invalid(format!(
            "unexpected answer: {outcome:?}"
        )));
    };
    let mut slots_to = BTreeMap::new();
    let mut accounts_moved = 0;
    for step in change.iter().flat_map(|c| c.moves.iter()) {
        match step.target {
            Target::Slots { first, last } => {
                *slots_to.entry(step.to.clone()).or_insert(0) += (last - first + 1) as usize;
            }
            Target::Account(_) => accounts_moved += 1,
        }
    }
    let fence_ms = (map.lease_ttl_ms as f64 * 1.01) as u64 + 500;
    tracing::info!(%region, epoch, ?slots_to, "promoted");
    Ok(PromoteReport {
        region: region.to_owned(),
        forced: options.force,
        applied_before_move,
        apply_wait_ms,
        exchanged,
        epoch,
        slots_to,
        accounts_moved,
        fence_ms,
    })
}

/// How far back survivors exchange the dead region's events: anything older reached
/// every survivor long ago, unless one lagged by more than this.
const EXCHANGE_WINDOW_S: u64 = 300;

/// Gives every survivor what the others hold of `dead`'s recent events: an
/// `ack: replicated` write needs a copy in only one other region, and the new owner of
/// its account may be another one, while `dead`'s own topic is gone with it.
async fn exchange(
    cluster: &Cluster,
    dead: &str,
    survivors: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, i64>>, FailoverError> {
    let request = serde_json::json!({"origin": dead, "since_s": EXCHANGE_WINDOW_S});
    let mut exported = Vec::new();
    for survivor in survivors {
        let events: serde_json::Value = cluster
            .post(survivor, paths::EXPORT, &request, Duration::from_secs(30))
            .await?;
        exported.push((survivor.clone(), events));
    }
    let mut outcomes = BTreeMap::new();
    for importer in survivors {
        let mut total: BTreeMap<String, i64> = BTreeMap::new();
        for (exporter, events) in &exported {
            if exporter == importer || events.as_array().is_none_or(Vec::is_empty) {
                continue;
            }
            let counts: BTreeMap<String, i64> = cluster
                .post(importer, paths::IMPORT, events, Duration::from_secs(60))
                .await?;
            for (outcome, count) in counts {
                *total.entry(outcome).or_default() += count;
            }
        }
        outcomes.insert(importer.clone(), total);
    }
    tracing::info!(
        ?outcomes,
        "survivors exchanged the dead region's recent events"
    );
    Ok(outcomes)
}

/// Waits (bounded) until every survivor reports no lag on `dead`'s topic.
async fn await_applied(
    cluster: &Cluster,
    dead: &str,
    survivors: &[String],
    timeout: Duration,
) -> BTreeMap<String, (bool, Option<i64>)> {
    let until = Instant::now() + timeout;
    loop {
        let statuses = node_statuses(cluster).await;
        let view: BTreeMap<String, (bool, Option<i64>)> = survivors
            .iter()
            .map(|name| {
                let lag = statuses
                    .get(name)
                    .and_then(|s| s.as_ref().ok())
                    .and_then(|s| s.replication.iter().find(|l| l.origin == dead))
                    .filter(|l| l.measured_ms_ago < FRESH_LAG_MS)
                    .map(|l| l.lag_events);
                (name.clone(), (lag == Some(0), lag))
            })
            .collect();
        if view.values().all(|(done, _)| *done) || Instant::now() >= until {
            return view;
        }
        tokio::time::sleep(APPLY_POLL).await;
    }
}

/// Promotes any active region whose lease has been expired for `detect_after`, until
/// `shutdown`. Each promotion is printed as one JSON line.
pub async fn auto(
    cluster: &Cluster,
    detect_after: Duration,
    apply_timeout: Duration,
    shutdown: CancellationToken,
) -> Result<(), FailoverError> {
    let detect_ms = i64::try_from(detect_after.as_millis()).unwrap_or(i64::MAX);
    tracing::info!(detect_ms, "automatic promote: watching leases");
    while !shutdown.is_cancelled() {
        match cluster.map().await {
            Ok(map) => {
                let now = now_ms();
                for info in &map.regions {
                    let expired_for = info.lease_expires_at_ms.map(|at| now - at);
                    if info.status == RegionStatus::Down
                        || expired_for.is_none_or(|e| e < detect_ms)
                    {
                        continue;
                    }
                    let options = PromoteOptions {
                        force: false,
                        apply_timeout,
                    };
                    match promote(cluster, &info.name, options).await {
                        Ok(report) => {
                            println!("{}", serde_json::to_string(&report).unwrap_or_default())
                        }
                        Err(error) => {
                            tracing::error!(region = %info.name, %error, "automatic promote failed")
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "ownership service unreachable; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    Ok(())
}
