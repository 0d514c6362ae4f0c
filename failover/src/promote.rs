//! Unplanned failover (ARCHITECTURE.md, "Failover"): a dead region's slots and accounts move
//! to the survivors by weight. Before the move the survivors get a bounded time to
//! apply what they can still read of the dead region's topic (its lease has run out,
//! so nothing new can appear there); after it each new owner waits out the fencing
//! delay on its own (the region node enforces it) and then serves. An automatic mode
//! promotes a region whose lease has been expired for a detection time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ledger_wire::failover::{ExportPage, ExportRequest, ImportReport, ImportRequest};
use ledger_wire::internal::failover as paths;
use ledger_wire::ownership::{ChangeKind, Outcome, RegionStatus, RejectCode, Target};
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
    /// What each survivor took from the other survivors' copies of the dead region's
    /// recent events, and the calls that failed.
    pub exchanged: ExchangeReport,
    pub epoch: u64,
    /// Slots each survivor received.
    pub slots_to: BTreeMap<String, usize>,
    pub accounts_moved: usize,
    /// The fencing delay the new owners wait before serving: the longest any survivor
    /// reports from its own settings.
    pub fence_ms: u64,
    /// False when no survivor reported it (older nodes): `fence_ms` is then the
    /// default rule's (ttl * 1.01 + 500 ms), not the nodes'.
    pub fence_from_nodes: bool,
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
    let exchanged = exchange(cluster, region, &survivors, EXCHANGE_PAGE).await;
    let apply_wait_ms = u64::try_from(apply_started.elapsed().as_millis()).unwrap_or(u64::MAX);

    let reason = format!(
        "promote: {region} lost ({})",
        left.map_or("never renewed".into(), |l| format!(
            "lease expired {} ms ago",
            -l
        ))
    );
    let outcome = send_promote(cluster, region, options.force, &reason).await?;
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
    let fence_ms = fence_of(cluster, &survivors).await;
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
        fence_ms: fence_ms.unwrap_or((map.lease_ttl_ms as f64 * 1.01) as u64 + 500),
        fence_from_nodes: fence_ms.is_some(),
    })
}

/// Sends the promote command. When its answer is lost (the leader was cut off or
/// replaced while it was in flight) the map, read linearizably from the new leader,
/// says whether it was applied: if the region is down, the promote record is taken
/// from the history; if not, the command is sent again. Raft settles the fate of the
/// lost entry before the new leader serves that read.
async fn send_promote(
    cluster: &Cluster,
    region: &str,
    force: bool,
    reason: &str,
) -> Result<Outcome, FailoverError> {
    let deadline = Instant::now() + UNKNOWN_OUTCOME_BUDGET;
    let mut lost = false;
    loop {
        match cluster.ownership.promote(region, force, reason).await {
            Err(ownership_client::ClientError::OutcomeUnknown(why))
                if Instant::now() < deadline =>
            {
                tracing::warn!(%region, %why, "the promote's answer was lost; reading the map");
                lost = true;
                if let Some(outcome) = applied_promote(cluster, region).await? {
                    return Ok(outcome);
                }
            }
            // A resend refused because the lost one committed after the map was read.
            Err(ownership_client::ClientError::Rejected {
                code: RejectCode::RegionDown,
                message,
            }) if lost => {
                return applied_promote(cluster, region)
                    .await?
                    .ok_or(FailoverError::Refused(message));
            }
            other => return Ok(other?),
        }
    }
}

/// How long a promote whose answer was lost is resolved and resent.
const UNKNOWN_OUTCOME_BUDGET: Duration = Duration::from_secs(30);
/// How many recent history records are searched for a promote whose answer was lost.
const RECENT_CHANGES: u64 = 64;

/// The applied promote of `region`, if the map shows it down.
async fn applied_promote(
    cluster: &Cluster,
    region: &str,
) -> Result<Option<Outcome>, FailoverError> {
    let map = cluster.map().await?;
    let down = map
        .regions
        .iter()
        .any(|r| r.name == region && r.status == RegionStatus::Down);
    if !down {
        return Ok(None);
    }
    let since = map.version.saturating_sub(RECENT_CHANGES);
    let changes = cluster
        .ownership
        .history(since, RECENT_CHANGES as usize)
        .await?;
    let record = changes.into_iter().rev().find(
        |c| matches!(&c.kind, ChangeKind::Promote { region: promoted, .. } if promoted == region),
    );
    match record {
        Some(record) => Ok(Some(Outcome::Applied {
            version: record.version,
            epoch: record.epoch,
            change: Some(Box::new(record)),
        })),
        None => Err(FailoverError::Invalid(format!(
            "{region} is down but none of the last {RECENT_CHANGES} changes promoted it"
        ))),
    }
}

/// How far back survivors exchange the dead region's events: anything older reached
/// every survivor long ago, unless one lagged by more than this.
const EXCHANGE_WINDOW_S: u64 = 300;

/// The longest fencing delay the survivors report (each from its own settings).
async fn fence_of(cluster: &Cluster, survivors: &[String]) -> Option<u64> {
    node_statuses(cluster)
        .await
        .iter()
        .filter(|(name, _)| survivors.contains(name))
        .filter_map(|(_, status)| status.as_ref().ok().and_then(|s| s.fence_delay_ms))
        .max()
}

/// Events per exchange page (the node caps it too).
const EXCHANGE_PAGE: u32 = 1_000;
const EXCHANGE_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the exchange did: per importer, outcome -> count; and what failed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExchangeReport {
    pub imported: BTreeMap<String, BTreeMap<String, i64>>,
    pub pages: usize,
    /// Calls that failed (the exchange goes on without them; see [`exchange`]).
    pub failures: Vec<String>,
}

/// Gives every survivor what the others hold of `dead`'s recent events: an
/// `ack: replicated` write needs a copy in only one other region, and the new owner of
/// its account may be another one, while `dead`'s own topic is gone with it.
///
/// A page at a time (each exporter's page goes to every other survivor before the next
/// is read), so neither side holds more than a page. Best effort: a failed call is
/// reported and the promote goes on. What did not arrive is not lost: the survivor
/// holding it applies the new owner's events over it later, which turns its copy into a
/// late event, handed to the owner and reconciled.
pub async fn exchange(
    cluster: &Cluster,
    dead: &str,
    survivors: &[String],
    page: u32,
) -> ExchangeReport {
    let mut report = ExchangeReport::default();
    for exporter in survivors {
        let mut after = None;
        loop {
            let request = ExportRequest {
                origin: dead.to_owned(),
                since_s: EXCHANGE_WINDOW_S,
                after,
                limit: page,
            };
            let page: ExportPage = match cluster
                .post(exporter, paths::EXPORT, &request, EXCHANGE_CALL_TIMEOUT)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    report
                        .failures
                        .push(format!("export from {exporter}: {error}"));
                    break;
                }
            };
            if page.events.is_empty() {
                break;
            }
            report.pages += 1;
            let body = ImportRequest {
                events: page.events,
            };
            for importer in survivors.iter().filter(|s| *s != exporter) {
                let counts: Result<ImportReport, _> = cluster
                    .post(importer, paths::IMPORT, &body, EXCHANGE_CALL_TIMEOUT)
                    .await;
                match counts {
                    Ok(counts) => {
                        let total = report.imported.entry(importer.clone()).or_default();
                        for (outcome, count) in counts {
                            *total.entry(outcome).or_default() += count;
                        }
                    }
                    Err(error) => report
                        .failures
                        .push(format!("import from {exporter} into {importer}: {error}")),
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    if report.failures.is_empty() {
        tracing::info!(imported = ?report.imported, pages = report.pages,
            "survivors exchanged the dead region's recent events");
    } else {
        tracing::warn!(imported = ?report.imported, failures = ?report.failures,
            "the exchange of the dead region's recent events was partial; promoting anyway");
    }
    report
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
