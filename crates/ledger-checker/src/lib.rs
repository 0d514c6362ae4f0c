//! The ledger's invariants, checked from evidence alone: every region's final state
//! (audit snapshots), the ownership history and, when a workload ran, the history of
//! every request it made (JSON lines). `failover drill` and `failover audit` call it
//! on what they fetched; `ledger-check --dir D` calls it on what a run wrote to disk,
//! so a verdict can be recomputed, or a planted violation tested, without a
//! deployment. One invariant per module; each has a test that plants a violation.

use std::collections::HashSet;

use ledger_wire::failover::AuditSnapshot;
use ledger_wire::ownership::ChangeRecord;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod acknowledged;
mod convergence;
pub mod evidence;
pub mod history;
mod idempotency;
mod money;
mod reads;
mod single_writer;
mod transfers;

pub use acknowledged::acknowledged_kept;
pub use convergence::converged;
pub use idempotency::idempotent;
pub use money::money_conserved;
pub use reads::reads_consistent;
pub use single_writer::single_writer;
pub use transfers::{booked_once, saga_converged, transfer_of_key, transfers_settled};

/// How many examples of a violation a check keeps.
const EXAMPLES: usize = 5;

/// A write the client saw acknowledged (201).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckedWrite {
    pub account: String,
    /// The deposit's or withdrawal's txn id; for a transfer, the transfer's id.
    pub txn_id: Uuid,
    pub seq: i64,
    /// The epoch of the entry the acknowledgement named (with `seq`), when known.
    #[serde(default)]
    pub epoch: Option<i64>,
    pub replicated: bool,
    /// A transfer (its source is `account`) rather than a deposit or withdrawal.
    #[serde(default)]
    pub transfer: bool,
}

/// What a check concluded. `Unknown`: the evidence cannot decide (no request history
/// for the checks that compare against what clients were told); it fails nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    #[default]
    Valid,
    Invalid,
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    /// False only for an invalid verdict.
    pub ok: bool,
    #[serde(default)]
    pub verdict: Verdict,
    pub summary: String,
    pub examples: Vec<String>,
}

impl Check {
    /// `ok`, `FAIL` or `unknown`, for a terminal line (`ok` decides: a report
    /// written before verdicts existed has none).
    pub fn label(&self) -> &'static str {
        match (self.ok, self.verdict) {
            (false, _) => "FAIL",
            (true, Verdict::Unknown) => "unknown",
            (true, _) => "ok",
        }
    }

    /// `valid`, `INVALID` or `unknown`: the verdict as a word, for a report line.
    pub fn verdict_word(&self) -> &'static str {
        match self.label() {
            "FAIL" => "INVALID",
            "unknown" => "unknown",
            _ => "valid",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvariantReport {
    pub regions: Vec<String>,
    pub checks: Vec<Check>,
}

impl InvariantReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    pub fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect()
    }
}

pub(crate) fn check(name: &str, problems: Vec<String>, fine: String) -> Check {
    Check {
        name: name.to_owned(),
        ok: problems.is_empty(),
        verdict: if problems.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid
        },
        summary: if problems.is_empty() {
            fine
        } else {
            format!("{} violation(s)", problems.len())
        },
        examples: problems.into_iter().take(EXAMPLES).collect(),
    }
}

/// Checks the invariants over `snapshots`, given the ownership history, the
/// acknowledged writes and the ids of every transfer a client asked for (both empty
/// outside drills; an empty `sent_transfers` skips that part of the check).
pub fn check_invariants(
    snapshots: &[AuditSnapshot],
    history: &[ChangeRecord],
    acked: &[AckedWrite],
    sent_transfers: &HashSet<Uuid>,
) -> InvariantReport {
    let without_history = acked.is_empty() && sent_transfers.is_empty();
    let against_history = |check: Check| {
        if without_history && check.ok {
            Check {
                verdict: Verdict::Unknown,
                summary: "no request history to check against".into(),
                ..check
            }
        } else {
            check
        }
    };
    let checks = vec![
        single_writer(snapshots, history),
        against_history(acknowledged_kept(snapshots, acked)),
        money_conserved(snapshots),
        converged(snapshots),
        idempotent(snapshots),
        transfers_settled(snapshots),
        saga_converged(snapshots),
        against_history(booked_once(snapshots, acked, sent_transfers)),
    ];
    InvariantReport {
        regions: snapshots.iter().map(|s| s.region.clone()).collect(),
        checks,
    }
}

/// The txn id the ledger derives from an Idempotency-Key (migration V5's
/// `ledger.txn_of_key`): md5 of `ledger-txn:<key>` read as a UUID.
pub fn txn_of_key(key: &str) -> Uuid {
    use md5::Digest as _;
    let digest: [u8; 16] = md5::Md5::digest(format!("ledger-txn:{key}").as_bytes()).into();
    Uuid::from_bytes(digest)
}

#[cfg(test)]
mod tests;
