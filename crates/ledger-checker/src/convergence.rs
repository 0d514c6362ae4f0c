//! Invariant 4, convergence: every region holds the same accounts in the same state.

use std::collections::BTreeMap;

use ledger_wire::failover::AuditSnapshot;

use crate::{check, Check};

/// 4. Every region holds the same accounts at the same seq, epoch and balance, and no
///    late event still awaits reconciliation.
pub fn converged(snapshots: &[AuditSnapshot]) -> Check {
    let mut problems = Vec::new();
    let Some(first) = snapshots.first() else {
        return check(
            "convergence",
            vec!["no region answered".into()],
            String::new(),
        );
    };
    let reference: BTreeMap<&str, _> = first.accounts.iter().map(|a| (a.id.as_str(), a)).collect();
    for snapshot in snapshots {
        if snapshot.late_pending > 0 {
            problems.push(format!(
                "{}: {} late events still await reconciliation",
                snapshot.region, snapshot.late_pending
            ));
        }
        if snapshot.region == first.region {
            continue;
        }
        let here: BTreeMap<&str, _> = snapshot
            .accounts
            .iter()
            .map(|a| (a.id.as_str(), a))
            .collect();
        for (id, theirs) in &reference {
            match here.get(id) {
                None => problems.push(format!(
                    "{id} exists in {} but not in {}",
                    first.region, snapshot.region
                )),
                Some(ours)
                    if (ours.seq, ours.epoch, &ours.balance)
                        != (theirs.seq, theirs.epoch, &theirs.balance) =>
                {
                    problems.push(format!(
                        "{id}: {} has seq {} epoch {} balance {}, {} has seq {} epoch {} balance {}",
                        first.region, theirs.seq, theirs.epoch, theirs.balance,
                        snapshot.region, ours.seq, ours.epoch, ours.balance
                    ));
                }
                Some(_) => {}
            }
        }
        for id in here.keys().filter(|id| !reference.contains_key(*id)) {
            problems.push(format!(
                "{id} exists in {} but not in {}",
                snapshot.region, first.region
            ));
        }
    }
    check(
        "convergence",
        problems,
        format!(
            "{} accounts identical in {} regions",
            reference.len(),
            snapshots.len()
        ),
    )
}
