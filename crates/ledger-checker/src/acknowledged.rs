//! Invariant 2, no acknowledged write lost: every write a client saw acknowledged is in
//! every region, as itself or (`ack: local` only) replayed by reconciliation.

use std::collections::{HashMap, HashSet};

use ledger_wire::failover::{AuditEntry, AuditSnapshot};
use uuid::Uuid;

use crate::{check, AckedWrite, Check};

/// 2. Every acknowledged write is present in every region, as itself or replayed; an
///    acknowledged transfer as its debit.
pub fn acknowledged_kept(snapshots: &[AuditSnapshot], acked: &[AckedWrite]) -> Check {
    let mut problems = Vec::new();
    let mut replayed = 0;
    for snapshot in snapshots {
        let by_txn: HashMap<Uuid, &AuditEntry> = snapshot
            .entries
            .iter()
            .filter(|e| e.kind == "deposit" || e.kind == "withdrawal")
            .map(|e| (e.txn_id, e))
            .collect();
        let debited: HashSet<Uuid> = snapshot
            .entries
            .iter()
            .filter(|e| e.kind == "transfer_debit")
            .filter_map(|e| e.transfer_id)
            .collect();
        for write in acked.iter().filter(|w| w.transfer) {
            if !debited.contains(&write.txn_id) {
                problems.push(format!(
                    "acknowledged transfer {} from {} has no debit in {}",
                    write.txn_id, write.account, snapshot.region
                ));
            }
        }
        for write in acked.iter().filter(|w| !w.transfer) {
            match by_txn.get(&write.txn_id) {
                None => problems.push(format!(
                    "acknowledged {} write to {} (seq {}, txn {}) is missing in {}",
                    if write.replicated {
                        "ack=replicated"
                    } else {
                        "ack=local"
                    },
                    write.account,
                    write.seq,
                    write.txn_id,
                    snapshot.region
                )),
                Some(entry) if entry.reconciles.is_some() => {
                    // A write first acknowledged as a replay of its reconciled entry
                    // (its retry reached the new owner after the late original was
                    // replayed) was never promised before the loss: only an
                    // acknowledgement naming another entry (the lost original) counts.
                    let acked_the_replay =
                        write.seq == entry.seq && write.epoch == Some(entry.epoch);
                    if write.replicated && !acked_the_replay {
                        problems.push(format!(
                            "ack=replicated write to {} seq {} needed reconciliation (now seq {}) in {}",
                            write.account, write.seq, entry.seq, snapshot.region
                        ));
                    }
                    replayed += 1;
                }
                Some(_) => {}
            }
        }
    }
    let regions = snapshots.len().max(1);
    check(
        "no acknowledged write lost",
        problems,
        format!(
            "{} acknowledged writes present in every region ({} as reconciliation replays)",
            acked.len(),
            replayed / regions
        ),
    )
}
