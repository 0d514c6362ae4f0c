//! `failover drill`: runs a named scenario against a live deployment while the
//! built-in workload writes, prints progress, and ends with a report: per-slot write
//! unavailability (planned moves) or RTO (kill), RPO (acknowledged writes not yet in
//! any survivor at the kill, and what became of each), client-visible errors by kind,
//! a timeline, and the invariants checked on every region.

pub mod figures;
pub mod report;
pub mod workload;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::audit::{self, AckedWrite, InvariantReport};
use crate::promote::{PromoteOptions, PromoteReport};
use crate::switchover::{MoveReport, SwitchoverOptions};
use crate::{Cluster, FailoverError, Targets};
use workload::{Attempt, WorkloadOptions};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Scenario {
    /// Planned switchover of everything homed in `region` to `to`.
    Switchover { region: String, to: String },
    /// SIGKILL of `region`, promote once its lease ran out, keep writing, bring it back
    /// after `down_for_ms`, wait for reconciliation.
    KillPromoteReturn { region: String, down_for_ms: u64 },
    /// Rehome one account of `region` to `to`.
    Rehome { region: String, to: String },
}

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub scenario: Scenario,
    pub workload: WorkloadOptions,
    pub warmup: Duration,
    pub observe: Duration,
    pub heal_timeout: Duration,
    /// Shell commands: kill and restart a region (`{region}` is replaced), and one run
    /// just before the final audit (fault injection in tests).
    pub kill_cmd: Option<String>,
    pub restart_cmd: Option<String>,
    pub before_audit_cmd: Option<String>,
    pub report_dir: PathBuf,
}

/// A moment on the drill's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Marker {
    pub at_ms: u64,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub scenario: Scenario,
    pub started_at: String,
    pub lease_ttl_ms: u64,
    pub rate_per_sec: u32,
    pub ack: &'static str,
    pub markers: Vec<Marker>,
    pub moves: Vec<MoveReport>,
    pub promote: Option<PromoteReport>,
    pub figures: figures::Figures,
    pub invariants: InvariantReport,
}

impl DrillReport {
    pub fn passed(&self) -> bool {
        self.invariants.ok()
    }
}

struct Timeline {
    clock: Instant,
    markers: Vec<Marker>,
}

impl Timeline {
    fn mark(&mut self, label: impl Into<String>) -> u64 {
        let at_ms = u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        let label = label.into();
        eprintln!("[{:>7.2}s] {label}", at_ms as f64 / 1000.0);
        self.markers.push(Marker { at_ms, label });
        at_ms
    }
}

fn run_hook(command: &str, region: &str) -> anyhow::Result<()> {
    let command = command.replace("{region}", region);
    let status = std::process::Command::new("sh")
        .args(["-c", &command])
        .status()
        .with_context(|| format!("run {command}"))?;
    anyhow::ensure!(status.success(), "`{command}` exited with {status}");
    Ok(())
}

/// Runs the drill and writes `report.json` and `report.html` into the report dir.
pub async fn run(targets: &Targets, options: DrillOptions) -> anyhow::Result<DrillReport> {
    let cluster = Cluster::new(targets, "failover-drill")?;
    let map = cluster.map().await?;
    let http = reqwest::Client::new();
    eprintln!(
        "opening {} accounts per region",
        options.workload.accounts_per_region
    );
    // Accounts open where they may: regions that own slots now.
    let counts = map.slot_counts();
    let mut homes = targets.nodes.clone();
    homes.retain(|region, _| counts.get(region.as_str()).copied().unwrap_or(0) > 0);
    let accounts =
        workload::open_accounts(&http, &homes, options.workload.accounts_per_region).await?;
    let load = workload::start(
        targets.nodes.clone(),
        accounts.clone(),
        options.workload.clone(),
    );
    let mut timeline = Timeline {
        clock: load.clock,
        markers: Vec::new(),
    };
    timeline.mark(format!(
        "workload started: {} writes/s",
        options.workload.rate_per_sec
    ));
    tokio::time::sleep(options.warmup).await;

    let mut moves = Vec::new();
    let mut promote_report = None;
    let mut window = (0, 0);
    let mut kill_at = None;
    let mut unreplicated: Vec<AckedWrite> = Vec::new();
    let switch = SwitchoverOptions::default();
    match &options.scenario {
        Scenario::Switchover { region, to } => {
            window.0 = timeline.mark(format!("switchover {region} -> {to}"));
            let result = crate::switchover::switch_region(&cluster, region, to, switch).await;
            window.1 = timeline.mark("switchover done");
            moves = result.context("switchover")?;
        }
        Scenario::Rehome { region, to } => {
            let account = accounts
                .iter()
                .find(|a| &a.home == region)
                .context("no workload account homed in that region")?;
            let id = account.id.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            window.0 = timeline.mark(format!("rehome {} {region} -> {to}", account.id));
            let result = crate::switchover::rehome(&cluster, id, to, switch).await;
            window.1 = timeline.mark("rehome done");
            moves.push(result.context("rehome")?);
        }
        Scenario::KillPromoteReturn {
            region,
            down_for_ms,
        } => {
            let kill_cmd = options
                .kill_cmd
                .as_deref()
                .context("this scenario needs --kill-cmd")?;
            let restart_cmd = options
                .restart_cmd
                .as_deref()
                .context("this scenario needs --restart-cmd")?;
            let at = timeline.mark(format!("SIGKILL {region}"));
            run_hook(kill_cmd, region)?;
            kill_at = Some(at);
            unreplicated =
                not_in_survivors(&cluster, &load.attempts(), &accounts, region, at).await?;
            timeline.mark(format!(
                "{} acknowledged writes to {region} are in no survivor",
                unreplicated.len()
            ));
            let report = promote_when_expired(&cluster, region).await?;
            timeline.mark(format!("promoted {region} at epoch {}", report.epoch));
            promote_report = Some(report);
            tokio::time::sleep(Duration::from_millis(*down_for_ms)).await;
            timeline.mark(format!("restarting {region}"));
            run_hook(restart_cmd, region)?;
            wait_answers(&cluster, region, Duration::from_secs(60)).await?;
            timeline.mark(format!("{region} is back (deposed; reconciling)"));
        }
    }
    tokio::time::sleep(options.observe).await;
    let attempts = load.stop().await;
    timeline.mark(format!(
        "workload stopped after {} attempts",
        attempts.len()
    ));

    let healed = wait_healed(&cluster, options.heal_timeout).await;
    timeline.mark(if healed {
        "all regions converged"
    } else {
        "regions did NOT converge in time"
    });
    if let Some(command) = &options.before_audit_cmd {
        run_hook(command, "")?;
    }
    let snapshots = audit::snapshots(&cluster).await?;
    let history = crate::audit::history(&cluster).await?;
    let acked = acknowledged(&attempts, options.workload.ack_replicated);
    let invariants = audit::check_invariants(&snapshots, &history, &acked);
    let killed = match &options.scenario {
        Scenario::KillPromoteReturn { region, .. } => Some(region.as_str()),
        _ => None,
    };
    let figures = figures::compute(
        &attempts,
        &accounts,
        window,
        kill_at,
        &unreplicated,
        &snapshots,
        killed,
    );
    let report = DrillReport {
        scenario: options.scenario.clone(),
        started_at: chrono::Utc::now().to_rfc3339(),
        lease_ttl_ms: map.lease_ttl_ms,
        rate_per_sec: options.workload.rate_per_sec,
        ack: if options.workload.ack_replicated {
            "replicated"
        } else {
            "local"
        },
        markers: timeline.markers,
        moves,
        promote: promote_report,
        figures,
        invariants,
    };
    report::write(&report, &attempts, &options.report_dir)?;
    Ok(report)
}

/// The writes answered 201, one per Idempotency-Key; `replicated`: sent with
/// `ack: replicated`.
pub fn acknowledged(attempts: &[Attempt], replicated: bool) -> Vec<AckedWrite> {
    let mut seen = HashSet::new();
    attempts
        .iter()
        .filter(|a| a.ok() && seen.insert(a.key.clone()))
        .map(|a| AckedWrite {
            account: a.account.clone(),
            txn_id: audit::txn_of_key(&a.key),
            seq: a.seq.unwrap_or_default(),
            replicated,
        })
        .collect()
}

/// Acknowledged writes to `region`'s accounts (before `kill_ms`) that no survivor holds.
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
        let snapshot: ledger_wire::failover::AuditSnapshot = cluster
            .get(survivor, "/v1/failover/audit", Duration::from_secs(30))
            .await?;
        held.push(snapshot.entries.iter().map(|e| e.txn_id).collect());
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
            .get::<ledger_wire::failover::NodeStatus>(
                region,
                "/v1/failover/status",
                Duration::from_secs(2),
            )
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

/// Waits until every region answers, holds the same accounts, and no late event is
/// pending (the convergence invariant); `false` when `timeout` passed first.
async fn wait_healed(cluster: &Cluster, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(snapshots) = audit::snapshots(cluster).await {
            if audit::converged(&snapshots).ok {
                return true;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
