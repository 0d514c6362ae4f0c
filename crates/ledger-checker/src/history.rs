//! The request history a workload records, one JSON object per line: what was asked,
//! where, when, and what came back. The checker derives from it the writes a client
//! saw acknowledged (which must survive every fault) and every transfer a client asked
//! for (which must each be booked at most once).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{transfer_of_key, txn_of_key, AckedWrite};

/// How a request ended, as the client can know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged (2xx): it must be in every region after healing.
    Ok,
    /// Refused with a definite answer (4xx, or 503 with a problem type): not applied.
    Fail,
    /// No answer, or an answer that does not say (timeouts, 500, 502, 504): it may
    /// have been applied, once.
    Unknown,
}

impl Outcome {
    /// The outcome an HTTP status (0: no answer) tells the client.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Ok,
            0 | 500 | 502 | 504 => Outcome::Unknown,
            _ => Outcome::Fail,
        }
    }
}

/// One request of a workload: a line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// `transfer`, `deposit`, `withdrawal`, `open` or `read`.
    pub op: String,
    /// The Idempotency-Key (retries of one request share it).
    pub key: String,
    pub account: String,
    /// A transfer's destination account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The region the request was sent to.
    pub region: String,
    /// Milliseconds since the workload started.
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: Outcome,
    /// HTTP status, 0 when no answer came.
    pub status: u16,
    /// The problem type of a refusal, or `unreachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The entry an acknowledgement named: its seq and epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// Whether the request asked for `ack: replicated`.
    pub replicated: bool,
    /// A read's `min_seq` (the client's last acknowledged seq of the account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_seq: Option<i64>,
    /// A read with `consistency=strong` (served by the account's home).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strong: bool,
}

impl Operation {
    /// A write that moves money: what acknowledgements and idempotency are about.
    pub fn is_write(&self) -> bool {
        matches!(self.op.as_str(), "deposit" | "withdrawal" | "transfer")
    }

    /// A read of one account; its `seq` is the seq of the copy that answered.
    pub fn is_read(&self) -> bool {
        self.op == "read"
    }
}

/// The writes acknowledged at least once, one per Idempotency-Key (the first
/// acknowledgement: retries of an acknowledged key name the same write). A transfer
/// is known by the id its key names, a deposit or withdrawal by its txn id.
pub fn acknowledged(operations: &[Operation]) -> Vec<AckedWrite> {
    let mut seen = HashSet::new();
    operations
        .iter()
        .filter(|o| o.is_write() && o.outcome == Outcome::Ok && seen.insert(o.key.as_str()))
        .map(|o| {
            let transfer = o.op == "transfer";
            AckedWrite {
                account: o.account.clone(),
                txn_id: if transfer {
                    transfer_of_key(&o.key)
                } else {
                    txn_of_key(&o.key)
                },
                seq: o.seq.unwrap_or_default(),
                epoch: o.epoch,
                replicated: o.replicated,
                transfer,
            }
        })
        .collect()
}

/// The ids of every transfer a client asked for, answered or not.
pub fn sent_transfers(operations: &[Operation]) -> HashSet<Uuid> {
    operations
        .iter()
        .filter(|o| o.op == "transfer")
        .map(|o| transfer_of_key(&o.key))
        .collect()
}
