//! The invariants of money movement: after healing every transfer has ended (one debit
//! and exactly one credit or refund in every region's ledger, nothing in flight), every
//! region agrees on every transfer's saga state, and no request booked more than one
//! transfer (ids derive from Idempotency-Keys, so one key names one transfer).

use std::collections::{BTreeMap, HashMap, HashSet};

use ledger_wire::failover::AuditSnapshot;
use uuid::Uuid;

use crate::{check, AckedWrite, Check};

/// The transfer id the ledger derives from an Idempotency-Key (migration V6's
/// `ledger.transfer_of_key`): md5 of `ledger-transfer:<key>` read as a UUID.
pub fn transfer_of_key(key: &str) -> Uuid {
    use md5::Digest as _;
    let digest: [u8; 16] = md5::Md5::digest(format!("ledger-transfer:{key}").as_bytes()).into();
    Uuid::from_bytes(digest)
}

/// Saga entries per transfer in one region: (debits, credits, refunds).
fn steps(snapshot: &AuditSnapshot) -> BTreeMap<Uuid, (u32, u32, u32)> {
    let mut steps: BTreeMap<Uuid, (u32, u32, u32)> = BTreeMap::new();
    for entry in &snapshot.entries {
        let Some(id) = entry.transfer_id else {
            continue;
        };
        let counts = steps.entry(id).or_default();
        match entry.kind.as_str() {
            "transfer_debit" => counts.0 += 1,
            "transfer_credit" => counts.1 += 1,
            "transfer_refund" => counts.2 += 1,
            _ => {}
        }
    }
    steps
}

/// 6. Every transfer ended: in every region's ledger each transfer has one debit and
///    exactly one credit or refund (none in flight, none credited without its debit,
///    none both credited and refunded), and its saga state is completed or refunded.
pub fn transfers_settled(snapshots: &[AuditSnapshot]) -> Check {
    let mut problems = Vec::new();
    let mut transfers = 0;
    for snapshot in snapshots {
        let steps = steps(snapshot);
        transfers = transfers.max(steps.len());
        for (id, (debits, credits, refunds)) in &steps {
            let ended = credits + refunds;
            if *debits != 1 || ended != 1 {
                problems.push(format!(
                    "{}: transfer {id} has {debits} debit(s), {credits} credit(s), {refunds} refund(s)",
                    snapshot.region
                ));
            }
        }
        for transfer in &snapshot.transfers {
            if transfer.state != "completed" && transfer.state != "refunded" {
                problems.push(format!(
                    "{}: transfer {} is still {}",
                    snapshot.region, transfer.id, transfer.state
                ));
            }
        }
    }
    check(
        "transfers settled",
        problems,
        format!("{transfers} transfers each debited once and credited or refunded once"),
    )
}

/// 7. Every region knows every transfer, in the same saga state.
pub fn saga_converged(snapshots: &[AuditSnapshot]) -> Check {
    let mut problems = Vec::new();
    let Some(first) = snapshots.first() else {
        return check(
            "saga state converged",
            vec!["no region answered".into()],
            String::new(),
        );
    };
    let states = |s: &AuditSnapshot| -> HashMap<Uuid, String> {
        s.transfers
            .iter()
            .map(|t| (t.id, t.state.clone()))
            .collect()
    };
    let reference = states(first);
    for snapshot in &snapshots[1..] {
        let here = states(snapshot);
        for (id, state) in &reference {
            match here.get(id) {
                None => problems.push(format!(
                    "transfer {id} is known in {} but not in {}",
                    first.region, snapshot.region
                )),
                Some(other) if other != state => problems.push(format!(
                    "transfer {id} is {state} in {} but {other} in {}",
                    first.region, snapshot.region
                )),
                Some(_) => {}
            }
        }
        for id in here.keys().filter(|id| !reference.contains_key(*id)) {
            problems.push(format!(
                "transfer {id} is known in {} but not in {}",
                snapshot.region, first.region
            ));
        }
    }
    check(
        "saga state converged",
        problems,
        format!(
            "{} transfers in the same state in {} regions",
            reference.len(),
            snapshots.len()
        ),
    )
}

/// 8. No request booked more than one transfer: every transfer booked from the
///    accounts the caller's clients sent transfers from has an id one of their
///    Idempotency-Keys names (when the caller knows the keys sent; other accounts'
///    transfers, from before a drill, are not its business), and every acknowledged
///    transfer is booked (debited) in every region.
pub fn booked_once(
    snapshots: &[AuditSnapshot],
    acked: &[AckedWrite],
    sent: &HashSet<Uuid>,
) -> Check {
    let mut problems = Vec::new();
    let sources: HashSet<&str> = acked
        .iter()
        .filter(|w| w.transfer)
        .map(|w| w.account.as_str())
        .collect();
    for snapshot in snapshots {
        let steps = steps(snapshot);
        if !sent.is_empty() {
            let ours = snapshot
                .entries
                .iter()
                .filter(|e| e.kind == "transfer_debit" && sources.contains(e.account.as_str()));
            for id in ours
                .filter_map(|e| e.transfer_id)
                .filter(|id| !sent.contains(id))
            {
                problems.push(format!(
                    "{}: transfer {id} was booked under an id no request's key names",
                    snapshot.region
                ));
            }
        }
        for write in acked.iter().filter(|w| w.transfer) {
            if steps.get(&write.txn_id).is_none_or(|s| s.0 == 0) {
                problems.push(format!(
                    "{}: acknowledged transfer {} from {} is not debited",
                    snapshot.region, write.txn_id, write.account
                ));
            }
        }
    }
    let count = acked.iter().filter(|w| w.transfer).count();
    check(
        "transfers booked once",
        problems,
        format!("{count} acknowledged transfers booked once, under their key's id"),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ledger_wire::failover::{AuditEntry, AuditTotal, AuditTransfer};

    use super::*;

    fn entry(account: &str, seq: i64, kind: &str, transfer: Uuid) -> AuditEntry {
        AuditEntry {
            account: account.into(),
            seq,
            epoch: 1,
            origin: "eu-west".into(),
            event_id: Some(Uuid::new_v4()),
            txn_id: Uuid::new_v4(),
            kind: kind.into(),
            reconciles: None,
            transfer_id: Some(transfer),
        }
    }

    fn region(name: &str, entries: Vec<AuditEntry>, states: &[(Uuid, &str)]) -> AuditSnapshot {
        AuditSnapshot {
            region: name.into(),
            next: None,
            accounts: Vec::new(),
            entries,
            totals: BTreeMap::from([(
                "EUR".to_owned(),
                AuditTotal {
                    balances: "0".into(),
                    external_net: "0".into(),
                    in_flight: "0".into(),
                },
            )]),
            late_pending: 0,
            transfers: states
                .iter()
                .map(|(id, state)| AuditTransfer {
                    id: *id,
                    state: (*state).into(),
                })
                .collect(),
        }
    }

    fn settled(t: Uuid) -> Vec<AuditEntry> {
        vec![
            entry("a", 1, "transfer_debit", t),
            entry("b", 1, "transfer_credit", t),
        ]
    }

    fn acked(t: Uuid) -> AckedWrite {
        AckedWrite {
            account: "a".into(),
            txn_id: t,
            seq: 1,
            epoch: None,
            replicated: false,
            transfer: true,
        }
    }

    #[test]
    fn settled_agreeing_transfers_pass() {
        let t = transfer_of_key("k1");
        let snapshots = [
            region("eu-west", settled(t), &[(t, "completed")]),
            region("us-east", settled(t), &[(t, "completed")]),
        ];
        assert!(transfers_settled(&snapshots).ok);
        assert!(saga_converged(&snapshots).ok);
        assert!(booked_once(&snapshots, &[acked(t)], &HashSet::from([t])).ok);
    }

    #[test]
    fn a_transfer_in_flight_or_credited_twice_fails() {
        let t = transfer_of_key("k1");
        let stuck = [region(
            "eu-west",
            vec![entry("a", 1, "transfer_debit", t)],
            &[(t, "debited")],
        )];
        let check = transfers_settled(&stuck);
        assert!(!check.ok);
        assert_eq!(check.examples.len(), 2, "{:?}", check.examples);
        let mut twice = settled(t);
        twice.push(entry("b", 2, "transfer_credit", t));
        assert!(!transfers_settled(&[region("eu-west", twice, &[(t, "completed")])]).ok);
        let mut both = settled(t);
        both.push(entry("a", 2, "transfer_refund", t));
        assert!(!transfers_settled(&[region("eu-west", both, &[(t, "completed")])]).ok);
    }

    #[test]
    fn diverging_saga_states_fail() {
        let t = transfer_of_key("k1");
        let u = transfer_of_key("k2");
        let snapshots = [
            region("eu-west", settled(t), &[(t, "completed"), (u, "refunded")]),
            region("us-east", settled(t), &[(t, "debited")]),
        ];
        let check = saga_converged(&snapshots);
        assert!(!check.ok);
        assert_eq!(check.examples.len(), 2, "{:?}", check.examples);
    }

    #[test]
    fn a_transfer_booked_twice_or_lost_fails() {
        let t = transfer_of_key("k1");
        // Booked under an id no key names (the retry of a request got a new id).
        let stray = Uuid::new_v4();
        let mut entries = settled(t);
        entries.extend(settled(stray));
        let snapshots = [region("eu-west", entries, &[])];
        let check = booked_once(&snapshots, &[acked(t)], &HashSet::from([t]));
        assert!(!check.ok);
        assert!(check.examples[0].contains(&stray.to_string()));
        // An acknowledged transfer that no ledger holds.
        let lost = transfer_of_key("k2");
        assert!(!booked_once(&snapshots[..], &[acked(lost)], &HashSet::new()).ok);
    }

    #[test]
    fn transfers_of_accounts_the_drill_did_not_use_are_not_its_business() {
        let t = transfer_of_key("k1");
        let before = Uuid::new_v4();
        let mut entries = settled(t);
        entries.push(entry("older", 1, "transfer_debit", before));
        entries.push(entry("b", 2, "transfer_credit", before));
        let snapshots = [region("eu-west", entries, &[])];
        assert!(booked_once(&snapshots, &[acked(t)], &HashSet::from([t])).ok);
    }

    #[test]
    fn transfer_ids_follow_the_database_rule() {
        // PostgreSQL: SELECT md5('ledger-transfer:k1')::uuid (also checked against the
        // database by the bank test, whose audit compares ids with the keys sent)
        assert_eq!(
            transfer_of_key("k1").to_string(),
            "186c6b71-05e8-8d5b-1fe8-c860b15eca2b"
        );
    }
}
