//! The `schedule` scenario: runs a list of faults (a [`FaultSchedule`] the chaos
//! harness made from a seed) at their times during the workload, marks each one's
//! interval on the timeline, and measures per fault the recovery: from the heal to the
//! first acknowledged write to an account of the region it affected.

use std::time::Duration;

use ledger_wire::faults::FaultSchedule;
use serde::Serialize;

use super::kill::{self, CycleReport};
use super::workload::{Account, Attempt, Workload};
use super::{run_hook, Timeline};
use crate::Cluster;

/// What happened to one scheduled fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub fault: String,
    pub target: String,
    pub injected_at_ms: u64,
    pub healed_at_ms: u64,
    /// From the heal to the first acknowledged write to an account of the affected
    /// region (any account when none is named); `None` if there was none.
    pub recovery_ms: Option<u64>,
    /// A `region-failover` step's kill, promote, return and failback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<CycleReport>,
    #[serde(skip)]
    affects: Option<String>,
}

/// Runs the schedule's steps in order, each at its time (or at once if that time has
/// passed), then lets the workload run on to the schedule's end.
pub async fn run(
    cluster: &Cluster,
    schedule: &FaultSchedule,
    load: &Workload,
    timeline: &mut Timeline,
) -> anyhow::Result<Vec<FaultReport>> {
    let mut reports = Vec::new();
    for step in &schedule.steps {
        let now = load.clock.elapsed();
        let at = Duration::from_millis(step.at_ms);
        if at > now {
            // Fault timing, not synchronisation: the schedule says when.
            tokio::time::sleep(at - now).await;
        }
        let hold = Duration::from_millis(step.hold_ms);
        let (injected_at_ms, healed_at_ms, failover) = if step.failover {
            let heal = step.heal.as_deref().unwrap_or_default();
            let cycle = kill::cycle(
                cluster,
                (&step.inject, heal),
                load,
                &step.target,
                hold,
                timeline,
            )
            .await?;
            let healed = cycle.failback_at_ms.unwrap_or(cycle.back_at_ms);
            (cycle.killed_at_ms, healed, Some(cycle))
        } else {
            let injected = timeline.mark(format!("fault {} on {}", step.fault, step.target));
            run_hook(&step.inject, &step.target)?;
            if let Some(heal) = &step.heal {
                tokio::time::sleep(hold).await;
                run_hook(heal, &step.target)?;
            }
            let healed = timeline.mark(format!("healed {} on {}", step.fault, step.target));
            (injected, healed, None)
        };
        reports.push(FaultReport {
            fault: step.fault.clone(),
            target: step.target.clone(),
            injected_at_ms,
            healed_at_ms,
            recovery_ms: None,
            failover,
            affects: step.affects.clone(),
        });
    }
    let end = Duration::from_millis(schedule.run_ms);
    let now = load.clock.elapsed();
    if end > now {
        // The quiet end after the last heal, where recoveries are measured.
        tokio::time::sleep(end - now).await;
    }
    Ok(reports)
}

/// Fills in each fault's recovery from the workload's attempts.
pub fn measure_recovery(reports: &mut [FaultReport], attempts: &[Attempt], accounts: &[Account]) {
    for report in reports {
        let affected = |account: &str| match &report.affects {
            None => true,
            Some(region) => accounts
                .iter()
                .any(|a| a.id == account && &a.home == region),
        };
        report.recovery_ms = attempts
            .iter()
            .filter(|a| {
                a.is_write() && a.ok() && a.start_ms >= report.healed_at_ms && affected(&a.account)
            })
            .map(|a| a.end_ms - report.healed_at_ms)
            .min();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(start_ms: u64, end_ms: u64, account: &str, status: u16) -> Attempt {
        Attempt {
            start_ms,
            end_ms,
            account: account.into(),
            slot: 0,
            via: "eu-west".into(),
            key: format!("k{start_ms}"),
            kind: "deposit",
            status,
            error: None,
            ..Attempt::default()
        }
    }

    #[test]
    fn recovery_is_the_first_acknowledged_write_to_the_affected_region_after_the_heal() {
        let accounts = vec![
            Account {
                id: "a".into(),
                slot: 0,
                home: "us-east".into(),
            },
            Account {
                id: "b".into(),
                slot: 1,
                home: "eu-west".into(),
            },
        ];
        let mut reports = vec![FaultReport {
            fault: "partition".into(),
            target: "us-east".into(),
            injected_at_ms: 1_000,
            healed_at_ms: 5_000,
            recovery_ms: None,
            failover: None,
            affects: Some("us-east".into()),
        }];
        let attempts = vec![
            attempt(4_000, 4_100, "a", 201), // before the heal
            attempt(5_010, 5_020, "b", 201), // another region's account
            attempt(5_100, 5_300, "a", 503), // refused
            attempt(5_400, 5_900, "a", 201), // the recovery
            attempt(6_000, 6_010, "a", 201),
        ];
        measure_recovery(&mut reports, &attempts, &accounts);
        assert_eq!(reports[0].recovery_ms, Some(900));
    }
}
