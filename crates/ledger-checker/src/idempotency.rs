//! Invariant 5, no request applied twice.

use std::collections::HashMap;

use ledger_wire::failover::{AuditEntry, AuditSnapshot};
use uuid::Uuid;

use crate::{check, Check};

/// 5. No request applied twice: one deposit or withdrawal per transaction id.
pub fn idempotent(snapshots: &[AuditSnapshot]) -> Check {
    let mut problems = Vec::new();
    for snapshot in snapshots {
        let mut seen: HashMap<Uuid, &AuditEntry> = HashMap::new();
        for entry in snapshot
            .entries
            .iter()
            .filter(|e| e.kind == "deposit" || e.kind == "withdrawal")
        {
            if let Some(first) = seen.insert(entry.txn_id, entry) {
                problems.push(format!(
                    "{}: txn {} applied twice ({} seq {} and seq {})",
                    snapshot.region, entry.txn_id, entry.account, first.seq, entry.seq
                ));
            }
        }
    }
    check("idempotency", problems, "no request applied twice".into())
}
