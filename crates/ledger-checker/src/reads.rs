//! Invariant 9, reads keep their promises: a read that asked for `min_seq` never
//! answered with an older copy, and a `strong` read (served by the account's home)
//! saw every write to the account acknowledged before the read was sent.
//!
//! Which writes a strong read must see: those acknowledged before it was invoked that
//! survived as acknowledged, i.e. the final state holds them at the seq and epoch the
//! acknowledgement named. A write lost with its region and replayed later by
//! reconciliation (`ack: local` only) was not at the home in between, so a strong
//! read in between may miss it; that loss is the acknowledged-writes invariant's
//! business, not a read's. A write that survived was at every later owner from its
//! acknowledgement on (single writer), so a home that answers without it is a stale
//! or split-brained home.

use std::collections::{HashMap, HashSet};

use ledger_wire::failover::AuditSnapshot;
use uuid::Uuid;

use crate::history::{Operation, Outcome};
use crate::{check, transfer_of_key, txn_of_key, Check, Verdict};

const NAME: &str = "reads keep their promises";

/// 9. Every answered read with `min_seq` has at least that seq; every answered strong
///    read has at least the seq of each surviving write acknowledged before it began.
pub fn reads_consistent(operations: &[Operation], snapshots: &[AuditSnapshot]) -> Check {
    let reads: Vec<&Operation> = operations
        .iter()
        .filter(|o| o.is_read() && o.outcome == Outcome::Ok)
        .collect();
    if operations.is_empty() {
        return Check {
            verdict: Verdict::Unknown,
            ..check(
                NAME,
                Vec::new(),
                "no request history to check against".into(),
            )
        };
    }
    let survived = surviving_entries(snapshots);
    // Per account, the surviving acknowledged writes as (completed at, seq).
    let mut acked: HashMap<&str, Vec<(u64, i64)>> = HashMap::new();
    let mut counted = HashSet::new();
    for write in operations
        .iter()
        .filter(|o| o.is_write() && o.outcome == Outcome::Ok)
    {
        let (Some(seq), Some(epoch)) = (write.seq, write.epoch) else {
            continue;
        };
        let id = if write.op == "transfer" {
            transfer_of_key(&write.key)
        } else {
            txn_of_key(&write.key)
        };
        if survived.contains(&(write.account.as_str(), seq, epoch, id))
            && counted.insert((write.key.as_str(), seq))
        {
            acked
                .entry(write.account.as_str())
                .or_default()
                .push((write.complete_ms, seq));
        }
    }
    let mut problems = Vec::new();
    let (mut session, mut strong) = (0, 0);
    for read in &reads {
        let Some(seen) = read.seq else {
            problems.push(format!(
                "read of {} at {} ({} ms) answered without a seq",
                read.account, read.region, read.invoke_ms
            ));
            continue;
        };
        if let Some(wanted) = read.min_seq {
            session += 1;
            if seen < wanted {
                problems.push(format!(
                    "read of {} at {} asked min_seq {wanted} and got seq {seen} ({} ms)",
                    read.account, read.region, read.invoke_ms
                ));
            }
        }
        if read.strong {
            strong += 1;
            let missed = acked.get(read.account.as_str()).and_then(|writes| {
                writes
                    .iter()
                    .filter(|(done, seq)| *done < read.invoke_ms && *seq > seen)
                    .max_by_key(|(_, seq)| *seq)
            });
            if let Some((done, seq)) = missed {
                problems.push(format!(
                    "strong read of {} at {} sent at {} ms saw seq {seen}, but seq {seq} was \
                     acknowledged at {done} ms and survived",
                    read.account, read.region, read.invoke_ms
                ));
            }
        }
    }
    check(
        NAME,
        problems,
        format!(
            "{} reads answered: {session} with min_seq, {strong} strong, none older than promised",
            reads.len()
        ),
    )
}

/// (account, seq, epoch, txn or transfer id) of every entry in the final state: a
/// deposit or withdrawal by its txn id, a transfer by its debit's transfer id.
fn surviving_entries(snapshots: &[AuditSnapshot]) -> HashSet<(&str, i64, i64, Uuid)> {
    // Converged regions hold the same entries; a region that did not converge is the
    // convergence invariant's finding, so any region's copy counts.
    snapshots
        .iter()
        .flat_map(|s| s.entries.iter())
        .filter_map(|e| {
            let id = match e.kind.as_str() {
                "deposit" | "withdrawal" => e.txn_id,
                "transfer_debit" => e.transfer_id?,
                _ => return None,
            };
            Some((e.account.as_str(), e.seq, e.epoch, id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ledger_wire::failover::AuditEntry;

    use super::*;

    const A: &str = "ac_0001_000000000001";

    fn op(op: &str, key: &str, at: (u64, u64), status: u16, seq: Option<i64>) -> Operation {
        Operation {
            op: op.into(),
            key: key.into(),
            account: A.into(),
            to: None,
            region: "us-east".into(),
            invoke_ms: at.0,
            complete_ms: at.1,
            outcome: Outcome::of_status(status),
            status,
            error: None,
            seq,
            epoch: seq.map(|_| 1),
            replicated: false,
            min_seq: None,
            strong: false,
        }
    }

    fn read(at: (u64, u64), seen: i64, min_seq: Option<i64>, strong: bool) -> Operation {
        Operation {
            min_seq,
            strong,
            ..op("read", &format!("r{}", at.0), at, 200, Some(seen))
        }
    }

    /// Final state: the deposits under keys k1 (seq 1) and k2 (seq 2), epoch 1; k3's
    /// acknowledgement (seq 3) was lost and replayed as seq 4 at epoch 2.
    fn state() -> Vec<AuditSnapshot> {
        let entry = |seq, epoch, key: &str| AuditEntry {
            account: A.into(),
            seq,
            epoch,
            origin: "eu-west".into(),
            event_id: None,
            txn_id: txn_of_key(key),
            kind: "deposit".into(),
            reconciles: None,
            transfer_id: None,
        };
        vec![AuditSnapshot {
            region: "eu-west".into(),
            next: None,
            accounts: Vec::new(),
            entries: vec![entry(1, 1, "k1"), entry(2, 1, "k2"), entry(4, 2, "k3")],
            totals: BTreeMap::new(),
            late_pending: 0,
            transfers: Vec::new(),
        }]
    }

    fn writes() -> Vec<Operation> {
        vec![
            op("deposit", "k1", (0, 10), 201, Some(1)),
            op("deposit", "k2", (20, 30), 201, Some(2)),
            // Acknowledged at seq 3, lost with its region, replayed as seq 4 later.
            op("deposit", "k3", (40, 50), 201, Some(3)),
        ]
    }

    #[test]
    fn reads_that_keep_their_promises_pass() {
        let mut history = writes();
        history.extend([
            read((35, 36), 2, Some(2), false),
            read((31, 33), 2, None, true),
            // Before k2 was acknowledged a strong read may miss it.
            read((25, 26), 1, None, true),
            // k3 was lost: a strong read between its loss and its replay may miss it.
            read((60, 61), 2, None, true),
            // A refused min_seq read (409) promised nothing.
            Operation {
                min_seq: Some(9),
                ..op("read", "r409", (70, 71), 409, None)
            },
        ]);
        let verdict = reads_consistent(&history, &state());
        assert!(verdict.ok, "{verdict:?}");
        assert!(
            verdict.summary.contains("4 reads answered"),
            "{}",
            verdict.summary
        );
    }

    #[test]
    fn an_older_copy_than_min_seq_is_a_violation() {
        let mut history = writes();
        history.push(read((35, 36), 1, Some(2), false));
        let verdict = reads_consistent(&history, &state());
        assert_eq!(verdict.verdict, Verdict::Invalid);
        assert!(verdict.examples[0].contains("asked min_seq 2 and got seq 1"));
    }

    #[test]
    fn a_strong_read_missing_a_surviving_acknowledged_write_is_a_violation() {
        let mut history = writes();
        history.push(read((31, 33), 1, None, true));
        let verdict = reads_consistent(&history, &state());
        assert_eq!(verdict.verdict, Verdict::Invalid);
        assert!(
            verdict.examples[0].contains("saw seq 1, but seq 2 was acknowledged at 30 ms"),
            "{:?}",
            verdict.examples
        );
    }

    #[test]
    fn an_answer_without_a_seq_and_a_missing_history_are_named() {
        let mut history = writes();
        history.push(Operation {
            strong: true,
            ..op("read", "r", (31, 33), 200, None)
        });
        assert_eq!(
            reads_consistent(&history, &state()).verdict,
            Verdict::Invalid
        );
        assert_eq!(reads_consistent(&[], &state()).verdict, Verdict::Unknown);
    }

    #[test]
    fn reads_and_opens_are_not_acknowledged_writes() {
        let mut history = writes();
        history.push(read((35, 36), 2, Some(2), false));
        history.push(op("open", "o1", (1, 2), 201, None));
        let acked = crate::history::acknowledged(&history);
        assert_eq!(acked.len(), 3, "only the three deposits: {acked:?}");
    }
}
