//! `failover drill`: runs a named scenario against a live deployment while the
//! built-in workload writes, prints progress, and ends with a report: per-slot write
//! unavailability (planned moves) or RTO (kill), RPO (acknowledged writes not yet in
//! any survivor at the kill, and what became of each), client-visible errors by kind,
//! a timeline, and the invariants checked on every region.

pub mod figures;
pub mod in_flight;
pub mod kill;
pub mod mixed;
pub mod plot;
pub mod report;
pub mod schedule;
pub mod workload;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use ledger_checker::evidence::Evidence;
use ledger_checker::history;
use serde::Serialize;

use crate::audit::{self, AckedWrite, InvariantReport};
use crate::promote::PromoteReport;
use crate::switchover::{MoveReport, SwitchoverOptions};
use crate::{Cluster, Targets};
use kill::CycleReport;
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
    /// `cycles` times: SIGKILL of the next region of `regions` (in turn), promote,
    /// restart after `down_for_ms`, wait for the sagas caught in it, failback.
    KillCycles {
        regions: Vec<String>,
        cycles: u32,
        down_for_ms: u64,
    },
    /// The faults of a schedule (`chaos run` makes them from a seed), each at its time.
    Schedule {
        schedule: ledger_wire::faults::FaultSchedule,
    },
}

impl Scenario {
    /// One line of prose for headers: a schedule is named by its seed, not printed
    /// whole (the report lists its faults).
    pub fn title(&self) -> String {
        match self {
            Scenario::Switchover { region, to } => {
                format!("Planned switchover of everything homed in {region} to {to}")
            }
            Scenario::KillPromoteReturn {
                region,
                down_for_ms,
            } => format!(
                "{region} killed and promoted away, back after {:.1} s",
                *down_for_ms as f64 / 1_000.0
            ),
            Scenario::Rehome { region, to } => {
                format!("One account of {region} rehomed to {to}")
            }
            Scenario::KillCycles {
                regions,
                cycles,
                down_for_ms,
            } => format!(
                "{cycles} kill-promote-failback cycle{} over {}, each region down {:.1} s",
                if *cycles == 1 { "" } else { "s" },
                regions.join(", "),
                *down_for_ms as f64 / 1_000.0
            ),
            Scenario::Schedule { schedule } => format!(
                "Fault schedule of seed {} ({} fault{})",
                schedule.seed,
                schedule.steps.len(),
                if schedule.steps.len() == 1 { "" } else { "s" }
            ),
        }
    }
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
    /// Kill cycles: run after each failback on the region just failed back (a node
    /// paused past its lease, say: `ledger-local pause {region} --ms 3000`).
    pub pause_cmd: Option<String>,
    /// What each workload account is funded with (the bank workload: 100.00, so that
    /// refusals and overdraft replays happen).
    pub funding: String,
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
    pub cycles: Vec<CycleReport>,
    /// The schedule scenario's faults, with their recovery.
    pub faults: Vec<schedule::FaultReport>,
    pub figures: figures::Figures,
    pub transfers: TransferFigures,
    pub in_flight: in_flight::InFlight,
    pub invariants: InvariantReport,
}

/// Money movement at the end of a drill, per region: late events by outcome and
/// money still in flight (both must be settled after healing).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TransferFigures {
    pub acknowledged: usize,
    pub insufficient_funds: usize,
    pub late_events: BTreeMap<String, BTreeMap<String, i64>>,
    pub in_flight_at_end: BTreeMap<String, String>,
}

impl DrillReport {
    pub fn passed(&self) -> bool {
        self.invariants.ok()
    }
}

pub struct Timeline {
    clock: Instant,
    markers: Vec<Marker>,
}

impl Timeline {
    pub fn mark(&mut self, label: impl Into<String>) -> u64 {
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
    eprintln!(
        "opening {} accounts per region",
        options.workload.accounts_per_region
    );
    // Accounts open where they may: regions that own slots now.
    let counts = map.slot_counts();
    let mut homes = targets.nodes.clone();
    homes.retain(|region, _| counts.get(region.as_str()).copied().unwrap_or(0) > 0);
    let accounts = workload::open_accounts(
        &homes,
        targets.api_key.as_deref(),
        options.workload.accounts_per_region,
        &options.funding,
    )
    .await?;
    let load = workload::start(
        targets.nodes.clone(),
        accounts.clone(),
        options.workload.clone(),
        targets.api_key.as_deref(),
    )?;
    let mut timeline = Timeline {
        clock: load.clock,
        markers: Vec::new(),
    };
    let sampler = in_flight::Sampler::start(Cluster::new(targets, "failover-drill")?, load.clock);
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
    let mut cycles = Vec::new();
    let mut faults = Vec::new();
    let switch = SwitchoverOptions::default();
    match &options.scenario {
        Scenario::Switchover { region, to } => {
            window.0 = timeline.mark(format!("switchover {region} -> {to}"));
            let result = crate::switchover::switch_region(&cluster, region, to, switch).await;
            window.1 = timeline.mark("switchover done");
            moves = match result {
                Ok(done) => done,
                Err(partial) => {
                    let done = partial.done.len();
                    return Err(anyhow::Error::new(partial.error)
                        .context(format!("switchover (after {done} moves were done)")));
                }
            };
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
            let (kill_cmd, restart_cmd) = hooks(&options)?;
            let killed =
                kill::kill_and_promote(&cluster, kill_cmd, &load, region, &mut timeline).await?;
            kill_at = Some(killed.at_ms);
            unreplicated = killed.unreplicated;
            promote_report = Some(killed.promote);
            tokio::time::sleep(Duration::from_millis(*down_for_ms)).await;
            kill::restart(&cluster, restart_cmd, region, &mut timeline).await?;
        }
        Scenario::KillCycles {
            regions,
            cycles: count,
            down_for_ms,
        } => {
            anyhow::ensure!(!regions.is_empty(), "kill cycles need at least one region");
            let hooks = hooks(&options)?;
            for i in 0..*count as usize {
                let region = &regions[i % regions.len()];
                let down_for = Duration::from_millis(*down_for_ms);
                let cycle =
                    kill::cycle(&cluster, hooks, &load, region, down_for, &mut timeline).await?;
                cycles.push(cycle);
                if let Some(pause) = &options.pause_cmd {
                    timeline.mark(format!("pausing {region}"));
                    run_hook(pause, region)?;
                    timeline.mark(format!("{region} resumed"));
                }
                tokio::time::sleep(options.warmup).await;
            }
        }
        Scenario::Schedule { schedule } => {
            faults = schedule::run(&cluster, schedule, &load, &mut timeline).await?;
        }
    }
    tokio::time::sleep(options.observe).await;
    let attempts = load.stop().await;
    timeline.mark(format!(
        "workload stopped after {} attempts",
        attempts.len()
    ));

    schedule::measure_recovery(&mut faults, &attempts, &accounts);
    let healed = wait_healed(&cluster, options.heal_timeout).await;
    let in_flight = sampler.finish().await;
    timeline.mark(if healed {
        "all regions converged"
    } else {
        "regions did NOT converge in time"
    });
    if let Some(command) = &options.before_audit_cmd {
        run_hook(command, "")?;
    }
    // The evidence is checked as `ledger-check` would check it from the report
    // directory, where it is written too: one implementation of every invariant.
    let evidence = Evidence {
        operations: workload::operations(&attempts, options.workload.ack_replicated),
        ownership: crate::audit::history(&cluster).await?,
        snapshots: audit::snapshots(&cluster).await?,
    };
    let invariants = evidence.check();
    let snapshots = &evidence.snapshots;
    let transfers = transfer_figures(&cluster, &attempts, snapshots).await;
    let killed = match &options.scenario {
        Scenario::KillPromoteReturn { region, .. } => Some(region.as_str()),
        _ => None,
    };
    // Availability, RPO and the timeline are about money-moving writes; reads (the
    // mixed workload's) have their own invariant.
    let writes: Vec<Attempt> = attempts.iter().filter(|a| a.is_write()).cloned().collect();
    let figures = figures::compute(
        &writes,
        &accounts,
        window,
        kill_at,
        &unreplicated,
        snapshots,
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
        cycles,
        faults,
        figures,
        transfers,
        in_flight,
        invariants,
    };
    report::write(&report, &evidence, &options.report_dir)?;
    Ok(report)
}

/// The writes answered 201, one per Idempotency-Key; `replicated`: sent with
/// `ack: replicated` (the checker's rule, on the history these attempts make).
pub fn acknowledged(attempts: &[Attempt], replicated: bool) -> Vec<AckedWrite> {
    history::acknowledged(&workload::operations(attempts, replicated))
}

fn hooks(options: &DrillOptions) -> anyhow::Result<(&str, &str)> {
    Ok((
        options
            .kill_cmd
            .as_deref()
            .context("this scenario needs --kill-cmd")?,
        options
            .restart_cmd
            .as_deref()
            .context("this scenario needs --restart-cmd")?,
    ))
}

async fn transfer_figures(
    cluster: &Cluster,
    attempts: &[Attempt],
    snapshots: &[ledger_wire::failover::AuditSnapshot],
) -> TransferFigures {
    let transfers: Vec<&Attempt> = attempts.iter().filter(|a| a.kind == "transfer").collect();
    let mut keys = HashSet::new();
    let late_events = crate::status::node_statuses(cluster)
        .await
        .into_iter()
        .filter_map(|(region, status)| status.ok().map(|s| (region, s.late_events)))
        .collect();
    TransferFigures {
        acknowledged: transfers
            .iter()
            .filter(|a| a.ok() && keys.insert(a.key.clone()))
            .count(),
        insufficient_funds: transfers
            .iter()
            .filter(|a| a.error.as_deref() == Some("insufficient-funds"))
            .count(),
        late_events,
        in_flight_at_end: snapshots
            .iter()
            .map(|s| {
                let total: Vec<String> = s
                    .totals
                    .iter()
                    .map(|(currency, t)| format!("{} {currency}", t.in_flight))
                    .collect();
                (s.region.clone(), total.join(", "))
            })
            .collect(),
    }
}

/// Waits until every region answers, holds the same accounts, no late event is
/// pending (the convergence invariant), and every transfer has ended in the same state
/// everywhere; `false` when `timeout` passed first.
async fn wait_healed(cluster: &Cluster, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(snapshots) = audit::snapshots(cluster).await {
            if audit::converged(&snapshots).ok
                && audit::transfers_settled(&snapshots).ok
                && audit::saga_converged(&snapshots).ok
            {
                return true;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
