//! The drill's unplanned failovers: SIGKILL of a region (a shell hook), promote once
//! its lease ran out, restart, and, in kill cycles, failback once the region is healthy
//! and reconciled, each moment on the timeline. Also what the workload had
//! acknowledged at the kill that no survivor held (the RPO), and how long the sagas
//! caught in the kill took to settle after the region returned.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use ledger_wire::internal::failover as paths;
use serde::Serialize;

use super::workload::{self, Attempt, Workload};
use super::{acknowledged, run_hook, Timeline};
use crate::audit::AckedWrite;
use crate::promote::{PromoteOptions, PromoteReport};
use crate::switchover::{MoveReport, Partial, SwitchoverOptions};
use crate::{Cluster, FailoverError};

/// How long a returned region may take to answer, and failback to be accepted.
const RETURN_TIMEOUT: Duration = Duration::from_secs(60);
const FAILBACK_TIMEOUT: Duration = Duration::from_secs(120);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One kill, promote, return (and failback) of one region.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    pub region: String,
    pub killed_at_ms: u64,
    pub promoted_at_ms: u64,
    pub promote_epoch: u64,
    /// Acknowledged writes (transfers: debits) to the region's accounts in no survivor.
    pub unreplicated: usize,
    pub back_at_ms: u64,
    /// From the return until no region held a transfer debited before the return and
    /// still unsettled (None: not within a minute).
    pub sagas_settled_after_return_ms: Option<u64>,
    pub failback_at_ms: Option<u64>,
    /// From the first failback try to its success, including waits for readiness.
    pub failback_ms: Option<u64>,
    pub failback_refusals: u32,
    pub failback_moves: Vec<MoveReport>,
}

pub struct Killed {
    pub at_ms: u64,
    pub unreplicated: Vec<AckedWrite>,
    pub promote: PromoteReport,
    pub promoted_at_ms: u64,
}

/// SIGKILLs `region`, notes what no survivor holds, and promotes it away once its
/// lease has run out.
pub async fn kill_and_promote(
    cluster: &Cluster,
    kill_cmd: &str,
    load: &Workload,
    region: &str,
    timeline: &mut Timeline,
) -> anyhow::Result<Killed> {
    timeline.mark(format!("killing {region}"));
    run_hook(kill_cmd, region)?;
    // After the hook: it may hold the region's relay for a while before the SIGKILL,
    // and what was acknowledged meanwhile counts as acknowledged before the kill.
    let at_ms = timeline.mark(format!("{region} killed"));
    let unreplicated =
        not_in_survivors(cluster, &load.attempts(), &load.accounts, region, at_ms).await?;
    timeline.mark(format!(
        "{} acknowledged writes to {region} are in no survivor",
        unreplicated.len()
    ));
    let promote = promote_when_expired(cluster, region).await?;
    let promoted_at_ms = timeline.mark(format!("promoted {region} at epoch {}", promote.epoch));
    Ok(Killed {
        at_ms,
        unreplicated,
        promote,
        promoted_at_ms,
    })
}

/// Restarts `region` and waits until its node answers; returns when it did.
pub async fn restart(
    cluster: &Cluster,
    restart_cmd: &str,
    region: &str,
    timeline: &mut Timeline,
) -> anyhow::Result<u64> {
    timeline.mark(format!("restarting {region}"));
    run_hook(restart_cmd, region)?;
    wait_answers(cluster, region, RETURN_TIMEOUT).await?;
    Ok(timeline.mark(format!("{region} is back (deposed; reconciling)")))
}

/// A whole cycle: kill, promote, wait `down_for`, restart, wait for the sagas caught
/// in it to settle, fail back.
pub async fn cycle(
    cluster: &Cluster,
    hooks: (&str, &str),
    load: &Workload,
    region: &str,
    down_for: Duration,
    timeline: &mut Timeline,
) -> anyhow::Result<CycleReport> {
    let killed = kill_and_promote(cluster, hooks.0, load, region, timeline).await?;
    tokio::time::sleep(down_for).await;
    let back_at_ms = restart(cluster, hooks.1, region, timeline).await?;
    let back = Instant::now();
    let settled = sagas_settled_since(cluster, back).await;
    timeline.mark(match settled {
        Some(ms) => format!("every saga older than the return settled after {ms} ms"),
        None => "sagas older than the return did NOT settle within a minute".into(),
    });
    let (failback, refusals) = failback(cluster, region).await;
    let (failback_at_ms, failback_ms, failback_moves) = match failback {
        Ok((moves, took)) => {
            let at = timeline.mark(format!(
                "failback of {region} done after {} ms ({refusals} refusals while not ready)",
                took.as_millis()
            ));
            (Some(at), Some(ms(took)), moves)
        }
        Err(error) => {
            timeline.mark(format!("failback of {region} FAILED: {error:#}"));
            (None, None, Vec::new())
        }
    };
    Ok(CycleReport {
        region: region.to_owned(),
        killed_at_ms: killed.at_ms,
        promoted_at_ms: killed.promoted_at_ms,
        promote_epoch: killed.promote.epoch,
        unreplicated: killed.unreplicated.len(),
        back_at_ms,
        sagas_settled_after_return_ms: settled,
        failback_at_ms,
        failback_ms,
        failback_refusals: refusals,
        failback_moves,
    })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Failback, retried while refused (the region not yet healthy and reconciled).
async fn failback(
    cluster: &Cluster,
    region: &str,
) -> (anyhow::Result<(Vec<MoveReport>, Duration)>, u32) {
    let start = Instant::now();
    let mut refusals = 0;
    loop {
        match crate::switchover::failback(cluster, region, SwitchoverOptions::default()).await {
            Ok(moves) => return (Ok((moves, start.elapsed())), refusals),
            Err(Partial {
                error: FailoverError::Refused(why),
                done,
            }) if done.is_empty() && start.elapsed() < FAILBACK_TIMEOUT => {
                refusals += 1;
                tracing::debug!(%why, "failback refused; waiting");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(partial) => return (Err(partial).context("failback"), refusals),
        }
    }
}

/// Milliseconds after `since` until no region holds money in flight older than
/// `since` (every saga caught in the failover ended), or `None` after a minute.
async fn sagas_settled_since(cluster: &Cluster, since: Instant) -> Option<u64> {
    loop {
        let statuses = crate::status::node_statuses(cluster).await;
        let oldest = statuses
            .values()
            .filter_map(|s| s.as_ref().ok())
            .flat_map(|s| s.money_in_flight.iter().map(|f| f.oldest_seconds))
            .fold(0.0_f64, f64::max);
        let all_answer = statuses.values().all(Result::is_ok);
        if all_answer && oldest < since.elapsed().as_secs_f64() {
            return Some(ms(since.elapsed()));
        }
        if since.elapsed() > SETTLE_TIMEOUT {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Acknowledged writes to `region`'s accounts (before `kill_ms`) that no survivor
/// holds; for transfers, whose debit no survivor holds.
async fn not_in_survivors(
    cluster: &Cluster,
    attempts: &[Attempt],
    accounts: &[workload::Account],
    region: &str,
    kill_ms: u64,
) -> anyhow::Result<Vec<AckedWrite>> {
    let homed: HashSet<&str> = accounts
        .iter()
        .filter(|a| a.home == region)
        .map(|a| a.id.as_str())
        .collect();
    let before: Vec<Attempt> = attempts
        .iter()
        .filter(|a| a.end_ms <= kill_ms && homed.contains(a.account.as_str()))
        .cloned()
        .collect();
    let acked = acknowledged(&before, false);
    let mut held: Vec<HashSet<uuid::Uuid>> = Vec::new();
    for survivor in cluster.regions().filter(|r| *r != region) {
        let snapshot = crate::audit::snapshot(cluster, survivor).await?;
        held.push(
            snapshot
                .entries
                .iter()
                .flat_map(|e| {
                    let debit = (e.kind == "transfer_debit").then_some(e.transfer_id);
                    [Some(e.txn_id), debit.flatten()]
                })
                .flatten()
                .collect(),
        );
    }
    Ok(acked
        .into_iter()
        .filter(|w| !held.iter().any(|h| h.contains(&w.txn_id)))
        .collect())
}

async fn promote_when_expired(cluster: &Cluster, region: &str) -> anyhow::Result<PromoteReport> {
    let options = PromoteOptions {
        force: false,
        apply_timeout: Duration::from_secs(3),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match crate::promote::promote(cluster, region, options).await {
            Ok(report) => return Ok(report),
            Err(FailoverError::Refused(why)) if Instant::now() < deadline => {
                tracing::debug!(%why, "waiting for the lease to run out");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error).context("promote"),
        }
    }
}

async fn wait_answers(cluster: &Cluster, region: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = cluster
            .get::<ledger_wire::failover::NodeStatus>(region, paths::STATUS, Duration::from_secs(2))
            .await;
        match answer {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() > deadline => {
                return Err(error).context("region did not come back")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
