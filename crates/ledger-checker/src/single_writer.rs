//! Invariant 1, single writer: every committed entry came from the region the
//! ownership history gave its slot (or its account) at that entry's epoch, and no
//! (account, seq) holds two different events across regions.

use std::collections::{HashMap, HashSet};

use ledger_wire::failover::AuditSnapshot;
use ledger_wire::ownership::{ChangeRecord, Target};
use ledger_wire::AccountId;
use uuid::Uuid;

use crate::{check, Check};

/// 1. Every entry was committed by a region the history gave its slot (or the account)
///    at that epoch, and no (account, seq) holds two different events across regions.
pub fn single_writer(snapshots: &[AuditSnapshot], history: &[ChangeRecord]) -> Check {
    let mut slot_grants: HashSet<(u32, u64, &str)> = HashSet::new();
    let mut account_grants: HashSet<(AccountId, u64, &str)> = HashSet::new();
    for change in history {
        for step in &change.moves {
            match step.target {
                Target::Slots { first, last } => {
                    for slot in first..=last {
                        slot_grants.insert((slot, step.epoch, step.to.as_str()));
                    }
                }
                Target::Account(account) => {
                    account_grants.insert((account, step.epoch, step.to.as_str()));
                }
            }
        }
    }
    let mut problems = Vec::new();
    let mut seen: HashMap<(&str, i64), (Option<Uuid>, &str)> = HashMap::new();
    for snapshot in snapshots {
        for entry in &snapshot.entries {
            let epoch = u64::try_from(entry.epoch).unwrap_or(0);
            let granted = entry.account.parse::<AccountId>().is_ok_and(|account| {
                account_grants.contains(&(account, epoch, entry.origin.as_str()))
                    || slot_grants.contains(&(
                        u32::from(account.slot()),
                        epoch,
                        entry.origin.as_str(),
                    ))
            });
            if !granted {
                problems.push(format!(
                    "{} seq {} was committed by {} at epoch {}, which never held it then (seen in {})",
                    entry.account, entry.seq, entry.origin, entry.epoch, snapshot.region
                ));
            }
            match seen.get(&(entry.account.as_str(), entry.seq)) {
                Some((event, region)) if *event != entry.event_id => problems.push(format!(
                    "{} seq {}: event {:?} in {region}, {:?} in {}",
                    entry.account, entry.seq, event, entry.event_id, snapshot.region
                )),
                Some(_) => {}
                None => {
                    seen.insert(
                        (entry.account.as_str(), entry.seq),
                        (entry.event_id, snapshot.region.as_str()),
                    );
                }
            }
        }
    }
    check(
        "single writer",
        problems,
        format!("{} entries, each committed under its lease", seen.len()),
    )
}
